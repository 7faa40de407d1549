"""Price lists and the effective rate of a destination.

Choice of rate (SPEC_NOTES "Rates"): the account's own list before the default list; the exact
mcc+mnc row before the country-wide one; among those, the row whose window holds the time of
sending (the latest start wins if windows overlap). MNCs are keyed zero-padded to 3 digits.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import Rate
from tikosms.db.types import utcnow
from tikosms.errors import OperatorError

CSV_HEADER = ["mcc", "mnc", "country", "rate", "start_date", "end_date"]
OPEN_END = datetime(2100, 1, 1, tzinfo=UTC)

# Single sends price from an in-process cache of the rate rows of (account, MCC): a price list
# imported by another process (`tikosms rates import`) applies to them within this many seconds,
# as the numbering plan does; an import in this process applies at once.
REFRESH_SECONDS = 5.0
MAX_CACHED = 50_000
# (account, MCC) -> (read at, rows, the book built from them, the time it was built for, the
# next time its choice may change)
_cache: dict[tuple[Any, int, str],
             tuple[float, list[RateRow], RateBook, datetime, datetime]] = {}


@dataclass(frozen=True, slots=True)
class RateRow:
    account_id: int | None
    mcc: str
    mnc: str  # "" = country-wide, else 3 digits
    country: str
    rate: Decimal
    start_date: datetime
    end_date: datetime | None

    @property
    def mccmnc(self) -> str:
        return self.mcc + self.mnc

    def holds(self, at: datetime) -> bool:
        return self.start_date <= at and (self.end_date is None or at < self.end_date)


def pad_mnc(mnc: str | None) -> str:
    return "" if not mnc else mnc.zfill(3)


class RateBook:
    """The rates of one account for a set of MCCs, for pricing many destinations in memory."""

    def __init__(self, rows: Iterable[RateRow], account_id: int, at: datetime) -> None:
        self._best: dict[tuple[str, str], RateRow] = {}
        # rank: (account's own list first, latest start first)
        for row in rows:
            if not row.holds(at):
                continue
            key = (row.mcc, row.mnc)
            cur = self._best.get(key)
            if cur is None or _rank(row, account_id) < _rank(cur, account_id):
                self._best[key] = row
        self._account_id = account_id

    def find(self, mcc: str, mnc: str | None) -> RateRow | None:
        """Effective rate for a destination: own list before default, exact before country."""
        exact = self._best.get((mcc, pad_mnc(mnc))) if mnc else None
        country = self._best.get((mcc, ""))
        candidates = [r for r in (exact, country) if r is not None]
        if not candidates:
            return None
        # the account's own list beats the default one; then exact beats country-wide
        candidates.sort(key=lambda r: (r.account_id != self._account_id, r.mnc == ""))
        return candidates[0]


def _rank(row: RateRow, account_id: int) -> tuple[bool, float]:
    return (row.account_id != account_id, -row.start_date.timestamp())


async def load_rate_book(
    conn: AsyncConnection, account_id: int, mccs: Iterable[str], at: datetime | None = None
) -> RateBook:
    mcc_list = sorted(set(mccs))
    rows = await _select_rows(conn, account_id, mcc_list)
    return RateBook(rows, account_id, at or utcnow())


async def cached_rate_book(
    conn: AsyncConnection, account_id: int, mcc: str, at: datetime | None = None
) -> RateBook:
    """The rates of one MCC for a single send, read at most every `REFRESH_SECONDS`. The book
    is kept until the next start or end of one of its rows: the row in force is the one whose
    window holds `at`, as when it is read afresh."""
    key = (conn.engine, account_id, mcc)  # the engine: a URL hashes by rendering itself
    now = time.monotonic()
    at = at or utcnow()
    hit = _cache.get(key)
    if hit is None or now - hit[0] >= REFRESH_SECONDS:
        if hit is not None:
            # one request reads the rates again; those arriving meanwhile keep the book they
            # would have had a moment earlier, instead of each reading it too
            _cache[key] = (now, *hit[1:])
        rows = await _select_rows(conn, account_id, [mcc])
        if len(_cache) >= MAX_CACHED:
            _cache.clear()
        hit = (now, rows, RateBook(rows, account_id, at), at, _next_change(rows, at))
        _cache[key] = hit
    elif not hit[3] <= at < hit[4]:
        hit = (hit[0], hit[1], RateBook(hit[1], account_id, at), at, _next_change(hit[1], at))
        _cache[key] = hit
    return hit[2]


def _next_change(rows: Iterable[RateRow], at: datetime) -> datetime:
    """The first start or end of a row's window after `at` (when the choice may change)."""
    times = [t for r in rows for t in (r.start_date, r.end_date) if t is not None and t > at]
    return min(times, default=OPEN_END)


def invalidate() -> None:
    """Forget the cached rates (after a price list changed in this process)."""
    _cache.clear()


