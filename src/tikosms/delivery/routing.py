"""Routing: which carriers a part may go to, in which order, and failover between them.

Routes match a part's MCCMNC: the longest match wins (MCC+MNC before MCC before `*`); among equal
matches the lower priority number goes first. A part fails over to the next carrier when the
first is down (`available` False) or answers FAILOVER (routing error). With no carrier
configured at all, the built-in simulated carrier takes everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.models import ENROUTE, CarrierRow, Part, Route
from tikosms.db.types import utcnow
from tikosms.delivery import transitions
from tikosms.delivery.carrier import (
    Carrier,
    OutboundPart,
    Receipt,
    ReceiptHandler,
    SubmitOutcome,
    SubmitResult,
)
from tikosms.delivery.simulated import NAME as SIMULATED
from tikosms.delivery.simulated import SimulatedCarrier

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


class Router:
    def __init__(self, carriers: dict[str, Carrier], rules: Sequence[RouteRule]) -> None:
        self.carriers = carriers
        self.rules = list(rules)
        self._cache: dict[str, list[str]] = {}

    @classmethod
    async def from_database(cls, db: Database, settings: Settings) -> Router:
        async with db.connect() as conn:
            all_rows = (await conn.execute(select(CarrierRow))).all()
            rows = [r for r in all_rows if r.enabled]
            routes = (
                await conn.execute(
                    select(Route.match, CarrierRow.name, Route.priority)
                    .join(CarrierRow, CarrierRow.id == Route.carrier_id)
                    .where(CarrierRow.enabled)
                )
            ).all()
        carriers: dict[str, Carrier] = {}
        for row in rows:
            try:
                carriers[row.name] = build_carrier(row)
            except (ValueError, TypeError) as exc:
                log.error("carrier %s is misconfigured and left out: %s (fix it with "
                          "`tikosms carriers remove/add`)", row.name, exc)
        rules = [RouteRule(r.match, r.name, r.priority) for r in routes]
        if not all_rows:
            carriers[SIMULATED] = SimulatedCarrier(
                settings.sim_receipt_delay_ms, settings.sim_undeliv_ratio,
                settings.sim_reject_ratio,
            )
            rules = [RouteRule("*", SIMULATED, 0)]
        elif not carriers:
            log.warning("every configured carrier is disabled or broken: parts will wait in "
                        "the queue until one is enabled (`tikosms carriers enable NAME`)")
        elif not rules:
            log.warning("carriers are configured but no routes: add one, e.g. "
                        "`tikosms routes add --match '*' --carrier NAME`; parts will wait")
        return cls(carriers, rules)

    def describe(self) -> str:
        return ",".join(self.carriers) or "none"

    async def start(self, on_receipt: ReceiptHandler, bind_wait: float = 5.0) -> None:
        """Start every carrier and give their binds a few seconds to come up, so the first
        parts claimed do not find every carrier still connecting."""
        for name, carrier in self.carriers.items():
            await carrier.start(_from_carrier(name, on_receipt))
        waits = [c.wait_bound() for c in self.carriers.values() if hasattr(c, "wait_bound")]
        if waits:
            _done, pending = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits], timeout=bind_wait)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d carrier(s) not bound after %.0f s; going on (parts fail over "
                            "or wait)", len(pending), bind_wait)

    async def stop(self) -> None:
        for carrier in self.carriers.values():
            try:
                await carrier.stop()
            except Exception:
                log.exception("stopping carrier %s failed", carrier.name)

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


def build_carrier(row: Any) -> Carrier:
    from tikosms.smpp.config import SmppCarrierConfig
    from tikosms.smpp.connector import SmppCarrier

    extra: dict[str, Any] = json.loads(row.settings or "{}")
    config = SmppCarrierConfig(
        name=row.name, host=row.host, port=row.port, system_id=row.system_id,
        password=row.password, **extra,
    )
    return SmppCarrier(config)


__all__ = ["RouteRule", "Router", "build_carrier", "order_carriers"]
