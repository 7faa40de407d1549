"""Column types that behave the same on SQLite and PostgreSQL.

Money is stored as a whole number of micro-units (1e-6 of the currency) in a BIGINT: exact on
both databases (SQLite has no decimal type and would round through a float), and balance
arithmetic stays a single atomic `UPDATE ... SET balance = balance - :cost`. Code sees `Decimal`.

Times are stored as naive UTC and handed back timezone-aware (UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect
from sqlalchemy.types import TypeDecorator

MICRO = Decimal("0.000001")
_SCALE = 1_000_000


def to_micros(value: Decimal | int | str) -> int:
    """Decimal amount -> whole micro-units. Refuses amounts finer than 1e-6 rather than round."""
    d = Decimal(value)
    micros = d * _SCALE
    if micros != micros.to_integral_value():
        raise ValueError(f"amount {value} has more than 6 decimals")
    return int(micros)


def from_micros(value: int) -> Decimal:
    return (Decimal(value) / _SCALE).quantize(MICRO)


class Money(TypeDecorator[Decimal]):
    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return from_micros(int(value))


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else stored_utc(value)


def stored_utc(value: datetime | str) -> datetime:
    """A time as a column stores it (naive UTC; text on SQLite through raw SQL), aware UTC:
    for SQL on the driver, which skips the column types."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def naive_utc(value: datetime) -> datetime:
    """For bulk paths (COPY / executemany) that bypass the column types. A naive value is
    taken as naive UTC already (see `naive_utc_now`)."""
    if value.tzinfo is None:
        return value
    if value.tzinfo is not UTC:  # ours are UTC already (utcnow, or read back as UTC)
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


def naive_utc_now() -> datetime:
    """Now as the database keeps times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime writes for a naive UTC time: always with
    microseconds (raw SQL on SQLite must write the same, or time comparisons go wrong)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")
