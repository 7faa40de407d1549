"""The SMPP 3.4 carrier: `SmppCarrier(config)` implements `tikosms.delivery.carrier.Carrier`.

Per carrier it keeps `binds` connections up (each a transceiver, or a transmitter plus a
receiver), each in its own task that reconnects with exponential backoff. submit() takes a
token from the carrier's bucket, picks the least-loaded bound transmitter and maps the
submit_sm_resp to a `SubmitOutcome` (see `outcome_for_status`, and docs/smpp.md).

Parts awaiting a submit_sm_resp when their bind is lost come back as RETRY: the SMSC may or may
not have taken them, so resubmitting them may duplicate those parts (and only those).

Slots (`managed=True`, as the delivery worker builds carriers from the database): `start()`
opens no bind; each bind is a numbered slot (1..binds) opened by `open_slot` and closed by
`close_slot` as the worker leases and loses slots (`tikosms.delivery.slots`), and the carrier's
rate is the share of its slots held (`set_share`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tikosms.delivery.carrier import (
    InboundHandler,
    InboundPdu,
    OutboundPart,
    ReceiptHandler,
    SubmitOutcome,
    SubmitResult,
)
from tikosms.smpp import shared_rate
from tikosms.smpp.config import SmppCarrierConfig
from tikosms.smpp.dlr import MAX_MESSAGE_ID, parse_receipt
from tikosms.smpp.pdu import ESM_INTERMEDIATE, ESM_SME_ACK, ESM_SMSC_RECEIPT, BindRequest, Status
from tikosms.smpp.session import (
    BindRefused,
    BindTimeout,
    BindType,
    DeliverSm,
    ResponseTimeout,
    SessionError,
    SessionLost,
    SmppSession,
    Unreachable,
)
from tikosms.smpp.shared_rate import SharedRate, SharedRates
from tikosms.smpp.submit import SubmitFields, build_submit
from tikosms.smpp.throttle import TokenBucket

log = logging.getLogger(__name__)

_RECEIPT_TYPES = (ESM_SMSC_RECEIPT, ESM_SME_ACK, ESM_INTERMEDIATE)

# Temporary: slow down and submit again later.
_THROTTLED = {Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL}
_TEMPORARY = {Status.ESME_RSYSERR, Status.ESME_RX_T_APPN}
# Permanent for this part, whichever carrier gets it: REJECTD, refunded.
_PERMANENT = {
    Status.ESME_RINVMSGLEN,
    Status.ESME_RINVSRCADR,
    Status.ESME_RINVDSTADR,
    Status.ESME_RINVESMCLASS,
    Status.ESME_RINVSRCTON,
    Status.ESME_RINVSRCNPI,
    Status.ESME_RINVDSTTON,
    Status.ESME_RINVDSTNPI,
    Status.ESME_RINVEXPIRY,
    Status.ESME_RINVDFTMSGID,
    Status.ESME_RX_P_APPN,
    Status.ESME_RINVOPTPARAMVAL,
    Status.ESME_RINVPARLEN,
}
# Everything else (bind status, routing, ESME_RSUBMITFAIL, vendor codes 0x400+): this carrier
# cannot take the part, another may: FAILOVER.


def outcome_for_status(
    status: int, message_id: str | None, *, retry_after: float = 1.0
) -> SubmitOutcome:
    """The outcome of a submit_sm_resp (or generic_nack) with this command_status."""
    error_code = f"0x{status:08x}"
    if status == Status.ESME_ROK:
        if not message_id:
            # Accepted without an id we could match a receipt to: treat as unknown, resubmit.
            # Possibly sent: the worker caps such attempts (then UNKNOWN, no_carrier_answer).
            return SubmitOutcome(
                SubmitResult.RETRY,
                error_code=error_code,
                retry_after=retry_after,
                detail="submit_sm_resp without message_id",
                maybe_sent=True,
            )
        return SubmitOutcome.accepted(message_id)
    if status in _THROTTLED or status in _TEMPORARY:
        return SubmitOutcome(SubmitResult.RETRY, error_code=error_code, retry_after=retry_after)
    if status in _PERMANENT:
        return SubmitOutcome(SubmitResult.REJECTED, error_code=error_code)
    return SubmitOutcome(SubmitResult.FAILOVER, error_code=error_code)


@dataclass(frozen=True, slots=True)
class BindStatus:
    """What one bind is doing, for logs, health checks and `carriers show`."""

    label: str
    bind_type: BindType
    state: str  # "connecting" | "bound" | "unbinding" | "refused" | "unreachable" | "down"
    #             | "stopped"
    detail: str
    in_flight: int


class SmppCarrier:
    """An SMPP 3.4 carrier: several binds, a window per bind, a rate across binds."""

    def __init__(self, config: SmppCarrierConfig, managed: bool = False,
                 rates: SharedRates | None = None) -> None:
        self.config = config
        self.name = config.name
        self.managed = managed  # binds opened slot by slot (open_slot), not all at start
        self.bucket = TokenBucket(config.tps)
        # the fleet's budget for this carrier (smpp/shared_rate.py): given here, or the one
        # the process installed (the delivery worker) when the carrier starts; None: the
        # bucket alone (one process)
        self.limiter: SharedRate | None = (
            rates.limiter_for(self.name, self.bucket) if rates is not None else None)
        self._binds: list[_Bind] = []
        self._slots: dict[int, list[_Bind]] = {}  # slot number -> its connections
        # set on every change of a bind's state or of the open slots, then replaced
        self.changed = asyncio.Event()
        self._on_receipt: ReceiptHandler | None = None
        self._stopping = False
        self._next = 0
        self._submitters = 0  # binds in state "bound" that can submit (kept by _Bind._set)
        # mobile-originated deliver_sm go here (set by the router); None: acknowledged, dropped
        self.on_inbound: InboundHandler | None = None

    # -- Carrier protocol -------------------------------------------------------------------

    async def start(self, on_receipt: ReceiptHandler) -> None:
        """Begin binding (returns at once; `wait_bound()` waits for a first bind)."""
        self._on_receipt = on_receipt
        self._stopping = False
        self._submitters = 0
        rates = shared_rate.installed()
        if self.limiter is None and rates is not None:
            self.limiter = rates.limiter_for(self.name, self.bucket)
        self._binds, self._slots = [], {}
        if not self.managed:
            for slot in range(1, self.config.binds + 1):
                self.open_slot(slot)

    def open_slot(self, slot: int) -> None:
        """Open the bind of this slot (1..binds; both connections in transmitter_receiver
        mode); returns at once, the bind comes up in the background."""
        if slot in self._slots or self._stopping or not 1 <= slot <= self.config.binds:
            return
        bind_types: list[BindType]
        if self.config.bind_mode == "transceiver":
            bind_types = ["transceiver"]
        else:
            bind_types = ["transmitter", "receiver"]
        binds = [_Bind(self, f"{self.name}#{slot}" + ("" if len(bind_types) == 1 else bt[0]),
                       bt) for bt in bind_types]
        self._slots[slot] = binds
        self._binds = [*self._binds, *binds]
        for bind in binds:
            bind.start()
        self._notify()

    async def close_slot(self, slot: int, drain_timeout: float | None = None) -> None:
        """Unbind this slot's connections: no new submit goes there from now on; responses
        in flight get up to `drain_timeout` s (default stop_timeout), then it unbinds."""
        binds = self._slots.pop(slot, None)
        if not binds:
            return
        self._binds = [b for b in self._binds if b not in binds]
        for bind in binds:
            bind.halt()
        self._notify()
        await asyncio.gather(*(bind.stop(drain_timeout) for bind in binds))
        self._notify()

    @property
    def open_slots(self) -> list[int]:
        return sorted(self._slots)

    def set_share(self, held: int, total: int) -> None:
        """This process holds `held` of the carrier's `total` slots: without a shared budget
        its rate is that share of the agreed one (`delivery.slots.slot_rate`); with one, the
        agreed rate is the fleet's budget's (its chunks are costed at the rate in force, so
        a share here would cap the whole fleet at that share)."""
        from tikosms.delivery.slots import slot_rate

        if self.limiter is not None or shared_rate.installed() is not None:
            self.bucket.set_limit(self.config.tps)
            return
        self.bucket.set_limit(slot_rate(self.config.tps, held, total))

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def submit(self, part: OutboundPart) -> SubmitOutcome:
        if self._stopping:
            return SubmitOutcome(SubmitResult.FAILOVER, detail=f"carrier {self.name} stopping")
        try:
            fields = build_submit(part, self.config)
        except ValueError as exc:  # text not encodable with its data_coding, bad part numbers
            return SubmitOutcome(SubmitResult.REJECTED, detail=f"cannot encode part: {exc}")
        pause = self.config.throttle_pause
        limiter = self.limiter or self.bucket
        for attempt in range(self.config.throttle_resubmits + 1):
            await limiter.acquire()
            outcome, throttled = await self._submit_once(part, fields)
            if not throttled or self._stopping or attempt == self.config.throttle_resubmits:
                break
            # Throttled: submitted again from here after a short pause (in order, never
            # dropped), rather than back through the database queue.
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.config.throttle_retry_after)
        if outcome.result is not SubmitResult.ACCEPTED:
            log.info(
                "smpp submit not accepted carrier=%s part=%s result=%s error=%s detail=%s",
                self.name,
                part.part_id,
                outcome.result.value,
                outcome.error_code,
                outcome.detail,
            )
        return outcome

    async def _submit_once(
        self, part: OutboundPart, fields: SubmitFields
    ) -> tuple[SubmitOutcome, bool]:
        """One submit_sm on the least-loaded bind: (outcome, throttled)."""
        # A bind that ends while the part waits for a window slot never sent it: try another.
        for _ in range(len(self._binds) + 1):
            session = self._pick()
            if session is None:
                return SubmitOutcome(
                    SubmitResult.FAILOVER, detail=f"carrier {self.name}: no bind up"
                ), False
            try:
                response = await session.submit(fields)
            except SessionLost as exc:
                if exc.sent:
                    return self._unknown_outcome(
                        part, f"bind lost awaiting submit_sm_resp: {exc}"
                    ), False
                continue
            except ResponseTimeout as exc:
                return self._unknown_outcome(part, str(exc)), False
            if response.nack:
                # generic_nack instead of a submit_sm_resp, whatever its status (0 included):
                # the SMSC could not read the PDU, so it did not take it; another carrier may.
                return SubmitOutcome(
                    SubmitResult.FAILOVER,
                    error_code=f"0x{response.command_status:08x}",
                    detail="generic_nack to submit_sm",
                ), False
            throttled = response.command_status in _THROTTLED
            (self.limiter or self.bucket).on_result(throttled)
            outcome = outcome_for_status(
                response.command_status,
                response.message_id,
                retry_after=self.config.throttle_retry_after,
            )
            if outcome.maybe_sent:
                self._log_unknown(part, outcome.detail)
            return outcome, throttled
        lost = SubmitOutcome(SubmitResult.FAILOVER, detail=f"carrier {self.name}: binds lost")
        return lost, False

    @property
    def available(self) -> bool:
        """A bind is up to submit on (asked before every submit: a count, not a walk of the
        binds; a session lost a moment ago still counts until its bind notices, and submit
        then answers FAILOVER)."""
        return not self._stopping and self._submitters > 0

    async def stop(self) -> None:
        """Stop taking parts, let responses in flight arrive (up to stop_timeout), unbind."""
        self._stopping = True
        await asyncio.gather(*(bind.stop() for bind in self._binds))

    # -- extras -----------------------------------------------------------------------------

    def status(self) -> list[BindStatus]:
        return [bind.status() for bind in self._binds]

    @property
    def last_error(self) -> str:
        """The most recent bind failure ("" when none): "bind refused ..." or "... unreachable"."""
        errors = [b.detail for b in self._binds if b.state in ("refused", "unreachable", "down")]
        return errors[0] if errors else ""

    async def wait_bound(self) -> None:
        """Wait until at least one bind can submit (wrap in asyncio.timeout)."""
        await self.wait_state(lambda: self.available)

    async def wait_state(self, predicate: Callable[[], bool]) -> None:
        """Wait until predicate() holds, checked at each change of a bind's state."""
        while True:
            changed = self.changed  # taken before the check: a change after it is not missed
            if predicate():
                return
            await changed.wait()

    # -- internals --------------------------------------------------------------------------

    def _pick(self) -> SmppSession | None:
        """The least-loaded bound transmitter; ties go round-robin."""
        binds = self._binds
        count = len(binds)
        self._next += 1
        best: SmppSession | None = None
        best_load = 0
        for i in range(count):
            session = binds[(self._next + i) % count].session
            if session is None or not session.can_submit:
                continue
            load = session.load
            if best is None or load < best_load:
                best, best_load = session, load
        return best

    def _unknown_outcome(self, part: OutboundPart, detail: str) -> SubmitOutcome:
        self._log_unknown(part, detail)
        return SubmitOutcome(
            SubmitResult.RETRY,
            retry_after=self.config.bind_lost_retry_after,
            detail=detail,
            maybe_sent=True,
        )

    def _log_unknown(self, part: OutboundPart, detail: str) -> None:
        log.warning(
            "smpp submit outcome unknown, will be resubmitted (possible duplicate) "
            "carrier=%s part=%s detail=%s",
            self.name,
            part.part_id,
            detail,
        )

    async def _handle_deliver(self, pdu: DeliverSm) -> int:
        """deliver_sm: a receipt goes to on_receipt, and is acknowledged once it returns."""
        if pdu.esm_class & 0x3C not in _RECEIPT_TYPES:
            return await self._handle_inbound(pdu)
        try:
            receipt = parse_receipt(pdu.short_message, pdu.tlvs, pdu.data_coding)
        except Exception as exc:  # never the session's end: nothing else could read it either
            log.error(
                "smpp receipt unreadable, acknowledged carrier=%s error=%s",
                self.name,
                type(exc).__name__,
            )
            return Status.ESME_ROK
        if receipt is not None and (
            len(receipt.carrier_message_id) > MAX_MESSAGE_ID
            or not receipt.carrier_message_id.isprintable()
        ):
            # No part has such an id (the column holds 64 characters): it can never match.
            log.error(
                "smpp receipt with an id no part can have, acknowledged carrier=%s "
                "id_length=%d",
                self.name,
                len(receipt.carrier_message_id),
            )
            return Status.ESME_ROK
        if receipt is None:
            # Answering an error would only make the SMSC send it again, equally unreadable.
            # the receipt's own "text:" field (the message's first characters) is not logged
            log.error(
                "smpp receipt without message id, acknowledged carrier=%s length=%d",
                self.name,
                len(pdu.short_message),
            )
            return Status.ESME_ROK
        if self._on_receipt is None:
            return Status.ESME_RSYSERR
        try:
            await self._on_receipt(receipt)
        except Exception:
            # Not swallowed: the SMSC gets an error status and delivers the receipt again.
            log.exception(
                "smpp receipt handler failed carrier=%s message_id=%s",
                self.name,
                receipt.carrier_message_id,
            )
            return Status.ESME_RSYSERR
        return Status.ESME_ROK


    async def _handle_inbound(self, pdu: DeliverSm) -> int:
        """A mobile-originated message: acknowledged once `on_inbound` has stored it; an error
        status (the SMSC delivers it again) if that fails."""
        if self.on_inbound is None:
            log.info("smpp mobile-originated message ignored (no inbound handler) carrier=%s",
                     self.name)
            return Status.ESME_ROK
        try:
            await self.on_inbound(InboundPdu(
                pdu.source_addr, pdu.destination_addr, pdu.esm_class, pdu.data_coding,
                pdu.short_message, pdu.tlvs, self.name))
        except Exception as exc:  # not swallowed: the SMSC gets an error and resends it
            log.error("smpp mobile-originated message not stored carrier=%s error=%s",
                      self.name, type(exc).__name__)
            return Status.ESME_RSYSERR
        return Status.ESME_ROK


