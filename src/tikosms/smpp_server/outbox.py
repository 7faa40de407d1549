"""The SMPP outbox: what the server owes customers' receiver binds, kept until acknowledged.

One row per deliver_sm to send: `kind` 'receipt' (a final state of a part sent over SMPP) or
'mo' (an inbound message for the account; `enqueue_mo`). A row is written in the transaction
that produced it, as callback events are (`tikosms.callbacks.outbox`), so a status change is
never lost and never announced without having happened. The server (`server.OutboxPump`)
sends due rows to any receiver or transceiver bind of the account, marks them delivered on a
deliver_sm_resp ROK, and otherwise sends them again later: a customer offline for hours gets
everything when it binds again. Delivered rows are deleted after `DELIVERED_KEPT`.

Claiming: `claim_due` moves `next_attempt_at` forward by the lease (the response timeout plus a
margin) as it reads, under `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two server processes
never send the same row at once; a process that dies leaves its rows to come due again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import FINAL_STATUSES, Campaign, Part, SmppOutboxItem, SmppUser
from tikosms.smpp.dlr import STATE_CODES

RECEIPT, MO = "receipt", "mo"
DELIVERED_KEPT = timedelta(hours=24)
# part statuses -> message_state (SMPP 3.4, 5.2.28); CANCELED shows as DELETED
MESSAGE_STATE = {**STATE_CODES, "SCHEDULED": 1, "QUEUED": 1, "ENROUTE": 1, "CANCELED": 4}
_KINDS_WITH_RECEIPTS = ("smpp", "smpp-f")  # messaging.smpp_send.SMPP_KINDS that want some
# sender_type -> (ton, npi) of the receipt's destination_addr (the customer's own sender)
SENDER_TON_NPI = {"Alpha": (5, 0), "Numeric": (1, 1), "Shortcode": (3, 0)}


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    account_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


async def enqueue_receipts(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]],
                           now: datetime, smpp_ids: Iterable[int] | None = None) -> int:
    """Queue the receipts owed for these parts (mappings of their columns after a change):
    final parts of SMPP campaigns that asked for them. `smpp_ids`, when the caller knows
    which parts are SMPP's, spares the lookup for the others. Returns the rows queued."""
    final = {r["id"]: r for r in rows if r["status"] in FINAL_STATUSES}
    if smpp_ids is not None:
        wanted = set(smpp_ids)
        final = {i: r for i, r in final.items() if i in wanted}
    if not final:
        return 0
    found = (await conn.execute(
        select(Part.id, Part.message_id, Part.text, Part.created_at, Part.delivered_at,
               Part.total_parts, Campaign.sender, Campaign.sender_type, Campaign.kind)
        .join(Campaign, Campaign.id == Part.campaign_id)
        .where(Part.id.in_(list(final)), Campaign.kind.in_(_KINDS_WITH_RECEIPTS)))).all()
    if not found:
        return 0
    # several parts made of one submit_sm (message_payload, a long short_message): one receipt
    # for the message once all its parts are final, with the first state that is not DELIVRD
    multi = [f.message_id for f in found if f.total_parts > 1]
    siblings: dict[str, list[tuple[int, str, str | None]]] = {}
    if multi:
        query = (select(Part.message_id, Part.part_no, Part.status, Part.error_code)
                 .where(Part.message_id.in_(multi)).order_by(Part.id))
        if conn.dialect.name == "postgresql":
            # Two workers finalising the last two parts of one message at once would each see
            # the other part not yet final (READ COMMITTED) and neither would queue the
            # receipt. Locking the siblings makes the second wait for the first and read its
            # committed row; when each holds the part it updated, one is aborted as a deadlock
            # and its batch recorded again (the recorder retries), then seeing both final.
            query = query.with_for_update()
        for message_id, part_no, status, error_code in (await conn.execute(query)).all():
            siblings.setdefault(message_id, []).append((part_no, status, error_code))
    out = []
    done: set[str] = set()
    for f in found:
        part = final[f.id]
        status, error_code = part["status"], part.get("error_code")
        parts = siblings.get(f.message_id, [])
        if len(parts) > 1:
            if f.message_id in done or any(s not in FINAL_STATUSES for _, s, _ in parts):
                continue
            done.add(f.message_id)
            worst = next(((s, e) for _, s, e in sorted(parts) if s != "DELIVRD"), None)
            if worst is not None:
                status, error_code = worst
        if f.kind == "smpp-f" and status == "DELIVRD":
            continue
        ton, npi = SENDER_TON_NPI.get(f.sender_type, (0, 0))
        payload = {
            "id": f.message_id,
            "stat": "DELETED" if status == "CANCELED" else status,
            "state": MESSAGE_STATE.get(status, 7),
            "err": error_number(status, error_code),
            "submit_date": f"{f.created_at:%y%m%d%H%M}",
            "done_date": f"{(part.get('delivered_at') or now):%y%m%d%H%M}",
            "text": _preview(f.text),
            "src": part["to"],
            "dst": f.sender,
            "dst_ton": ton,
            "dst_npi": npi,
        }
        out.append((part["account_id"], RECEIPT, payload))
    return await _insert(conn, out, now)


