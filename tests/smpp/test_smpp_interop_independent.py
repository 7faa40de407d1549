"""Our connector against an SMSC we did not write: smpp.twisted3's SMPPServerFactory.

smpp.twisted3 (and Twisted) is not a project dependency, so the peer runs from its own
virtualenv (see independent_smsc.py); the test is skipped when that interpreter is absent.
Set TIKOSMS_SMPP_PEER_PYTHON to point at it; the default is /tmp/twsmpp-venv/bin/python.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tikosms.delivery.carrier import SubmitResult

PEER_PYTHON = Path(os.environ.get("TIKOSMS_SMPP_PEER_PYTHON", "/tmp/twsmpp-venv/bin/python"))
PEER_SCRIPT = Path(__file__).with_name("independent_smsc.py")

pytestmark = pytest.mark.skipif(
    not PEER_PYTHON.exists(), reason=f"no smpp.twisted3 interpreter at {PEER_PYTHON}"
)


@pytest.fixture
async def twisted_smsc_port() -> AsyncIterator[int]:
    process = await asyncio.create_subprocess_exec(
        str(PEER_PYTHON),
        str(PEER_SCRIPT),
        "tiko",
        "secret",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            line = (await process.stdout.readline()).decode()
        match = re.match(r"listening on (\d+)", line)
        assert match, line
        yield int(match.group(1))
    finally:
        process.terminate()
        await process.wait()


async def test_connector_submits_and_gets_receipts_from_twisted_smsc(
    twisted_smsc_port: int, carrier_factory: Any, sink: Any, make_part: Any
) -> None:
    carrier = await carrier_factory(twisted_smsc_port)
    parts = [
        make_part(1, text="Hello €"),
        make_part(2, text="Привіт, ", data_coding=8, part_no=1, total_parts=2, concat_ref=9),
        make_part(3, text="світ 🙂", data_coding=8, part_no=2, total_parts=2, concat_ref=9),
    ]
    outcomes = [await carrier.submit(part) for part in parts]
    assert all(o.result is SubmitResult.ACCEPTED for o in outcomes)
    async with asyncio.timeout(10):
        await sink.wait_for(len(parts))
    assert set(sink.by_id()) == {o.carrier_message_id for o in outcomes}
    assert {r.status for r in sink.receipts} == {"DELIVRD"}


async def test_wrong_password_is_refused_by_twisted_smsc(
    twisted_smsc_port: int, carrier_factory: Any
) -> None:
    carrier = await carrier_factory(twisted_smsc_port, password="wrong", wait=False)
    async with asyncio.timeout(10):
        await carrier.wait_state(lambda: carrier.status()[0].state == "refused")
    assert "check system_id/password" in carrier.last_error
    assert "ESME_RINVPASWD" in carrier.last_error
    assert not carrier.available
