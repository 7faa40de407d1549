"""Every change of a part's status, with its consequences, in the caller's transaction.

- ENROUTE (carrier accepted): sent_at, carrier, carrier message id; a receipt that came first
  (pending_receipts) is applied at once.
- REJECTD at submission, EXPIRED in the queue, CANCELED: refunded (never reached a carrier).
- Receipt states: delivered_at with DELIVRD; a late intermediate state never overwrites a final
  one; a part a carrier accepted is charged whatever its receipt says.
- RETRY: back to the queue after a delay, no status change, no callback. A retry the carrier
  may have sent (no answer, ROK without an id) counts in `parts.unanswered`; at the cap the part
  ends UNKNOWN, error_code `no_carrier_answer`, charged: each such attempt was possibly a real
  SMS, and resubmitting it for 48 h would send it again and again.
- UNTRACKABLE (accepted, but its carrier id cannot be stored or matched): sent_at, final UNKNOWN,
  error_code `carrier_id_invalid`, charged (the carrier took it; no receipt can ever match it).
Each status change queues its callback (`callbacks.outbox`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.accounts import service as accounts
from tikosms.callbacks.outbox import (
    CAMPAIGN_CALLBACK_URL,
    CAMPAIGN_SENDER,
    enqueue_status_events,
)
from tikosms.db.driver_sql import run_with_list
from tikosms.db.models import ENROUTE, FINAL_STATUSES, WAITING_STATUSES, Part, PendingReceipt
from tikosms.db.types import from_micros, naive_utc, sqlite_time, stored_utc
from tikosms.delivery.carrier import Receipt
from tikosms.smpp_server.outbox import enqueue_receipts

log = logging.getLogger("tikosms.delivery")

CARRIER_ID_INVALID = "carrier_id_invalid"  # accepted under an id that cannot be stored

# spelled out rather than IN (...): executemany cannot expand an IN list
WAITING = (Part.status == WAITING_STATUSES[0]) | (Part.status == WAITING_STATUSES[1])

# The hot paths (a submit accepted, a receipt) run as SQL on the driver with pre-built rows: per
# row, SQLAlchemy's parameter and type processing cost more CPU than the database's work.
_WAITING_SQL = "status IN ('SCHEDULED', 'QUEUED')"
_FINAL_SQL = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))
_PG_ACCEPT = (
    "UPDATE parts SET status = 'ENROUTE', sent_at = $1, updated_at = $1, carrier = v.carrier, "
    "carrier_message_id = v.cmid, lease_until = NULL, lease_owner = NULL "
    "FROM unnest($2::bigint[], $3::varchar[], $4::varchar[]) AS v(id, carrier, cmid) "
    f"WHERE parts.id = v.id AND parts.{_WAITING_SQL}"
)
# PostgreSQL: the same, and the receipts that came before it (pending_receipts), in one round trip
# (a data-modifying WITH runs whatever the main query reads)
_PG_ACCEPT_AND_EARLY = (
    f"WITH u AS ({_PG_ACCEPT}) "
    "SELECT id FROM pending_receipts WHERE carrier_message_id = ANY($4::varchar[])"
)
_SQLITE_ACCEPT = (
    "UPDATE parts SET status = 'ENROUTE', sent_at = ?, updated_at = ?, carrier = ?, "
    "carrier_message_id = ?, lease_until = NULL, lease_owner = NULL "
    f"WHERE id = ? AND {_WAITING_SQL}"
)
_PG_RECEIPTS = (
    "UPDATE parts SET status = v.status, error_code = v.err, delivered_at = v.dat, "
    "updated_at = $1 "
    "FROM unnest($2::bigint[], $3::varchar[], $4::varchar[], $5::timestamp[]) "
    "AS v(id, status, err, dat) "
    f"WHERE parts.id = v.id AND parts.status NOT IN ({_FINAL_SQL})"
)
_SQLITE_RECEIPTS = (
    "UPDATE parts SET status = ?, error_code = ?, delivered_at = ?, updated_at = ? "
    f"WHERE id = ? AND status NOT IN ({_FINAL_SQL})"
)
# (part id, carrier message id, status, whether a callback URL applies, carrier, whether an
# SMPP receipt may be owed) of the parts with one of the ids
_PARTS_FOR_RECEIPTS_SQL = (
    "SELECT p.id, p.carrier_message_id, p.status, "
    "(COALESCE(p.callback_url, '') <> '' OR COALESCE(c.callback_url, '') <> ''), p.carrier, "
    "COALESCE(c.kind IN ('smpp', 'smpp-f'), FALSE) "
    "FROM parts p LEFT JOIN campaigns c ON c.id = p.campaign_id "
    "WHERE p.carrier_message_id IS NOT NULL AND p.carrier_message_id "  # the partial index
)
_PARTS_FOR_RECEIPTS = {
    "postgresql": _PARTS_FOR_RECEIPTS_SQL + "= ANY($1::varchar[])",
    "sqlite": _PARTS_FOR_RECEIPTS_SQL + "IN (SELECT value FROM json_each(?))",
}
_PENDING_RECEIPTS_FOR = {
    "postgresql": "SELECT id FROM pending_receipts WHERE carrier_message_id = ANY($1::varchar[])",
    "sqlite": "SELECT id FROM pending_receipts WHERE carrier_message_id IN "
              "(SELECT value FROM json_each(?))",
}

PART_FIELDS = (
    Part.id, Part.account_id, Part.campaign_id, Part.message_id, Part.to, Part.status,
    Part.part_no, Part.total_parts, Part.mccmnc, Part.cost, Part.sent_at, Part.delivered_at,
    Part.client_ref, Part.callback_url, Part.error_code, Part.carrier_message_id,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    part_id: int
    carrier: str
    carrier_message_id: str
    callback: bool = True  # the part or its campaign has a callback URL (False: none queued)


@dataclass(frozen=True, slots=True)
class Rejected:
    part_id: int
    carrier: str | None
    error_code: str | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    part_id: int
    delay: float  # seconds
    detail: str = ""
    maybe_sent: bool = False  # the carrier may have sent it (SubmitOutcome.maybe_sent)


@dataclass(frozen=True, slots=True)
class Untrackable:
    """A part the carrier accepted whose message id cannot be stored (too long, control
    characters): sent and charged, but no receipt can match it."""

    part_id: int
    carrier: str
    error_code: str = CARRIER_ID_INVALID
    callback: bool = True


NO_CARRIER_ANSWER = "no_carrier_answer"


async def record_accepted(conn: AsyncConnection, items: Sequence[Accepted], now: datetime
                          ) -> None:
    if not items:
        return
    stamp = naive_utc(now)
    cmids = [a.carrier_message_id for a in items]
    # and the receipts that arrived before we stored the carrier's message id
    if conn.dialect.name == "postgresql":
        result = await conn.exec_driver_sql(_PG_ACCEPT_AND_EARLY, (
            stamp, [a.part_id for a in items], [a.carrier for a in items], cmids))
        early_ids = [tuple(row) for row in result]
    else:
        when = sqlite_time(stamp)
        await conn.exec_driver_sql(_SQLITE_ACCEPT, [  # type: ignore[arg-type]
            (when, when, a.carrier, a.carrier_message_id, a.part_id) for a in items
        ])
        early_ids = await run_with_list(conn, _PENDING_RECEIPTS_FOR, cmids)
    announced = [a.part_id for a in items if a.callback]
    if announced:
        rows = [r for r in await _parts(conn, announced) if r["status"] == ENROUTE]
        await announce(conn, rows, now)
    if early_ids:
        carriers = {(a.carrier_message_id, a.carrier) for a in items}
        await apply_pending_receipts(
            conn, [i for (i,) in early_ids], now,
            keep=lambda r: r.carrier is None or (r.carrier_message_id, r.carrier) in carriers,
        )


async def apply_pending_receipts(
    conn: AsyncConnection, ids: Sequence[int], now: datetime,
    keep: Callable[[Any], bool] = lambda _row: True,
) -> int:
    """Apply the kept receipts with these pending_receipts ids to their parts, and forget
    them. Rows `keep` refuses (another carrier's receipt with the same id) stay pending."""
    rows = [r for r in (await conn.execute(
        select(PendingReceipt).where(PendingReceipt.id.in_(list(ids))))).all() if keep(r)]
    if not rows:
        return 0
    await conn.execute(delete(PendingReceipt).where(PendingReceipt.id.in_([r.id for r in rows])))
    return await record_receipts(
        conn,
        [Receipt(r.carrier_message_id, r.status, r.error_code, r.done_at, carrier=r.carrier)
         for r in rows],
        now,
        keep_unmatched=False,
    )


async def record_rejected(conn: AsyncConnection, items: Sequence[Rejected], now: datetime
                          ) -> None:
    if not items:
        return
    await conn.execute(
        update(Part)
        .where(Part.id == bindparam("pid"), WAITING)
        .values(
            status="REJECTD", updated_at=now, carrier=bindparam("carrier"),
            error_code=bindparam("err"), lease_until=None, lease_owner=None,
        ),
        [{"pid": r.part_id, "carrier": r.carrier, "err": r.error_code} for r in items],
    )
    rows = await _parts(conn, [r.part_id for r in items])
    rows = [r for r in rows if r["status"] == "REJECTD"]
    await refund_parts(conn, rows, "rejected at submission")
    await announce(conn, rows, now)


async def record_retries(conn: AsyncConnection, items: Sequence[Retry], now: datetime,
                         max_unanswered: int = 3) -> list[dict[str, Any]]:
    """Back to the queue after each retry's delay. Those the carrier may have sent count one
    more unanswered attempt; a part reaching `max_unanswered` ends UNKNOWN (charged). Returns
    the parts so ended."""
    if not items:
        return []
    plain = [r for r in items if not r.maybe_sent]
    maybe = [r for r in items if r.maybe_sent]
    if plain:
        await conn.execute(
            update(Part)
            .where(Part.id == bindparam("pid"), WAITING)
            .values(due_at=bindparam("due"), updated_at=now, lease_until=None, lease_owner=None),
            [{"pid": r.part_id, "due": now + timedelta(seconds=r.delay)} for r in plain],
        )
    if not maybe:
        return []
    await conn.execute(
        update(Part)
        .where(Part.id == bindparam("pid"), WAITING)
        .values(due_at=bindparam("due"), updated_at=now, lease_until=None, lease_owner=None,
                unanswered=Part.unanswered + 1),
        [{"pid": r.part_id, "due": now + timedelta(seconds=r.delay)} for r in maybe],
    )
    result = await conn.execute(
        update(Part)
        .where(Part.id.in_([r.part_id for r in maybe]), Part.status.in_(WAITING_STATUSES),
               Part.unanswered >= max_unanswered)
        .values(status="UNKNOWN", error_code=NO_CARRIER_ANSWER, sent_at=now, updated_at=now)
        .returning(*PART_FIELDS)
    )
    ended = [dict(r) for r in result.mappings()]
    for row in ended:
        log.warning("part %d given up after %d submits without a usable carrier answer: "
                    "UNKNOWN %s (charged: the carrier may have sent it) campaign=%s",
                    row["id"], max_unanswered, NO_CARRIER_ANSWER, row["campaign_id"])
    await announce(conn, ended, now)
    return ended


async def record_untrackable(conn: AsyncConnection, items: Sequence[Untrackable],
                             now: datetime) -> None:
    """Parts accepted under a carrier id that cannot be stored: final UNKNOWN, charged."""
    if not items:
        return
    await conn.execute(
        update(Part)
        .where(Part.id == bindparam("pid"), WAITING)
        .values(status="UNKNOWN", sent_at=now, updated_at=now, carrier=bindparam("carrier"),
                error_code=bindparam("err"), lease_until=None, lease_owner=None),
        [{"pid": u.part_id, "carrier": u.carrier, "err": u.error_code} for u in items],
    )
    # every part, not only those with a callback URL: an SMPP customer is owed its receipt
    rows = [r for r in await _parts(conn, [u.part_id for u in items]) if r["status"] == "UNKNOWN"]
    await announce(conn, rows, now)


async def record_receipts(
    conn: AsyncConnection, receipts: Sequence[Receipt], now: datetime,
    keep_unmatched: bool = True,
) -> int:
    """Apply receipts; those matching no part yet are kept in pending_receipts. Returns matched.

    A part is looked up by the receipt's id first; the other spellings of the id (`alt_ids`)
    only for receipts that found no part that way. Of several receipts for one id in a batch,
    the first final one wins (as it would have, recorded one after the other)."""
    if not receipts:
        return 0
    chosen: dict[str, Receipt] = {}
    for r in receipts:
        before = chosen.get(r.carrier_message_id)
        if before is None or before.status not in FINAL_STATUSES:
            chosen[r.carrier_message_id] = r
    # ids are only unique per carrier (many SMSCs count from 1): a receipt matches the parts
    # its own carrier took
    parts = [row for row in await run_with_list(conn, _PARTS_FOR_RECEIPTS, list(chosen))
             if _same_carrier(chosen[row[1]], row[4])]
    found = [row[:4] for row in parts]
    smpp = {row[0] for row in parts if row[5]}  # parts that may owe an SMPP receipt
    matched = {row[1] for row in found}
    by_alt: dict[str, str] = {}  # alt spelling -> the receipt's own id
    for cid, r in chosen.items():
        if cid not in matched:
            for alt in r.alt_ids:
                by_alt.setdefault(alt, cid)
    if by_alt:
        for row in await run_with_list(conn, _PARTS_FOR_RECEIPTS, list(by_alt)):
            cid = by_alt[row[1]]
            if not _same_carrier(chosen[cid], row[4]):
                continue
            matched.add(cid)
            found.append((row[0], cid, row[2], row[3]))
            if row[5]:
                smpp.add(row[0])
    changes: dict[int, tuple[str, str | None, datetime | None]] = {}
    announced: list[int] = []
    for part_id, cid, status, has_callback in found:
        r = chosen[cid]
        if status in FINAL_STATUSES or status == r.status:
            continue  # a late or repeated report never overwrites a final state
        if r.status == ENROUTE:
            continue
        delivered_at = naive_utc(r.done_at or now) if r.status == "DELIVRD" else None
        changes[part_id] = (r.status, r.error_code, delivered_at)
        if has_callback or part_id in smpp:
            announced.append(part_id)
    if changes:
        await _apply_receipts(conn, changes, now)
    if announced:
        rows = [p for p in await _parts(conn, announced) if p["status"] == changes[p["id"]][0]]
        await announce(conn, rows, now, smpp_ids=smpp)
    unmatched = [r for r in receipts if r.carrier_message_id not in matched]
    if unmatched and keep_unmatched:
        await conn.execute(insert(PendingReceipt), [
            {"carrier_message_id": cid, "status": r.status, "error_code": r.error_code,
             "done_at": r.done_at, "received_at": now, "carrier": r.carrier}
            for r in unmatched for cid in (r.carrier_message_id, *r.alt_ids)
        ])
        conn.info.setdefault(RECEIPTS_KEPT, []).extend(
            cid for r in unmatched for cid in (r.carrier_message_id, *r.alt_ids))
        for r in unmatched:
            log.info("receipt before its submit was recorded: carrier_message_id=%s status=%s "
                     "(kept; applied when the submit is recorded)", r.carrier_message_id, r.status)
    return len(receipts) - len(unmatched)


EVENTS_WRITTEN = "tikosms_events_written"  # conn.info key: status events in this transaction
RECEIPTS_KEPT = "tikosms_receipts_kept"  # conn.info key: ids of the receipts kept in it


async def announce(conn: AsyncConnection, rows: list[dict[str, Any]], now: datetime,
                    smpp_ids: set[int] | None = None) -> None:
    """Callback events for the status changes of `rows`; counted in `conn.info` so that the
    worker wakes the callback dispatcher only when there is something to post. Final states
    of parts sent over SMPP also queue their receipt (`smpp_server.outbox`); `smpp_ids`, when
    known, names the parts that may owe one (None: looked up)."""
    if rows:
        written = await enqueue_status_events(conn, rows, now)
        if written:
            conn.info[EVENTS_WRITTEN] = conn.info.get(EVENTS_WRITTEN, 0) + written
        await enqueue_receipts(conn, rows, now, smpp_ids)


def _same_carrier(receipt: Receipt, part_carrier: str | None) -> bool:
    return receipt.carrier is None or part_carrier is None or receipt.carrier == part_carrier


async def finish_waiting(
    conn: AsyncConnection, where: Any, status: str, now: datetime, note: str
) -> list[dict[str, Any]]:
    """Move waiting parts matching `where` to a final status (CANCELED / EXPIRED) and refund."""
    result = await conn.execute(
        update(Part)
        .where(where, Part.status.in_(WAITING_STATUSES))
        .values(status=status, updated_at=now, lease_until=None, lease_owner=None)
        .returning(*PART_FIELDS)
    )
    rows = [dict(r) for r in result.mappings()]
    await refund_parts(conn, rows, note)
    await announce(conn, rows, now)
    return rows


async def refund_parts(conn: AsyncConnection, rows: Sequence[dict[str, Any]], note: str
                       ) -> Decimal:
    """One ledger row per (account, campaign) for the parts refunded together."""
    sums: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for r in rows:
        sums[(r["account_id"], r["campaign_id"])] += r["cost"]
    total = Decimal(0)
    for (account_id, campaign_id), amount in sums.items():
        await accounts.refund(conn, account_id, amount, campaign_id, note)
        total += amount
    return total


async def _apply_receipts(
    conn: AsyncConnection, changes: dict[int, tuple[str, str | None, datetime | None]],
    now: datetime,
) -> None:
    """New receipt states by part id: (status, error_code, delivered_at as naive UTC)."""
    stamp = naive_utc(now)
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(_PG_RECEIPTS, (
            stamp, list(changes), [c[0] for c in changes.values()],
            [c[1] for c in changes.values()], [c[2] for c in changes.values()],
        ))
        return
    when = sqlite_time(stamp)
    await conn.exec_driver_sql(_SQLITE_RECEIPTS, [  # type: ignore[arg-type]
        (st, err, None if dat is None else sqlite_time(dat), when, pid)
        for pid, (st, err, dat) in changes.items()
    ])


# The parts just changed, as `announce` takes them: PART_FIELDS' columns, and their campaign's
# sender and callback URL (so that the outbox needs no read of campaigns), on the driver.
_PART_KEYS = tuple(c.key for c in PART_FIELDS)
_PARTS_SQL = (
    "SELECT " + ", ".join(f'p."{c.name}"' for c in PART_FIELDS)
    + ", c.sender, c.callback_url FROM parts p LEFT JOIN campaigns c ON c.id = p.campaign_id "
    "WHERE p.id "
)
_PARTS = {
    # the bounds let PostgreSQL skip the other days' partitions (an InitPlan: pruned at
    # execution; an array parameter alone prunes nothing)
    "postgresql": _PARTS_SQL + "= ANY($1::bigint[]) "
                  "AND p.id >= (SELECT min(i) FROM unnest($1::bigint[]) i) "
                  "AND p.id <= (SELECT max(i) FROM unnest($1::bigint[]) i)",
    "sqlite": _PARTS_SQL + "IN (SELECT value FROM json_each(?))",
}
_COST = _PART_KEYS.index("cost")
_TIMES = tuple(_PART_KEYS.index(k) for k in ("sent_at", "delivered_at"))


async def _parts(conn: AsyncConnection, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The parts with these ids, each as a mapping of PART_FIELDS' keys (money as Decimal,
    times aware UTC, as the column types give them), with `CAMPAIGN_SENDER` and
    `CAMPAIGN_CALLBACK_URL` of its campaign."""
    out = []
    for row in await run_with_list(conn, _PARTS, list(ids)):
        values = list(row[:len(_PART_KEYS)])
        values[_COST] = from_micros(int(values[_COST]))
        for i in _TIMES:
            if values[i] is not None:
                values[i] = stored_utc(values[i])
        part = dict(zip(_PART_KEYS, values, strict=True))
        part[CAMPAIGN_SENDER], part[CAMPAIGN_CALLBACK_URL] = row[-2], row[-1]
        out.append(part)
    return out