async def enqueue_mo(conn: AsyncConnection, account_id: int, source: str, destination: str,
                     text: str | None = None, short_message: bytes | None = None,
                     data_coding: int | None = None, now: datetime | None = None) -> int:
    """Queue an inbound message (MO) for the account's receiver binds, in the caller's
    transaction. Give `text` (encoded here: GSM 03.38 when it can be, else UCS-2, unless
    `data_coding` says which) or the octets `short_message` with their `data_coding`. Long
    texts go in message_payload. Returns the outbox row's id."""
    from tikosms.db.types import utcnow
    from tikosms.smpp_server.codec import encode_mo_text

    if (text is None) == (short_message is None):
        raise ValueError("give text or short_message")
    if text is not None:
        data, coding = encode_mo_text(text, data_coding)
    else:
        assert short_message is not None
        data, coding = short_message, data_coding or 0
    payload = {"src": source, "dst": destination, "data": data.hex(), "data_coding": coding,
               "src_ton": 1, "src_npi": 1, "dst_ton": 0 if len(destination) <= 8 else 1,
               "dst_npi": 1}
    when = now or utcnow()
    result = await conn.execute(insert(SmppOutboxItem).values(
        account_id=account_id, kind=MO, payload=orjson.dumps(payload).decode(),
        created_at=when, attempts=0, next_attempt_at=when).returning(SmppOutboxItem.id))
    return int(result.scalar_one())


async def enqueue_inbound(conn: AsyncConnection, inbound: Any) -> None:
    """The inbound service's sink (`tikosms.inbound.service.INBOUND_SINKS`): an MO routed to an
    account that has SMPP credentials goes to its receiver binds, whole (reassembled, decoded)
    and kept until acknowledged. Accounts without SMPP users get nothing queued here (they take
    their MO by callback and `GET /v1/inbound`), so the outbox holds nothing no one collects."""
    if inbound.account_id is None:
        return
    has_user = (await conn.execute(
        select(SmppUser.id).where(SmppUser.account_id == inbound.account_id,
                                  SmppUser.revoked_at.is_(None)).limit(1))).first()
    if has_user is not None:
        await enqueue_mo(conn, inbound.account_id, inbound.sender, inbound.recipient,
                         text=inbound.text)


async def _insert(conn: AsyncConnection, items: list[tuple[int, str, dict[str, Any]]],
                  now: datetime) -> int:
    if items:
        await conn.execute(insert(SmppOutboxItem), [
            {"account_id": account_id, "kind": kind, "payload": orjson.dumps(payload).decode(),
             "created_at": now, "attempts": 0, "next_attempt_at": now}
            for account_id, kind, payload in items
        ])
    return len(items)


