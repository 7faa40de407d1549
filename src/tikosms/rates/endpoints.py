"""GET /v1/sms-rates?mccmnc=255001[&country=Ukraine]: the account's effective rate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from tikosms import formats
from tikosms.api.deps import CurrentAccount, Db, params
from tikosms.api.responses import JSONResponse
from tikosms.errors import MSG_NO_RATE_FOUND, NotFound, ValidationFailed
from tikosms.rates.service import RateRow, effective_rate

router = APIRouter(prefix="/v1")


def parse_mccmnc(value: Any) -> tuple[str, str | None]:
    """6 digits (255001), 5 (25501: MNC padded to 001) or 3 (255: the country-wide row)."""
    if value is None or value == "":
        raise ValidationFailed("The mccmnc field is required.",
                               errors={"mccmnc": ["The mccmnc field is required."]})
    text = str(value).strip()
    if not text.isdigit() or len(text) not in (3, 5, 6) or not text.isascii():
        raise ValidationFailed(
            "The mccmnc must be 3, 5 or 6 digits (e.g. 255001, 25501 or 255).",
            errors={"mccmnc": ["Must be 3, 5 or 6 digits."]},
        )
    return text[:3], (text[3:].zfill(3) if len(text) > 3 else None)


def rate_view(r: RateRow) -> dict[str, str]:
    return {
        "mcc": r.mcc,
        "mnc": r.mnc,
        "mccmnc": r.mccmnc,
        "country": r.country,
        "rate": formats.rate(r.rate),
        "rate_start_date": formats.rate_time(r.start_date),
        "rate_end_date": formats.rate_time(r.end_date),
    }


@router.get("/sms-rates")
async def get_sms_rates(request: Request, account: CurrentAccount, db: Db) -> Response:
    p = await params(request, ("mccmnc", "country"))
    mcc, mnc = parse_mccmnc(p["mccmnc"])
    country = p["country"]
    if country is not None and not isinstance(country, str):
        raise ValidationFailed("The country must be a string.",
                               errors={"country": ["Must be a string."]})
    async with db.connect() as conn:
        rate = await effective_rate(conn, account.id, mcc, mnc)
    if rate is None or (mnc is None and rate.mnc != ""):
        raise NotFound(MSG_NO_RATE_FOUND)
    if country and country.strip().casefold() != rate.country.casefold():
        raise NotFound(MSG_NO_RATE_FOUND)
    return JSONResponse({"success": True, "rate": rate_view(rate)})
