"""The console's doors over plain HTTP: sessions, cookie flags, CSRF, throttled logins, and API
tokens refused."""

from __future__ import annotations

import httpx

from tests.conftest import Customer
from tests.console.conftest import csrf_of, login, make_operator
from tikosms.accounts import repository as accounts_repo
from tikosms.db.engine import Database


async def test_pages_need_a_login(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/accounts")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"


async def test_right_password_opens_a_session_with_httponly_lax_cookie(
        client: httpx.AsyncClient, db: Database) -> None:
    await make_operator(db)
    response = await login(client)
    assert response.status_code == 303
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith("tikosms_admin="))
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=lax" in flags and "path=/admin" in flags
    assert "secure" not in flags  # plain http here
    assert (await client.get("/admin/accounts")).status_code == 200


async def test_cookie_is_secure_behind_https(client: httpx.AsyncClient, db: Database) -> None:
    await make_operator(db)
    response = await login(client, headers={"X-Forwarded-Proto": "https"})
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith("tikosms_admin="))
    assert "secure" in cookie.lower()


async def test_wrong_password_is_refused(client: httpx.AsyncClient, db: Database) -> None:
    await make_operator(db)
    response = await login(client, password="wrong password")
    assert response.status_code == 401
    assert (await client.get("/admin/accounts")).status_code == 303


async def test_logins_are_throttled_per_name(client: httpx.AsyncClient, db: Database) -> None:
    await make_operator(db)
    client._transport.app.state.settings.console_login_failures_per_user = 3  # type: ignore[attr-defined]
    for _ in range(3):
        assert (await login(client, password="guess guess")).status_code == 401
    # now even the right password waits for the window to end
    response = await login(client)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert (await client.get("/admin/accounts")).status_code == 303


async def test_logins_are_throttled_per_ip(client: httpx.AsyncClient, db: Database) -> None:
    await make_operator(db)
    client._transport.app.state.settings.console_login_failures_per_ip = 2  # type: ignore[attr-defined]
    assert (await login(client, name="alice", password="guess guess")).status_code == 401
    assert (await login(client, name="bob", password="guess guess")).status_code == 401
    assert (await login(client)).status_code == 429


async def test_login_without_its_csrf_token_is_refused(client: httpx.AsyncClient,
                                                       db: Database) -> None:
    await make_operator(db)
    response = await client.post("/admin/login", data={"name": "ops", "password": "x" * 10})
    assert response.status_code == 403


async def test_form_without_csrf_token_changes_nothing(client: httpx.AsyncClient, db: Database,
                                                      customer: Customer) -> None:
    await make_operator(db)
    await login(client)
    response = await client.post(f"/admin/accounts/{customer.account_id}/topup",
                                 data={"amount": "50", "csrf": "forged"})
    assert response.status_code == 403
    async with db.connect() as conn:
        account = await accounts_repo.get_account(conn, customer.account_id)
    assert account is not None and account.balance == 100


async def test_form_with_csrf_token_tops_up(client: httpx.AsyncClient, db: Database,
                                           customer: Customer) -> None:
    await make_operator(db)
    await login(client)
    page = await client.get(f"/admin/accounts/{customer.account_id}")
    response = await client.post(f"/admin/accounts/{customer.account_id}/topup",
                                 data={"amount": "50", "csrf": csrf_of(page.text)})
    assert response.status_code == 303
    async with db.connect() as conn:
        account = await accounts_repo.get_account(conn, customer.account_id)
    assert account is not None and account.balance == 150


async def test_api_bearer_token_does_not_open_the_console(client: httpx.AsyncClient,
                                                          customer: Customer) -> None:
    response = await client.get("/admin", headers=customer.headers)
    assert response.status_code == 401
    assert response.json()["code"] == "not_operator"


async def test_logout_ends_the_session(client: httpx.AsyncClient, db: Database) -> None:
    await make_operator(db)
    await login(client)
    page = await client.get("/admin/accounts")
    await client.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    client.cookies.clear()
    assert (await client.get("/admin/accounts")).status_code == 303
