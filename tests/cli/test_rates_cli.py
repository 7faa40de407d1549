"""`tikosms rates ...` and `tikosms numbering import`, checked through what a send costs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cli.test_accounts_cli import (
    assert_one_line_error,
    invoke,
    script,
    send,
    tikosms,
    tikosms_json,
)
from tests.conftest import make_customer
from tikosms.db.engine import Database

HEADER = "mcc,mnc,country,rate,start_date,end_date\n"


def csv_file(tmp_path: Path, body: str, name: str = "rates.csv") -> str:
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return str(path)


async def cost_of_a_send(client: httpx.AsyncClient, token: str, to: str) -> str:
    r = await send(client, token, to)
    assert r.status_code == 200, r.text
    return str(r.json()["cost"])


def test_import_prints_how_many_rates_were_added(database_url: str, tmp_path: Path) -> None:
    file = csv_file(tmp_path, "255,001,Ukraine,0.045,,\n255,,Ukraine,0.06,,\n"
                              "262,,Germany,0.0755,2020-01-01,\n")
    result = invoke(database_url, "rates", "import", file)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "added 3 rates to the default price list"


async def test_empty_mnc_prices_the_whole_country(
    client: httpx.AsyncClient, db: Database, database_url: str, tmp_path: Path
) -> None:
    await tikosms_json(database_url, "rates", "import",
                       csv_file(tmp_path, "255,001,Ukraine,0.045,,\n255,,Ukraine,0.06,,\n"))
    who = await make_customer(db)
    assert await cost_of_a_send(client, who.token, "380501234567") == "0.045"  # 25501: own rate
    assert await cost_of_a_send(client, who.token, "380671234567") == "0.060"  # 25503: country


async def test_a_two_digit_mnc_is_padded_to_three(
    client: httpx.AsyncClient, db: Database, database_url: str, tmp_path: Path
) -> None:
    await tikosms_json(database_url, "rates", "import",
                       csv_file(tmp_path, "255,01,Ukraine,0.045,,\n255,,Ukraine,0.06,,\n"))
    rows = await tikosms_json(database_url, "rates", "list")
    assert [(r["mnc"], r["mccmnc"]) for r in rows if r["mnc"]] == [("001", "255001")]
    who = await make_customer(db)
    assert await cost_of_a_send(client, who.token, "380501234567") == "0.045"


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("255,001,Ukraine,0.045,,\n255,001,Ukraine,abc,,\n", 3),  # rate not a number
        ("255,001,Ukraine,0.045,,\n\n25,001,Ukraine,0.05,,\n", 4),  # 2-digit mcc after a blank
        ("255,1,Ukraine,0.045,,\n", 2),  # 1-digit mnc
        ("255,001,Ukraine,-1,,\n", 2),  # negative rate
        ("255,001,Ukraine,0.045,2020-13-01,\n", 2),  # no such month
        ("255,001,Ukraine,0.045,2021-01-01,2020-01-01\n", 2),  # ends before it starts
        ("255,001,Ukraine,0.045\n", 2),  # missing columns
        ("255,001,,0.045,,\n", 2),  # no country
    ],
)
def test_a_bad_file_is_rejected_whole_naming_the_first_bad_line(
    database_url: str, tmp_path: Path, body: str, line: int
) -> None:
    good_first = "262,,Germany,0.0755,,\n"
    result = script(database_url, "rates", "import", csv_file(tmp_path, good_first + body))
    assert_one_line_error(result, f"line {line + 1}:")
    listed = invoke(database_url, "rates", "list", "--json")
    assert listed.exit_code == 0 and listed.stdout.strip() == "[]"  # nothing added


def test_a_wrong_header_is_line_1(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text("mcc,mnc,rate\n255,001,0.045\n", encoding="utf-8")
    assert_one_line_error(script(database_url, "rates", "import", str(path)), "line 1:")


async def test_export_gives_back_what_import_took(database_url: str, tmp_path: Path) -> None:
    original = csv_file(tmp_path, "255,001,Ukraine,0.045,2020-01-01,\n"
                                  "255,,Ukraine,0.06,2020-01-01 06:30:00,2030-01-01\n"
                                  "262,,Germany,0.0755,2020-01-01,\n")
    await tikosms_json(database_url, "rates", "import", original)
    exported = (await tikosms(database_url, "rates", "export")).stdout
    assert exported.splitlines()[0] + "\n" == HEADER
    assert len(exported.splitlines()) == 4

    account = await tikosms_json(database_url, "accounts", "create", "--name", "Acme")
    again = tmp_path / "exported.csv"
    again.write_text(exported, encoding="utf-8")
    added = await tikosms_json(database_url, "rates", "import", str(again),
                               "--account", str(account["account_id"]))
    assert added["added"] == 3
    exported_again = await tikosms(database_url, "rates", "export",
                                   "--account", str(account["account_id"]))
    assert exported_again.stdout == exported
    listed = await tikosms_json(database_url, "rates", "list",
                                "--account", str(account["account_id"]))
    assert sorted(r["mccmnc"] for r in listed) == ["255", "255001", "262"]


async def test_an_accounts_own_rate_comes_before_the_default_list(
    client: httpx.AsyncClient, db: Database, database_url: str, tmp_path: Path
) -> None:
    await tikosms_json(database_url, "rates", "import", csv_file(tmp_path, "255,,Ukraine,0.06,,\n"))
    who = await make_customer(db)
    await tikosms_json(database_url, "rates", "import",
                       csv_file(tmp_path, "255,,Ukraine,0.02,,\n", "own.csv"),
                       "--account", str(who.account_id))
    assert await cost_of_a_send(client, who.token, "380501234567") == "0.020"


def test_import_for_an_unknown_account_is_refused(database_url: str, tmp_path: Path) -> None:
    result = invoke(database_url, "rates", "import",
                    csv_file(tmp_path, "255,,Ukraine,0.06,,\n"), "--account", "99")
    assert_one_line_error(result, "99")
    assert invoke(database_url, "rates", "list", "--json").stdout.strip() == "[]"


# --- numbering plan ----------------------------------------------------------------------------

async def test_an_imported_prefix_decides_the_network_and_so_the_price(
    client: httpx.AsyncClient, db: Database, database_url: str, tmp_path: Path
) -> None:
    await tikosms_json(database_url, "rates", "import",
                       csv_file(tmp_path, "255,001,Ukraine,0.045,,\n255,006,Ukraine,0.048,,\n"))
    plan = tmp_path / "plan.csv"
    plan.write_text("prefix,mcc,mnc\n3805012,255,06\n", encoding="utf-8")
    assert (await tikosms_json(database_url, "numbering", "import", str(plan)))["imported"] == 1
    assert await tikosms_json(database_url, "numbering", "list") == [
        {"prefix": "3805012", "mcc": "255", "mnc": "06"}]
    who = await make_customer(db)
    assert await cost_of_a_send(client, who.token, "380501234567") == "0.048"  # the plan: 25506
    assert await cost_of_a_send(client, who.token, "380509999999") == "0.045"  # shipped: 25501


def test_a_bad_numbering_file_names_its_line(database_url: str, tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    plan.write_text("prefix,mcc,mnc\n38050,255,01\n38067,25,03\n", encoding="utf-8")
    assert_one_line_error(script(database_url, "numbering", "import", str(plan)), "line 3:")
    assert invoke(database_url, "numbering", "list", "--json").stdout.strip() == "[]"
