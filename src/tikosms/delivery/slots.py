"""Bind slots: a carrier's allowed binds shared by every worker process of the fleet.

A carrier account allows a fixed number of binds (`binds`, often 2-4). Each is a row of
`carrier_slots` (slots 1..binds) that one worker process leases: `holder`, `lease_until`
(`slot_lease_seconds`, 15 s by default, renewed every third of it) and a `fencing` number that
grows at every take. Only the holder opens that bind, and only workers holding a slot of a
carrier claim that carrier's parts (`claim_filter` in routing, applied in the claim's SQL).

- **Spread**: a worker takes at most `share(slots, live workers)` = ceil(slots / live) of a
  carrier's slots (live: fresh heartbeats of delivery workers, itself included), and gives
  back what it holds beyond that (its bind closed first), so 2 slots and 3 workers give two
  workers a bind each, and one worker alone holds all.
- **A dead holder**: its lease ends at most `slot_lease_seconds` after its last renewal; a
  worker under its share takes the slot at its next look (every second), with fencing + 1.
- **A holder that cannot renew** (the database away, or the row now fenced by someone else:
  the renewal matched no row) closes that bind itself, a margin before its lease ends, so two
  binds never run for one slot.
- **Rate**: with a shared budget (PostgreSQL or Redis, tikosms.smpp.shared_rate) the holders
  take their tokens from the carrier's one budget at the agreed rate, so a holder alone (the
  other's slot lost or idle) may send at all of it; without one, each holder sends at the
  carrier's tps times the share of its slots it holds (`slot_rate`), so the fleet never
  exceeds the agreed rate.

The built-in simulated carrier has no slots (every worker has it). On SQLite there is one
worker: it holds every slot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.delivery import heartbeats_repo, slots_repo
from tikosms.delivery.heartbeat import stale_after
from tikosms.delivery.slots_repo import Slot
from tikosms.observability import metrics

if TYPE_CHECKING:
    from tikosms.delivery.queue import RouteFilter
    from tikosms.delivery.routing import Router

log = logging.getLogger("tikosms.delivery.slots")

LOOK_SECONDS = 1.0  # between two looks for free slots (a dead holder's taken within this)
WATCH_SECONDS = 0.25  # between two checks of the leases' deadlines


def share(slots: int, live_workers: int) -> int:
    """The most slots of one carrier a worker may hold."""
    return math.ceil(slots / max(1, live_workers))


def slot_rate(tps: float | None, held: int, total: int) -> float | None:
    """This process's rate for a carrier when the fleet shares no budget (SQLite, or
    TIKOSMS_RATE_SHARED=0): its share of the agreed `tps` (None: no limit). With a shared
    budget (tikosms.smpp.shared_rate) the agreed rate is the budget's."""
    if tps is None or total <= 0:
        return tps
    return tps * max(held, 1) / total


def renew_margin(lease: float) -> float:
    """Seconds before its lease ends that a holder which could not renew closes the bind."""
    return max(0.5, lease / 5)


@dataclass(slots=True)
class Lease:
    carrier: str
    slot: int
    fencing: int
    deadline: float  # monotonic: close the bind by then unless renewed
    releasing: bool = False


