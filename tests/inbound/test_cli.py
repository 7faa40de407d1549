"""`tikosms numbers`, `tikosms opt-outs`, `tikosms accounts update` against a real database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from tests.cli.test_accounts_cli import assert_one_line_error
from tests.conftest import Customer, make_customer
from tests.inbound.helpers import HANDSET, OTHER_HANDSET, SHORT_CODE
from tikosms.cli import cli
from tikosms.db.engine import Database


def invoke(database_url: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--database-url", database_url, *args], input=input)


async def ainvoke(database_url: str, *args: str, input: str | None = None) -> Result:
    """The CLI runs its own event loop: from an async test, in a thread."""
    return await asyncio.to_thread(invoke, database_url, *args, input=input)


async def aok(database_url: str, *args: str, input: str | None = None) -> str:
    return await asyncio.to_thread(ok, database_url, *args, input=input)


def ok(database_url: str, *args: str, input: str | None = None) -> str:
    result = invoke(database_url, *args, input=input)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result.stdout


async def test_numbers_assign_list_unassign(database_url: str, db: Database,
                                            customer: Customer) -> None:
    pizza = await make_customer(db, name="Pizza")
    assert f"-> account {customer.account_id}" in await aok(
        database_url, "numbers", "assign", str(customer.account_id), f"+{SHORT_CODE}")
    await aok(database_url, "numbers", "assign", str(pizza.account_id), SHORT_CODE, "--keyword",
       "pizza")
    rows = json.loads(await aok(database_url, "numbers", "list", "--json"))
    assert [(r["number"], r["keyword"], r["account_id"]) for r in rows] == [
        (SHORT_CODE, None, customer.account_id), (SHORT_CODE, "PIZZA", pizza.account_id)]
    moved = await aok(database_url, "numbers", "assign", str(pizza.account_id), SHORT_CODE)
    assert f"(was account {customer.account_id})" in moved
    await aok(database_url, "numbers", "unassign", SHORT_CODE, "--keyword", "PIZZA")
    rows = json.loads(await aok(database_url, "numbers", "list", "--account", str(pizza.account_id),
                         "--json"))
    assert [(r["number"], r["keyword"]) for r in rows] == [(SHORT_CODE, None)]


async def test_numbers_refused_input(database_url: str) -> None:
    assert_one_line_error(await ainvoke(database_url, "numbers", "assign", "1", "abc"),
                          "not a number or short code")
    assert_one_line_error(await ainvoke(database_url, "numbers", "assign", "99", "4455"),
                          "no account with id 99")
    assert_one_line_error(await ainvoke(database_url, "numbers", "assign", "1", "4455", "--keyword",
                                 "two words"), "keyword")
    assert_one_line_error(await ainvoke(database_url, "numbers", "unassign", "4455"),
                          "not assigned")


async def test_accounts_update_inbound_url_and_keywords(database_url: str,
                                                        customer: Customer) -> None:
    out = json.loads(await aok(database_url, "accounts", "update", str(customer.account_id),
                        "--inbound-url", "https://example.com/mo", "--stop-keywords",
                        "arret, halt", "--json"))
    assert out == {"account_id": customer.account_id, "inbound_url": "https://example.com/mo",
                   "stop_keywords": "ARRET,HALT"}
    refused = await ainvoke(database_url, "accounts", "update", str(customer.account_id),
                            "--inbound-url", "ftp://example.com")
    assert_one_line_error(refused, "inbound URL refused")
    assert_one_line_error(await ainvoke(database_url, "accounts", "update", "99", "--inbound-url",
                                 "https://example.com"), "no account with id 99")


async def test_opt_outs_import_list_export_remove(database_url: str, customer: Customer,
                                                  tmp_path: Path) -> None:
    csv_file = tmp_path / "stops.csv"
    csv_file.write_text(f"to,from\n+{HANDSET},\n{OTHER_HANDSET},{SHORT_CODE}\nnot a number,\n"
                        f"{HANDSET},\n")
    out = await aok(database_url, "opt-outs", "import", str(customer.account_id), str(csv_file))
    assert "2 added, 1 already there, 1 bad row(s) skipped" in out
    assert "line 4" in out
    listed = json.loads(await aok(database_url, "opt-outs", "list", str(customer.account_id),
                           "--json"))
    assert [(o["to"], o["from"], o["source"]) for o in listed] == [
        (HANDSET, None, "import"), (OTHER_HANDSET, SHORT_CODE, "import")]
    exported = (await aok(database_url, "opt-outs", "export",
                          str(customer.account_id))).splitlines()
    assert exported[0] == "to,from,source,keyword,created_at"
    assert exported[2].startswith(f"{OTHER_HANDSET},{SHORT_CODE},import,,")
    await aok(database_url, "opt-outs", "add", str(customer.account_id), "380509999999")
    await aok(database_url, "opt-outs", "remove", str(customer.account_id), HANDSET)
    listed = json.loads(await aok(database_url, "opt-outs", "list", str(customer.account_id),
                           "--json"))
    assert sorted(o["to"] for o in listed) == [OTHER_HANDSET, "380509999999"]
    assert_one_line_error(await ainvoke(database_url, "opt-outs", "remove",
                                 str(customer.account_id), HANDSET), "no opt-out")


async def test_an_export_imports_into_another_account(database_url: str, db: Database,
                                                      customer: Customer) -> None:
    other = await make_customer(db, name="Other")
    await aok(database_url, "opt-outs", "add", str(customer.account_id), HANDSET,
              "--from", SHORT_CODE)
    exported = await aok(database_url, "opt-outs", "export", str(customer.account_id))
    await aok(database_url, "opt-outs", "import", str(other.account_id), "-", input=exported)
    listed = json.loads(await aok(database_url, "opt-outs", "list", str(other.account_id),
                                  "--json"))
    assert [(o["to"], o["from"]) for o in listed] == [(HANDSET, SHORT_CODE)]
