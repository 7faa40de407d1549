"""The SMPP 3.4 server customers bind to: one `SmppServer`, a `CustomerConnection` per socket.

What each PDU gets (none ends the session but unbind, a broken length, or a failed bind):

- bind_transmitter / _receiver / _transceiver: checked against `smpp_users` (argon2id, off the
  loop); ROK, or ESME_RINVPASWD (unknown system_id or wrong password), ESME_RBINDFAIL (address
  not allowed, account suspended, `max_binds` reached), ESME_RALYBND; a refused bind closes
  the connection;
- submit_sm: the messaging service (number, price, reserve, parts); ROK with the message id,
  or the status of `errors.status_for`; beyond the bind's window ESME_RMSGQFUL, beyond the
  user's rate and burst ESME_RTHROTTLED;
- query_sm: answered from the parts table; cancel_sm: parts not yet with a carrier become
  CANCELED and are refunded, else ESME_RCANCELFAIL;
- deliver_sm_resp: acknowledges a receipt or MO (a message_id in its body is ignored);
- enquire_link, unbind: answered (unbind then closes);
- replace_sm, submit_multi, data_sm: their own response with ESME_RREPLACEFAIL / RINVCMDID;
- anything else: generic_nack ESME_RINVCMDID.

The server sends enquire_link after `enquire_link_seconds` without a PDU from the customer and
closes the session if it goes unanswered; receipts and MO leave from the outbox (`OutboxPump`)
to the receiver and transceiver binds of the account, at most `window` unanswered per bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tikosms.accounts.service import AuthenticatedAccount
from tikosms.db.engine import Database
from tikosms.db.models import FINAL_STATUSES, WAITING_STATUSES, Part
from tikosms.db.types import utcnow
from tikosms.delivery.notify import PartsSignal
from tikosms.errors import TikoError
from tikosms.messaging.smpp_send import prepare_smpp_send
from tikosms.messaging.writer import SendWriter
from tikosms.smpp.pdu import (
    BIND_COMMANDS,
    HEADER_SIZE,
    MAX_PDU_SIZE,
    MAX_SEQUENCE,
    RESPONSE_BIT,
    BindRequest,
    Command,
    Header,
    Status,
    c_string,
    encode_pdu,
    parse_header,
    status_name,
)
from tikosms.smpp_server import outbox, users
from tikosms.smpp_server.bucket import Bucket
from tikosms.smpp_server.codec import (
    Refused,
    decode_submit,
    deliver_pdu,
    parse_cancel,
    parse_query,
    query_resp_body,
)
from tikosms.smpp_server.errors import status_for

log = logging.getLogger("tikosms.smpp_server")

READ_CHUNK = 256 * 1024
_BIND_TYPES = {
    Command.BIND_TRANSMITTER: "transmitter",
    Command.BIND_RECEIVER: "receiver",
    Command.BIND_TRANSCEIVER: "transceiver",
}
# known requests this server does not carry out: answered with their own response
_UNSUPPORTED = {
    Command.REPLACE_SM: (Command.REPLACE_SM_RESP, Status.ESME_RREPLACEFAIL),
    Command.SUBMIT_MULTI: (Command.SUBMIT_MULTI_RESP, Status.ESME_RINVCMDID),
    Command.DATA_SM: (Command.DATA_SM_RESP, Status.ESME_RINVCMDID),
}


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 2775  # 0: any free port (see SmppServer.port)
    smsc_id: str = "TikoSMS"  # system_id in bind_resp
    enquire_link_seconds: float = 30.0  # idle time before the server asks; 0: never
    response_timeout: float = 10.0  # for deliver_sm_resp and enquire_link_resp
    outbox_poll_seconds: float = 0.2  # how often due receipts/MO are looked for
    credentials_check_seconds: float = 5.0  # revoked users, suspended accounts: unbound
    retry_initial_seconds: float = 1.0  # a deliver_sm refused is sent again after this,
    retry_max_seconds: float = 60.0  # doubling up to this
    drain_seconds: float = 5.0  # at stop: how long submits in flight may take to finish


@dataclass
class ServerCounters:
    connections: int = 0
    binds: int = 0
    bind_failures: int = 0
    submits: int = 0
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # command_status -> submits
    deliveries_sent: int = 0  # deliver_sm sent (resends included)
    deliveries_acked: int = 0
    generic_nacks: int = 0


class SmppServer:
    def __init__(self, db: Database, config: ServerConfig | None = None,
                 signal: PartsSignal | None = None) -> None:
        """`signal`: wakes the delivery workers after each stored submit_sm (that of the
        HTTP API in `tikosms serve`; one of its own in a `tikosms smpp-server` process)."""
        self.db = db
        self.config = config or ServerConfig()
        self._own_signal = signal is None  # a process of its own: closed on stop
        self.writer = SendWriter(db, signal=signal or PartsSignal(db))
        self.passwords = users.PasswordCheck()
        self.counters = ServerCounters()
        self.connections: set[CustomerConnection] = set()
        self.pump = OutboxPump(self)
        self._buckets: dict[int, tuple[float, float, Bucket]] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump_task: asyncio.Task[None] | None = None
        self._port = self.config.port
        self.stopping = False

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        """Listen (OSError when the port is taken) and start the outbox pump."""
        self._server = await asyncio.start_server(self._serve, self.config.host,
                                                  self.config.port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._pump_task = asyncio.ensure_future(self.pump.run())
        if self.config.credentials_check_seconds > 0:
            self._spawn(self._watch_credentials())
        log.info("smpp server listening host=%s port=%s", self.config.host, self._port)

    async def stop(self) -> None:
        """Stop listening, let submits in flight finish, unbind every customer, write what
        the outbox learnt."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        handling = [t for c in self.connections for t in c.submitting]
        if handling:
            await asyncio.wait(handling, timeout=self.config.drain_seconds)
        await asyncio.gather(*(c.unbind() for c in list(self.connections)),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pump.stop()
        if self._pump_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump_task, 5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        await self.writer.close()
        if self._own_signal and self.writer.signal is not None:
            await self.writer.signal.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = CustomerConnection(self, reader, writer)
        self.connections.add(connection)
        self.counters.connections += 1
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            connection.lost("connection ended")

    # -- what connections share ----------------------------------------------------------------

    def binds_of(self, user_id: int) -> int:
        return sum(1 for c in self.connections if c.user is not None and c.user.id == user_id)

    def bucket(self, user: users.SmppCredential) -> Bucket | None:
        """The user's token bucket, shared by its binds (None: no rate limit)."""
        if user.tps is None:
            return None
        burst = float(user.burst) if user.burst else 2 * user.tps
        held = self._buckets.get(user.id)
        if held is None or held[:2] != (user.tps, burst):
            held = (user.tps, burst, Bucket(user.tps, burst))
            self._buckets[user.id] = held
        return held[2]

    def receivers(self, account_id: int | None = None) -> list[CustomerConnection]:
        return [c for c in self.connections
                if c.can_receive and (account_id is None or c.user.account_id == account_id)]  # type: ignore[union-attr]

    async def _watch_credentials(self) -> None:
        """Binds of a revoked user, or of an account suspended, are unbound within seconds."""
        while True:
            await asyncio.sleep(self.config.credentials_check_seconds)
            bound = [c for c in self.connections if c.user is not None]
            if not bound:
                continue
            try:
                async with self.db.connect() as conn:
                    current = {s: await users.credential(conn, s)
                               for s in {c.user.system_id for c in bound}}  # type: ignore[union-attr]
            except (SQLAlchemyError, OSError) as exc:
                log.warning("smpp credentials check failed: %s", type(exc).__name__)
                continue
            for c in bound:
                now = current.get(c.user.system_id)  # type: ignore[union-attr]
                if now is None or now.account_status != "active" \
                        or now.password_hash != c.user.password_hash:  # type: ignore[union-attr]
                    log.info("smpp bind closed: credentials revoked or account suspended "
                             "system_id=%s", c.user.system_id)  # type: ignore[union-attr]
                    self._spawn(c.unbind())
                else:
                    c.user = now  # rate, window, allowlist changes apply


class CustomerConnection:
    def __init__(self, server: SmppServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.address: str = peer[0] if peer else ""
        self.user: users.SmppCredential | None = None
        self.bind_type: str | None = None
        self.in_flight = 0  # submit_sm being handled (the window)
        # deliver_sm sent, awaiting their deliver_sm_resp: sequence -> (item, timer)
        self.outstanding: dict[int, tuple[outbox.OutboxItem, asyncio.TimerHandle]] = {}
        self._requests: dict[int, asyncio.Future[int]] = {}  # enquire_link, unbind
        self._sequence = itertools.count(1)
        self._out: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.submitting: set[asyncio.Task[None]] = set()  # submit_sm being handled
        self._binding = False
        self._enquirer: asyncio.Task[None] | None = None
        self.closed = False
        self._last_read = asyncio.get_running_loop().time()
        self.stray = 0

    @property
    def can_submit(self) -> bool:
        return not self.closed and self.bind_type in ("transmitter", "transceiver")

    @property
    def can_receive(self) -> bool:
        return not self.closed and self.bind_type in ("receiver", "transceiver")

    @property
    def room(self) -> int:
        """deliver_sm this bind may still be sent before answering the ones outstanding."""
        if self.user is None or not self.can_receive:
            return 0
        return max(0, self.user.window - len(self.outstanding))

    # -- reading ------------------------------------------------------------------------------

    async def run(self) -> None:
        if self.server.config.enquire_link_seconds > 0:
            self._enquirer = asyncio.ensure_future(self._enquire_link_loop())
        buffer = b""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while not self.closed:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    return
                self._last_read = loop.time()
                buffer = buffer + data if buffer else data
                start, end = 0, len(buffer)
                while end - start >= HEADER_SIZE:
                    header = parse_header(buffer[start:start + HEADER_SIZE])
                    length = header.command_length
                    if not HEADER_SIZE <= length <= MAX_PDU_SIZE:
                        # no way to find the next PDU: the one case a session must end
                        log.info("smpp session closed: bad command_length %d peer=%s",
                                 length, self.address)
                        self.send(Command.GENERIC_NACK, header.sequence_number,
                                  status=Status.ESME_RINVCMDLEN)
                        self.lost("bad command_length")
                        return
                    if end - start < length:
                        break
                    self._dispatch(header, buffer[start:start + length],
                                   buffer[start + HEADER_SIZE:start + length])
                    start += length
                    if self.closed:
                        return
                buffer = buffer[start:]
                self._flush()

    def _dispatch(self, header: Header, raw: bytes, body: bytes) -> None:
        command, sequence = header.command_id, header.sequence_number
        if command & RESPONSE_BIT:
            self._response(header)
            return
        if command in BIND_COMMANDS:
            self._spawn(self._bind(command, sequence, body))
        elif command == Command.ENQUIRE_LINK:
            self.send(Command.ENQUIRE_LINK_RESP, sequence)
        elif command == Command.UNBIND:
            self.send(Command.UNBIND_RESP, sequence)
            self.lost("unbound by the customer")
        elif command == Command.SUBMIT_SM:
            self._submit(sequence, raw)
        elif command == Command.QUERY_SM:
            self._bound_only(Command.QUERY_SM_RESP, sequence, self._query(sequence, body))
        elif command == Command.CANCEL_SM:
            self._bound_only(Command.CANCEL_SM_RESP, sequence, self._cancel(sequence, body))
        elif command in _UNSUPPORTED:
            response, status = _UNSUPPORTED[Command(command)]
            self.send(response, sequence, status=status)
        else:
            self.server.counters.generic_nacks += 1
            self.send(Command.GENERIC_NACK, sequence, status=Status.ESME_RINVCMDID)

    def _response(self, header: Header) -> None:
        sequence = header.sequence_number
        entry = self.outstanding.pop(sequence, None)
        if entry is not None:  # deliver_sm_resp, or a generic_nack to our deliver_sm
            item, timer = entry
            timer.cancel()
            ok = header.command_id == Command.DELIVER_SM_RESP and header.command_status == 0
            self.server.pump.answered(item, ok)
            return
        future = self._requests.pop(sequence, None)
        if future is not None and not future.done():
            future.set_result(header.command_status)
        elif future is None:
            self.stray += 1  # a late or unknown response: ignored, the session goes on

    def _bound_only(self, response: int, sequence: int,
                    coro: Coroutine[Any, Any, None]) -> None:
        if self.user is None:
            coro.close()
            self.send(response, sequence, status=Status.ESME_RINVBNDSTS)
            return
        self._spawn(coro)

    # -- bind -----------------------------------------------------------------------------------

    async def _bind(self, command: int, sequence: int, body: bytes) -> None:
        response = command | RESPONSE_BIT
        if self.user is not None or self._binding:
            self.send(response, sequence, status=Status.ESME_RALYBND)
            return
        self._binding = True
        request = BindRequest.decode_body(body)
        try:
            status, why, user = await self._check_bind(request)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("smpp bind failed: database error %s", type(exc).__name__)
            status, why, user = Status.ESME_RSYSERR, "database unavailable", None
        finally:
            self._binding = False
        counters = self.server.counters
        if status != Status.ESME_ROK or user is None:
            counters.bind_failures += 1
            log.info("smpp bind refused system_id=%s peer=%s status=%s reason=%s",
                     _printable(request.system_id if status != Status.ESME_RSYSERR else ""),
                     self.address, status_name(status), why)
            self.send(response, sequence, status=status)
            self.lost("bind refused")
            return
        # checked again with no await in between: max_binds holds under concurrent binds
        if self.server.binds_of(user.id) >= user.max_binds:
            counters.bind_failures += 1
            log.info("smpp bind refused system_id=%s peer=%s status=%s reason=max_binds",
                     user.system_id, self.address, status_name(Status.ESME_RBINDFAIL))
            self.send(response, sequence, status=Status.ESME_RBINDFAIL)
            self.lost("bind refused")
            return
        self.user = user
        self.bind_type = _BIND_TYPES[Command(command)]
        counters.binds += 1
        self.send(response, sequence, c_string(self.server.config.smsc_id))
        log.info("smpp customer bound system_id=%s account=%s bind_type=%s peer=%s",
                 user.system_id, user.account_id, self.bind_type, self.address)
        if self.can_receive:
            self.server.pump.wake()

    async def _check_bind(self, request: BindRequest
                          ) -> tuple[int, str, users.SmppCredential | None]:
        async with self.server.db.connect() as conn:
            user = await users.credential(conn, request.system_id)
        if not await self.server.passwords.check(user, request.password):
            return (Status.ESME_RINVPASWD,
                    "unknown system_id" if user is None else "wrong password", None)
        assert user is not None
        if not user.allows(self.address):
            return Status.ESME_RBINDFAIL, "address not allowed", None
        if user.account_status != "active":
            return Status.ESME_RBINDFAIL, "account suspended", None
        if self.server.binds_of(user.id) >= user.max_binds:
            return Status.ESME_RBINDFAIL, "max_binds", None
        return Status.ESME_ROK, "", user

    # -- submit_sm ------------------------------------------------------------------------------

    def _submit(self, sequence: int, raw: bytes) -> None:
        counters = self.server.counters
        counters.submits += 1
        if not self.can_submit or self.user is None:
            self._refuse_submit(sequence, Status.ESME_RINVBNDSTS)
        elif self.in_flight >= self.user.window:
            self._refuse_submit(sequence, Status.ESME_RMSGQFUL)
        elif self.server.stopping:
            self._refuse_submit(sequence, Status.ESME_RSYSERR)
        else:
            self.in_flight += 1
            task = asyncio.ensure_future(self._handle_submit(sequence, raw))
            self.submitting.add(task)
            task.add_done_callback(self.submitting.discard)

    def _refuse_submit(self, sequence: int, status: int) -> None:
        counters = self.server.counters
        counters.refused[status] = counters.refused.get(status, 0) + 1
        # no body with an error status (SMPP 3.4, 4.4.2)
        self.send(Command.SUBMIT_SM_RESP, sequence, status=status)

    async def _handle_submit(self, sequence: int, raw: bytes) -> None:
        try:
            status, message_id = await self._send_message(raw)
        except Exception:  # answered, logged and counted: the customer may retry
            log.exception("smpp submit_sm failed system_id=%s", self.user and self.user.system_id)
            status, message_id = Status.ESME_RSYSERR, None
        finally:
            self.in_flight -= 1
        if status == Status.ESME_ROK and message_id is not None:
            self.server.counters.accepted += 1
            self.send(Command.SUBMIT_SM_RESP, sequence, c_string(message_id))
        else:
            self._refuse_submit(sequence, status)
        self._flush()

    async def _send_message(self, raw: bytes) -> tuple[int, str | None]:
        user = self.user
        assert user is not None
        try:
            decoded = decode_submit(raw)
        except Refused as refused:
            log.debug("smpp submit_sm refused: %s", refused)
            return refused.status, None
        bucket = self.server.bucket(user)
        if bucket is not None and not bucket.take():
            return Status.ESME_RTHROTTLED, None
        account = AuthenticatedAccount(user.account_id, "", "", user.account_status, "")
        try:
            async with self.server.db.lazy_connect() as conn:
                prepared = await prepare_smpp_send(conn, account, decoded.message)  # type: ignore[arg-type]
            await self.server.writer.write(prepared, b"", None)
        except TikoError as exc:
            return status_for(exc), None
        except (SQLAlchemyError, OSError) as exc:
            log.warning("smpp submit_sm: database error %s", type(exc).__name__)
            return Status.ESME_RSYSERR, None
        return Status.ESME_ROK, prepared.result.message_ids[0]

    # -- query_sm / cancel_sm -------------------------------------------------------------------

    async def _query(self, sequence: int, body: bytes) -> None:
        message_id, _source = parse_query(body)
        assert self.user is not None
        try:
            parts = await _parts_of(self.server.db, self.user.account_id, message_id)
        except (SQLAlchemyError, OSError):
            self.send(Command.QUERY_SM_RESP, sequence, status=Status.ESME_RSYSERR)
            self._flush()
            return
        if not parts:
            self.send(Command.QUERY_SM_RESP, sequence, status=Status.ESME_RQUERYFAIL)
        else:
            status, final_at, error = _message_state(parts)
            self.send(Command.QUERY_SM_RESP, sequence,
                      query_resp_body(message_id, final_at, outbox.MESSAGE_STATE.get(status, 7),
                                      error))
        self._flush()

    async def _cancel(self, sequence: int, body: bytes) -> None:
        from tikosms.delivery.transitions import finish_waiting

        message_id, _source, _dest = parse_cancel(body)
        assert self.user is not None
        status: int = Status.ESME_ROK
        if not message_id:
            status = Status.ESME_RINVMSGID  # cancelling by addresses alone: not supported
        else:
            try:
                async with self.server.db.begin() as conn:
                    now = utcnow()
                    lease_free = (Part.lease_until.is_(None)) | (Part.lease_until < now)
                    rows = await finish_waiting(
                        conn, (Part.message_id == message_id)
                        & (Part.account_id == self.user.account_id) & lease_free,
                        "CANCELED", now, "cancel_sm")
                if not rows:
                    status = Status.ESME_RCANCELFAIL
            except (SQLAlchemyError, OSError):
                status = Status.ESME_RSYSERR
        self.send(Command.CANCEL_SM_RESP, sequence, status=status)
        self._flush()

    # -- deliver_sm -------------------------------------------------------------------------------

    def send_item(self, item: outbox.OutboxItem) -> None:
        sequence = self._next_sequence()
        try:
            pdu = deliver_pdu(item.kind, item.payload, sequence)
        except Exception:  # a malformed item must not stop the others
            log.exception("smpp outbox item %d cannot be encoded", item.id)
            self.server.pump.answered(item, False)
            return
        timer = asyncio.get_running_loop().call_later(
            self.server.config.response_timeout, self._unanswered, sequence)
        self.outstanding[sequence] = (item, timer)
        self.server.counters.deliveries_sent += 1
        self._write(pdu)

    def _unanswered(self, sequence: int) -> None:
        entry = self.outstanding.pop(sequence, None)
        if entry is not None:
            self.server.pump.answered(entry[0], False)

    # -- enquire_link, unbind, close -------------------------------------------------------------

    async def _enquire_link_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.server.config.enquire_link_seconds
        while not self.closed:
            await asyncio.sleep(max(0.05, self._last_read + interval - loop.time()))
            if self.closed or loop.time() - self._last_read < interval:
                continue
            status = await self._request(Command.ENQUIRE_LINK)
            if status is None and not self.closed:
                log.info("smpp session closed: enquire_link unanswered peer=%s", self.address)
                self.lost("enquire_link unanswered")
                return

    async def unbind(self) -> None:
        """Ask the customer to unbind (at stop, or credentials revoked), then close."""
        if self.closed:
            return
        if self.user is not None:
            await self._request(Command.UNBIND, wait=1.0)
        self.lost("unbound by the server")

    async def _request(self, command: int, wait: float | None = None) -> int | None:
        """Send a request and await its response's status; None when none came in time."""
        sequence = self._next_sequence()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._requests[sequence] = future
        self.send(command, sequence)
        self._flush()
        try:
            return await asyncio.wait_for(future, wait or self.server.config.response_timeout)
        except (TimeoutError, asyncio.CancelledError):
            return None
        finally:
            self._requests.pop(sequence, None)

    def lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        out, self._out = self._out, []
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if out and not self.writer.transport.is_closing():
                self.writer.write(b"".join(out))
            self.writer.close()
        outstanding, self.outstanding = self.outstanding, {}
        for item, timer in outstanding.values():
            timer.cancel()
            self.server.pump.lost(item)
        for future in self._requests.values():
            if not future.done():
                future.cancel()
        if self._enquirer is not None and self._enquirer is not asyncio.current_task():
            self._enquirer.cancel()
        if self.user is not None:
            log.info("smpp customer session closed system_id=%s reason=%s",
                     self.user.system_id, reason)

    # -- writing ----------------------------------------------------------------------------------

    def send(self, command: int, sequence: int, body: bytes = b"", status: int = 0) -> None:
        self._write(encode_pdu(command, sequence, body, status))

    def _write(self, pdu: bytes) -> None:
        """PDUs queued in one turn of the loop go out in one write."""
        if self.closed:
            return
        self._out.append(pdu)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.closed:
            try:
                self.writer.write(b"".join(out))
            except (ConnectionError, OSError, RuntimeError):
                self.lost("write failed")

    def _next_sequence(self) -> int:
        sequence = next(self._sequence)
        if sequence > MAX_SEQUENCE:
            self._sequence = itertools.count(2)
            sequence = 1
        return sequence

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class OutboxPump:
    """Moves due outbox items to the receiver binds of their accounts and records answers.

    Answers are written in batches, once per round: a deliver_sm_resp ROK marks the item
    delivered; a refusal or no answer makes it due again after a growing pause; an item whose
    bind went away before it was answered is due again at once, for another bind. A process
    that dies before writing an acknowledgement sends that item again later (at least once)."""

    def __init__(self, server: SmppServer) -> None:
        self.server = server
        self._acked: list[int] = []
        self._refused: list[outbox.OutboxItem] = []
        self._lost: list[int] = []
        self._event = asyncio.Event()
        self._running = True
        self._idle = True  # the last round claimed nothing
        self._purged_at = 0.0

    def wake(self) -> None:
        self._event.set()

    def answered(self, item: outbox.OutboxItem, ok: bool) -> None:
        if ok:
            self._acked.append(item.id)
            self.server.counters.deliveries_acked += 1
        else:
            self._refused.append(item)
        self._event.set()

    def lost(self, item: outbox.OutboxItem) -> None:
        self._lost.append(item.id)
        self._event.set()

    async def stop(self) -> None:
        self._running = False
        self._event.set()

    async def run(self) -> None:
        config = self.server.config
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), config.outbox_poll_seconds)
            self._event.clear()
            try:
                await self._round()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("smpp outbox round failed: %s (retried)", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if not self._running:
                return

    async def _round(self) -> None:
        """One transaction: the answers learnt since the last round, then a claim of what is
        due for the binds with room (a read first when the last round found nothing, so an
        idle server does not take SQLite's write lock every poll)."""
        db, config = self.server.db, self.server.config
        now = utcnow()
        acked, refused, lost = self._acked, self._refused, self._lost
        self._acked, self._refused, self._lost = [], [], []
        rooms: dict[int, int] = {}
        if self._running:
            for c in self.server.receivers():
                account_id = c.user.account_id  # type: ignore[union-attr]
                rooms[account_id] = rooms.get(account_id, 0) + c.room
        rooms = {a: r for a, r in rooms.items() if r > 0}
        due = list(rooms)
        if rooms and self._idle and not (acked or refused or lost):
            async with db.connect() as conn:
                due = await outbox.due_accounts(conn, list(rooms), now)
        claimed: list[outbox.OutboxItem] = []
        if acked or refused or lost or due:
            lease = timedelta(seconds=config.response_timeout + 5)
            try:
                async with db.begin() as conn:
                    await outbox.mark_delivered(conn, acked, now)
                    by_delay: dict[float, list[int]] = {}
                    for item in refused:
                        delay = min(config.retry_max_seconds,
                                    config.retry_initial_seconds * 2 ** max(0, item.attempts - 1))
                        by_delay.setdefault(delay, []).append(item.id)
                    for delay, ids in by_delay.items():
                        await outbox.retry_later(conn, ids, now + timedelta(seconds=delay))
                    await outbox.release(conn, lost, now)
                    for account_id in due:
                        claimed += await outbox.claim_due(conn, [account_id], now, lease,
                                                          rooms[account_id])
            except BaseException:
                self._acked[:0], self._refused[:0], self._lost[:0] = acked, refused, lost
                raise
        self._idle = not claimed
        for item in claimed:
            receivers = [c for c in self.server.receivers(item.account_id) if c.room > 0]
            if not receivers:
                self._lost.append(item.id)
                continue
            min(receivers, key=lambda c: len(c.outstanding)).send_item(item)
        if claimed:
            self._event.set()  # more may be due: look again at once
        loop_now = asyncio.get_running_loop().time()
        if self._running and loop_now - self._purged_at > 600:
            self._purged_at = loop_now
            async with db.begin() as conn:
                await outbox.purge_delivered(conn, now)


async def _parts_of(db: Database, account_id: int, message_id: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import select

    async with db.connect() as conn:
        return [tuple(r) for r in (await conn.execute(
            select(Part.part_no, Part.status, Part.error_code, Part.updated_at,
                   Part.delivered_at)
            .where(Part.message_id == message_id, Part.account_id == account_id)
            .order_by(Part.part_no))).all()]


def _message_state(parts: list[tuple[Any, ...]]) -> tuple[str, datetime | None, int]:
    """(status, final date, error) of a message from its parts: the first part not final
    decides (ENROUTE), else the first not DELIVRD, else DELIVRD."""
    from tikosms.smpp_server.outbox import error_number

    pending = [p for p in parts if p[1] not in FINAL_STATUSES]
    if pending:
        status = str(pending[0][1])
        return ("ENROUTE" if status not in WAITING_STATUSES else status), None, 0
    failed = [p for p in parts if p[1] != "DELIVRD"]
    chosen = failed[0] if failed else parts[-1]
    final_at = chosen[4] or chosen[3]
    return str(chosen[1]), final_at, int(error_number(str(chosen[1]), chosen[2]))


def _printable(value: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in value[:16])
