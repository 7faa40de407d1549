"""Inbound SMS through real processes: `tikosms smsc-sim --control-port` sends MO (long ones in
parts, out of order) to `tikosms serve` bound to it as a carrier; the account's callback
receiver (real HTTP, in this test) gets the whole text, signed, after a failed first attempt;
STOP refuses the next send (422 `opted_out`) and a campaign lists the recipient; after START
a send goes to the SMSC again. Set up with the `tikosms` CLI as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.procs import TIKOSMS, Process, free_port
from click.testing import CliRunner

from tests.callbacks.receiver import CallbackReceiver
from tests.conftest import Customer
from tests.inbound.helpers import HANDSET, OTHER_HANDSET, SHORT_CODE
from tikosms.callbacks import signing
from tikosms.cli import cli
from tikosms.db.engine import Database
from tikosms.inbound.optouts import MSG_OPTED_OUT

pytestmark = pytest.mark.slow

LONG_MO = ("Добрий день! Підтверджую замовлення 😀 на завтра о 10:00, "
           "дзвоніть за годину до приїзду. ") * 3  # UCS-2, 3+ parts, a pair in it


def tikosms(database_url: str, *args: str) -> str:
    """The CLI in this process (each `tikosms` process costs seconds of imports here)."""
    result = CliRunner().invoke(cli, ["--database-url", database_url, *args])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result.stdout


async def post_mo(control: str, text: str) -> None:
    """What `tikosms smsc-mo` does: the simulator's control endpoint sends an MO."""
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(f"{control}/mo", json={"from": f"+{HANDSET}", "to": SHORT_CODE,
                                                   "text": text})
        assert r.status_code == 200, r.text