async def due_accounts(conn: AsyncConnection, account_ids: Sequence[int], now: datetime
                       ) -> list[int]:
    """Which of these accounts have items due (a read: no write lock when nothing is)."""
    if not account_ids:
        return []
    rows = await conn.execute(
        select(SmppOutboxItem.account_id).distinct()
        .where(SmppOutboxItem.delivered_at.is_(None),
               SmppOutboxItem.account_id.in_(list(account_ids)),
               SmppOutboxItem.next_attempt_at <= now))
    return sorted(r[0] for r in rows.all())


async def claim_due(conn: AsyncConnection, account_ids: Sequence[int], now: datetime,
                    lease: timedelta, limit: int) -> list[OutboxItem]:
    """Up to `limit` due items of these accounts, oldest first, leased until now + lease."""
    if not account_ids:
        return []
    stmt = (select(SmppOutboxItem.id)
            .where(SmppOutboxItem.delivered_at.is_(None),
                   SmppOutboxItem.account_id.in_(list(account_ids)),
                   SmppOutboxItem.next_attempt_at <= now)
            .order_by(SmppOutboxItem.id).limit(limit))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(SmppOutboxItem).where(SmppOutboxItem.id.in_(stmt.scalar_subquery()))
        .values(next_attempt_at=now + lease, attempts=SmppOutboxItem.attempts + 1)
        .returning(SmppOutboxItem.id, SmppOutboxItem.account_id, SmppOutboxItem.kind,
                   SmppOutboxItem.payload, SmppOutboxItem.attempts))
    items = [OutboxItem(r.id, r.account_id, r.kind, orjson.loads(r.payload), r.attempts)
             for r in result.all()]
    items.sort(key=lambda i: i.id)
    return items


async def mark_delivered(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    if ids:
        await conn.execute(update(SmppOutboxItem).where(SmppOutboxItem.id.in_(list(ids)))
                           .values(delivered_at=now))


async def retry_later(conn: AsyncConnection, ids: Sequence[int], at: datetime) -> None:
    """Items refused or unanswered: due again at `at` (still never dropped)."""
    if ids:
        await conn.execute(update(SmppOutboxItem).where(
            SmppOutboxItem.id.in_(list(ids)), SmppOutboxItem.delivered_at.is_(None))
            .values(next_attempt_at=at))


async def release(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    """Items claimed but not sent (their bind went away): due at once for another bind."""
    await retry_later(conn, ids, now)


async def purge_delivered(conn: AsyncConnection, now: datetime) -> int:
    result = await conn.execute(delete(SmppOutboxItem).where(
        SmppOutboxItem.delivered_at.is_not(None),
        SmppOutboxItem.delivered_at < now - DELIVERED_KEPT))
    return int(result.rowcount or 0)


async def pending_count(conn: AsyncConnection, account_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(SmppOutboxItem).where(
        SmppOutboxItem.delivered_at.is_(None))
    if account_id is not None:
        stmt = stmt.where(SmppOutboxItem.account_id == account_id)
    return int((await conn.execute(stmt)).scalar_one())


def error_number(status: str, error_code: str | None) -> str:
    """The receipt's three-digit err: field from a part's error_code ("001", "3:1",
    "0x0000000b" ...): 000 when delivered or no code, 001 for a code that is not a number."""
    if status == "DELIVRD" or not error_code:
        return "000"
    code = error_code.strip()
    try:
        if code.lower().startswith("0x"):
            number = int(code, 16)
        elif ":" in code:
            number = int(code.rsplit(":", 1)[1])
        else:
            number = int(code)
    except ValueError:
        number = 1
    return f"{number % 1000:03d}"


def _preview(text: str) -> str:
    """The receipt's text: field, the first 20 characters in printable ASCII."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text[:20])
