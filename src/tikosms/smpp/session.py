"""One SMPP 3.4 client connection (ESME side): bind, submit_sm with a window, receipts, unbind.

This is the only place the connector touches the wire, so that the SMPP library can be replaced
behind it. It uses smpp34 (pinned) for what is hard to get right: the submit_sm and deliver_sm
codec with TLVs. It does not use smpp34's `Client`, because that client acknowledges every
deliver_sm itself, before the application sees it, and a receipt must be acknowledged only once
it is durably recorded (`tikosms.delivery.carrier.ReceiptHandler`). Owning the session also
closes smpp34's other gaps: the window is a real semaphore, a refused bind is told apart from a
timeout, and enquire_link runs on our interval.

Errors (all `SessionError`):
- `Unreachable`: the TCP connect failed (carrier down, wrong host/port, firewall).
- `BindRefused`: the SMSC answered the bind with an error status, or closed the connection
  instead of answering (some SMSCs do that for a wrong password).
- `BindTimeout`: connected, but no bind_resp in time.
- `SessionLost`: the connection ended. `sent` tells whether the submit_sm had gone out (its
  outcome is then unknown: resubmitting it may duplicate the SMS).
- `ResponseTimeout`: no submit_sm_resp in time (outcome unknown, as above).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import smpp34

from tikosms.smpp.pdu import (
    HEADER_SIZE,
    MAX_PDU_SIZE,
    MAX_SEQUENCE,
    RESPONSE_BIT,
    BindRequest,
    Command,
    Header,
    Status,
    encode_pdu,
    parse_header,
    read_c_string,
    status_name,
)
from tikosms.smpp.submit import SubmitFields

log = logging.getLogger(__name__)

BindType = Literal["transceiver", "transmitter", "receiver"]

_BIND_COMMAND: dict[str, Command] = {
    "transceiver": Command.BIND_TRANSCEIVER,
    "transmitter": Command.BIND_TRANSMITTER,
    "receiver": Command.BIND_RECEIVER,
}

DeliverHandler = Callable[["DeliverSm"], Awaitable[int]]
"""Called for each deliver_sm; returns the command_status of its deliver_sm_resp, which is
sent only once the handler has returned."""


class SessionError(Exception):
    """Base of the session's errors."""


class Unreachable(SessionError):
    pass


class BindRefused(SessionError):
    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status  # None: the SMSC closed the connection instead of answering


class BindTimeout(SessionError):
    pass


class SessionLost(SessionError):
    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class ResponseTimeout(SessionError):
    pass


@dataclass(frozen=True, slots=True)
class SubmitResponse:
    command_status: int
    message_id: str | None
    nack: bool = False  # a generic_nack came instead of a submit_sm_resp


@dataclass(frozen=True, slots=True)
class DeliverSm:
    """An inbound deliver_sm, decoded, with its TLVs as a tag -> value mapping."""

    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]


_Response = tuple[Header, bytes]


