"""Carriers that give no usable answer, against `tikosms smsc-sim` as a real process: each
answer has one defined outcome (docs/smpp.md, "Answers that are not answers")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.smsc_proc import Receipts, carrier_for, part, smsc_sim
from tikosms.delivery.carrier import SubmitResult


async def test_rok_without_message_id_is_a_retry_that_may_have_been_sent(tmp_path: Path) -> None:
    with smsc_sim(tmp_path, "--no-id-ratio", "1") as sim:
        carrier = await carrier_for(sim, Receipts())
        try:
            outcome = await carrier.submit(part(1))
        finally:
            await carrier.stop()
    assert outcome.result is SubmitResult.RETRY
    assert outcome.maybe_sent


@pytest.mark.parametrize("mode", ["--nack-ratio", "--nack-ok-ratio"])
async def test_generic_nack_is_never_an_acceptance(tmp_path: Path, mode: str) -> None:
    with smsc_sim(tmp_path, mode, "1") as sim:
        carrier = await carrier_for(sim, Receipts())
        try:
            outcome = await carrier.submit(part(1))
        finally:
            await carrier.stop()
    assert outcome.result is SubmitResult.FAILOVER
    assert not outcome.maybe_sent


async def test_no_response_is_a_retry_that_may_have_been_sent(tmp_path: Path) -> None:
    with smsc_sim(tmp_path, "--silent-ratio", "1") as sim:
        carrier = await carrier_for(sim, Receipts(), response_timeout=0.5)
        try:
            outcome = await carrier.submit(part(1))
        finally:
            await carrier.stop()
    assert outcome.result is SubmitResult.RETRY
    assert outcome.maybe_sent


async def test_response_to_a_submit_never_sent_keeps_the_session(tmp_path: Path) -> None:
    with smsc_sim(tmp_path, "--stray-ratio", "1") as sim:
        carrier = await carrier_for(sim, Receipts())
        try:
            outcomes = [await carrier.submit(part(i)) for i in range(1, 6)]
            sessions = {id(b.session) for b in carrier._binds}
        finally:
            await carrier.stop()
        counters = sim.counters()
    assert all(o.result is SubmitResult.ACCEPTED for o in outcomes)
    assert counters["binds"] == 1 and len(sessions) == 1


async def test_overlong_receipt_fields_are_normalised(tmp_path: Path) -> None:
    receipts = Receipts()
    with smsc_sim(tmp_path, "--long-receipt-fields", "60", "--undeliv-ratio", "1") as sim:
        carrier = await carrier_for(sim, receipts)
        try:
            await carrier.submit(part(1))
            async with asyncio.timeout(10):
                await receipts.arrived.wait()
        finally:
            await carrier.stop()
    receipt = receipts.received[0]
    assert receipt.error_code is not None and len(receipt.error_code) <= 32
    assert receipt.error_code.isprintable()
    assert receipt.status == "UNDELIV"  # the typed message_state TLV wins over stat:


async def test_receipt_with_an_overlong_id_is_acknowledged(tmp_path: Path) -> None:
    receipts = Receipts()
    with smsc_sim(tmp_path, "--long-id", "100") as sim:
        carrier = await carrier_for(sim, receipts)
        try:
            outcome = await carrier.submit(part(1))
            await asyncio.sleep(1.0)  # the receipt's round trip (no event to await: ignored)
        finally:
            await carrier.stop()
        counters = sim.counters()
    assert outcome.result is SubmitResult.ACCEPTED
    assert receipts.received == []  # can never match a part: not handed on
    assert counters["receipts_acked"] == 1  # but acknowledged, not redelivered forever
