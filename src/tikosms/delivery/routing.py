"""Routing: which carriers a part may go to, in which order, and failover between them.

Routes match a part's MCCMNC: the longest match wins (MCC+MNC before MCC before `*`); among equal
matches the lower priority number goes first. A part fails over to the next carrier when the
first is down (`available` False) or answers FAILOVER (routing error). With no carrier
configured at all, the built-in simulated carrier takes everything.

Hot reload: a router made by `from_database` looks at the carriers and routes tables every
`carriers_reload_seconds` (they are a few rows) and applies what changed without a restart:
a new or re-enabled carrier is started; a changed one (address, credentials, binds, window,
TPS ...) gets new binds, and once they are up (or after a few seconds) takes the new parts
while the old binds drain: parts in flight there finish there, then they unbind; a disabled or
removed carrier drains the same way; routes are swapped at once. Carriers whose row did not
change keep their binds untouched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import ENROUTE, CarrierRow, Part, Route
from tikosms.db.types import utcnow
from tikosms.delivery import transitions
from tikosms.delivery.carrier import (
    Carrier,
    InboundHandler,
    OutboundPart,
    Receipt,
    ReceiptHandler,
    SubmitOutcome,
    SubmitResult,
)
from tikosms.delivery.queue import RouteFilter
from tikosms.delivery.simulated import NAME as SIMULATED
from tikosms.delivery.simulated import SimulatedCarrier

if TYPE_CHECKING:
    from tikosms.delivery.slots import SlotKeeper

log = logging.getLogger("tikosms.delivery.routing")


@dataclass(frozen=True, slots=True)
class RouteRule:
    match: str  # "*", MCC (3 digits) or MCC+MNC (5-6 digits)
    carrier: str
    priority: int

    def matches(self, mccmnc: str) -> bool:
        return self.match == "*" or mccmnc.startswith(self.match)

    @property
    def specificity(self) -> int:
        return 0 if self.match == "*" else len(self.match)


def order_carriers(rules: Sequence[RouteRule], mccmnc: str) -> list[str]:
    """Carriers for a destination, best first: longest match, then lower priority number."""
    hits = sorted(
        (r for r in rules if r.matches(mccmnc)), key=lambda r: (-r.specificity, r.priority)
    )
    seen: list[str] = []
    for r in hits:
        if r.carrier not in seen:
            seen.append(r.carrier)
    return seen


def claim_filter(rules: Sequence[RouteRule], mine: Set[str], served: Set[str]) -> RouteFilter:
    """Which parts a worker may claim, by mccmnc (see queue.RouteFilter).

    A part goes to the first carrier of its route (`order_carriers`) that some worker serves
    (`served`: holds a slot of it, or it has no slots, like the simulated carrier); the worker
    claims it when that carrier is one of its own (`mine`), and fails over only among those.
    Parts that no carrier serves wait in the queue; parts with no route at all are claimed (and
    retried later, as before slots) by any worker that can submit something."""
    if not mine:
        return RouteFilter((), False)
    prefixes = sorted({r.match for r in rules if r.match != "*"}, key=lambda p: (-len(p), p))

    def decide(mccmnc: str) -> bool:
        names = order_carriers(rules, mccmnc)
        if not names:
            return True
        chosen = next((n for n in names if n in served), None)
        return chosen is not None and chosen in mine

    # every mccmnc whose longest matching prefix is p has the same carriers as p itself
    return RouteFilter(tuple((p, decide(p)) for p in prefixes), decide(""))


@dataclass(frozen=True, slots=True)
class CarrierSet:
    """What the carriers and routes tables say a worker should run: the enabled carriers' rows
    (by name), the routes between them, and whether the simulated fallback applies (no carrier
    configured at all)."""

    rows: Mapping[str, Any]
    rules: tuple[RouteRule, ...]
    simulated: bool
    fingerprints: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def version(self) -> tuple[Any, ...]:
        """Equal for two reads of unchanged tables (the router compares it every poll)."""
        return (tuple(sorted(self.fingerprints.items())), tuple(sorted(self.rules,
                key=lambda r: (r.match, r.carrier, r.priority))), self.simulated)


async def load_carrier_set(db: Database) -> CarrierSet:
    async with db.connect() as conn:
        all_rows = (await conn.execute(select(CarrierRow))).all()
        routes = (
            await conn.execute(
                select(Route.match, CarrierRow.name, Route.priority)
                .join(CarrierRow, CarrierRow.id == Route.carrier_id)
                .where(CarrierRow.enabled, Route.enabled)
            )
        ).all()
    rows = {r.name: r for r in all_rows if r.enabled}
    return CarrierSet(
        rows, tuple(RouteRule(r.match, r.name, r.priority) for r in routes), not all_rows,
        {name: _fingerprint(row) for name, row in rows.items()},
    )


def _fingerprint(row: Any) -> tuple[Any, ...]:
    """What a carrier is built from: a change to any of it means new binds."""
    return (row.kind, row.host, row.port, row.system_id, row.password,
            json.dumps(json.loads(row.settings or "{}"), sort_keys=True))


class Router:
    def __init__(self, carriers: dict[str, Carrier], rules: Sequence[RouteRule]) -> None:
        self.carriers = carriers
        self.rules = list(rules)
        self._cache: dict[str, list[str]] = {}
        # hot reload (set by from_database; a router built by hand never reloads)
        self._db: Database | None = None
        self._settings: Settings | None = None
        self._version: tuple[Any, ...] | None = None
        self._fingerprints: dict[str, tuple[Any, ...]] = {}
        self._on_receipt: ReceiptHandler | None = None
        self._bind_wait = 5.0
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        # carriers' mobile-originated messages (tikosms.inbound): given to every carrier that
        # takes them (an `on_inbound` attribute) as it starts
        self.on_inbound: InboundHandler | None = None
        # bind slots (delivery.slots): set by the worker for a router from the database, whose
        # SMPP carriers open only the binds of the slots this process holds
        self.slots: SlotKeeper | None = None

    @property
    def managed(self) -> bool:
        """Built from the database: its SMPP carriers bind slot by slot."""
        return self._db is not None

    @classmethod
    async def from_database(cls, db: Database, settings: Settings) -> Router:
        wanted = await load_carrier_set(db)
        carriers: dict[str, Carrier] = {}
        for name, row in wanted.rows.items():
            built = _build_or_log(row, managed=True)
            if built is not None:
                carriers[name] = built
        rules = list(wanted.rules)
        if wanted.simulated:
            carriers[SIMULATED] = _simulated(settings)
            rules = [RouteRule("*", SIMULATED, 0)]
        _warn_if_nothing_routes(carriers, rules)
        router = cls(carriers, rules)
        router._db, router._settings = db, settings
        router._version = wanted.version
        router._fingerprints = {n: wanted.fingerprints[n] for n in carriers if n != SIMULATED}
        return router

    def describe(self) -> str:
        return ",".join(self.carriers) or "none"

    async def start(self, on_receipt: ReceiptHandler, bind_wait: float = 5.0) -> None:
        """Start every carrier and give their binds a few seconds to come up, so the first
        parts claimed do not find every carrier still connecting; then watch the tables."""
        self._on_receipt, self._bind_wait = on_receipt, bind_wait
        for name, carrier in self.carriers.items():
            self._attach_inbound(carrier)
            await carrier.start(_from_carrier(name, on_receipt))
        if self.slots is not None:
            await self.slots.start()  # this process's share of the slots: their binds start
        pending = await _wait_bound(self._bound_wanted(), bind_wait)
        if pending:
            log.warning("%d carrier(s) not bound after %.0f s; going on (parts fail over "
                        "or wait)", pending, bind_wait)
        period = self._settings.carriers_reload_seconds if self._settings else 0.0
        if self._db is not None and period > 0:
            self._watcher = asyncio.create_task(self._watch(period), name="carriers-reload")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        async with self._reload_lock:  # a reload half-way is finished first
            for carrier in self.carriers.values():
                await _stop(carrier)
            if self._retiring:
                await asyncio.gather(*self._retiring, return_exceptions=True)

    # --- hot reload ----------------------------------------------------------------------
    async def reload(self) -> bool:
        """Apply the carriers and routes tables as they are now; False when nothing changed.
        Only carriers whose row changed are rebuilt."""
        assert self._db is not None and self._settings is not None, "not from_database"
        assert self._on_receipt is not None, "start() first"
        wanted = await load_carrier_set(self._db)
        if wanted.version == self._version:
            return False
        async with self._reload_lock:
            if wanted.version == self._version:  # applied by a reload that ran meanwhile
                return False
            await self._apply(wanted)
        return True

    async def _apply(self, wanted: CarrierSet) -> None:
        assert self._on_receipt is not None and self._settings is not None
        carriers: dict[str, Carrier] = {}
        fingerprints: dict[str, tuple[Any, ...]] = {}
        started: list[Carrier] = []
        for name, row in wanted.rows.items():
            current = self.carriers.get(name)
            if current is not None and self._fingerprints.get(name) == wanted.fingerprints[name]:
                carriers[name] = current  # unchanged: its binds stay as they are
            else:
                built = _build_or_log(row, managed=self.slots is not None)
                if built is None:
                    continue
                self._attach_inbound(built)
                await built.start(_from_carrier(name, self._on_receipt))
                if self.slots is not None:
                    self.slots.adopt(name, built)  # the slots held of it, within its binds
                carriers[name] = built
                started.append(built)
            fingerprints[name] = wanted.fingerprints[name]
        if self.slots is not None and started:
            try:  # a new carrier's slots taken now: it binds before it takes parts, as before
                await self.slots.look(carriers)
            except Exception as exc:  # the keeper's next look takes them
                log.warning("carrier slots not taken at reload (%s)", type(exc).__name__)
            started = [c for c in started if not getattr(c, "managed", False)
                       or bool(getattr(c, "open_slots", None))]
        rules = list(wanted.rules)
        if wanted.simulated:
            sim = self.carriers.get(SIMULATED)
            if sim is None:
                sim = _simulated(self._settings)
                await sim.start(_from_carrier(SIMULATED, self._on_receipt))
            carriers[SIMULATED] = sim
            rules = [RouteRule("*", SIMULATED, 0)]
        # new binds come up before the old ones stop taking parts (or after a few seconds:
        # a new address that does not answer is the operator's to fix, and is logged)
        pending = await _wait_bound(started, self._bind_wait)
        retired = [c for n, c in self.carriers.items() if carriers.get(n) is not c]
        added = [n for n in carriers if n not in self.carriers]
        changed = [c.name for c in started if c.name not in added]
        removed = [n for n in self.carriers if n not in carriers]
        self.carriers, self.rules, self._cache = carriers, rules, {}
        self._fingerprints, self._version = fingerprints, wanted.version
        if self.slots is not None and removed:
            self.slots.forget(removed)
        for carrier in retired:
            task = asyncio.create_task(self._retire(carrier), name=f"retire-{carrier.name}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        log.info("carriers reloaded: added=%s changed=%s removed=%s routes=%d carriers=%s",
                 ",".join(added) or "-", ",".join(changed) or "-", ",".join(removed) or "-",
                 len(rules), self.describe())
        if pending:
            log.warning("%d reloaded carrier(s) not bound after %.0f s; their parts fail "
                        "over or wait", pending, self._bind_wait)
        _warn_if_nothing_routes(carriers, rules)

    async def _retire(self, carrier: Carrier) -> None:
        """Drain a carrier taken out of service: submissions in flight get their response,
        then it unbinds (SmppCarrier.stop); the simulated carrier first gives its receipts."""
        if isinstance(carrier, SimulatedCarrier):
            await asyncio.sleep(carrier.receipt_delay + 0.5)
        await _stop(carrier)
        log.info("carrier %s drained and stopped (its previous binds)", carrier.name)

    async def _watch(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await self.reload()
            except Exception as exc:  # the database away, most often: one line, no trace
                log.warning("reloading carriers failed (%s); trying again in %.1f s",
                            exc.__class__.__name__, period)

    def _bound_wanted(self) -> list[Carrier]:
        """The carriers worth waiting for at start: the managed ones only if they hold a
        slot (one without any never binds here)."""
        return [c for c in self.carriers.values()
                if not getattr(c, "managed", False) or bool(getattr(c, "open_slots", None))]

    def _attach_inbound(self, carrier: Carrier) -> None:
        if self.on_inbound is not None and hasattr(carrier, "on_inbound"):
            carrier.on_inbound = self.on_inbound

    def route(self, mccmnc: str) -> list[str]:
        hit = self._cache.get(mccmnc)
        if hit is None:
            hit = self._cache[mccmnc] = order_carriers(self.rules, mccmnc)
        return hit

    async def submit(self, part: OutboundPart) -> tuple[str | None, SubmitOutcome]:
        names = self.route(part.mccmnc)
        if not names:
            return None, SubmitOutcome(SubmitResult.RETRY, retry_after=30.0,
                                       detail=f"no route for mccmnc {part.mccmnc}")
        last: tuple[str | None, SubmitOutcome] | None = None
        for name in names:
            carrier = self.carriers.get(name)
            if carrier is None or not carrier.available:
                continue
            outcome = await carrier.submit(part)
            replaced = self.carriers.get(name)
            if (outcome.result is SubmitResult.FAILOVER and replaced is not None
                    and replaced is not carrier and replaced.available):
                outcome = await replaced.submit(part)  # reloaded meanwhile: its new binds
            if outcome.result is SubmitResult.FAILOVER:
                log.info("part %d: carrier %s cannot route it (%s); trying the next one",
                         part.part_id, name, outcome.detail or outcome.error_code)
                last = (name, outcome)
                continue
            return name, outcome
        if last is not None and last[1].error_code:
            # every carrier refused to route it: a permanent rejection of the last one
            return last[0], SubmitOutcome(SubmitResult.REJECTED, error_code=last[1].error_code,
                                          detail="no carrier could route it")
        return None, SubmitOutcome(SubmitResult.RETRY, retry_after=5.0,
                                   detail=f"no carrier available for {part.mccmnc} "
                                          f"(tried {', '.join(names)})")

    async def housekeeping(self, db: Database) -> None:
        sim = self.carriers.get(SIMULATED)
        if isinstance(sim, SimulatedCarrier):
            await recover_simulated(db, sim)


def _from_carrier(name: str, on_receipt: ReceiptHandler) -> ReceiptHandler:
    """The handler a carrier gets: its receipts are stamped with its name."""

    async def handle(receipt: Receipt) -> None:
        await on_receipt(dataclasses.replace(receipt, carrier=name))

    return handle


async def recover_simulated(db: Database, sim: SimulatedCarrier, grace: float = 10.0) -> None:
    """Parts the simulated carrier accepted in a process that died never got their receipt:
    give them one now (the simulator's receipts live only in memory)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=sim.receipt_delay + grace)
    async with db.begin() as conn:
        rows = (await conn.execute(
            select(Part.carrier_message_id).where(
                Part.status == ENROUTE, Part.carrier == SIMULATED, Part.sent_at < cutoff
            ).limit(5000)
        )).all()
        if rows:
            await transitions.record_receipts(
                conn, [Receipt(str(r[0]), "DELIVRD", None, now, carrier=SIMULATED) for r in rows],
                now,
                keep_unmatched=False,
            )
    if rows:
        log.info("gave %d orphaned simulated parts their receipt", len(rows))


def _simulated(settings: Settings) -> SimulatedCarrier:
    return SimulatedCarrier(settings.sim_receipt_delay_ms, settings.sim_undeliv_ratio,
                            settings.sim_reject_ratio)


def _build_or_log(row: Any, managed: bool = False) -> Carrier | None:
    try:
        return build_carrier(row, managed)
    except (ValueError, TypeError) as exc:
        log.error("carrier %s is misconfigured and left out: %s (fix it with "
                  "`tikosms carriers update %s ...`)", row.name, exc, row.name)
        return None


def _warn_if_nothing_routes(carriers: Mapping[str, Carrier], rules: Sequence[RouteRule]) -> None:
    if not carriers:
        log.warning("every configured carrier is disabled or broken: parts will wait in "
                    "the queue until one is enabled (`tikosms carriers enable NAME`)")
    elif not rules:
        log.warning("carriers are configured but no routes: add one, e.g. "
                    "`tikosms routes add --match '*' --carrier NAME`; parts will wait")


async def _wait_bound(carriers: Sequence[Carrier], within: float) -> int:
    """Wait up to `within` s for each carrier that binds to have a bind up; returns how many
    have none yet."""
    waits = [asyncio.ensure_future(c.wait_bound()) for c in carriers if hasattr(c, "wait_bound")]
    if not waits:
        return 0
    _done, pending = await asyncio.wait(waits, timeout=within)
    for task in pending:
        task.cancel()
    return len(pending)


async def _stop(carrier: Carrier) -> None:
    try:
        await carrier.stop()
    except Exception:
        log.exception("stopping carrier %s failed", carrier.name)


def build_carrier(row: Any, managed: bool = False) -> Carrier:
    from tikosms.smpp.config import SmppCarrierConfig
    from tikosms.smpp.connector import SmppCarrier

    extra: dict[str, Any] = json.loads(row.settings or "{}")
    config = SmppCarrierConfig(
        name=row.name, host=row.host, port=row.port, system_id=row.system_id,
        password=row.password, **extra,
    )
    return SmppCarrier(config, managed=managed)


__all__ = ["CarrierSet", "RouteRule", "Router", "build_carrier", "claim_filter",
           "load_carrier_set", "order_carriers"]
