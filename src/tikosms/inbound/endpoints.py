"""HTTP for inbound SMS and opt-outs (additions to the published API, docs/api.md).

GET /v1/inbound lists the token's account's inbound messages, newest first, in keyset pages
(`cursor` is the `next_cursor` of the page before). /v1/opt-outs lists, adds and removes the
account's opt-outs.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from tikosms.api.deps import CurrentAccount, Db, json_body, params
from tikosms.api.responses import JSONResponse
from tikosms.errors import NotFound, ValidationFailed
from tikosms.inbound import manage
from tikosms.inbound import repository as repo
from tikosms.inbound.service import Inbound, inbound_view

router = APIRouter(prefix="/v1")

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@router.get("/inbound")
async def get_inbound(request: Request, account: CurrentAccount, db: Db) -> Response:
    p = await params(request, ("since", "until", "to", "limit", "cursor"))
    limit = _limit(p["limit"])
    since, until = _time(p["since"], "since"), _time(p["until"], "until")
    to = _number(p["to"], "to") if p["to"] is not None else None
    after = _decode_cursor(p["cursor"]) if p["cursor"] else None
    stmt = repo.inbound_query(account.id, since=since, until=until, to=to, after=after,
                              limit=limit + 1)
    async with db.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    more, rows = len(rows) > limit, rows[:limit]
    data = [inbound_view(_inbound(r)) for r in rows]
    cursor = _encode_cursor(rows[-1].received_at, rows[-1].id) if more else None
    return JSONResponse({"success": True, "data": data, "next_cursor": cursor})


@router.get("/opt-outs")
async def get_opt_outs(request: Request, account: CurrentAccount, db: Db) -> Response:
    p = await params(request, ("from", "limit", "cursor"))
    limit = _limit(p["limit"])
    sender = _number(p["from"], "from") if p["from"] is not None else None
    after: tuple[str, str] | None = None
    if p["cursor"]:
        try:
            recipient, _, from_ = _b64decode(p["cursor"]).partition("|")
        except ValueError:
            raise ValidationFailed("The cursor is not one this API gave.") from None
        after = (recipient, from_)
    async with db.connect() as conn:
        rows = (await conn.execute(repo.opt_outs_query(account.id, after=after,
                                                       limit=limit + 1, sender=sender))).all()
    more, rows = len(rows) > limit, rows[:limit]
    cursor = _b64encode(f"{rows[-1].recipient}|{rows[-1].sender}") if more else None
    return JSONResponse({"success": True, "data": [manage.opt_out_view(r) for r in rows],
                         "next_cursor": cursor})


@router.post("/opt-outs")
async def post_opt_out(request: Request, account: CurrentAccount, db: Db) -> Response:
    body = await json_body(request, required=True)
    if not isinstance(body, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    to, sender = body.get("to"), body.get("from")
    if not isinstance(to, str) or (sender is not None and not isinstance(sender, str)):
        raise ValidationFailed("The to field is required (a number); from is optional.",
                               errors={"to": ["The to field is required."]})
    async with db.begin() as conn:
        try:
            recipient, from_, created = await manage.add_opt_out(conn, account.id, to, sender,
                                                                 "api")
        except ValueError as exc:
            raise ValidationFailed(str(exc).capitalize() + ".",
                                   errors={"to": [str(exc)]}) from None
    return JSONResponse({"success": True, "created": created, "opt_out": {
        "to": recipient, "from": from_ or None, "source": "api", "keyword": None,
        "created_at": None}}, status_code=201 if created else 200)


@router.delete("/opt-outs/{number}")
async def delete_opt_out(number: str, request: Request, account: CurrentAccount, db: Db
                         ) -> Response:
    sender = request.query_params.get("from")
    async with db.begin() as conn:
        try:
            removed = await manage.remove_opt_out(conn, account.id, number, sender)
        except ValueError as exc:
            raise ValidationFailed(str(exc).capitalize() + ".") from None
    if not removed:
        raise NotFound("No opt-out found for this number.")
    return JSONResponse({"success": True, "removed": removed})


def _inbound(row: Any) -> Inbound:
    return Inbound(row.id, row.public_id, row.account_id, row.sender, row.recipient, row.text,
                   row.encoding, row.data_coding, row.parts, row.keyword, row.opt_out,
                   row.carrier, row.received_at)


def _limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        number = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and value != number):
            raise ValueError
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= MAX_LIMIT:
        message = f"The limit must be an integer between 1 and {MAX_LIMIT}."
        raise ValidationFailed(message, errors={"limit": [message]})
    return number


def _time(value: Any, name: str) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS` or ISO 8601 (UTC without an offset)."""
    if value is None or value == "":
        return None
    message = f"The {name} must be a time such as 2025-08-12 10:00:00."
    if not isinstance(value, str):
        raise ValidationFailed(message, errors={name: [message]})
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(message, errors={name: [message]}) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _number(value: Any, name: str) -> str:
    try:
        return manage.clean_number(str(value), name)
    except ValueError as exc:
        raise ValidationFailed(str(exc).capitalize() + ".", errors={name: [str(exc)]}) from None


def _encode_cursor(at: datetime, row_id: int) -> str:
    return _b64encode(f"{at.astimezone(UTC).isoformat()}|{row_id}")


def _decode_cursor(value: Any) -> tuple[datetime, int]:
    try:
        at, _, row_id = _b64decode(str(value)).partition("|")
        return datetime.fromisoformat(at), int(row_id)
    except ValueError:
        raise ValidationFailed("The cursor is not one this API gave.",
                               errors={"cursor": ["Unknown cursor."]}) from None


def _b64encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _b64decode(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("bad cursor") from exc


__all__ = ["router"]
