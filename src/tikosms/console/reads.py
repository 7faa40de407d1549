"""Read models of the console's pages. Each query is bounded by an index and a page size:
the overview reads the roll-up (`traffic_minutes`), never `parts`; lists are paginated.

Campaign counts by status are computed here from the campaign's parts (ix_parts_campaign),
for the campaigns of one page only, until the campaign lifecycle stores them on the campaign.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.console.rollup import COUNTERS, median_ms
from tikosms.db.models import (
    FINAL_STATUSES,
    Account,
    ApiToken,
    CallbackAttempt,
    CallbackEvent,
    Campaign,
    CarrierRow,
    InboundMessage,
    LedgerEntry,
    OptOut,
    Part,
    TrafficMinute,
)
from tikosms.delivery import heartbeats_repo
from tikosms.messaging.smpp_send import SMPP_KINDS
from tikosms.numbers.shipped import country_for_mcc
from tikosms.smpp_server import users

PAGE = 25
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# --- overview ----------------------------------------------------------------------------------

async def traffic_series(conn: AsyncConnection, since: datetime, step_minutes: int
                         ) -> dict[str, list[int]]:
    """Per step (start time, epoch seconds): accepted, sent, delivered, failed."""
    rows = (await conn.execute(
        select(TrafficMinute.minute, *(func.sum(getattr(TrafficMinute, c)).label(c)
                                       for c in COUNTERS))
        .where(TrafficMinute.minute >= since).group_by(TrafficMinute.minute))).all()
    by_step: dict[int, list[int]] = {}
    for r in rows:
        epoch = int(r.minute.timestamp()) // (60 * step_minutes) * 60 * step_minutes
        acc = by_step.setdefault(epoch, [0, 0, 0, 0])
        for i, c in enumerate(COUNTERS):
            acc[i] += int(getattr(r, c) or 0)
    start = int(since.timestamp()) // (60 * step_minutes) * 60 * step_minutes
    out: dict[str, list[int]] = {"t": [], **{c: [] for c in COUNTERS}}
    t = start
    end = int(datetime.now(since.tzinfo).timestamp())
    while t <= end:
        out["t"].append(t)
        values = by_step.get(t, [0, 0, 0, 0])
        for i, c in enumerate(COUNTERS):
            out[c].append(values[i])
        t += 60 * step_minutes
    return out


async def delivery_by(conn: AsyncConnection, column: str, since: datetime, limit: int = 30
                      ) -> list[dict[str, Any]]:
    """Delivery ratio and median time to deliver per carrier or per MCC/MNC since `since`."""
    key = getattr(TrafficMinute, column)
    rows = (await conn.execute(
        select(key.label("key"), TrafficMinute.sent, TrafficMinute.delivered,
               TrafficMinute.failed, TrafficMinute.dlv_hist)
        .where(TrafficMinute.minute >= since))).all()
    groups: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"sent": 0, "delivered": 0, "failed": 0, "hist": {}})
    for r in rows:
        g = groups[r.key]
        g["sent"] += r.sent
        g["delivered"] += r.delivered
        g["failed"] += r.failed
        for b, n in json.loads(r.dlv_hist or "{}").items():
            g["hist"][b] = g["hist"].get(b, 0) + n
    out = []
    for k, g in groups.items():
        done = g["delivered"] + g["failed"]
        out.append({
            "key": k or "(none)", "sent": g["sent"], "delivered": g["delivered"],
            "failed": g["failed"], "ratio": (g["delivered"] / done) if done else None,
            "median_ms": median_ms(g["hist"]),
            "country": country_for_mcc(k[:3]) if column == "mccmnc" and k else None,
        })
    out.sort(key=lambda d: -(d["sent"] + d["failed"]))
    return out[:limit]


async def queue_depth(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Waiting parts by priority and status (through the partial queue index)."""
    # the condition word for word as the partial index's, so that SQLite uses the index
    # (bound IN parameters do not prove the index applies: a full scan, 0.5 s at 1M parts)
    rows = (await conn.execute(
        select(Part.priority, Part.status, func.count().label("n"))
        .where(text("status IN ('SCHEDULED', 'QUEUED')"))
        .group_by(Part.priority, Part.status))).all()
    return [{"priority": r.priority, "status": r.status, "parts": r.n} for r in rows]


async def callbacks_failing(conn: AsyncConnection, since: datetime) -> dict[str, int]:
    failed = (await conn.execute(
        select(func.count()).select_from(CallbackEvent)
        .where(CallbackEvent.state == "failed", CallbackEvent.next_attempt_at >= since)
    )).scalar_one()
    retrying = (await conn.execute(
        select(func.count()).select_from(CallbackEvent)
        .where(CallbackEvent.state == "pending", CallbackEvent.attempts > 0))).scalar_one()
    return {"failed": int(failed), "retrying": int(retrying)}