class SmppSession:
    """A bound ESME connection. `await open()`, then `submit()`; `unbind()` to finish.

    At most `window` submit_sm await their response at once; further submits wait in a queue
    and the next one goes out as soon as a response frees its slot, in the same turn of the
    event loop that read the response (the window stays full: with an SMSC that answers after
    20 ms, the window, not the loop's turns, bounds the rate).
    """

    def __init__(
        self,
        host: str,
        port: int,
        bind: BindRequest,
        bind_type: BindType = "transceiver",
        *,
        window: int = 100,
        response_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        enquire_link_interval: float = 30.0,
        on_deliver: DeliverHandler | None = None,
        on_lost: Callable[[str], None] | None = None,
        label: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.bind_type = bind_type
        self.label = label or f"{host}:{port}"
        self._bind = bind
        self._window = window
        # submit_sm waiting for a slot, and those sent: sequence -> (future, response timer)
        self._queue: collections.deque[tuple[SubmitFields, asyncio.Future[_Response]]] = (
            collections.deque())
        self._submits: dict[int, tuple[asyncio.Future[_Response], asyncio.TimerHandle]] = {}
        self._response_timeout = response_timeout
        self._connect_timeout = connect_timeout
        self._enquire_link_interval = enquire_link_interval
        self._on_deliver = on_deliver
        self._on_lost = on_lost  # called with the reason as the connection ends (synchronously)
        self._sequence = itertools.count(1)
        self._pending: dict[int, asyncio.Future[_Response]] = {}
        self.stray_responses = 0  # responses to a sequence number not awaited (ignored)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._out: list[bytes] = []  # PDUs for the next write (see _write)
        self._unsent: set[int] = set()  # sequences of submit_sm still in _out, not yet written
        self._tasks: set[asyncio.Task[None]] = set()
        self._keepalive: asyncio.Task[None] | None = None  # the enquire_link loop
        self._deliveries: set[asyncio.Task[None]] = set()
        self._bound = False
        self._closing = False
        self._closed = asyncio.Event()
        self.close_reason = ""
        self._unbinding = False

    # -- state --------------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        return self._bound and not self._closing

    @property
    def can_submit(self) -> bool:
        return self.bound and self.bind_type != "receiver"

    @property
    def in_flight(self) -> int:
        """submit_sm sent and awaiting their response (other requests included)."""
        return len(self._pending) + len(self._submits)

    @property
    def load(self) -> int:
        """In flight plus waiting for a window slot: what least-loaded selection compares."""
        return self.in_flight + len(self._queue)

    async def wait_closed(self) -> str:
        """Wait until the connection has ended; returns why."""
        await self._closed.wait()
        return self.close_reason

    # -- bind ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bind; raises Unreachable, BindRefused or BindTimeout."""
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self._connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            self._closed.set()
            raise Unreachable(f"{self.host}:{self.port} unreachable: {exc or 'timed out'}") from exc
        self._spawn(self._read_loop())
        command = _BIND_COMMAND[self.bind_type]
        try:
            header, body = await self._request(command, self._bind.encode_body())
        except SessionLost as exc:
            raise BindRefused(
                f"connection closed by the SMSC instead of a bind_resp ({exc})", None
            ) from exc
        except ResponseTimeout as exc:
            await self.close("bind timed out")
            raise BindTimeout(f"no bind_resp within {self._response_timeout:g} s") from exc
        if header.command_id == Command.GENERIC_NACK:
            # A generic_nack is never a bind, whatever its status (0 included).
            await self.close("bind answered with generic_nack")
            raise BindRefused(
                f"bind answered with generic_nack: {status_name(header.command_status)}",
                header.command_status,
            )
        if header.command_status != Status.ESME_ROK:
            await self.close("bind refused")
            raise BindRefused(
                f"bind refused: {status_name(header.command_status)}", header.command_status
            )
        smsc_id, _ = read_c_string(body)
        self._bound = True
        log.info("smpp bound session=%s bind_type=%s smsc=%s", self.label, self.bind_type, smsc_id)
        if self._enquire_link_interval > 0:
            self._keepalive = self._spawn(self._enquire_link_loop())

    # -- submit -------------------------------------------------------------------------------

    async def submit(self, fields: SubmitFields) -> SubmitResponse:
        """Send one submit_sm and await its response (waits first for a window slot)."""
        if not self.can_submit:
            raise SessionLost(f"session {self.label} is not bound to submit", sent=False)
        future: asyncio.Future[_Response] = asyncio.get_running_loop().create_future()
        self._queue.append((fields, future))
        self._pump()
        header, body = await future
        if header.command_id != Command.SUBMIT_SM_RESP:
            return SubmitResponse(header.command_status, None, nack=True)
        message_id = read_c_string(body)[0] if body else None
        return SubmitResponse(header.command_status, message_id or None)

    def _pump(self) -> None:
        """Send queued submit_sm while the window has room (called as a slot frees)."""
        if not self._queue or len(self._submits) >= self._window:
            return
        if not self.can_submit or self._writer is None:
            self._fail_queued(f"session {self.label} ended before sending")
            return
        loop = asyncio.get_running_loop()
        while self._queue and len(self._submits) < self._window:
            fields, future = self._queue.popleft()
            if future.done():
                continue  # its caller gave up (cancelled) before it was sent
            sequence = self._next_sequence()
            try:
                pdu = _encode_submit(fields, sequence)
            except Exception as exc:  # the caller's error, not the session's
                future.set_exception(exc)
                continue
            # one timer per request rather than asyncio.wait_for (a waiter future, a callback
            # and a timer per request: a few percent of the worker's CPU)
            timer = loop.call_later(self._response_timeout, self._expire_submit, sequence)
            self._submits[sequence] = (future, timer)
            self._unsent.add(sequence)
            self._write(pdu)

    def _fail_queued(self, why: str) -> None:
        queued, self._queue = self._queue, collections.deque()
        for _fields, future in queued:
            if not future.done():
                future.set_exception(SessionLost(why, sent=False))

    def _expire_submit(self, sequence: int) -> None:
        entry = self._submits.pop(sequence, None)
        if entry is not None:
            if not entry[0].done():
                entry[0].set_exception(ResponseTimeout(
                    f"no response to submit_sm within {self._response_timeout:g} s"))
            self._pump()

    # -- unbind / close -----------------------------------------------------------------------

    async def unbind(self, drain_timeout: float = 5.0) -> None:
        """Stop submitting, wait (up to drain_timeout) for responses and receipts in flight,
        send unbind and await unbind_resp, then close."""
        if self._closed.is_set():
            return
        was_bound = self._bound
        self._bound = False  # no new submits from here on
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        self._fail_queued(f"session {self.label} unbinding before sending")
        waiting = [f for f in self._pending.values() if not f.done()]
        waiting += [f for f, _timer in self._submits.values() if not f.done()]
        waiting_on: list[asyncio.Future[Any]] = [*waiting, *self._deliveries]
        if waiting_on:
            await asyncio.wait(waiting_on, timeout=max(0.0, deadline - loop.time()))
        if was_bound and not self._closed.is_set():
            self._unbinding = True
            with contextlib.suppress(SessionError):
                await self._request(Command.UNBIND, b"")
        await self.close("unbound")

    async def close(self, reason: str) -> None:
        """Drop the connection now; requests awaiting a response fail with SessionLost."""
        self._lose(reason)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._writer is not None:
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()

    def _lose(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._closing = True
        self._bound = False
        self.close_reason = reason
        # submit_sm queued in this turn but not written: never sent (another bind may take them)
        unsent, self._unsent = self._unsent, set()
        if self._writer is not None:
            out, self._out = self._out, []
            # responses queued in this turn (deliver_sm_resp, unbind_resp) go out first; the
            # unsent submit_sm do not: the SMSC has unbound or gone
            out = [pdu for pdu in out if _sequence_of(pdu) not in unsent
                   or int.from_bytes(pdu[4:8], "big") != Command.SUBMIT_SM]
            if out:
                with contextlib.suppress(OSError, ConnectionError):
                    self._writer.write(b"".join(out))
            self._writer.close()
        pending, self._pending = self._pending, {}
        submits, self._submits = self._submits, {}
        for sequence, (future, timer) in submits.items():
            timer.cancel()
            if not future.done():
                future.set_exception(
                    SessionLost(f"session {self.label} ended before sending: {reason}",
                                sent=False) if sequence in unsent else
                    SessionLost(f"session {self.label} lost: {reason}", sent=True))
        for future in pending.values():
            if not future.done():
                future.set_exception(SessionLost(f"session {self.label} lost: {reason}", sent=True))
        self._fail_queued(f"session {self.label} lost before sending: {reason}")
        self._closed.set()
        keepalive = self._keepalive
        if keepalive is not None and keepalive is not asyncio.current_task():
            keepalive.cancel()  # it would sleep on for an interval, holding the session
        log.info("smpp session closed session=%s reason=%s", self.label, reason)
        if self._on_lost is not None:
            self._on_lost(reason)

    # -- wire ---------------------------------------------------------------------------------

    async def _request(self, command: Command, body: bytes | SubmitFields) -> _Response:
        if self._writer is None or self._closed.is_set():
            raise SessionLost(f"session {self.label} is closed", sent=False)
        sequence = self._next_sequence()
        if isinstance(body, SubmitFields):
            pdu = _encode_submit(body, sequence)
        else:
            pdu = encode_pdu(command, sequence, body)
        future: asyncio.Future[_Response] = asyncio.get_running_loop().create_future()
        self._pending[sequence] = future
        self._write(pdu)
        try:
            await self._writer.drain()  # back-pressure of the socket (the window bounds _out)
        except (OSError, ConnectionError) as exc:
            self._lose(f"write failed: {exc}")
        # One timer per request rather than asyncio.wait_for (a waiter future, a callback and a
        # timer per request: a few percent of the worker's CPU at thousands of submits/s).
        timer = asyncio.get_running_loop().call_later(
            self._response_timeout, self._expire, sequence, command
        )
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, sequence: int, command: Command) -> None:
        future = self._pending.pop(sequence, None)
        if future is not None and not future.done():
            future.set_exception(ResponseTimeout(
                f"no response to {command.name.lower()} within {self._response_timeout:g} s"
            ))

    def _next_sequence(self) -> int:
        sequence = next(self._sequence)
        if sequence > MAX_SEQUENCE:
            self._sequence = itertools.count(2)
            sequence = 1
        return sequence

    def _send(self, command: int, sequence: int, body: bytes = b"", status: int = 0) -> None:
        if self._writer is not None and not self._closed.is_set():
            self._write(encode_pdu(command, sequence, body, status))

    def _write(self, pdu: bytes) -> None:
        """Queue a PDU: those queued in one turn of the event loop go out in one write, one
        system call rather than one per submit_sm or deliver_sm_resp. Order is kept."""
        self._out.append(pdu)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._unsent.clear()
        if not out or self._writer is None or self._closed.is_set():
            return
        try:
            self._writer.write(b"".join(out))
        except (OSError, ConnectionError) as exc:
            self._lose(f"write failed: {exc}")

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read_loop(self) -> None:
        """Read what the socket has, handle every whole PDU in it, then write what that
        produced at once (the next submit_sm of each freed window slot goes out in this turn,
        not the next)."""
        assert self._reader is not None
        reason = "connection closed by peer"
        buffer = b""
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    if self._unbinding:
                        reason = "unbound"
                    break
                buffer = buffer + data if buffer else data
                start, end = 0, len(buffer)
                while end - start >= HEADER_SIZE:
                    header = parse_header(buffer[start:start + HEADER_SIZE])
                    length = header.command_length
                    if not HEADER_SIZE <= length <= MAX_PDU_SIZE:
                        reason = f"bad command_length {length}"
                        self._lose(reason)
                        return
                    if end - start < length:
                        break
                    self._dispatch(header, buffer[start:start + HEADER_SIZE],
                                   buffer[start + HEADER_SIZE:start + length])
                    start += length
                    if self._closed.is_set():
                        return  # unbound or lost: what follows cannot be answered
                buffer = buffer[start:]
                self._flush()
        except (OSError, ConnectionError) as exc:
            reason = f"connection error: {exc}"
        self._lose(reason)

    def _dispatch(self, header: Header, raw_header: bytes, body: bytes) -> None:
        command = header.command_id
        if command & RESPONSE_BIT:  # a response (generic_nack included) to one of our requests
            entry = self._submits.pop(header.sequence_number, None)
            if entry is not None:
                entry[1].cancel()
                if not entry[0].done():
                    entry[0].set_result((header, body))
                self._pump()  # the freed slot is used in this very turn
                return
            future = self._pending.pop(header.sequence_number, None)
            if future is not None and not future.done():
                future.set_result((header, body))
            elif future is None:
                self._stray_response(header)
            return
        if command == Command.DELIVER_SM:
            task = asyncio.ensure_future(self._deliver(header, raw_header + body))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        elif command == Command.ENQUIRE_LINK:
            self._send(Command.ENQUIRE_LINK_RESP, header.sequence_number)
        elif command == Command.UNBIND:
            self._send(Command.UNBIND_RESP, header.sequence_number)
            self._lose("unbound by the SMSC")
        else:
            self._send(Command.GENERIC_NACK, header.sequence_number, status=Status.ESME_RINVCMDID)

    async def _deliver(self, header: Header, raw: bytes) -> None:
        try:
            decoded = smpp34.decode(raw)
        except smpp34.SmppError as exc:
            log.warning("smpp malformed deliver_sm session=%s error=%s", self.label, exc)
            self._send(Command.DELIVER_SM_RESP, header.sequence_number, b"\x00", 0x1)
            return
        assert isinstance(decoded, smpp34.DeliverSm)
        pdu = DeliverSm(
            source_addr=decoded.source_addr,
            destination_addr=decoded.destination_addr,
            esm_class=decoded.esm_class,
            data_coding=decoded.data_coding,
            short_message=decoded.short_message,
            tlvs={tlv.tag: tlv.value for tlv in decoded.tlvs},
        )
        status: int = Status.ESME_ROK
        if self._on_deliver is not None:
            try:
                status = await self._on_deliver(pdu)
            except Exception:
                # Not swallowed: the SMSC gets an error and delivers the receipt again later.
                log.exception("smpp deliver_sm handler failed session=%s", self.label)
                status = Status.ESME_RSYSERR
        # deliver_sm_resp: message_id is unused and set to NULL (SMPP 3.4, 4.6.2)
        self._send(Command.DELIVER_SM_RESP, header.sequence_number, b"\x00", status)

    def _stray_response(self, header: Header) -> None:
        """A response to nothing we await (a sequence number never sent, or one that timed
        out): ignored, the session goes on; logged once per session, then counted."""
        self.stray_responses += 1
        if self.stray_responses == 1:
            log.warning(
                "smpp response to no request in flight ignored session=%s command_id=%#x "
                "sequence=%d (further ones counted, not logged)",
                self.label,
                header.command_id,
                header.sequence_number,
            )

    async def _enquire_link_loop(self) -> None:
        while not self._closed.is_set():
            await asyncio.sleep(self._enquire_link_interval)
            try:
                await self._request(Command.ENQUIRE_LINK, b"")
            except ResponseTimeout:
                self._lose("enquire_link unanswered")
                return
            except SessionLost:
                return


READ_CHUNK = 256 * 1024  # bytes asked of the socket per read


def _sequence_of(pdu: bytes) -> int:
    return int.from_bytes(pdu[12:16], "big")


def _encode_submit(fields: SubmitFields, sequence: int) -> bytes:
    return smpp34.SubmitSm(
        fields.source_addr,
        fields.destination_addr,
        fields.short_message,
        service_type=fields.service_type,
        source_addr_ton=fields.source_addr_ton,
        source_addr_npi=fields.source_addr_npi,
        dest_addr_ton=fields.dest_addr_ton,
        dest_addr_npi=fields.dest_addr_npi,
        esm_class=fields.esm_class,
        registered_delivery=fields.registered_delivery,
        validity_period=fields.validity_period,
        data_coding=fields.data_coding,
        tlvs=[smpp34.Tlv(tag, value) for tag, value in fields.tlvs],
        sequence_number=sequence,
    ).encode()
