"""The console's SMPP users, inbound URL and numbers (account page), the Inbound page and the
opt-out list, and SMPP campaigns on the campaigns page, over plain HTTP (both databases)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import insert, select

from tests.conftest import Customer, make_customer
from tests.console.conftest import csrf_of, login, make_operator
from tikosms.console import reads
from tikosms.db.engine import Database
from tikosms.db.models import Campaign, InboundMessage, OptOut, OwnedNumber
from tikosms.db.types import utcnow
from tikosms.inbound import manage
from tikosms.inbound import repository as inbound_repo
from tikosms.inbound.service import store_inbound
from tikosms.smpp_server import users


async def _logged_in(client: httpx.AsyncClient, db: Database, account_id: int) -> str:
    await make_operator(db)
    await login(client)
    return csrf_of((await client.get(f"/admin/accounts/{account_id}")).text)


async def _smpp_users(db: Database) -> list[dict[str, object]]:
    async with db.connect() as conn:
        return await users.list_users(conn, include_revoked=True)


def _new_user(csrf: str, **extra: str) -> dict[str, str]:
    return {"csrf": csrf, "system_id": "acme1", "password": "pw123", "max_binds": "2",
            "window": "10", "tps": "5", "burst": "8", "allow_ip": "203.0.113.0/24, 192.0.2.7",
            **extra}


async def test_smpp_user_is_created_listed_and_revoked(client: httpx.AsyncClient, db: Database,
                                                       customer: Customer) -> None:
    csrf = await _logged_in(client, db, customer.account_id)
    page = await client.post(f"/admin/accounts/{customer.account_id}/smpp-users",
                             data=_new_user(csrf), follow_redirects=True)
    assert "SMPP user acme1 created." in page.text
    row = page.text.split('data-smpp-user="acme1"')[1].split("</tr>")[0]
    assert "203.0.113.0/24,192.0.2.7/32" in row and ">2<" in row and ">10<" in row
    assert "5.0 / 8" in row
    [user] = await _smpp_users(db)
    assert (user["account_id"], user["max_binds"], user["window"], user["tps"],
            user["burst"]) == (customer.account_id, 2, 10, 5.0, 8)
    async with db.connect() as conn:  # the password works for a bind, and is only hashed
        cred = await users.credential(conn, "acme1")
        assert cred is not None and "pw123" not in cred.password_hash
    assert await users.PasswordCheck().check(cred, "pw123")
    page = await client.post("/admin/smpp-users/acme1/revoke", follow_redirects=True,
                             data={"csrf": csrf, "account_id": str(customer.account_id)})
    assert "SMPP user acme1 revoked" in page.text
    [user] = await _smpp_users(db)
    assert user["revoked_at"] is not None
    async with db.connect() as conn:
        assert await users.credential(conn, "acme1") is None


@pytest.mark.parametrize(("message", "fields"), [
    ("is taken", {"password": "other"}),  # acme1 exists already
    ("is not an address or CIDR network", {"system_id": "acme2", "allow_ip": "10.0.0.0/33"}),
    ("SMPP 3.4 allows 15 octets", {"system_id": "a" * 16}),  # 16 octets and the NUL
    ("tps &#39;fast&#39; is not a number", {"system_id": "acme3", "tps": "fast"}),
    ("password: use 1-8", {"system_id": "acme4", "password": "much-too-long"}),
    ("must be at least 1", {"system_id": "acme5", "window": "0"}),
])
async def test_smpp_user_errors_are_shown_and_change_nothing(
        client: httpx.AsyncClient, db: Database, customer: Customer, message: str,
        fields: dict[str, str]) -> None:
    csrf = await _logged_in(client, db, customer.account_id)
    url = f"/admin/accounts/{customer.account_id}/smpp-users"
    await client.post(url, data=_new_user(csrf))
    page = await client.post(url, data=_new_user(csrf, **fields), follow_redirects=True)
    assert page.status_code == 200
    assert 'class="flash bad"' in page.text and message in page.text
    assert [u["system_id"] for u in await _smpp_users(db)] == ["acme1"]


async def test_smpp_forms_without_csrf_are_refused(client: httpx.AsyncClient, db: Database,
                                                   customer: Customer) -> None:
    csrf = await _logged_in(client, db, customer.account_id)
    r = await client.post(f"/admin/accounts/{customer.account_id}/smpp-users",
                          data=_new_user("forged"))
    assert r.status_code == 403
    assert await _smpp_users(db) == []
    await client.post(f"/admin/accounts/{customer.account_id}/smpp-users", data=_new_user(csrf))
    r = await client.post("/admin/smpp-users/acme1/revoke",
                          data={"account_id": str(customer.account_id)})
    assert r.status_code == 403
    assert [u["revoked_at"] for u in await _smpp_users(db)] == [None]


async def test_revoke_refuses_another_accounts_user(client: httpx.AsyncClient, db: Database,
                                                    customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    async with db.begin() as conn:
        await users.create_user(conn, other.account_id, "theirs", "pw")
    csrf = await _logged_in(client, db, customer.account_id)
    page = await client.post("/admin/smpp-users/theirs/revoke", follow_redirects=True,
                             data={"csrf": csrf, "account_id": str(customer.account_id)})
    assert "has no active SMPP user theirs" in page.text
    assert [u["revoked_at"] for u in await _smpp_users(db)] == [None]


async def test_inbound_url_is_set_and_a_bad_one_refused(client: httpx.AsyncClient,
                                                        db: Database,
                                                        customer: Customer) -> None:
    csrf = await _logged_in(client, db, customer.account_id)
    url = f"/admin/accounts/{customer.account_id}/inbound-url"
    page = await client.post(url, follow_redirects=True, data={
        "csrf": csrf, "inbound_url": "https://hooks.example/mo"})
    assert "Inbound URL: https://hooks.example/mo." in page.text
    page = await client.post(url, follow_redirects=True, data={
        "csrf": csrf, "inbound_url": "ftp://hooks.example/mo"})
    assert "inbound URL refused" in page.text
    assert 'id="inbound-url">https://hooks.example/mo<' in page.text
    assert (await client.post(url, data={"inbound_url": ""})).status_code == 403
    page = await client.post(url, follow_redirects=True, data={"csrf": csrf, "inbound_url": ""})
    assert "Inbound URL: removed." in page.text
    async with db.connect() as conn:
        settings = await inbound_repo.inbound_settings(conn, customer.account_id)
    assert settings is not None and settings.inbound_url is None


async def test_number_is_assigned_and_unassigned(client: httpx.AsyncClient, db: Database,
                                                 customer: Customer) -> None:
    csrf = await _logged_in(client, db, customer.account_id)
    base = f"/admin/accounts/{customer.account_id}"
    page = await client.post(f"{base}/numbers", follow_redirects=True,
                             data={"csrf": csrf, "number": "+380 67 000 1111", "keyword": ""})
    assert "Number 380670001111 assigned." in page.text
    assert 'data-number="380670001111"' in page.text
    page = await client.post(f"{base}/numbers", follow_redirects=True,
                             data={"csrf": csrf, "number": "12x", "keyword": ""})
    assert "is not a number or short code" in page.text
    r = await client.post(f"{base}/numbers/unassign", data={"number": "380670001111",
                                                              "keyword": ""})
    assert r.status_code == 403
    page = await client.post(f"{base}/numbers/unassign", follow_redirects=True,
                             data={"csrf": csrf, "number": "380670001111", "keyword": ""})
    assert "Number 380670001111 unassigned." in page.text
    async with db.connect() as conn:
        assert await inbound_repo.owners_of(conn, "380670001111") == {}


async def test_unassign_refuses_another_accounts_number(client: httpx.AsyncClient,
                                                        db: Database,
                                                        customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    async with db.begin() as conn:
        await manage.assign_number(conn, other.account_id, "4242", None)
    csrf = await _logged_in(client, db, customer.account_id)
    page = await client.post(f"/admin/accounts/{customer.account_id}/numbers/unassign",
                             follow_redirects=True,
                             data={"csrf": csrf, "number": "4242", "keyword": ""})
    assert f"account {customer.account_id} does not own 4242" in page.text
    async with db.connect() as conn:
        owned = (await conn.execute(select(OwnedNumber.number, OwnedNumber.account_id))).all()
    assert [tuple(r) for r in owned] == [("4242", other.account_id)]


async def test_unassigning_the_default_owner_keeps_a_keyword_row(client: httpx.AsyncClient,
                                                                 db: Database,
                                                                 customer: Customer) -> None:
    csrf = await _logged_in(client, db, customer.account_id)
    base = f"/admin/accounts/{customer.account_id}"
    for word in ("", "PIZZA"):
        await client.post(f"{base}/numbers", data={"csrf": csrf, "number": "7000",
                                                    "keyword": word})
    page = await client.post(f"{base}/numbers/unassign", follow_redirects=True,
                             data={"csrf": csrf, "number": "7000", "keyword": ""})
    assert "Number 7000 unassigned." in page.text
    async with db.connect() as conn:
        owners = await inbound_repo.owners_of(conn, "7000")
    assert owners == {"PIZZA": customer.account_id}


async def test_inbound_page_lists_filters_and_pages(client: httpx.AsyncClient, db: Database,
                                                    customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    now = utcnow()
    async with db.begin() as conn:
        await manage.assign_number(conn, customer.account_id, "4000", None)
        await manage.assign_number(conn, other.account_id, "5000", None)
        stored = await store_inbound(conn, "380501110000", "4000", "hello <b>there</b>",
                                     "gsm7", 0, 2, "sim", now)
        await store_inbound(conn, "380502220000", "5000", "STOP", "gsm7", 0, 1, "sim", now)
        await store_inbound(conn, "380503330000", "6000", "nobody's", "gsm7", 0, 1, "sim", now)
    await _logged_in(client, db, customer.account_id)
    page = (await client.get("/admin/inbound")).text
    assert page.count("data-inbound=") == 3
    assert "hello &lt;b&gt;there&lt;/b&gt;" in page  # escaped
    assert "unrouted" in page
    row = page.split(f'data-inbound="{stored.id}"')[1].split("</tr>")[0]
    assert "380501110000" in row and ">4000<" in row and ">2<" in row
    page = (await client.get("/admin/inbound", params={"account": other.account_id})).text
    assert page.count("data-inbound=") == 1 and "380502220000" in page
    stop_row = page.split("data-inbound=")[1].split("</tr>")[0]
    assert 'class="opt-out">stop<' in stop_row
    for number in ("+380 50 111 0000", "4000"):  # from or to
        page = (await client.get("/admin/inbound", params={"number": number})).text
        assert page.count("data-inbound=") == 1 and "hello" in page, number
    page = (await client.get("/admin/inbound", params={"number": "abc"})).text
    assert "is not a number" in page and "data-inbound=" not in page
    # keyset pages of 25, newest first
    async with db.begin() as conn:
        for i in range(30):
            await conn.execute(insert(InboundMessage).values(
                public_id=f"p-{i}", account_id=customer.account_id, sender="380500000000",
                recipient="4000", text=f"msg {i:02d}", data_coding=0, encoding="gsm7", parts=1,
                received_at=now))
    page = (await client.get("/admin/inbound", params={"number": "380500000000"})).text
    assert page.count("data-inbound=") == 25 and "msg 29" in page and "msg 04" not in page
    older = page.split('<a href="?')[1].split('"')[0].replace("&amp;", "&")
    page = (await client.get(f"/admin/inbound?{older}")).text
    assert page.count("data-inbound=") == 5 and "msg 04" in page and "msg 05" not in page


async def test_opt_outs_are_searched_and_removed(client: httpx.AsyncClient, db: Database,
                                                 customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    async with db.begin() as conn:
        await manage.add_opt_out(conn, customer.account_id, "380501112233", None, "cli")
        await manage.add_opt_out(conn, customer.account_id, "380501112233", "4000", "keyword")
        await manage.add_opt_out(conn, other.account_id, "380501112233", None, "api")
        await manage.add_opt_out(conn, other.account_id, "380509999999", None, "api")
    csrf = await _logged_in(client, db, customer.account_id)
    page = (await client.get("/admin/inbound", params={"oo_number": "+380 50 111 2233"})).text
    assert page.count("data-opt-out=") == 3 and "380509999999" not in page
    page = (await client.get("/admin/inbound", params={"oo_account": other.account_id})).text
    assert page.count("data-opt-out=") == 2
    form = {"account_id": str(customer.account_id), "recipient": "380501112233", "sender": "",
            "oo_number": "380501112233"}
    assert (await client.post("/admin/opt-outs/remove", data=form)).status_code == 403
    page = await client.post("/admin/opt-outs/remove", data={**form, "csrf": csrf},
                             follow_redirects=True)
    assert "Opt-out of 380501112233 removed" in page.text
    assert page.text.count("data-opt-out=") == 2  # only that row: the one from 4000 is kept
    page = await client.post("/admin/opt-outs/remove", data={**form, "csrf": csrf},
                             follow_redirects=True)
    assert "no opt-out of 380501112233" in page.text
    async with db.connect() as conn:
        left = (await conn.execute(select(OptOut.account_id, OptOut.sender)
                                   .where(OptOut.recipient == "380501112233"))).all()
    assert sorted(tuple(r) for r in left) == sorted([(customer.account_id, "4000"),
                                                      (other.account_id, "")])


async def test_opt_out_list_pages_by_key(client: httpx.AsyncClient, db: Database,
                                         customer: Customer) -> None:
    async with db.begin() as conn:
        for i in range(30):
            await manage.add_opt_out(conn, customer.account_id, f"3805000000{i:02d}", None, "cli")
    await _logged_in(client, db, customer.account_id)
    page = (await client.get("/admin/inbound")).text
    assert page.count("data-opt-out=") == 25 and "380500000024" in page
    more = page.split("more opt-outs")[0].rsplit('<a href="?', 1)[1].split('"')[0]
    page = (await client.get(f"/admin/inbound?{more.replace('&amp;', '&')}")).text
    assert page.count("data-opt-out=") == 5 and "380500000025" in page
    assert "380500000024" not in page


async def test_smpp_campaigns_are_listed(client: httpx.AsyncClient, db: Database,
                                         customer: Customer) -> None:
    now = utcnow()
    async with db.begin() as conn:
        for i, kind in enumerate(("smpp", "smpp-f", "smpp-n", "single")):
            await conn.execute(insert(Campaign).values(
                id=f"00000000-0000-0000-0000-00000000000{i}", account_id=customer.account_id,
                sender="Shop", sender_type="alpha", message="hi", kind=kind, recipients=1,
                total_parts=1, cost=0, created_at=now, updated_at=now))
    await _logged_in(client, db, customer.account_id)
    page = (await client.get("/admin/campaigns", params={"kind": "smpp"})).text
    assert page.count("data-campaign=") == 3
    assert "00000000-0000-0000-0000-000000000003" not in page
    page = (await client.get("/admin/campaigns", params={"kind": "single"})).text
    assert page.count("data-campaign=") == 1
    assert "00000000-0000-0000-0000-000000000003" in page


async def _plan(db: Database, stmt: object) -> str:
    async with db.connect() as conn:
        sql = str(stmt.compile(dialect=conn.dialect,  # type: ignore[attr-defined]
                               compile_kwargs={"literal_binds": True}))
        if db.is_postgres:  # a plan that cannot use the index would show a Seq Scan or Sort
            await conn.exec_driver_sql("SET enable_seqscan = off")
            await conn.exec_driver_sql("SET enable_bitmapscan = off")
            plan = "\n".join(r[0] for r in (await conn.exec_driver_sql("EXPLAIN " + sql)).all())
        else:
            plan = "\n".join(str(r[-1]) for r in (await conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + sql)).all())
    return plan


PLANS = [
    ({"account_id": None, "number": None, "before_id": 99}, ["pk_inbound_messages"]),
    ({"account_id": 7, "number": None, "before_id": None}, ["ix_inbound_messages_account_id"]),
    ({"account_id": None, "number": "380501112233", "before_id": 99},
     ["ix_inbound_messages_sender", "ix_inbound_messages_recipient"]),
]


async def test_inbound_pages_read_an_index_range_without_a_sort(db: Database) -> None:
    for args, indexes in PLANS:
        queries = reads.inbound_queries(**args)  # type: ignore[arg-type]
        assert len(queries) == len(indexes)
        for stmt, index in zip(queries, indexes, strict=True):
            plan = await _plan(db, stmt)
            if db.is_postgres and index == "pk_inbound_messages":
                assert "Index Scan Backward using pk_inbound_messages" in plan, plan
            elif db.is_postgres:
                assert index in plan, plan
            else:  # SQLite names the primary key as the table's rowid
                assert ("USING INTEGER PRIMARY KEY" in plan if index == "pk_inbound_messages"
                        else index in plan), plan
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
            assert "Seq Scan" not in plan and not plan.startswith("SCAN inbound_messages\n"), plan


async def test_opt_out_pages_read_an_index_range_without_a_sort(db: Database) -> None:
    for args, index in (
        ({"account_id": None, "number": "380501112233", "after": (3, "380501112233", "")},
         "ix_opt_outs_recipient"),
        ({"account_id": 3, "number": None, "after": None}, "primary key"),
    ):
        plan = await _plan(db, reads.opt_outs_query(**args))  # type: ignore[arg-type]
        if index == "primary key":
            index = "pk_opt_outs" if db.is_postgres else "sqlite_autoindex_opt_outs_1"
        assert index in plan and "Seq Scan" not in plan, plan
        assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