async def workers_and_binds(conn: AsyncConnection, now: datetime, stale_after: float
                            ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every worker process with a heartbeat row (fresh or stale), and the bind states of
    each carrier as the fresh delivery workers last reported them (`delivery.heartbeat`):
    the same whichever process serves the page."""
    workers: list[dict[str, Any]] = []
    binds: dict[str, list[dict[str, Any]]] = {}
    for beat in await heartbeats_repo.all_beats(conn):
        fresh = beat.fresh(now, stale_after)
        workers.append({"owner": beat.owner, "host": beat.host, "pid": beat.pid,
                        "roles": ", ".join(beat.roles), "started_at": beat.started_at,
                        "seen_ago": max(0.0, (now - beat.seen_at).total_seconds()),
                        "fresh": fresh, "carriers": sorted(beat.carriers)})
        if not fresh:
            continue
        for name, carrier in beat.carriers.items():
            if not isinstance(carrier, dict):
                continue
            for b in carrier.get("binds", []):
                binds.setdefault(name, []).append({
                    "worker": f"{beat.host}:{beat.pid}", "label": b.get("label", ""),
                    "type": b.get("type", ""), "state": b.get("state", "?"),
                    "detail": b.get("detail", ""), "in_flight": b.get("in_flight", 0),
                    "window": carrier.get("window")})
    return workers, dict(sorted(binds.items()))


# --- campaigns ---------------------------------------------------------------------------------

# the campaign list's tabs: kinds of campaigns.kind shown on each
KINDS = {"bulk": ("bulk",), "single": ("single",), "smpp": SMPP_KINDS}


async def campaigns_page(conn: AsyncConnection, page: int, kind: str = "bulk",
                         account_id: int | None = None) -> list[dict[str, Any]]:
    """One page (newest first) of the campaigns of a tab of KINDS: one query per kind, each an
    index range of `ix_campaigns_kind_created` ((kind, created_at)), merged here; an IN over
    the kinds would have to sort every campaign of them."""
    rows: list[Row] = []
    for k in KINDS.get(kind, (kind,)):
        stmt = select(Campaign).where(Campaign.kind == k)
        if account_id is not None:
            stmt = stmt.where(Campaign.account_id == account_id)
        rows.extend((await conn.execute(stmt.order_by(Campaign.created_at.desc(), Campaign.id)
                                        .limit(PAGE * (page + 1)))).all())
    rows.sort(key=lambda r: r.id)
    rows.sort(key=lambda r: r.created_at, reverse=True)  # stable: newest first, then by id
    rows = rows[PAGE * page:PAGE * (page + 1)]
    counts = await _counts_of(conn, rows)
    return [campaign_summary(r, counts.get(r.id, {})) for r in rows]


async def campaign(conn: AsyncConnection, campaign_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(Campaign).where(Campaign.id == campaign_id))).first()
    if row is None:
        return None
    counts = await _counts_of(conn, [row])
    return campaign_summary(row, counts.get(row.id, {}))


async def _counts_of(conn: AsyncConnection, rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Counts by status: the lifecycle roll-up's (stored on the campaign by the workers'
    housekeeping every few seconds, `messaging.lifecycle`), counted here only for a campaign
    the roll-up has not reached yet."""
    out: dict[str, dict[str, int]] = {}
    uncounted = []
    for r in rows:
        if r.counts:
            out[r.id] = json.loads(r.counts)
        else:
            uncounted.append(r.id)
    if uncounted:
        out.update(await status_counts(conn, uncounted))
    return out


# Counts by status per campaign, kept COUNTS_SECONDS (5 s) in this process (for good once every part
# is final): counting a 1M-part campaign's parts takes ~2.8 s on SQLite, and the campaigns page
# polls every 2 s. {campaign_id: (monotonic time, counts, final)}
COUNTS_SECONDS = 5.0
_counts: dict[str, tuple[float, dict[str, int], bool]] = {}


async def status_counts(conn: AsyncConnection, campaign_ids: Sequence[str]
                        ) -> dict[str, dict[str, int]]:
    now = time.monotonic()
    out: dict[str, dict[str, int]] = defaultdict(dict)
    wanted = []
    for cid in campaign_ids:
        hit = _counts.get(cid)
        if hit is not None and (hit[2] or now - hit[0] < COUNTS_SECONDS):
            out[cid] = hit[1]
        else:
            wanted.append(cid)
    if not wanted:
        return out
    rows = (await conn.execute(
        select(Part.campaign_id, Part.status, func.count().label("n"))
        .where(Part.campaign_id.in_(wanted))
        .group_by(Part.campaign_id, Part.status))).all()
    for r in rows:
        out[r.campaign_id][r.status] = int(r.n)
    if len(_counts) > 10_000:
        _counts.clear()
    for cid in wanted:
        counts = out[cid]
        final = bool(counts) and all(s in FINAL_STATUSES for s in counts)
        _counts[cid] = (now, counts, final)
    return out


def forget_counts(campaign_id: str) -> None:
    """After a write that changes a campaign's parts here (cancel), count them again."""
    _counts.pop(campaign_id, None)


def campaign_summary(row: Row, counts: dict[str, int]) -> dict[str, Any]:
    total = sum(counts.values()) or row.total_parts
    final = sum(n for s, n in counts.items() if s in FINAL_STATUSES)
    delivered = counts.get("DELIVRD", 0)
    if row.status in ("canceled", "completed"):  # the lifecycle roll-up's verdict
        status = row.status
    elif total and final >= total:
        status = "completed"
    elif row.scheduled_at is not None and counts.get("SCHEDULED", 0) == total:
        status = "scheduled"
    else:
        status = "active"
    return {
        "id": row.id, "account_id": row.account_id, "sender": row.sender,
        "created_at": row.created_at, "scheduled_at": row.scheduled_at, "cost": row.cost,
        "recipients": row.recipients, "total_parts": total, "stored_status": row.status,
        "status": status, "counts": dict(sorted(counts.items())), "final": final,
        "delivered": delivered,
        "progress": round(100 * final / total) if total else 100,
        "delivered_pct": round(100 * delivered / total) if total else 0,
    }


# --- messages ----------------------------------------------------------------------------------

def search_filter(q: str) -> Any:
    """What the search box means: a UUID is a message or campaign id, digits are a number,
    anything else a client_ref (each through its index)."""
    q = q.strip()
    if UUID.fullmatch(q):
        return or_(Part.message_id == q.lower(), Part.campaign_id == q.lower())
    digits = re.sub(r"[\s().-]", "", q)
    if re.fullmatch(r"\+?\d{5,16}", digits):
        bare = digits.lstrip("+")
        return or_(Part.to == bare, Part.to == "+" + bare, Part.client_ref == q)
    return Part.client_ref == q


async def search_parts(conn: AsyncConnection, q: str, page: int) -> list[Row]:
    if not q.strip():
        return []
    return list((await conn.execute(
        select(Part.id, Part.message_id, Part.campaign_id, Part.account_id, Part.part_no,
               Part.total_parts, Part.to, Part.status, Part.client_ref, Part.carrier,
               Part.created_at, Part.cost)
        .where(search_filter(q)).order_by(Part.id.desc()).limit(PAGE).offset(PAGE * page)
    )).all())


async def part_history(conn: AsyncConnection, part_id: int) -> dict[str, Any] | None:
    part = (await conn.execute(select(Part).where(Part.id == part_id))).first()
    if part is None:
        return None
    events = (await conn.execute(
        select(CallbackEvent).where(CallbackEvent.part_id == part_id)
        .order_by(CallbackEvent.id))).all()
    attempts: dict[int, list[Row]] = defaultdict(list)
    if events:
        for a in (await conn.execute(
                select(CallbackAttempt).where(CallbackAttempt.event_id.in_([e.id for e in events]))
                .order_by(CallbackAttempt.id))).all():
            attempts[a.event_id].append(a)
    timeline: list[dict[str, Any]] = [{"at": part.created_at, "what": "accepted",
                                       "detail": f"queued as {part.mccmnc}, cost {part.cost}"}]
    if part.sent_at is not None:
        timeline.append({"at": part.sent_at, "what": "submitted",
                         "detail": f"carrier {part.carrier}, carrier message id "
                                   f"{part.carrier_message_id or '-'}, attempts {part.attempts}"})
    if part.status in FINAL_STATUSES:
        timeline.append({"at": part.delivered_at or part.updated_at,
                         "what": f"receipt {part.status}" if part.sent_at else part.status,
                         "detail": f"error {part.error_code}" if part.error_code else ""})
    callbacks = []
    for e in events:
        try:
            status = json.loads(e.payload).get("status", "")
        except ValueError:
            status = ""
        callbacks.append({"event": e, "status": status, "attempts": attempts.get(e.id, [])})
    timeline.sort(key=lambda t: t["at"])
    return {"part": part, "timeline": timeline, "callbacks": callbacks}


# --- accounts ----------------------------------------------------------------------------------

async def accounts_page(conn: AsyncConnection, page: int) -> list[Row]:
    return list((await conn.execute(
        select(Account).order_by(Account.id).limit(PAGE).offset(PAGE * page))).all())


async def ledger_page(conn: AsyncConnection, account_id: int, before_id: int | None
                      ) -> list[Row]:
    stmt = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_id is not None:
        stmt = stmt.where(LedgerEntry.id < before_id)
    return list((await conn.execute(stmt.order_by(LedgerEntry.id.desc()).limit(PAGE))).all())


async def tokens_of(conn: AsyncConnection, account_id: int) -> list[Row]:
    return list((await conn.execute(
        select(ApiToken).where(ApiToken.account_id == account_id)
        .order_by(ApiToken.id.desc()).limit(100))).all())


async def smpp_users_of(conn: AsyncConnection, account_id: int) -> list[dict[str, object]]:
    """The account's SMPP users, revoked ones too (index ix_smpp_users_account_id)."""
    return await users.list_users(conn, account_id, include_revoked=True)


# --- inbound -----------------------------------------------------------------------------------

def number_digits(q: str) -> str | None:
    """A number typed in a filter as stored (digits, no '+'), or None when it is not one."""
    digits = re.sub(r"[\s().-]", "", q.strip())
    if digits.startswith("+"):
        digits = digits[1:]
    return digits if re.fullmatch(r"\d{3,20}", digits) else None


def inbound_queries(*, account_id: int | None, number: str | None, before_id: int | None
                    ) -> list[Any]:
    """The queries of one page of inbound messages (of every account, or one, or to or from one
    number), PAGE rows older than `before_id`, newest id first: each one index range (PK;
    ix_inbound_messages_account_id; ix_inbound_messages_sender and _recipient, one query each,
    merged by `inbound_page`: an OR of the two would sort every message of a busy short
    code)."""
    def page_of(*where: Any) -> Any:
        stmt = select(InboundMessage).where(*where)
        if before_id is not None:
            stmt = stmt.where(InboundMessage.id < before_id)
        return stmt.order_by(InboundMessage.id.desc()).limit(PAGE)

    account = () if account_id is None else (InboundMessage.account_id == account_id,)
    if number is None:
        return [page_of(*account)]
    return [page_of(column == number, *account)
            for column in (InboundMessage.sender, InboundMessage.recipient)]


async def inbound_page(conn: AsyncConnection, *, account_id: int | None, number: str | None,
                       before_id: int | None) -> list[Row]:
    rows: dict[int, Row] = {}
    for stmt in inbound_queries(account_id=account_id, number=number, before_id=before_id):
        for r in (await conn.execute(stmt)).all():
            rows[r.id] = r
    return [rows[i] for i in sorted(rows, reverse=True)[:PAGE]]


def opt_outs_query(*, account_id: int | None, number: str | None,
                   after: tuple[int, str, str] | None) -> Any:
    """Opt-outs by (account, recipient, sender), PAGE rows after `after`: the primary key's
    order, and for one number the range of ix_opt_outs_recipient."""
    stmt = select(OptOut)
    if account_id is not None:
        stmt = stmt.where(OptOut.account_id == account_id)
    if number is not None:
        stmt = stmt.where(OptOut.recipient == number)
    if after is not None and number is not None:  # the recipient is fixed
        stmt = stmt.where(tuple_(OptOut.account_id, OptOut.sender) > tuple_(after[0], after[2]))
    elif after is not None:
        stmt = stmt.where(tuple_(OptOut.account_id, OptOut.recipient, OptOut.sender)
                          > tuple_(*after))
    return stmt.order_by(OptOut.account_id, OptOut.recipient, OptOut.sender).limit(PAGE)


async def opt_outs_page(conn: AsyncConnection, *, account_id: int | None, number: str | None,
                        after: tuple[int, str, str] | None) -> list[Row]:
    return list((await conn.execute(
        opt_outs_query(account_id=account_id, number=number, after=after))).all())


# --- carriers ----------------------------------------------------------------------------------

async def carrier_errors(conn: AsyncConnection, since: datetime) -> dict[str, dict[str, int]]:
    rows = (await conn.execute(
        select(TrafficMinute.carrier, func.sum(TrafficMinute.sent).label("sent"),
               func.sum(TrafficMinute.failed).label("failed"))
        .where(TrafficMinute.minute >= since).group_by(TrafficMinute.carrier))).all()
    return {r.carrier: {"sent": int(r.sent or 0), "failed": int(r.failed or 0)} for r in rows}


async def carrier_rows(conn: AsyncConnection) -> list[Row]:
    return list((await conn.execute(select(CarrierRow).order_by(CarrierRow.name))).all())


def hour_ago(now: datetime) -> datetime:
    return now - timedelta(hours=1)
