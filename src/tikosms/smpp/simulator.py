"""An SMSC simulator: a real SMPP 3.4 server over TCP, for tests, benchmarks and trying out.

It answers binds (checking system_id/password when configured), submit_sm (optionally
`latency_ms` late, while it goes on reading: many submit_sm can be in flight), enquire_link and
unbind, and sends each accepted part's receipt as a deliver_sm in the standard text with the
receipted_message_id, message_state and network_error_code TLVs. A receipt answered with an
error status, or not answered because the connection ended, is sent again (to any receiver
bind of the same system_id) after `receipt_retry_ms`, as an SMSC does: none is lost.

Fault injection: `reject_ratio` answers ESME_RINVDSTADR; `throttle_tps` answers ESME_RTHROTTLED
above that many submit_sm per second per system_id (across its binds), counted as `rate_window`
says (a fixed second, a sliding second, or a token bucket); `throttle_ratio` answers
ESME_RTHROTTLED to that share of submit_sm whatever the rate; `no_id_ratio`, `nack_ratio`,
`nack_ok_ratio`, `silent_ratio`, `stray_ratio` give no usable answer (see SimulatorConfig);
`long_id` and `long_receipt_fields` make over-long message ids and receipt fields;
`drop_after` aborts a connection on its N-th submit_sm
(that one and the others awaiting their response are dropped unanswered and never delivered).

Counters (`SimulatorCounters`, printed by `tikosms smsc-sim` and served at its control port's
`GET /counters`) include the binds up at once (`bound`, `max_bound`) and the most submit_sm
received within any one sliding second (`max_submits_per_second`): what a carrier's limits on
binds and rate see.

Built on smpp34's codec for submit_sm / deliver_sm, not on `smpp34.Server`: that server
accepts any password and cannot drop a connection, which the simulator must do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import smpp34

from tikosms.smpp.dlr import STATE_CODES
from tikosms.smpp.mo import MoPart, build_mo_parts
from tikosms.smpp.pdu import (
    BIND_COMMANDS,
    ESM_SMSC_RECEIPT,
    ESM_UDHI,
    HEADER_SIZE,
    MAX_PDU_SIZE,
    RESPONSE_BIT,
    BindRequest,
    Command,
    Header,
    Status,
    Tag,
    c_string,
    encode_pdu,
    parse_header,
)
from tikosms.text import decode_part

log = logging.getLogger(__name__)

RATE_WINDOWS = ("fixed", "sliding", "bucket")  # how SimulatorConfig.throttle_tps is counted


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 2775  # 0: any free port (see SmscSimulator.port)
    system_id: str | None = None  # None: any system_id binds
    password: str | None = None  # None: any password
    latency_ms: float = 0.0  # delay of each submit_sm_resp
    receipt_delay_ms: float = 0.0  # from submit_sm_resp to the receipt's deliver_sm
    undeliv_ratio: float = 0.0  # share of accepted parts whose receipt says UNDELIV
    reject_ratio: float = 0.0  # share of submit_sm answered ESME_RINVDSTADR
    # above this many submit_sm a second per system_id (across its binds): ESME_RTHROTTLED
    throttle_tps: float | None = None
    # how throttle_tps is counted: "fixed" (a count reset one second after the first submit_sm
    # it counts), "sliding" (at most throttle_tps accepted in any second), "bucket" (a token
    # bucket of throttle_tps a second holding rate_burst tokens)
    rate_window: str = "fixed"
    rate_burst: float | None = None  # "bucket": tokens it holds; None: a tenth of a second's
    throttle_ratio: float = 0.0  # share of submit_sm answered ESME_RTHROTTLED whatever the rate
    # Fault modes for "no usable answer" (each a share of submit_sm):
    no_id_ratio: float = 0.0  # submit_sm_resp ROK without a message_id (the part is taken)
    nack_ratio: float = 0.0  # generic_nack ESME_RSYSERR instead of submit_sm_resp
    nack_ok_ratio: float = 0.0  # generic_nack with command_status 0
    silent_ratio: float = 0.0  # no response at all (the part is taken)
    stray_ratio: float = 0.0  # before the real answer, a submit_sm_resp to a sequence never sent
    long_id: int = 0  # >0: message ids this many characters long
    long_receipt_fields: int = 0  # >0: receipt err:/stat: this many characters long
    drop_after: int | None = None  # abort each connection on its N-th submit_sm
    receipt_retry_ms: float = 1000.0  # resend delay of a receipt not acknowledged
    response_timeout: float = 10.0  # seconds to wait for a deliver_sm_resp
    smsc_id: str = "TIKOSIM"
    seed: int | None = None  # for reproducible reject/undeliv draws
    record_submits: bool = True  # keep every submit_sm in `submits` (tests)


@dataclass
class SimulatorCounters:
    binds: int = 0
    bind_failures: int = 0
    submits: int = 0  # submit_sm received
    accepted: int = 0
    rejected: int = 0
    throttled: int = 0
    dropped_connections: int = 0
    dropped_submits: int = 0  # received, never answered (connection dropped)
    faults: int = 0  # submit_sm answered with a fault mode (no id, nack, silent, stray)
    receipts_sent: int = 0  # deliver_sm sent (resends included)
    receipts_acked: int = 0
    receipts_failed: int = 0  # answered with an error, or never answered
    enquire_links: int = 0  # enquire_link received
    in_flight: int = 0  # submit_sm received, response not yet sent
    max_in_flight: int = 0
    mo_sent: int = 0  # mobile-originated deliver_sm sent (parts, resends included)
    mo_acked: int = 0  # ...and acknowledged with ESME_ROK
    # the most submit_sm accepted within any one second (sliding), all binds together: what a
    # carrier checks against the rate agreed for the account
    max_accepted_per_second: int = 0
    bound: int = 0  # connections bound now (all system_ids)
    max_bound: int = 0  # ... the most at any moment
    # the most submit_sm received within any one second (a sliding second, all binds)
    max_submits_per_second: int = 0


@dataclass(frozen=True, slots=True)
class ReceivedSubmit:
    """A submit_sm as the simulator received it (kept when record_submits is on)."""

    system_id: str
    sequence_number: int
    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    esm_class: int
    data_coding: int
    registered_delivery: int
    validity_period: str
    short_message: bytes
    tlvs: dict[int, bytes] = field(default_factory=dict)
    message_id: str | None = None  # None: rejected, throttled or dropped


@dataclass(slots=True)
class _PendingReceipt:
    system_id: str
    message_id: str
    source_addr: str  # the part's destination
    destination_addr: str  # the part's sender
    state: str
    submitted_at: datetime
    text: str


class SmscSimulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.counters = SimulatorCounters()
        self.submits: list[ReceivedSubmit] = []
        self._rng = random.Random(self.config.seed)
        self._ids = itertools.count(self._rng.randrange(0x1000_0000, 0x4000_0000))
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._receipt_tasks: set[asyncio.Task[None]] = set()
        self._outstanding = 0  # receipts sent without a task, awaiting their deliver_sm_resp
        self._stopping = False
        self._changed = asyncio.Event()
        if self.config.rate_window not in RATE_WINDOWS:
            raise ValueError(f"rate_window must be one of {', '.join(RATE_WINDOWS)}")
        # per system_id: (start of the current second, submit_sm counted in it)
        self._throttle_windows: dict[str, tuple[float, int]] = {}
        self._throttle_logs: dict[str, collections.deque[float]] = {}  # "sliding"
        self._throttle_buckets: dict[str, tuple[float, float]] = {}  # "bucket": (time, tokens)
        self._accepted_times: collections.deque[float] = collections.deque()  # the last second
        self._port = self.config.port
        self._recent_submits: collections.deque[float] = collections.deque()  # the last second

    @property
    def port(self) -> int:
        """The port listened on (the one picked by the OS when configured as 0)."""
        return self._port

    @property
    def receipts_pending(self) -> int:
        return len(self._receipt_tasks) + self._outstanding

    async def start(self) -> None:
        self._stopping = False
        self._server = await asyncio.start_server(self._serve, self.config.host, self.config.port)
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("smsc simulator listening host=%s port=%s", self.config.host, self._port)

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        for task in self._receipt_tasks:
            task.cancel()
        await asyncio.gather(*self._receipt_tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, predicate: Callable[[SimulatorCounters], bool]) -> None:
        """Wait until predicate(counters) holds (wrap in asyncio.timeout in tests)."""
        while not predicate(self.counters):
            await self._changed.wait()

    async def drop_connections(self) -> None:
        """Abort every connection now (a fault to inject from a test)."""
        for connection in list(self._connections):
            connection.abort()
        self.counters.dropped_connections += len(self._connections)
        self._notify()

    async def send_mo(self, source: str, destination: str, text: str, *,
                      data_coding: int | None = None, concat: str = "udh8",
                      order: str = "in-order", part_octets: int | None = None,
                      system_id: str | None = None, ref: int | None = None,
                      only: Sequence[int] | None = None) -> int:
        """Send a mobile-originated message (a handset `source` writing to `destination`) to a
        receiver bind of `system_id` (any bound receiver when None), cut in parts when long,
        sent in `order` (in-order, reverse, shuffle). Each part is sent again after
        `receipt_retry_ms` until acknowledged with ROK. `only` sends just those part numbers
        (with a fixed `ref`, a later call sends the others: a gap, or a gateway restart
        between parts). Returns the number of parts sent."""
        parts = build_mo_parts(
            text, data_coding, concat=concat, order=order, part_octets=part_octets,
            ref=self._rng.randrange(0x10000) if ref is None else ref,
            seed=self._rng.randrange(1 << 30))
        if only is not None:
            parts = [p for p in parts if p.seq in only]
        for part in parts:  # one after the other: the order chosen is the order on the wire
            def encode(sequence: int, part: MoPart = part) -> bytes:
                return smpp34.DeliverSm(
                    source, destination, part.short_message, esm_class=part.esm_class,
                    data_coding=part.data_coding, source_addr_ton=1, source_addr_npi=1,
                    tlvs=[smpp34.Tlv(tag, value) for tag, value in part.tlvs],
                    sequence_number=sequence).encode()

            while True:
                connection = await self._mo_receiver(system_id)
                status = await connection.send_deliver(encode)
                self.counters.mo_sent += 1
                if status == Status.ESME_ROK:
                    self.counters.mo_acked += 1
                    self._notify()
                    break
                self._notify()
                await asyncio.sleep(self.config.receipt_retry_ms / 1000)
        return len(parts)

    async def _mo_receiver(self, system_id: str | None) -> _Connection:
        while True:
            candidates = [c for c in self._connections if c.can_receive
                          and (system_id is None or c.system_id == system_id)]
            if candidates:
                return min(candidates, key=lambda c: len(c.pending))
            await self._changed.wait()

    # -- connections ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            connection.lost()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _check_bind(self, bind: BindRequest) -> int:
        if self.config.system_id is not None and bind.system_id != self.config.system_id:
            return Status.ESME_RBINDFAIL
        if self.config.password is not None and bind.password != self.config.password:
            return Status.ESME_RINVPASWD
        return Status.ESME_ROK

    def _decide(self, now: float, system_id: str = "") -> int:
        """The command_status for the next submit_sm: throttle, reject, or accept."""
        tps = self.config.throttle_tps
        if tps is not None and not self._within_rate(now, system_id, tps):
            return Status.ESME_RTHROTTLED
        if self.config.throttle_ratio and self._rng.random() < self.config.throttle_ratio:
            return Status.ESME_RTHROTTLED
        if self.config.reject_ratio and self._rng.random() < self.config.reject_ratio:
            return Status.ESME_RINVDSTADR
        return Status.ESME_ROK

    def _within_rate(self, now: float, system_id: str, tps: float) -> bool:
        """Count one submit_sm against the rate limit; False: above it (not counted)."""
        window = self.config.rate_window
        if window == "sliding":
            accepted = self._throttle_logs.setdefault(system_id, collections.deque())
            while accepted and now - accepted[0] >= 1.0:
                accepted.popleft()
            if len(accepted) >= tps:
                return False
            accepted.append(now)
            return True
        if window == "bucket":
            capacity = self.config.rate_burst or max(1.0, tps / 10)
            updated, tokens = self._throttle_buckets.get(system_id, (now, capacity))
            tokens = min(capacity, tokens + (now - updated) * tps)
            if tokens < 1.0:
                self._throttle_buckets[system_id] = (now, tokens)
                return False
            self._throttle_buckets[system_id] = (now, tokens - 1.0)
            return True
        start, count = self._throttle_windows.get(system_id, (0.0, 0))
        if now - start >= 1.0:
            start, count = now, 0
        if count >= tps:
            return False
        self._throttle_windows[system_id] = (start, count + 1)
        return True

    def _count_accepted(self) -> None:
        now = time.monotonic()
        times = self._accepted_times
        times.append(now)
        while now - times[0] >= 1.0:
            times.popleft()
        if len(times) > self.counters.max_accepted_per_second:
            self.counters.max_accepted_per_second = len(times)

    def _count_rate(self, now: float) -> None:
        recent = self._recent_submits
        recent.append(now)
        while now - recent[0] >= 1.0:
            recent.popleft()
        self.counters.max_submits_per_second = max(self.counters.max_submits_per_second,
                                                   len(recent))

    def _new_message_id(self) -> str:
        message_id = f"{next(self._ids):x}"
        if self.config.long_id > len(message_id):
            message_id = message_id.rjust(self.config.long_id, "0")
        return message_id

    def _fault(self) -> str | None:
        """A fault mode drawn for the next submit_sm (None: answer normally)."""
        config = self.config
        for name, ratio in (
            ("no_id", config.no_id_ratio),
            ("nack", config.nack_ratio),
            ("nack_ok", config.nack_ok_ratio),
            ("silent", config.silent_ratio),
            ("stray", config.stray_ratio),
        ):
            if ratio and self._rng.random() < ratio:
                return name
        return None

    def _schedule_receipt(self, receipt: _PendingReceipt) -> None:
        if self.config.receipt_delay_ms <= 0:
            # at once, without a task per receipt (the common case in benchmarks): a task only
            # if it must wait for a receiver or be delivered again
            connection = self._receiver_now(receipt.system_id)
            if connection is not None:
                future = connection.send_receipt_nowait(receipt)
                self._outstanding += 1
                future.add_done_callback(lambda f: self._receipt_answered(receipt, f))
                return
        self._spawn_delivery(receipt)

    def _receipt_answered(self, receipt: _PendingReceipt, future: asyncio.Future[int]) -> None:
        self._outstanding -= 1
        if not future.cancelled() and future.result() == Status.ESME_ROK:
            self.counters.receipts_acked += 1
            self._notify()
            return
        self.counters.receipts_failed += 1
        self._notify()
        if not self._stopping:
            self._spawn_delivery(receipt, retry=True)

    def _spawn_delivery(self, receipt: _PendingReceipt, retry: bool = False) -> None:
        task = asyncio.ensure_future(self._deliver_receipt(receipt, retry))
        self._receipt_tasks.add(task)
        task.add_done_callback(self._receipt_tasks.discard)

    def _receiver_now(self, system_id: str) -> _Connection | None:
        candidates = [c for c in self._connections if c.can_receive and c.system_id == system_id]
        return min(candidates, key=lambda c: len(c.pending)) if candidates else None

    async def _deliver_receipt(self, receipt: _PendingReceipt, retry: bool = False) -> None:
        if retry:
            await asyncio.sleep(self.config.receipt_retry_ms / 1000)  # an SMSC's resend timer
        elif self.config.receipt_delay_ms > 0:
            await asyncio.sleep(self.config.receipt_delay_ms / 1000)  # the simulated network
        while True:
            connection = await self._receiver_for(receipt.system_id)
            status = await connection.send_receipt(receipt)
            if status == Status.ESME_ROK:
                self.counters.receipts_acked += 1
                self._notify()
                return
            self.counters.receipts_failed += 1
            self._notify()
            await asyncio.sleep(self.config.receipt_retry_ms / 1000)  # an SMSC's resend timer

    async def _receiver_for(self, system_id: str) -> _Connection:
        while True:
            candidates = [
                c for c in self._connections if c.can_receive and c.system_id == system_id
            ]
            if candidates:
                return min(candidates, key=lambda c: len(c.pending))
            await self._changed.wait()


class _Connection:
    def __init__(
        self, sim: SmscSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.system_id = ""
        self.bind_command: int | None = None
        self.submit_count = 0
        self.closed = False
        self.counted_bound = False  # counted in counters.bound
        self.pending: dict[int, asyncio.Future[int]] = {}  # our deliver_sm awaiting resp
        self.unanswered: set[int] = set()  # their submit_sm awaiting our resp
        self._sequence = itertools.count(1)
        self._out: list[bytes] = []  # PDUs for the next write

    @property
    def can_receive(self) -> bool:
        return not self.closed and self.bind_command in (
            Command.BIND_TRANSCEIVER,
            Command.BIND_RECEIVER,
        )

    @property
    def can_submit(self) -> bool:
        return self.bind_command in (Command.BIND_TRANSCEIVER, Command.BIND_TRANSMITTER)

    async def run(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError):
            while not self.closed:
                raw_header = await self.reader.readexactly(HEADER_SIZE)
                header = parse_header(raw_header)
                if not HEADER_SIZE <= header.command_length <= MAX_PDU_SIZE:
                    return
                body = await self.reader.readexactly(header.command_length - HEADER_SIZE)
                self._dispatch(header, raw_header + body, body)

    def abort(self) -> None:
        if not self.closed:
            self.writer.transport.abort()
        self.lost()

    def lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.counted_bound:
            self.counted_bound = False
            self.sim.counters.bound -= 1
        out, self._out = self._out, []
        if out and not self.writer.transport.is_closing():  # e.g. an unbind_resp: sent first
            self.writer.write(b"".join(out))
        self.writer.close()
        counters = self.sim.counters
        counters.dropped_submits += len(self.unanswered)
        counters.in_flight -= len(self.unanswered)
        self.unanswered.clear()
        for future in self.pending.values():
            if not future.done():
                future.set_result(-1)
        self.pending.clear()

    def send(self, command: int, sequence: int, body: bytes = b"", status: int = 0) -> None:
        self.send_raw(encode_pdu(command, sequence, body, status))

    def send_raw(self, pdu: bytes) -> None:
        """PDUs queued in one turn of the event loop go out in one write (one system call)."""
        if self.closed:
            return
        self._out.append(pdu)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.closed:
            self.writer.write(b"".join(out))

    def _dispatch(self, header: Header, raw: bytes, body: bytes) -> None:
        command = header.command_id
        sequence = header.sequence_number
        if command & RESPONSE_BIT:
            future = self.pending.pop(sequence, None)
            if future is not None and not future.done():
                future.set_result(header.command_status)
        elif command in BIND_COMMANDS:
            self._bind(command, sequence, body)
        elif command == Command.SUBMIT_SM:
            self._submit(sequence, raw)
        elif command == Command.ENQUIRE_LINK:
            self.sim.counters.enquire_links += 1
            self.send(Command.ENQUIRE_LINK_RESP, sequence)
            self.sim._notify()
        elif command == Command.UNBIND:
            self.send(Command.UNBIND_RESP, sequence)
            self.bind_command = None
            self.lost()
        else:
            self.send(Command.GENERIC_NACK, sequence, status=Status.ESME_RINVCMDID)

    def _bind(self, command: int, sequence: int, body: bytes) -> None:
        sim = self.sim
        response = command | RESPONSE_BIT
        if self.bind_command is not None:
            self.send(response, sequence, status=Status.ESME_RALYBND)
            return
        bind = BindRequest.decode_body(body)
        status = sim._check_bind(bind)
        if status != Status.ESME_ROK:
            sim.counters.bind_failures += 1
            log.info("smsc simulator bind refused system_id=%s status=%#x", bind.system_id, status)
            self.send(response, sequence, status=status)
            sim._notify()
            return
        self.system_id = bind.system_id
        self.bind_command = command
        self.counted_bound = True
        sim.counters.binds += 1
        sim.counters.bound += 1
        sim.counters.max_bound = max(sim.counters.max_bound, sim.counters.bound)
        self.send(response, sequence, c_string(sim.config.smsc_id))
        sim._notify()

    def _submit(self, sequence: int, raw: bytes) -> None:
        sim = self.sim
        counters = sim.counters
        if not self.can_submit:
            self.send(Command.SUBMIT_SM_RESP, sequence, status=Status.ESME_RINVBNDSTS)
            return
        try:
            pdu = smpp34.decode(raw)
        except smpp34.SmppError:
            self.send(Command.SUBMIT_SM_RESP, sequence, status=Status.ESME_RSYSERR)
            return
        assert isinstance(pdu, smpp34.SubmitSm)
        counters.submits += 1
        self.submit_count += 1
        sim._count_rate(asyncio.get_running_loop().time())
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        self.unanswered.add(sequence)
        loop = asyncio.get_running_loop()
        if sim.config.drop_after is not None and self.submit_count >= sim.config.drop_after:
            counters.dropped_connections += 1
            log.info("smsc simulator dropping connection after %d submit_sm", self.submit_count)
            self.abort()
            sim._notify()
            return
        status = sim._decide(loop.time(), self.system_id)
        fault = sim._fault() if status == Status.ESME_ROK else None
        if fault is not None:
            self._answer_fault(fault, sequence, pdu)
            return
        message_id = sim._new_message_id() if status == Status.ESME_ROK else None
        if sim.config.record_submits:
            sim.submits.append(_received(self.system_id, sequence, pdu, message_id))
        if sim.config.latency_ms > 0:
            # The simulated round trip; a dropped connection leaves the answer unsent.
            loop.call_later(
                sim.config.latency_ms / 1000, self._respond, sequence, status, message_id, pdu
            )
        else:
            self._respond(sequence, status, message_id, pdu)

    def _answer_fault(self, fault: str, sequence: int, pdu: smpp34.SubmitSm) -> None:
        """Answer a submit_sm with no usable answer (fault injection)."""
        sim = self.sim
        sim.counters.faults += 1
        if sim.config.record_submits:
            sim.submits.append(_received(self.system_id, sequence, pdu, None))
        if fault == "silent":  # taken, never answered: stays in `unanswered`
            sim._notify()
            return
        self.unanswered.discard(sequence)
        sim.counters.in_flight -= 1
        if fault == "no_id":
            sim.counters.accepted += 1
            self.send(Command.SUBMIT_SM_RESP, sequence, b"\x00")
        elif fault == "nack":
            self.send(Command.GENERIC_NACK, sequence, status=Status.ESME_RSYSERR)
        elif fault == "nack_ok":
            self.send(Command.GENERIC_NACK, sequence, status=Status.ESME_ROK)
        else:  # stray: a response to a sequence never sent, then the real answer
            self.send(Command.SUBMIT_SM_RESP, (sequence + 0x3FFF_0000) & 0x7FFF_FFFF,
                      c_string("stray"))
            self.unanswered.add(sequence)
            sim.counters.in_flight += 1
            self._respond(sequence, Status.ESME_ROK, sim._new_message_id(), pdu)
            return
        sim._notify()

    def _respond(
        self, sequence: int, status: int, message_id: str | None, pdu: smpp34.SubmitSm
    ) -> None:
        sim = self.sim
        counters = sim.counters
        if self.closed or sequence not in self.unanswered:
            return  # dropped with its connection: never answered, never delivered
        self.unanswered.discard(sequence)
        counters.in_flight -= 1
        if status == Status.ESME_ROK and message_id is not None:
            counters.accepted += 1
            sim._count_accepted()
            self.send(Command.SUBMIT_SM_RESP, sequence, c_string(message_id))
            undeliv = (
                bool(sim.config.undeliv_ratio) and sim._rng.random() < sim.config.undeliv_ratio
            )
            wanted = pdu.registered_delivery & 0x03
            if wanted == 1 or (wanted == 2 and undeliv):
                sim._schedule_receipt(
                    _PendingReceipt(
                        system_id=self.system_id,
                        message_id=message_id,
                        source_addr=pdu.destination_addr,
                        destination_addr=pdu.source_addr,
                        state="UNDELIV" if undeliv else "DELIVRD",
                        submitted_at=datetime.now(UTC),
                        text=_preview(pdu),
                    )
                )
        else:
            if status == Status.ESME_RTHROTTLED:
                counters.throttled += 1
            else:
                counters.rejected += 1
            # No body with an error status (SMPP 3.4, 4.4.2)
            self.send(Command.SUBMIT_SM_RESP, sequence, status=status)
        sim._notify()

    def _receipt_pdu(self, receipt: _PendingReceipt, sequence: int) -> bytes:
        done_at = datetime.now(UTC)
        delivered = receipt.state == "DELIVRD"
        error = 0 if delivered else 1  # GSM "unknown subscriber"
        stat, err = receipt.state, f"{error:03d}"
        long_fields = self.sim.config.long_receipt_fields
        if long_fields > 0:  # over-long, garbage fields (fault injection)
            stat = (stat + "X" * long_fields)[:long_fields]
            err = ("9" * long_fields)[:long_fields]
        text = (
            f"id:{receipt.message_id} sub:001 dlvrd:{'001' if delivered else '000'} "
            f"submit date:{receipt.submitted_at:%y%m%d%H%M} done date:{done_at:%y%m%d%H%M} "
            f"stat:{stat} err:{err} text:{receipt.text}"
        )
        return smpp34.DeliverSm(
            receipt.source_addr,
            receipt.destination_addr,
            text.encode("ascii", errors="replace"),
            esm_class=ESM_SMSC_RECEIPT,
            source_addr_ton=1,
            source_addr_npi=1,
            tlvs=[
                smpp34.Tlv(Tag.RECEIPTED_MESSAGE_ID, c_string(receipt.message_id)),
                smpp34.Tlv(Tag.MESSAGE_STATE, bytes((STATE_CODES[receipt.state],))),
                # network_type 3 (GSM), then the 2-octet error code
                smpp34.Tlv(Tag.NETWORK_ERROR_CODE, bytes((3,)) + error.to_bytes(2, "big")),
            ],
            sequence_number=sequence,
        ).encode()

    def send_receipt_nowait(self, receipt: _PendingReceipt) -> asyncio.Future[int]:
        """Send one receipt; a future of its deliver_sm_resp status (-1: connection lost or
        no answer within the response timeout)."""
        sequence = next(self._sequence)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[sequence] = future
        self.send_raw(self._receipt_pdu(receipt, sequence))
        self.sim.counters.receipts_sent += 1
        timer = asyncio.get_running_loop().call_later(
            self.sim.config.response_timeout, self._unanswered_receipt, sequence)
        future.add_done_callback(lambda _f: timer.cancel())
        return future

    def _unanswered_receipt(self, sequence: int) -> None:
        future = self.pending.pop(sequence, None)
        if future is not None and not future.done():
            future.set_result(-1)

    async def send_deliver(self, encode: Callable[[int], bytes]) -> int:
        """Send a deliver_sm (an MO) encoded for its sequence number; its deliver_sm_resp
        status (-1: connection lost or no answer)."""
        sequence = next(self._sequence)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[sequence] = future
        self.send_raw(encode(sequence))
        try:
            return await asyncio.wait_for(future, self.sim.config.response_timeout)
        except TimeoutError:
            self.pending.pop(sequence, None)
            return -1

    async def send_receipt(self, receipt: _PendingReceipt) -> int:
        """Send one receipt; its deliver_sm_resp status (-1: connection lost or no answer)."""
        sequence = next(self._sequence)
        pdu = self._receipt_pdu(receipt, sequence)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[sequence] = future
        self.send_raw(pdu)
        self.sim.counters.receipts_sent += 1
        try:
            return await asyncio.wait_for(future, self.sim.config.response_timeout)
        except TimeoutError:
            self.pending.pop(sequence, None)
            return -1


def _received(
    system_id: str, sequence: int, pdu: smpp34.SubmitSm, message_id: str | None
) -> ReceivedSubmit:
    return ReceivedSubmit(
        system_id=system_id,
        sequence_number=sequence,
        source_addr=pdu.source_addr,
        source_addr_ton=pdu.source_addr_ton,
        source_addr_npi=pdu.source_addr_npi,
        destination_addr=pdu.destination_addr,
        dest_addr_ton=pdu.dest_addr_ton,
        dest_addr_npi=pdu.dest_addr_npi,
        esm_class=pdu.esm_class,
        data_coding=pdu.data_coding,
        registered_delivery=pdu.registered_delivery,
        validity_period=pdu.validity_period,
        short_message=pdu.short_message,
        tlvs={tlv.tag: tlv.value for tlv in pdu.tlvs},
        message_id=message_id,
    )


def _preview(pdu: smpp34.SubmitSm) -> str:
    """The first 20 characters of the part for the receipt's text: field (UDH skipped)."""
    data = pdu.short_message
    if pdu.esm_class & ESM_UDHI and data:
        data = data[data[0] + 1 :]
    try:
        text = decode_part(data, pdu.data_coding)
    except ValueError:  # not GSM-7 or UCS-2: show it as latin-1
        text = data.decode("latin-1")
    return "".join(c if 32 <= ord(c) < 127 else "." for c in text[:20])
