"""The carrier_slots table: each SMPP carrier's allowed binds, leased by worker processes
(see `delivery.slots`). A handful of rows (the sum of the carriers' `binds`): every read takes
them all.

Every write that could take a slot from another holder says what it expects: a take only
succeeds on a slot that is free or whose lease has ended, and increments `fencing`; a renewal
or a release only matches the holder's own (holder, fencing), so a worker that lost a slot can
never renew it back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import CarrierRow, CarrierSlot, WorkerHeartbeat

DEFAULT_BINDS = 1  # SmppCarrierConfig.binds' default


@dataclass(frozen=True, slots=True)
class Slot:
    carrier: str
    slot: int
    holder: str | None
    fencing: int
    lease_until: datetime | None

    def live(self, now: datetime) -> bool:
        """Held, and its lease not yet ended."""
        return self.holder is not None and self.lease_until is not None and self.lease_until >= now


def wanted_slots(carriers: Sequence[Any]) -> dict[str, int]:
    """The slots each enabled SMPP carrier row should have: its `binds` setting."""
    out: dict[str, int] = {}
    for row in carriers:
        if not row.enabled or row.kind != "smpp":
            continue
        try:
            binds = int(json.loads(row.settings or "{}").get("binds", DEFAULT_BINDS))
        except (TypeError, ValueError):
            continue  # a row the worker cannot build either: no slots
        out[row.name] = max(1, binds)
    return out


async def sync(conn: AsyncConnection) -> None:
    """Make the slot rows match the carriers table: slots 1..binds for each enabled carrier;
    the rows of a disabled or removed carrier, and of slots beyond its binds, deleted (their
    holder's next renewal fails and it closes that bind). Idempotent: every worker runs it
    now and then, and every `tikosms carriers` change in its own transaction."""
    carriers = (await conn.execute(
        select(CarrierRow.name, CarrierRow.kind, CarrierRow.settings, CarrierRow.enabled))).all()
    wanted = wanted_slots(carriers)
    have = {(r.carrier, r.slot) for r in (await conn.execute(
        select(CarrierSlot.carrier, CarrierSlot.slot))).all()}
    extra = [(c, s) for c, s in have if s > wanted.get(c, 0)]
    if extra:
        await conn.execute(delete(CarrierSlot).where(or_(*(
            and_(CarrierSlot.carrier == c, CarrierSlot.slot == s) for c, s in extra))))
    missing = [{"carrier": c, "slot": s, "holder": None, "fencing": 0, "lease_until": None}
               for c, n in wanted.items() for s in range(1, n + 1) if (c, s) not in have]
    if missing:
        # two workers syncing at once may both insert: the loser's rows already exist
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        await conn.execute(insert(CarrierSlot).values(missing).on_conflict_do_nothing())


async def all_slots(conn: AsyncConnection) -> list[Slot]:
    rows = (await conn.execute(
        select(CarrierSlot).order_by(CarrierSlot.carrier, CarrierSlot.slot))).all()
    return [Slot(r.carrier, r.slot, r.holder, r.fencing, r.lease_until) for r in rows]


async def take(conn: AsyncConnection, owner: str, carrier: str, slot: int, now: datetime,
               until: datetime) -> int | None:
    """Lease a slot that is free or whose lease ended; its new fencing number, or None if
    another worker holds it (or just took it)."""
    result = await conn.execute(
        update(CarrierSlot)
        .where(CarrierSlot.carrier == carrier, CarrierSlot.slot == slot,
               or_(CarrierSlot.holder.is_(None), CarrierSlot.lease_until.is_(None),
                   CarrierSlot.lease_until < now))
        .values(holder=owner, fencing=CarrierSlot.fencing + 1, lease_until=until)
        .returning(CarrierSlot.fencing))
    fencing = result.scalar_one_or_none()
    return None if fencing is None else int(fencing)


async def renew(conn: AsyncConnection, owner: str, leases: Mapping[tuple[str, int], int],
                until: datetime) -> set[tuple[str, int]]:
    """Extend the leases this worker holds ((carrier, slot) -> fencing); the ones renewed.
    A slot missing from the answer is lost: another worker took it, or its row was deleted."""
    renewed: set[tuple[str, int]] = set()
    for (carrier, slot), fencing in leases.items():
        result = await conn.execute(
            update(CarrierSlot)
            .where(CarrierSlot.carrier == carrier, CarrierSlot.slot == slot,
                   CarrierSlot.holder == owner, CarrierSlot.fencing == fencing)
            .values(lease_until=until))
        if result.rowcount:
            renewed.add((carrier, slot))
    return renewed


async def release(conn: AsyncConnection, owner: str, carrier: str, slot: int,
                  fencing: int) -> bool:
    """Give a slot back (its bind is closed): another worker may take it at once."""
    result = await conn.execute(
        update(CarrierSlot)
        .where(CarrierSlot.carrier == carrier, CarrierSlot.slot == slot,
               CarrierSlot.holder == owner, CarrierSlot.fencing == fencing)
        .values(holder=None, lease_until=None))
    return bool(result.rowcount)


async def release_all(conn: AsyncConnection, owner: str) -> int:
    """Every slot of this worker given back (a clean stop, its binds closed)."""
    result = await conn.execute(
        update(CarrierSlot).where(CarrierSlot.holder == owner)
        .values(holder=None, lease_until=None))
    return int(result.rowcount or 0)


async def holders(conn: AsyncConnection, now: datetime) -> list[dict[str, Any]]:
    """Every slot with its holder, for `tikosms carriers slots` and the console: state "held"
    (lease running, `seconds_left`), "expired" (its holder stopped renewing: a live worker
    takes it within a second or two) or "free"; the holder's host and pid when its heartbeat
    is there."""
    beats = {r.owner: r for r in (await conn.execute(
        select(WorkerHeartbeat.owner, WorkerHeartbeat.host, WorkerHeartbeat.pid))).all()}
    out = []
    for slot in await all_slots(conn):
        if slot.holder is None:
            state, left = "free", None
        elif slot.live(now):
            assert slot.lease_until is not None
            state, left = "held", round((slot.lease_until - now).total_seconds(), 1)
        else:
            state, left = "expired", None
        beat = beats.get(slot.holder) if slot.holder else None
        out.append({"carrier": slot.carrier, "slot": slot.slot, "state": state,
                    "holder": slot.holder, "host": beat.host if beat else None,
                    "pid": beat.pid if beat else None, "fencing": slot.fencing,
                    "lease_until": slot.lease_until, "seconds_left": left})
    return out


__all__ = ["Slot", "all_slots", "holders", "release", "release_all", "renew", "sync", "take",
           "wanted_slots"]
