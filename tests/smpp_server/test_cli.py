"""`tikosms smpp-users ...`, `tikosms smpp-server` and the SMPP server inside `tikosms serve`,
as an operator runs them (the console script, real processes, real TCP)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_accounts_cli import tikosms, tikosms_json
from tests.cli.test_serve_cli import free_port
from tests.conftest import add_rates, make_customer
from tests.smpp_server.conftest import Inbox, customer
from tests.smpp_server.test_receipts import receipt_fields
from tests.smpp_server.test_submit import fields
from tikosms.db.engine import Database
from tikosms.smpp.pdu import Status
from tikosms.smpp.session import BindRefused

TIKOSMS = str(Path(sys.executable).with_name("tikosms"))


async def test_smpp_users_create_list_revoke(database_url: str, db: Database) -> None:
    who = await make_customer(db)
    created = await tikosms_json(database_url, "smpp-users", "create", str(who.account_id),
                                 "--system-id", "shop1", "--password", "pw123456",
                                 "--max-binds", "2", "--tps", "50", "--allow-ip", "10.0.0.0/8",
                                 "--allow-ip", "192.0.2.7")
    assert created["system_id"] == "shop1"
    assert (created["max_binds"], created["tps"], created["allow_ip"]) == \
        (2, 50.0, "10.0.0.0/8,192.0.2.7/32")
    assert "password" not in json.dumps(created)  # neither the password nor its hash
    listed = await tikosms_json(database_url, "smpp-users", "list")
    assert [u["system_id"] for u in listed] == ["shop1"]
    human = await tikosms(database_url, "smpp-users", "list")
    assert "shop1" in human.stdout and "10.0.0.0/8" in human.stdout
    revoked = await tikosms(database_url, "smpp-users", "revoke", "shop1")
    assert revoked.exit_code == 0
    assert await tikosms_json(database_url, "smpp-users", "list") == []
    assert len(await tikosms_json(database_url, "smpp-users", "list", "--all")) == 1


async def test_smpp_users_mistakes_are_one_line(database_url: str, db: Database) -> None:
    who = await make_customer(db)
    for args, fragment in [
        (["999", "--system-id", "x", "--password", "pw"], "no account with id 999"),
        ([str(who.account_id), "--system-id", "far-too-long-system", "--password", "pw"],
         "system_id"),
        ([str(who.account_id), "--system-id", "ok", "--password", "123456789"],
         "use 1-8 printable ASCII"),
        ([str(who.account_id), "--system-id", "ok", "--password", "pw", "--allow-ip", "x.y"],
         "--allow-ip"),
    ]:
        result = await tikosms(database_url, "smpp-users", "create", *args)
        assert result.exit_code == 1, args
        assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    await tikosms(database_url, "smpp-users", "create", str(who.account_id),
                  "--system-id", "ok", "--password", "pw")
    taken = await tikosms(database_url, "smpp-users", "create", str(who.account_id),
                          "--system-id", "ok", "--password", "pw")
    assert taken.exit_code == 1 and "taken" in taken.stderr


def _process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


async def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    async with asyncio.timeout(60):  # startup takes a few seconds on a busy machine
        while True:
            if process.poll() is not None:
                raise AssertionError(f"exited early: {_read(log)}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)


def _read(log: Path) -> str:
    return log.read_text()


async def test_serve_runs_the_smpp_server_with_delivery_and_receipts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    env = {**os.environ, "TIKOSMS_DATABASE_URL": url, "TIKOSMS_SIM_RECEIPT_DELAY_MS": "20"}
    smpp_port = free_port()
    log = tmp_path / "serve.log"
    process = _process([TIKOSMS, "serve", "--port", str(free_port()), "--smpp-port",
                              str(smpp_port)], env, log)
    try:
        await _wait_port(smpp_port, process, log)
        db = Database(url)
        try:
            await add_rates(db)
            who = await make_customer(db)
        finally:
            await db.dispose()
        await tikosms(url, "smpp-users", "create", str(who.account_id), "--system-id", "acme",
                      "--password", "s3cret")
        inbox = Inbox()
        async with customer(smpp_port, on_deliver=inbox) as esme:
            answer = await esme.submit(fields())
            assert answer.command_status == Status.ESME_ROK
            await inbox.wait_for(1)  # the built-in simulated carrier delivered it
        assert receipt_fields(inbox.items[0])["id"] == answer.message_id
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert f"SMPP on 127.0.0.1:{smpp_port}" in log.read_text()


async def test_smpp_server_runs_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    port = free_port()
    env = {**os.environ, "TIKOSMS_DATABASE_URL": url, "TIKOSMS_SMPP_PORT": str(port)}
    log = tmp_path / "smpp.log"
    process = _process([TIKOSMS, "smpp-server"], env, log)
    try:
        await _wait_port(port, process, log)
        with pytest.raises(BindRefused) as refused:  # nobody has SMPP credentials yet
            async with customer(port):
                pass
        assert refused.value.status == Status.ESME_RINVPASWD
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert f"listening on 127.0.0.1:{port}" in log.read_text()
