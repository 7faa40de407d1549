"""Every change of a part's status, with its consequences, in the caller's transaction.

- ENROUTE (carrier accepted): sent_at, carrier, carrier message id; a receipt that came first
  (pending_receipts) is applied at once.
- REJECTD at submission, EXPIRED in the queue, CANCELED: refunded (never reached a carrier).
- Receipt states: delivered_at with DELIVRD; a late intermediate state never overwrites a final
  one; a part a carrier accepted is charged whatever its receipt says.
- RETRY: back to the queue after a delay, no status change, no callback.
Each status change queues its callback (`callbacks.outbox`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.accounts import service as accounts
from tikosms.callbacks.outbox import enqueue_status_events
from tikosms.db.models import ENROUTE, FINAL_STATUSES, WAITING_STATUSES, Part, PendingReceipt
from tikosms.delivery.carrier import Receipt

log = logging.getLogger("tikosms.delivery")

# spelled out rather than IN (...): executemany cannot expand an IN list
WAITING = (Part.status == WAITING_STATUSES[0]) | (Part.status == WAITING_STATUSES[1])

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


async def record_accepted(conn: AsyncConnection, items: Sequence[Accepted], now: datetime
                          ) -> None:
    if not items:
        return
    await conn.execute(
        update(Part)
        .where(Part.id == bindparam("pid"), WAITING)
        .values(
            status=ENROUTE, sent_at=now, updated_at=now, carrier=bindparam("carrier"),
            carrier_message_id=bindparam("cmid"), lease_until=None, lease_owner=None,
        ),
        [{"pid": a.part_id, "carrier": a.carrier, "cmid": a.carrier_message_id} for a in items],
    )
    rows = await _parts(conn, [a.part_id for a in items])
    await enqueue_status_events(conn, rows, now)
    # receipts that arrived before we stored the carrier's message id
    ids = [a.carrier_message_id for a in items]
    early = (
        await conn.execute(
            select(PendingReceipt).where(PendingReceipt.carrier_message_id.in_(ids))
        )
    ).all()
    if early:
        await conn.execute(
            delete(PendingReceipt).where(PendingReceipt.id.in_([r.id for r in early]))
        )
        await record_receipts(
            conn,
            [Receipt(r.carrier_message_id, r.status, r.error_code, r.done_at) for r in early],
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
    await enqueue_status_events(conn, rows, now)


async def record_retries(conn: AsyncConnection, items: Sequence[Retry], now: datetime) -> None:
    if not items:
        return
    await conn.execute(
        update(Part)
        .where(Part.id == bindparam("pid"), WAITING)
        .values(due_at=bindparam("due"), updated_at=now, lease_until=None, lease_owner=None),
        [{"pid": r.part_id, "due": now + timedelta(seconds=r.delay)} for r in items],
    )


async def record_receipts(
    conn: AsyncConnection, receipts: Sequence[Receipt], now: datetime,
    keep_unmatched: bool = True,
) -> int:
    """Apply receipts; those matching no part yet are kept in pending_receipts. Returns matched."""
    if not receipts:
        return 0
    wanted: dict[str, Receipt] = {}
    for r in receipts:
        for cid in (r.carrier_message_id, *r.alt_ids):
            wanted.setdefault(cid, r)
    found = (
        await conn.execute(
            select(*PART_FIELDS).where(Part.carrier_message_id.in_(list(wanted)))
        )
    ).mappings().all()
    by_receipt: dict[int, dict[str, Any]] = {}
    matched_receipts: set[int] = set()
    for part in found:
        r = wanted[part["carrier_message_id"]]
        matched_receipts.add(id(r))
        if part["status"] in FINAL_STATUSES or part["status"] == r.status:
            continue  # a late or repeated report never overwrites a final state
        if r.status == ENROUTE:
            continue
        by_receipt[part["id"]] = {**part, "status": r.status, "error_code": r.error_code,
                                  "delivered_at": (r.done_at or now) if r.status == "DELIVRD"
                                  else None}
    if by_receipt:
        await conn.execute(
            update(Part)
            .where(Part.id == bindparam("pid"))
            .values(status=bindparam("st"), error_code=bindparam("err"),
                    delivered_at=bindparam("dat"), updated_at=now),
            [{"pid": pid, "st": p["status"], "err": p["error_code"], "dat": p["delivered_at"]}
             for pid, p in by_receipt.items()],
        )
        await enqueue_status_events(conn, list(by_receipt.values()), now)
    unmatched = [r for r in receipts if id(r) not in matched_receipts]
    if unmatched and keep_unmatched:
        from sqlalchemy import insert

        await conn.execute(insert(PendingReceipt), [
            {"carrier_message_id": cid, "status": r.status, "error_code": r.error_code,
             "done_at": r.done_at, "received_at": now}
            for r in unmatched for cid in (r.carrier_message_id, *r.alt_ids)
        ])
        for r in unmatched:
            log.info("receipt before its submit was recorded: carrier_message_id=%s status=%s "
                     "(kept; applied when the submit is recorded)", r.carrier_message_id, r.status)
    return len(matched_receipts)


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
    await enqueue_status_events(conn, rows, now)
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


async def _parts(conn: AsyncConnection, ids: Sequence[int]) -> list[dict[str, Any]]:
    result = await conn.execute(select(*PART_FIELDS).where(Part.id.in_(list(ids))))
    return [dict(r) for r in result.mappings()]