class _Bind:
    """One connection slot: connects, keeps the session, reconnects with backoff."""

    def __init__(self, carrier: SmppCarrier, label: str, bind_type: BindType) -> None:
        self.carrier = carrier
        self.label = label
        self.bind_type = bind_type
        self.session: SmppSession | None = None
        self.state = "connecting"
        self.detail = ""
        # set on every state change, then replaced: a waiter holds the event it started with,
        # so a change between its check and its first wait is never missed
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def session_can_submit(self) -> bool:
        return self.session is not None and self.session.can_submit

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"smpp-bind-{self.label}")

    def status(self) -> BindStatus:
        in_flight = self.session.in_flight if self.session is not None else 0
        return BindStatus(self.label, self.bind_type, self.state, self.detail, in_flight)

    def halt(self) -> None:
        """No new submit on this bind from this moment on, not from its unbind_resp."""
        self._stop.set()
        if self.state == "bound":
            self._set("unbinding", "")

    async def stop(self, drain_timeout: float | None = None) -> None:
        self.halt()
        session = self.session
        if session is not None:
            await session.unbind(drain_timeout=self.carrier.config.stop_timeout
                                 if drain_timeout is None else drain_timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set("stopped", "")

    def _session_lost(self, reason: str) -> None:
        """The session ended: no longer counted as available from this moment on, not from
        when `_run` next wakes up."""
        if self.state == "bound":
            self._set("down", f"carrier {self.carrier.name} bind lost: {reason}")

    def _set(self, state: str, detail: str) -> None:
        if self.bind_type != "receiver" and (state == "bound") != (self.state == "bound"):
            self.carrier._submitters += 1 if state == "bound" else -1
        self.state = state
        self.detail = detail
        self.changed.set()
        self.changed = asyncio.Event()
        self.carrier._notify()

    async def _run(self) -> None:
        config = self.carrier.config
        delay = config.reconnect_initial
        where = f"{config.host}:{config.port}"
        while not self._stop.is_set():
            self._set("connecting", "")
            session = SmppSession(
                config.host,
                config.port,
                BindRequest(config.system_id, config.password, config.system_type),
                self.bind_type,
                window=config.window,
                response_timeout=config.response_timeout,
                connect_timeout=config.connect_timeout,
                enquire_link_interval=config.enquire_link_interval,
                on_deliver=self.carrier._handle_deliver
                if self.bind_type != "transmitter"
                else None,
                on_lost=self._session_lost,
                label=self.label,
            )
            try:
                await session.open()
            except asyncio.CancelledError:
                await session.close("stopped")
                raise
            except BindRefused as exc:
                self._set(
                    "refused",
                    f"bind refused by carrier {self.carrier.name}: "
                    f"check system_id/password ({exc})",
                )
                log.error("%s bind=%s", self.detail, self.label)
            except Unreachable as exc:
                self._set(
                    "unreachable",
                    f"carrier {self.carrier.name} unreachable at {where} ({exc.__cause__ or exc})",
                )
                log.error("%s bind=%s", self.detail, self.label)
            except (BindTimeout, SessionError) as exc:
                self._set("down", f"carrier {self.carrier.name} at {where}: {exc}")
                log.error("%s bind=%s", self.detail, self.label)
            else:
                self.session = session
                delay = config.reconnect_initial
                self._set("bound", "")
                reason = await session.wait_closed()
                if self._stop.is_set():
                    return
                self._set("down", f"carrier {self.carrier.name} bind lost: {reason}")
                log.warning("%s bind=%s", self.detail, self.label)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, config.reconnect_max)