class SlotKeeper:
    """The slots one worker process holds, kept in step with the table (one task)."""

    def __init__(self, db: Database, settings: Settings, router: Router, owner: str) -> None:
        self.db = db
        self.router = router
        self.owner = owner
        self.lease = settings.slot_lease_seconds
        self.stale_after = stale_after(settings)
        self.leases: dict[tuple[str, int], Lease] = {}
        self.served: set[str] = set()  # carriers with a live holder (this worker included)
        self.table: list[Slot] = []  # the rows as last read
        self._next_renew = 0.0
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._failing = False
        self._filter_key: tuple[Any, ...] | None = None
        self._filter: RouteFilter | None = None
        self._lock = asyncio.Lock()  # one look at a time (the loop's, or a reload's)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Take this worker's share now (its binds start coming up), then keep it."""
        await self.look()
        self._task = asyncio.create_task(self._run(), name="carrier-slots")
        self._watchdog = asyncio.create_task(self._watch(), name="carrier-slots-deadlines")

    async def halt(self) -> None:
        """Stop taking and renewing (the worker is stopping; its binds close next)."""
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._watchdog = None
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    async def release_all(self) -> None:
        """Every slot given back once the binds are closed: another worker takes them at its
        next look, not after the lease."""
        if not self.leases:
            return
        try:
            async with asyncio.timeout(2.0), self.db.begin() as conn:
                n = await slots_repo.release_all(conn, self.owner)
        except Exception as exc:  # their leases end by themselves
            log.warning("could not give back %d carrier slots (%s); they are free once their "
                        "lease ends", len(self.leases), type(exc).__name__)
            return
        log.info("gave back %d carrier slots holder=%s", n, self.owner)
        self.leases.clear()

    def held(self, carrier: str) -> list[int]:
        return sorted(s for (c, s) in self.leases if c == carrier)

    def mine(self) -> set[str]:
        return {c for (c, _s) in self.leases}

    def route_filter(self) -> RouteFilter:
        """Which parts this worker may claim (see routing.claim_filter), cached until the
        routes, the slots held or the carriers served change."""
        from tikosms.delivery.routing import SIMULATED, claim_filter

        unmanaged = {n for n, c in self.router.carriers.items()
                     if n == SIMULATED or not getattr(c, "managed", False)}
        mine = frozenset(self.mine() | unmanaged)
        served = frozenset(self.served | unmanaged)
        key = (tuple(self.router.rules), mine, served)
        if key != self._filter_key or self._filter is None:
            self._filter = claim_filter(self.router.rules, mine, served)
            self._filter_key = key
        return self._filter

    # --- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(min(LOOK_SECONDS, self.lease / 3))
            try:
                # bounded: a database that stopped answering is not waited for (the command
                # timeout is longer than a lease); the watchdog closes the binds meanwhile
                async with asyncio.timeout(self.lease / 3):
                    await self.look()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    log.error("carrier slots: looking at the table failed (%s); binds whose "
                              "lease cannot be renewed close before it ends", _brief(exc))
                self._failing = True
            else:
                if self._failing:
                    log.warning("carrier slots: the table can be read again")
                self._failing = False

    async def _watch(self) -> None:
        """Close the binds of leases not renewed in time, whatever the looks are doing."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            await self._close_expired()

    async def look(self, carriers_now: dict[str, Any] | None = None) -> None:
        """One look at the table: renew what is held (every third of the lease), take free
        or expired slots up to this worker's share, give back what is beyond it.
        `carriers_now`: the carriers a reload is about to put in place (default: the
        router's)."""
        async with self._lock:
            await self._look(carriers_now)

    async def _look(self, carriers_now: dict[str, Any] | None) -> None:
        started = time.monotonic()
        now = utcnow()
        until = now + timedelta(seconds=self.lease)
        renew = started >= self._next_renew
        carriers = self._managed(carriers_now)
        taken: list[tuple[Slot, int]] = []
        async with self.db.begin() as conn:
            lost: list[tuple[str, int]] = []
            if renew:
                await slots_repo.sync(conn)
                mine = {k: lease.fencing for k, lease in self.leases.items()}
                renewed = await slots_repo.renew(conn, self.owner, mine, until)
                lost = [k for k in mine if k not in renewed]
            rows = await slots_repo.all_slots(conn)
            beats = await heartbeats_repo.all_beats(conn)
            live = {b.owner for b in beats if b.delivers and b.fresh(now, self.stale_after)}
            live.add(self.owner)
            for name, carrier in carriers.items():
                total = carrier.config.binds
                room = share(total, len(live)) - len(self.held(name))
                for row in rows:
                    if room <= 0:
                        break
                    if (row.carrier != name or row.slot > total or row.live(now)
                            or (name, row.slot) in self.leases):
                        continue
                    fencing = await slots_repo.take(conn, self.owner, name, row.slot, now, until)
                    if fencing is not None:
                        taken.append((row, fencing))
                        room -= 1
        # committed: what was renewed and taken holds until `deadline`
        deadline = started + self.lease - renew_margin(self.lease)
        if renew:
            self._next_renew = started + self.lease / 3
            for key, lease in self.leases.items():
                if key not in lost:
                    lease.deadline = deadline
        for key in lost:
            lease = self.leases[key]
            log.warning("carrier %s slot %d: lease lost (another worker holds it, or the "
                        "slot is gone) fencing=%d holder=%s: closing its bind", key[0], key[1],
                        lease.fencing, self.owner)
            await self._close(key, drain=False)
        for row, fencing in taken:
            self.leases[(row.carrier, row.slot)] = Lease(row.carrier, row.slot, fencing, deadline)
            if row.holder is not None and row.holder != self.owner:
                log.warning("carrier %s slot %d taken over from %s (its lease ended) "
                            "fencing=%d holder=%s", row.carrier, row.slot, row.holder, fencing,
                            self.owner)
            else:
                log.info("carrier %s slot %d taken fencing=%d holder=%s", row.carrier, row.slot,
                         fencing, self.owner)
            carrier = carriers.get(row.carrier)
            if carrier is not None:
                carrier.open_slot(row.slot)
        self.table = [slot for slot in rows if (slot.carrier, slot.slot) not in
                      {(r.carrier, r.slot) for r, _f in taken}] + [
            Slot(r.carrier, r.slot, self.owner, f, until) for r, f in taken]
        self.served = {s.carrier for s in self.table if s.live(now)} | self.mine()
        self._give_back_excess(carriers, len(live))
        self._reconcile(self._managed(carriers_now))
        self._apply_shares(self._managed(carriers_now))

    def adopt(self, name: str, carrier: Any) -> None:
        """A carrier rebuilt by a reload (new settings): it opens the slots this worker
        holds of it (those still within its binds); the others are given back."""
        for slot in self.held(name):
            if slot <= carrier.config.binds:
                carrier.open_slot(slot)
            else:
                self._start_release((name, slot), closed=True)
        carrier.set_share(len([s for s in self.held(name) if s <= carrier.config.binds]),
                          carrier.config.binds)

    def forget(self, names: Iterable[str]) -> None:
        """Carriers a reload removed or disabled: their slots are given back (their rows are
        gone already when the change came through `tikosms carriers`)."""
        for name in names:
            for slot in self.held(name):
                self._start_release((name, slot), closed=True)

    # --- helpers -----------------------------------------------------------------------------
    def _managed(self, carriers: dict[str, Any] | None = None) -> dict[str, Any]:
        carriers = self.router.carriers if carriers is None else carriers
        return {n: c for n, c in carriers.items() if getattr(c, "managed", False)}

    def _give_back_excess(self, carriers: dict[str, Any], live: int) -> None:
        for name, carrier in carriers.items():
            held = [s for s in self.held(name) if not self.leases[(name, s)].releasing]
            excess = len(held) - share(carrier.config.binds, live)
            for slot in sorted(held, reverse=True)[:max(0, excess)]:
                log.info("carrier %s slot %d: giving it back (%d live workers share %d "
                         "slots) holder=%s", name, slot, live, carrier.config.binds, self.owner)
                self._start_release((name, slot), closed=False)

    def _start_release(self, key: tuple[str, int], closed: bool) -> None:
        lease = self.leases.get(key)
        if lease is None or lease.releasing:
            return
        lease.releasing = True
        task = asyncio.create_task(self._release(key, closed), name=f"release-{key[0]}#{key[1]}")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, key: tuple[str, int], closed: bool) -> None:
        """Close the bind (its responses in flight drain), then free the row: the next
        holder binds only after this one unbound."""
        lease = self.leases.get(key)
        if lease is None:  # lost meanwhile: its bind is closed already
            return
        if not closed:
            carrier = self._managed().get(key[0])
            if carrier is not None:
                await carrier.close_slot(key[1])
        try:
            async with self.db.begin() as conn:
                await slots_repo.release(conn, self.owner, key[0], key[1], lease.fencing)
        except Exception as exc:  # its lease ends by itself
            log.warning("carrier %s slot %d: could not give it back (%s); free once its lease "
                        "ends", key[0], key[1], type(exc).__name__)
        self.leases.pop(key, None)
        self._apply_shares(self._managed())

    async def _close_expired(self) -> None:
        """Leases that could not be renewed in time: their binds close now."""
        now = time.monotonic()
        for key, lease in list(self.leases.items()):
            if lease.deadline <= now and not lease.releasing:
                log.warning("carrier %s slot %d: lease not renewed in time (database "
                            "unreachable?) fencing=%d holder=%s: closing its bind", key[0],
                            key[1], lease.fencing, self.owner)
                await self._close(key, drain=False)

    async def _close(self, key: tuple[str, int], drain: bool) -> None:
        lease = self.leases.pop(key, None)
        carrier = self._managed().get(key[0])
        if carrier is not None:
            # at once: the lease ends within renew_margin, the next holder may bind then
            timeout = None if drain else min(carrier.config.stop_timeout,
                                             renew_margin(self.lease) / 2)
            await carrier.close_slot(key[1], timeout)
        if lease is not None:
            self._apply_shares(self._managed())

    def _reconcile(self, carriers: dict[str, Any]) -> None:
        """Every held slot has its bind open on the carrier as the router has it now, and no
        bind is open without a slot (a reload may have swapped a carrier during a look)."""
        for name, carrier in carriers.items():
            held = set(self.held(name))
            for slot in held:
                if slot <= carrier.config.binds:
                    carrier.open_slot(slot)
            for slot in set(carrier.open_slots) - held:
                log.warning("carrier %s slot %d: bind open without its slot; closing it",
                            name, slot)
                task = asyncio.create_task(carrier.close_slot(slot, 0.5))
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)

    def _apply_shares(self, carriers: dict[str, Any]) -> None:
        for name, carrier in carriers.items():
            held = len(self.held(name))
            carrier.set_share(held, carrier.config.binds)
            metrics.slots_held(name, held)


def _brief(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first[:160]}"
