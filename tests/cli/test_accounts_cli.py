"""`tikosms accounts ...` and `tikosms tokens ...` against a real database, checked through the API.

The CLI runs its own event loop (`asyncio.run`), so async tests invoke it in a thread; the
`client` fixture's app uses the same database as the CLI.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.conftest import add_rates
from tikosms.cli import cli
from tikosms.db.engine import Database


def invoke(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", database_url, *args])


async def tikosms(database_url: str, *args: str) -> Result:
    """Run a CLI command from an async test (in a thread: the CLI runs its own event loop)."""
    return await asyncio.to_thread(invoke, database_url, *args)


async def tikosms_json(database_url: str, *args: str) -> Any:
    result = await tikosms(database_url, *args, "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return json.loads(result.stdout)


def script(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `tikosms` console script (tikosms.cli:main), as an operator does."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("tikosms")), "--database-url", database_url, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def assert_one_line_error(
    result: Result | subprocess.CompletedProcess[str], *fragments: str
) -> None:
    """Operator errors: a non-zero exit, nothing on stdout, one `error: ...` line on stderr."""
    code = result.exit_code if isinstance(result, Result) else result.returncode
    assert code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def send(client: httpx.AsyncClient, token: str, to: str = "380501234567") -> httpx.Response:
    return await client.post("/v1/message", headers=bearer(token), json={
        "from": "Shop", "to": to, "message": "code 1234"})


async def api_balance(client: httpx.AsyncClient, token: str) -> Decimal:
    r = await client.get("/v1/balance", headers=bearer(token))
    assert r.status_code == 200, r.text
    return Decimal(r.text.split('"balance":')[1].split(",")[0])


async def priced_account(db: Database, database_url: str) -> Any:
    """The default price list, and an account made by the CLI with a balance of 10."""
    await add_rates(db)
    return await tikosms_json(database_url, "accounts", "create", "--name", "Acme",
                              "--balance", "10")


# --- accounts ------------------------------------------------------------------------------

async def test_create_json_gives_an_account_id_and_a_token_the_api_accepts(
    client: httpx.AsyncClient, database_url: str
) -> None:
    made = await tikosms_json(database_url, "accounts", "create", "--name", "Acme",
                              "--balance", "12.50")
    assert isinstance(made["account_id"], int) and made["token"]
    assert made["currency"] == "EUR" and made["balance"] == "12.5000"
    assert await api_balance(client, made["token"]) == Decimal("12.5")


def test_create_human_output_shows_the_token_once(database_url: str) -> None:
    result = invoke(database_url, "accounts", "create", "--name", "Acme")
    assert result.exit_code == 0, result.stderr
    assert "API token (shown only now" in result.stdout
    shown = invoke(database_url, "accounts", "show", "1")
    token = result.stdout.split("keep it safe): ")[1].split()[0]
    assert token not in shown.stdout


async def test_list_shows_every_account(database_url: str) -> None:
    for name in ("Acme", "Globex"):
        await tikosms_json(database_url, "accounts", "create", "--name", name, "--balance", "5")
    rows = await tikosms_json(database_url, "accounts", "list")
    assert [(r["name"], r["balance"]) for r in rows] == [("Acme", "5.0000"), ("Globex", "5.0000")]
    table = await tikosms(database_url, "accounts", "list")
    assert "Acme" in table.stdout and "Globex" in table.stdout


async def test_show_gives_balance_secret_tokens_and_ledger(database_url: str) -> None:
    made = await tikosms_json(database_url, "accounts", "create", "--name", "Acme",
                              "--balance", "10", "--credit-limit", "3")
    shown = await tikosms_json(database_url, "accounts", "show", str(made["account_id"]))
    assert shown["balance"] == "10.0000" and shown["credit_limit"] == "3"
    assert shown["signing_secret"].startswith("whsec_")
    assert [t["token_id"] for t in shown["tokens"]] == [made["token_id"]]
    assert made["token"] not in json.dumps(shown)  # only the prefix is kept
    assert [(e["reason"], Decimal(e["amount"])) for e in shown["ledger"]] == [
        ("topup", Decimal(10))]


async def test_topup_raises_the_balance_the_api_reports(
    client: httpx.AsyncClient, database_url: str
) -> None:
    made = await tikosms_json(database_url, "accounts", "create", "--name", "Acme",
                              "--balance", "10")
    out = await tikosms_json(database_url, "accounts", "topup", str(made["account_id"]), "5.25")
    assert out["balance"] == "15.2500"
    assert await api_balance(client, made["token"]) == Decimal("15.25")
    shown = await tikosms_json(database_url, "accounts", "show", str(made["account_id"]))
    assert sorted(Decimal(e["amount"]) for e in shown["ledger"]) == [Decimal("5.25"),
                                                                     Decimal(10)]


async def test_credit_limit_lets_an_empty_account_send(
    client: httpx.AsyncClient, db: Database, database_url: str
) -> None:
    await add_rates(db)
    made = await tikosms_json(database_url, "accounts", "create", "--name", "Acme")
    refused = await send(client, made["token"])
    assert refused.status_code == 402, refused.text
    await tikosms_json(database_url, "accounts", "set-credit-limit", str(made["account_id"]), "1")
    accepted = await send(client, made["token"])
    assert accepted.status_code == 200, accepted.text
    assert await api_balance(client, made["token"]) == Decimal("-0.045")


async def test_suspended_account_gets_403_on_send_until_resumed(
    client: httpx.AsyncClient, db: Database, database_url: str
) -> None:
    made = await priced_account(db, database_url)
    account = str(made["account_id"])
    assert (await tikosms_json(database_url, "accounts", "suspend", account))["status"] == (
        "suspended")
    refused = await send(client, made["token"])
    assert refused.status_code == 403
    assert refused.json()["code"] == "account_suspended"
    await tikosms_json(database_url, "accounts", "resume", account)
    assert (await send(client, made["token"])).status_code == 200


async def test_suspending_in_another_process_refuses_the_next_send_of_a_known_token(
    client: httpx.AsyncClient, db: Database, database_url: str
) -> None:
    """The API keeps recently seen tokens in memory; the send's transaction checks the account
    again, so a suspension made by another process counts from the next send."""
    made = await priced_account(db, database_url)
    assert (await send(client, made["token"])).status_code == 200  # the token is now cached
    assert script(database_url, "accounts", "suspend", str(made["account_id"])).returncode == 0
    refused = await send(client, made["token"])
    assert refused.status_code == 403
    assert refused.json()["code"] == "account_suspended"
    assert script(database_url, "accounts", "resume", str(made["account_id"])).returncode == 0
    assert (await send(client, made["token"])).status_code == 200
    assert await api_balance(client, made["token"]) == Decimal("10") - 2 * Decimal("0.045")


# --- tokens --------------------------------------------------------------------------------

async def test_a_second_token_works_and_a_revoked_one_gets_401(
    client: httpx.AsyncClient, database_url: str
) -> None:
    made = await tikosms_json(database_url, "accounts", "create", "--name", "Acme",
                              "--balance", "1")
    account = str(made["account_id"])
    second = await tikosms_json(database_url, "tokens", "create", account)
    assert second["token"] != made["token"]
    assert await api_balance(client, second["token"]) == Decimal(1)

    listed = await tikosms_json(database_url, "tokens", "list", account)
    assert [t["token_id"] for t in listed] == [made["token_id"], second["token_id"]]
    assert [t["prefix"] for t in listed] == [made["token"][:10], second["token"][:10]]

    await tikosms_json(database_url, "tokens", "revoke", str(made["token_id"]))
    r = await client.get("/v1/balance", headers=bearer(made["token"]))
    assert r.status_code == 401
    assert await api_balance(client, second["token"]) == Decimal(1)  # the other one still works
    listed = await tikosms_json(database_url, "tokens", "list", account)
    assert [t["revoked_at"] is not None for t in listed] == [True, False]


async def test_a_token_revoked_by_another_process_is_refused_at_its_next_send(
    client: httpx.AsyncClient, db: Database, database_url: str
) -> None:
    made = await priced_account(db, database_url)
    second = await tikosms_json(database_url, "tokens", "create", str(made["account_id"]))
    assert (await send(client, made["token"])).status_code == 200  # the token is now cached
    assert script(database_url, "tokens", "revoke", str(made["token_id"])).returncode == 0
    for _ in range(2):  # refused by the send's transaction, then not found in the cache
        refused = await send(client, made["token"])
        assert refused.status_code == 401
        assert refused.json() == {"error": "User not authenticated"}
    assert await api_balance(client, second["token"]) == Decimal("10") - Decimal("0.045")


async def test_a_revoked_known_token_gets_401_for_replays_and_bad_requests_too(
    client: httpx.AsyncClient, db: Database, database_url: str
) -> None:
    """Answers that never reach the send's transaction (an Idempotency-Key replay, a 422)
    check a token from the cache again: a revoked token learns nothing more."""
    made = await priced_account(db, database_url)
    headers = {**bearer(made["token"]), "Idempotency-Key": "order-1"}
    body = {"from": "Shop", "to": "380501234567", "message": "code 1234"}
    assert (await client.post("/v1/message", headers=headers, json=body)).status_code == 200
    assert script(database_url, "tokens", "revoke", str(made["token_id"])).returncode == 0
    replay = await client.post("/v1/message", headers=headers, json=body)
    assert replay.status_code == 401 and "idempotent-replayed" not in replay.headers
    bad = await client.post("/v1/message", headers=bearer(made["token"]),
                            json={**body, "to": "12"})
    assert bad.status_code == 401
    assert bad.json() == {"error": "User not authenticated"}


def test_revoking_a_revoked_token_is_an_error(database_url: str) -> None:
    assert invoke(database_url, "accounts", "create", "--name", "Acme").exit_code == 0
    assert invoke(database_url, "tokens", "revoke", "1").exit_code == 0
    assert_one_line_error(invoke(database_url, "tokens", "revoke", "1"), "token", "1")


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args",
    [
        ["accounts", "show", "99"],
        ["accounts", "topup", "99", "5"],
        ["accounts", "set-credit-limit", "99", "5"],
        ["accounts", "suspend", "99"],
        ["accounts", "resume", "99"],
        ["tokens", "create", "99"],
        ["tokens", "list", "99"],
    ],
)
def test_an_unknown_account_id_is_one_line_on_stderr(database_url: str, args: list[str]) -> None:
    assert_one_line_error(invoke(database_url, *args), "99")


def test_topup_of_zero_is_refused(database_url: str) -> None:
    assert invoke(database_url, "accounts", "create", "--name", "Acme").exit_code == 0
    assert_one_line_error(invoke(database_url, "accounts", "topup", "1", "0"), "0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["accounts", "topup", "1", "abc"],
         "amount 'abc' is not a number (example: 100 or 12.50)"),
        (["accounts", "topup", "1", "1.0000001"], "amount '1.0000001' has more than 6 decimals"),
        (["accounts", "create", "--name", "B", "--balance", "x"],
         "balance 'x' is not a number (example: 100 or 12.50)"),
        (["accounts", "set-credit-limit", "1", "lots"],
         "credit limit 'lots' is not a number (example: 100 or 12.50)"),
    ],
)
def test_a_bad_amount_is_one_line_on_stderr(database_url: str, args: list[str],
                                            message: str) -> None:
    assert invoke(database_url, "accounts", "create", "--name", "Acme").exit_code == 0
    done = script(database_url, *args)
    assert_one_line_error(done)
    assert done.stderr == f"error: {message}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["accounts", "topup", "1", "abc"],
        ["rates", "import", "{bad_rates}"],
        ["numbering", "import", "{bad_plan}"],
    ],
)
def test_the_cli_group_reports_argument_errors_in_one_line(
    database_url: str, tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "rates.csv").write_text("mcc,mnc,country,rate,start_date,end_date\n1,2,3\n")
    (tmp_path / "plan.csv").write_text("prefix,mcc,mnc\nx,255,01\n")
    files = {"bad_rates": tmp_path / "rates.csv", "bad_plan": tmp_path / "plan.csv"}
    assert invoke(database_url, "accounts", "create", "--name", "Acme").exit_code == 0
    assert_one_line_error(invoke(database_url, *(a.format(**files) for a in args)))