def smsc_mo(control: str, text: str, *options: str) -> str:
    done = subprocess.run([TIKOSMS, "smsc-mo", "--control", control, "--from", f"+{HANDSET}",
                           "--to", SHORT_CODE, "--text", text, *options],
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def gateway(database_url: str, customer: Customer, tmp_path: Path
            ) -> Iterator[dict[str, Any]]:
    smpp_port, control_port, api_port = free_port(), free_port(), free_port()
    with Process([TIKOSMS, "smsc-sim", "--port", str(smpp_port), "--control-port",
                  str(control_port), "--system-id", "tiko", "--password", "pw1",
                  "--stats-interval", "0"], tmp_path / "smsc-sim.log", port=control_port):
        tikosms(database_url, "carriers", "add", "sim", "--host", "127.0.0.1", "--port",
                str(smpp_port), "--system-id", "tiko", "--password", "pw1")
        tikosms(database_url, "routes", "add", "--match", "*", "--carrier", "sim")
        env = {"TIKOSMS_DATABASE_URL": database_url, "TIKOSMS_HOST": "127.0.0.1",
               "TIKOSMS_PORT": str(api_port), "TIKOSMS_CALLBACK_ALLOW_PRIVATE": "true",
               "TIKOSMS_CALLBACK_RETRY_INITIAL_SECONDS": "0.2",
               "TIKOSMS_IDLE_POLL_SECONDS": "0.05"}
        with Process([TIKOSMS, "serve"], tmp_path / "serve.log", env=env, port=api_port):
            yield {"api": f"http://127.0.0.1:{api_port}",
                   "control": f"http://127.0.0.1:{control_port}", "log": tmp_path}


async def wait_for_accepted(control: str, count: int) -> None:
    async with httpx.AsyncClient(timeout=90) as http:
        counters = (await http.get(f"{control}/counters", params={"accepted": count})).json()
    assert counters["accepted"] >= count


async def test_mo_in_pieces_and_stop_start_through_real_processes(
        gateway: dict[str, Any], database_url: str, db: Database, customer: Customer) -> None:
    account = json.loads(await asyncio.to_thread(
        tikosms, database_url, "accounts", "show", str(customer.account_id), "--json"))
    async with CallbackReceiver() as receiver:
        receiver.fail_first(1)  # the first post fails: retried like a status callback
        await asyncio.to_thread(tikosms, database_url, "numbers", "assign",
                                str(customer.account_id), SHORT_CODE)
        await asyncio.to_thread(tikosms, database_url, "accounts", "update",
                                str(customer.account_id), "--inbound-url", receiver.url)

        out = await asyncio.to_thread(smsc_mo, gateway["control"], LONG_MO, "--concat",
                                      "udh16", "--order", "shuffle", "--part-octets", "67")
        assert "part(s)" in out
        [failed, first] = await receiver.wait_for(2, timeout=30)
        assert failed.answered == 500 and first.answered == 200
        assert failed.event_id == first.event_id  # the same event, retried
        mo = first.json
        assert (mo["event"], mo["text"], mo["from"], mo["to"], mo["encoding"]) == (
            "message.inbound", LONG_MO, HANDSET, SHORT_CODE, "ucs2")
        assert mo["parts"] > 3
        assert signing.verify(account["signing_secret"], first.headers, first.body)

        async with httpx.AsyncClient(base_url=gateway["api"], headers=customer.headers) as api:
            async def send() -> httpx.Response:
                return await api.post("/v1/message", json={
                    "from": SHORT_CODE, "sender_type": "Shortcode", "to": HANDSET,
                    "message": "Your order ships tomorrow"})

            assert (await send()).status_code == 200
            await wait_for_accepted(gateway["control"], 1)

            await post_mo(gateway["control"], "STOP")
            stop = (await receiver.wait_for(3, timeout=30))[2].json
            assert (stop["text"], stop["opt_out"]) == ("STOP", "stop")
            refused = await send()
            assert refused.status_code == 422
            assert (refused.json()["code"], refused.json()["error"]) == (
                "opted_out", MSG_OPTED_OUT)
            campaign = await api.post("/v1/messages", json={
                "from": SHORT_CODE, "sender_type": "Shortcode", "message": "Sale",
                "recipients": [HANDSET, OTHER_HANDSET]})
            assert campaign.status_code == 200, campaign.text
            assert campaign.json()["invalid"] == [
                {"index": 0, "to": HANDSET, "error": MSG_OPTED_OUT}]
            await wait_for_accepted(gateway["control"], 2)  # the other recipient's part

            await post_mo(gateway["control"], "start")
            start = (await receiver.wait_for(4, timeout=30))[3].json
            assert start["opt_out"] == "start"
            assert (await send()).status_code == 200
            await wait_for_accepted(gateway["control"], 3)

            listed = (await api.get("/v1/inbound")).json()["data"]
            assert [m["text"] for m in listed] == ["start", "STOP", LONG_MO]
    log = (gateway["log"] / "serve.log").read_text()
    assert HANDSET not in log and "STOP" not in log.replace("opt_out=stop", "")


async def test_parts_before_and_after_a_gateway_restart_make_one_message(
        database_url: str, customer: Customer, tmp_path: Path) -> None:
    """Two parts reach one `tikosms serve`, which is stopped; a new one gets the last part
    and the account's callback gets the whole text."""
    smpp_port, control_port = free_port(), free_port()
    text = "Part one, part two and part three of a reply that a handset cut in three. " * 4
    async with CallbackReceiver() as receiver:
        await asyncio.to_thread(tikosms, database_url, "numbers", "assign",
                                str(customer.account_id), SHORT_CODE)
        await asyncio.to_thread(tikosms, database_url, "accounts", "update",
                                str(customer.account_id), "--inbound-url", receiver.url)
        with Process([TIKOSMS, "smsc-sim", "--port", str(smpp_port), "--control-port",
                      str(control_port), "--stats-interval", "0"], tmp_path / "smsc-sim.log",
                     port=control_port):
            await asyncio.to_thread(tikosms, database_url, "carriers", "add", "sim", "--host",
                                    "127.0.0.1", "--port", str(smpp_port), "--system-id",
                                    "tiko", "--password", "pw1")
            await asyncio.to_thread(tikosms, database_url, "routes", "add", "--match", "*",
                                    "--carrier", "sim")
            control = f"http://127.0.0.1:{control_port}"
            mo = {"from": HANDSET, "to": SHORT_CODE, "text": text, "ref": 4242,
                  "part_octets": 120}
            async with httpx.AsyncClient(timeout=90) as http:
                for name, only in (("first", [3, 1]), ("second", [2])):
                    api_port = free_port()
                    env = {"TIKOSMS_DATABASE_URL": database_url, "TIKOSMS_HOST": "127.0.0.1",
                           "TIKOSMS_PORT": str(api_port), "TIKOSMS_CALLBACK_ALLOW_PRIVATE": "true"}
                    with Process([TIKOSMS, "serve"], tmp_path / f"serve-{name}.log", env=env,
                                 port=api_port):
                        r = await http.post(f"{control}/mo", json={**mo, "only": only})
                        assert r.json() == {"parts": len(only)}
                        if name == "first":
                            continue  # stopped (SIGTERM) with two parts stored
                        [callback] = await receiver.wait_for(1, timeout=30)
    assert callback.json["text"] == text and callback.json["parts"] == 3
    assert (tmp_path / "serve-first.log").read_text().count("inbound message stored") == 0