async def effective_rate(
    conn: AsyncConnection, account_id: int, mcc: str, mnc: str | None, at: datetime | None = None
) -> RateRow | None:
    book = await load_rate_book(conn, account_id, [mcc], at)
    return book.find(mcc, mnc)


async def _select_rows(
    conn: AsyncConnection, account_id: int | None, mccs: Sequence[str] | None
) -> list[RateRow]:
    stmt = select(Rate)
    if account_id is not None:
        stmt = stmt.where(or_(Rate.account_id == account_id, Rate.account_id.is_(None)))
    if mccs is not None:
        stmt = stmt.where(Rate.mcc.in_(mccs))
    result = await conn.execute(stmt.order_by(Rate.mcc, Rate.mnc, Rate.start_date))
    return [
        RateRow(r.account_id, r.mcc, r.mnc, r.country, r.rate, r.start_date, r.end_date)
        for r in result
    ]


async def list_rates(conn: AsyncConnection, account_id: int | None = None,
                     only_account: bool = False) -> list[RateRow]:
    stmt = select(Rate)
    if only_account or account_id is not None:
        stmt = stmt.where(
            Rate.account_id == account_id if account_id is not None else Rate.account_id.is_(None)
        )
    result = await conn.execute(stmt.order_by(Rate.mcc, Rate.mnc, Rate.start_date))
    return [
        RateRow(r.account_id, r.mcc, r.mnc, r.country, r.rate, r.start_date, r.end_date)
        for r in result
    ]


def parse_rates_csv(text: str, now: datetime | None = None) -> list[RateRow]:
    """Parse a price list; a bad file is rejected whole, naming the line of the first problem."""
    now = now or utcnow()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None:
        raise OperatorError(
            "line 1: the file is empty; expected the header " + ",".join(CSV_HEADER)
        )
    if [h.strip().lower() for h in header] != CSV_HEADER:
        raise OperatorError(
            f"line 1: header is {','.join(header)!r}; expected {','.join(CSV_HEADER)}"
        )
    rows: list[RateRow] = []
    for lineno, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(CSV_HEADER):
            raise OperatorError(f"line {lineno}: expected 6 columns, found {len(fields)}")
        mcc, mnc, country, rate, start, end = (f.strip() for f in fields)
        if not (mcc.isdigit() and len(mcc) == 3):
            raise OperatorError(f"line {lineno}: mcc {mcc!r} must be 3 digits")
        if mnc and not (mnc.isdigit() and len(mnc) in (2, 3)):
            raise OperatorError(f"line {lineno}: mnc {mnc!r} must be 2 or 3 digits, or empty")
        if not country:
            raise OperatorError(f"line {lineno}: country must not be empty")
        try:
            price = Decimal(rate)
        except InvalidOperation:
            raise OperatorError(f"line {lineno}: rate {rate!r} is not a number") from None
        if not price.is_finite() or price < 0:
            raise OperatorError(f"line {lineno}: rate {rate!r} must be 0 or more")
        if price.as_tuple().exponent < -6:  # type: ignore[operator]
            raise OperatorError(f"line {lineno}: rate {rate!r} has more than 6 decimals")
        start_at = _parse_date(start, lineno, "start_date") if start else now
        end_at = _parse_date(end, lineno, "end_date") if end else None
        if end_at is not None and end_at <= start_at:
            raise OperatorError(f"line {lineno}: end_date must be after start_date")
        rows.append(RateRow(None, mcc, pad_mnc(mnc), country, price, start_at, end_at))
    if not rows:
        raise OperatorError("the file has a header but no rates")
    return rows


def _parse_date(value: str, lineno: int, what: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise OperatorError(
        f"line {lineno}: {what} {value!r} is not a date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)"
    )


async def import_rates(
    conn: AsyncConnection, rows: Sequence[RateRow], account_id: int | None
) -> int:
    now = utcnow()
    await conn.execute(
        insert(Rate),
        [
            {
                "account_id": account_id,
                "mcc": r.mcc,
                "mnc": r.mnc,
                "country": r.country,
                "rate": r.rate,
                "start_date": r.start_date,
                "end_date": r.end_date,
                "created_at": now,
            }
            for r in rows
        ],
    )
    invalidate()
    return len(rows)


async def clear_rates(conn: AsyncConnection, account_id: int | None) -> int:
    stmt = delete(Rate).where(
        Rate.account_id == account_id if account_id is not None else Rate.account_id.is_(None)
    )
    deleted = int((await conn.execute(stmt)).rowcount or 0)
    invalidate()
    return deleted


def export_csv(rows: Iterable[RateRow]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for r in rows:
        w.writerow([
            r.mcc, r.mnc, r.country, f"{r.rate:.6f}",
            r.start_date.strftime("%Y-%m-%d %H:%M:%S"),
            r.end_date.strftime("%Y-%m-%d %H:%M:%S") if r.end_date else "",
        ])
    return out.getvalue()
