"""Every string format of the API in one place (SPEC_NOTES "Formats"; all times UTC)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

OPEN_END = "2100-01-01 00:00:00"


def balance_updated(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y.%m.%d %H:%M:%S")


def campaign_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_time(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def rate_time(at: datetime | None) -> str:
    return OPEN_END if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def rate(value: Decimal) -> str:
    return f"{value:.6f}"


def cost(value: Decimal) -> str:
    """At least 3 decimals, more only when the price needs them: 0.05 -> '0.050', 0.0455."""
    text = f"{value:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(3, '0')}"


def balance(value: Decimal) -> str:
    """A JSON number with exactly 4 decimals (written into the body as-is)."""
    return f"{value.quantize(Decimal('0.0001')):.4f}"
