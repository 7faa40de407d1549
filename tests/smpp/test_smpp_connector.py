"""The SMPP carrier against the SMSC simulator, over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.procs import free_port

from tikosms.delivery.carrier import Carrier, SubmitOutcome, SubmitResult
from tikosms.smpp.connector import SmppCarrier
from tikosms.smpp.pdu import ESM_UDHI, Tag
from tikosms.smpp.simulator import SmscSimulator

# parts/s: a carrier rate configured far above what a test sends (the bucket then starts
# there; with none it starts slowly, see smpp/throttle.py)
KNOWN_RATE = 1_000_000.0


async def test_carrier_satisfies_the_protocol(carrier: SmppCarrier) -> None:
    assert isinstance(carrier, Carrier)
    assert carrier.available


async def test_submit_is_accepted_and_its_receipt_matched(
    carrier: SmppCarrier, simulator: SmscSimulator, sink: Any, make_part: Any
) -> None:
    outcome = await carrier.submit(make_part())
    assert outcome.result is SubmitResult.ACCEPTED
    assert outcome.carrier_message_id == simulator.submits[0].message_id
    async with asyncio.timeout(5):
        await sink.wait_for(1)
    receipt = sink.receipts[0]
    assert receipt.carrier_message_id == outcome.carrier_message_id
    assert receipt.status == "DELIVRD"
    assert receipt.done_at is not None


async def test_submit_sm_fields_on_the_wire(
    carrier: SmppCarrier, simulator: SmscSimulator, make_part: Any
) -> None:
    await carrier.submit(make_part(sender="12345", sender_type="Shortcode"))
    received = simulator.submits[0]
    assert (received.source_addr, received.source_addr_ton, received.source_addr_npi) == (
        "12345",
        3,
        0,
    )
    assert (received.destination_addr, received.dest_addr_ton, received.dest_addr_npi) == (
        "380501234567",
        1,
        1,
    )
    assert received.registered_delivery == 1
    assert received.short_message == b"Hello from TikoSMS"


async def test_long_ucs2_message_is_concatenated_with_udh(
    carrier: SmppCarrier, simulator: SmscSimulator, sink: Any, make_part: Any
) -> None:
    chunks = ["Привіт, це перша частина ", "а це друга частина ", "і третя 🙂"]
    outcomes = [
        await carrier.submit(
            make_part(i, text=chunk, data_coding=8, part_no=i, total_parts=3, concat_ref=0xA7)
        )
        for i, chunk in enumerate(chunks, start=1)
    ]
    assert all(o.result is SubmitResult.ACCEPTED for o in outcomes)
    rebuilt = ""
    for seq, received in enumerate(simulator.submits, start=1):
        assert received.esm_class & ESM_UDHI
        assert received.data_coding == 8
        assert received.short_message[:6] == bytes((0x05, 0x00, 0x03, 0xA7, 3, seq))
        rebuilt += received.short_message[6:].decode("utf-16-be")
    assert rebuilt == "".join(chunks)
    async with asyncio.timeout(5):
        await sink.wait_for(3)
    assert set(sink.by_id()) == {o.carrier_message_id for o in outcomes}


async def test_sar_concatenation_setting(
    simulator: SmscSimulator, carrier_factory: Any, make_part: Any
) -> None:
    carrier = await carrier_factory(simulator.port, concat="sar")
    await carrier.submit(make_part(part_no=1, total_parts=2, concat_ref=0x0102))
    received = simulator.submits[0]
    assert received.esm_class & ESM_UDHI == 0
    assert received.tlvs[Tag.SAR_MSG_REF_NUM] == b"\x01\x02"
    assert received.tlvs[Tag.SAR_TOTAL_SEGMENTS] == b"\x02"
    assert received.tlvs[Tag.SAR_SEGMENT_SEQNUM] == b"\x01"


async def test_window_of_100_is_filled_and_never_exceeded(
    simulator_factory: Any, carrier_factory: Any, make_part: Any
) -> None:
    simulator = await simulator_factory(latency_ms=20)
    # a rate configured (far above what is sent): no slow start, the burst fills the window
    carrier = await carrier_factory(simulator.port, window=100, tps=KNOWN_RATE)
    outcomes = await asyncio.gather(*(carrier.submit(make_part(i)) for i in range(400)))
    assert all(o.result is SubmitResult.ACCEPTED for o in outcomes)
    assert simulator.counters.max_in_flight == 100


async def test_window_is_per_bind(
    simulator_factory: Any, carrier_factory: Any, make_part: Any
) -> None:
    simulator = await simulator_factory(latency_ms=20)
    carrier = await carrier_factory(simulator.port, window=10, binds=3, tps=KNOWN_RATE)
    await carrier.wait_state(lambda: all(s.state == "bound" for s in carrier.status()))
    outcomes = await asyncio.gather(*(carrier.submit(make_part(i)) for i in range(200)))
    assert all(o.result is SubmitResult.ACCEPTED for o in outcomes)
    assert simulator.counters.binds == 3
    assert simulator.counters.max_in_flight == 30


async def test_transmitter_receiver_mode_gets_receipts_on_the_receiver(
    simulator: SmscSimulator, carrier_factory: Any, sink: Any, make_part: Any
) -> None:
    carrier = await carrier_factory(simulator.port, bind_mode="transmitter_receiver")
    await carrier.wait_state(lambda: all(s.state == "bound" for s in carrier.status()))
    assert sorted(s.bind_type for s in carrier.status()) == ["receiver", "transmitter"]
    outcome = await carrier.submit(make_part())
    async with asyncio.timeout(5):
        await sink.wait_for(1)
    assert sink.receipts[0].carrier_message_id == outcome.carrier_message_id


async def test_rejected_destination_is_rejected_with_the_error_code(
    simulator_factory: Any, carrier_factory: Any, make_part: Any
) -> None:
    simulator = await simulator_factory(reject_ratio=1.0)
    carrier = await carrier_factory(simulator.port)
    outcome = await carrier.submit(make_part())
    assert outcome.result is SubmitResult.REJECTED
    assert outcome.error_code == "0x0000000b"


async def test_undeliverable_receipt(
    simulator_factory: Any, carrier_factory: Any, sink: Any, make_part: Any
) -> None:
    simulator = await simulator_factory(undeliv_ratio=1.0)
    carrier = await carrier_factory(simulator.port)
    await carrier.submit(make_part())
    async with asyncio.timeout(5):
        await sink.wait_for(1)
    assert sink.receipts[0].status == "UNDELIV"
    assert sink.receipts[0].error_code == "001"


async def test_throttled_parts_are_retried_then_accepted(
    simulator_factory: Any, carrier_factory: Any, sink: Any, make_part: Any, submit_until_done: Any
) -> None:
    simulator = await simulator_factory(throttle_tps=100)
    carrier = await carrier_factory(simulator.port)
    outcomes: list[SubmitOutcome] = []
    finals = await asyncio.gather(
        *(submit_until_done(carrier, make_part(i), outcomes) for i in range(250))
    )
    assert all(o.result is SubmitResult.ACCEPTED for o in finals)
    assert simulator.counters.throttled > 0
    # resubmitted inside the connector: the worker never saw a RETRY
    assert not [o for o in outcomes if o.result is SubmitResult.RETRY]
    assert carrier.bucket.rate is not None  # the carrier slowed itself down
    async with asyncio.timeout(10):
        await sink.wait_for(250)
    assert set(sink.by_id()) == {o.carrier_message_id for o in finals}


async def test_throttled_part_past_its_resubmits_is_a_short_retry(
    simulator_factory: Any, carrier_factory: Any, make_part: Any
) -> None:
    simulator = await simulator_factory(throttle_ratio=1.0)
    carrier = await carrier_factory(simulator.port, throttle_resubmits=2, throttle_pause=0.01)
    outcome = await carrier.submit(make_part())
    assert outcome.result is SubmitResult.RETRY
    assert outcome.error_code == "0x00000058"
    assert outcome.retry_after == 1.0
    assert not outcome.maybe_sent
    assert simulator.counters.throttled == 3  # the first submit and two resubmits


async def test_dropped_bind_reconnects_and_loses_nothing(
    simulator_factory: Any, carrier_factory: Any, sink: Any, make_part: Any, submit_until_done: Any
) -> None:
    simulator = await simulator_factory(latency_ms=5, drop_after=150)
    carrier = await carrier_factory(simulator.port, window=50)
    outcomes: list[SubmitOutcome] = []
    finals = await asyncio.gather(
        *(submit_until_done(carrier, make_part(i), outcomes) for i in range(400))
    )
    assert all(o.result is SubmitResult.ACCEPTED for o in finals)
    assert simulator.counters.dropped_connections >= 2
    assert simulator.counters.binds >= 3  # reconnected after each drop
    lost_with_bind = [o for o in outcomes if o.result is SubmitResult.RETRY]
    assert lost_with_bind
    assert {o.result for o in outcomes} <= {
        SubmitResult.ACCEPTED,
        SubmitResult.RETRY,
        SubmitResult.FAILOVER,  # submitted while no bind was up
    }
    assert all("bind lost" in o.detail for o in lost_with_bind)
    # only the parts awaiting a response were retried: at most a window per drop
    assert len(lost_with_bind) <= 50 * simulator.counters.dropped_connections
    ids = {o.carrier_message_id for o in finals}
    assert len(ids) == 400
    # Every submit the SMSC accepted gets its receipt, those of the lost binds included.
    async with asyncio.timeout(10):
        while len(sink.by_id()) < simulator.counters.accepted:
            await sink.wait_for(len(sink.receipts) + 1)
    assert ids <= set(sink.by_id())
    # An answer the SMSC wrote just before it cut the bind may never reach us: that submit
    # was accepted and, retried, sent twice. Such duplicates are bounded by the retries.
    extra = set(sink.by_id()) - ids
    assert len(extra) <= len(lost_with_bind)


async def test_a_state_change_just_after_the_check_is_not_missed(carrier: SmppCarrier) -> None:
    # A bind coming up between wait_state's check and its first wait used to be missed: the
    # waiter slept until the next change, forever with a steady bind (a worker stuck in
    # wait_bound with the carrier up).
    ready = False
    bind = carrier._binds[0]

    def change() -> None:
        nonlocal ready
        ready = True
        bind._set(bind.state, bind.detail)

    waiter = asyncio.ensure_future(carrier.wait_state(lambda: ready))
    asyncio.get_running_loop().call_soon(change)  # runs after the check, before the wait
    async with asyncio.timeout(2):
        await waiter


async def test_reconnects_after_the_connection_drops(
    carrier: SmppCarrier, simulator: SmscSimulator, make_part: Any
) -> None:
    await simulator.drop_connections()
    async with asyncio.timeout(5):
        await simulator.wait_for(lambda c: c.binds == 2)
        await carrier.wait_bound()
    assert (await carrier.submit(make_part())).result is SubmitResult.ACCEPTED


async def test_available_follows_the_binds_that_can_submit(
    simulator: SmscSimulator, carrier_factory: Any
) -> None:
    carrier = await carrier_factory(simulator.port, bind_mode="transmitter_receiver", binds=2)
    async with asyncio.timeout(5):
        await carrier.wait_state(lambda: all(s.state == "bound" for s in carrier.status()))
    assert carrier.available
    assert carrier._submitters == 2  # the two transmitters; receivers cannot submit
    await simulator.drop_connections()
    async with asyncio.timeout(5):
        await carrier.wait_state(lambda: carrier._submitters == 2 and carrier.available)
    await carrier.stop()
    assert not carrier.available
    assert carrier._submitters == 0


async def test_a_slot_being_closed_counts_as_unavailable_before_the_smsc_answers_its_unbind(
    simulator: SmscSimulator, carrier_factory: Any
) -> None:
    carrier = await carrier_factory(simulator.port)  # bound: slot 1 (binds=1) open
    assert carrier.available
    closing = asyncio.create_task(carrier.close_slot(1))
    await asyncio.sleep(0)  # the unbind is on its way, its unbind_resp not back yet
    assert not closing.done()
    assert not carrier.available  # a slot given up submits nothing more (slots, failover)
    await closing
    assert not carrier.available and carrier._submitters == 0


async def test_wrong_password_is_reported_as_a_refused_bind(
    simulator: SmscSimulator, carrier_factory: Any, make_part: Any
) -> None:
    carrier = await carrier_factory(simulator.port, password="wrong", wait=False)
    async with asyncio.timeout(5):
        await carrier.wait_state(lambda: carrier.status()[0].state == "refused")
    assert not carrier.available
    assert carrier.last_error.startswith(
        "bind refused by carrier testsmsc: check system_id/password"
    )
    assert "ESME_RINVPASWD" in carrier.last_error
    outcome = await carrier.submit(make_part())
    assert outcome.result is SubmitResult.FAILOVER


async def test_unreachable_carrier_is_reported_as_such(
    carrier_factory: Any, make_part: Any
) -> None:
    port = free_port()  # nobody listens there
    carrier = await carrier_factory(port, wait=False)
    async with asyncio.timeout(5):
        await carrier.wait_state(lambda: carrier.status()[0].state == "unreachable")
    assert not carrier.available
    assert f"carrier testsmsc unreachable at 127.0.0.1:{port}" in carrier.last_error
    assert (await carrier.submit(make_part())).result is SubmitResult.FAILOVER


async def test_receipt_is_acknowledged_only_after_the_handler_returns(
    carrier: SmppCarrier, simulator: SmscSimulator, sink: Any, make_part: Any
) -> None:
    sink.hold = asyncio.Event()
    await carrier.submit(make_part())
    async with asyncio.timeout(5):
        await sink.entered.wait()
    assert simulator.counters.receipts_sent == 1
    assert simulator.counters.receipts_acked == 0  # the handler has not returned yet
    sink.hold.set()
    async with asyncio.timeout(5):
        await simulator.wait_for(lambda c: c.receipts_acked == 1)


async def test_failing_receipt_handler_makes_the_smsc_deliver_again(
    carrier: SmppCarrier, simulator: SmscSimulator, sink: Any, make_part: Any
) -> None:
    sink.fail_next = 2
    outcome = await carrier.submit(make_part())
    async with asyncio.timeout(5):
        await sink.wait_for(1)
        await simulator.wait_for(lambda c: c.receipts_acked == 1)
    assert simulator.counters.receipts_failed == 2
    assert sink.receipts[0].carrier_message_id == outcome.carrier_message_id


async def test_stop_unbinds_cleanly(
    simulator: SmscSimulator, carrier_factory: Any, make_part: Any
) -> None:
    carrier = await carrier_factory(simulator.port)
    await carrier.submit(make_part())
    await carrier.stop()
    assert not carrier.available
    assert [s.state for s in carrier.status()] == ["stopped"]
    async with asyncio.timeout(5):
        await simulator.wait_for(lambda c: c.in_flight == 0)
    assert simulator.counters.dropped_connections == 0
    outcome = await carrier.submit(make_part(2))
    assert outcome.result is SubmitResult.FAILOVER


async def test_enquire_link_runs_on_the_configured_interval(
    simulator: SmscSimulator, carrier_factory: Any
) -> None:
    carrier = await carrier_factory(simulator.port, enquire_link_interval=0.01)
    async with asyncio.timeout(5):
        await simulator.wait_for(lambda c: c.enquire_links >= 3)
    assert carrier.available


async def test_unanswered_submit_comes_back_as_retry_and_its_late_answer_is_ignored(
    simulator_factory: Any, carrier_factory: Any, make_part: Any
) -> None:
    simulator = await simulator_factory(latency_ms=300)
    carrier = await carrier_factory(simulator.port, response_timeout=0.05)
    outcome = await carrier.submit(make_part())
    assert outcome.result is SubmitResult.RETRY
    assert "no response to submit_sm within 0.05 s" in outcome.detail
    async with asyncio.timeout(5):  # the answer comes after all: dropped, the bind stays up
        await simulator.wait_for(lambda c: c.in_flight == 0)
    assert carrier.available
    assert carrier.status()[0].in_flight == 0
