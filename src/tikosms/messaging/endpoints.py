"""HTTP for sending and reading messages: translate requests, call the service, shape answers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from tikosms import formats
from tikosms.api.deps import CurrentAccount, Db, authenticate_request, json_body, params
from tikosms.api.responses import JSONResponse
from tikosms.db.types import utcnow
from tikosms.errors import (
    MSG_CAMPAIGN_NOT_FOUND,
    MSG_MESSAGES_NOT_FOUND,
    AccountSuspended,
    NotAuthenticated,
    NotFound,
    TikoError,
)
from tikosms.errors import ValidationFailed as Invalid
from tikosms.messaging import batch_sql, idempotency, streams
from tikosms.messaging import repository as repo
from tikosms.messaging.cancel import cancel_campaign
from tikosms.messaging.schemas import parse_campaign, parse_single
from tikosms.messaging.service import PreparedSend, SendResult, prepare_campaign, prepare_single
from tikosms.messaging.views import campaign_view, part_view
from tikosms.messaging.writer import KEY_TAKEN, Idempotency

router = APIRouter(prefix="/v1")


@router.post("/message")
async def post_message(request: Request, db: Db) -> Response:
    # served by app.SingleSendRoute before FastAPI sees it; kept for the OpenAPI routes
    return await send_single(request, db)


def _single_answer(result: SendResult) -> dict[str, Any]:
    return {
        "success": True,
        "message_id": result.message_ids[0],
        "campaign_id": result.campaign_id,
        "parts": result.parts,
        "encoding": result.encoding,
        "cost": formats.cost(result.cost),
    }


async def _prepare_single(conn: Any, account: Any, body: Any) -> PreparedSend:
    return await prepare_single(conn, account, parse_single(body))


async def send_single(request: Request, db: Any) -> Response:
    """POST /v1/message."""
    return await _send_once(request, db, "message", _prepare_single, _single_answer)


@router.post("/messages")
async def post_messages(request: Request, db: Db) -> Response:
    now = utcnow()
    scheduled: list[Any] = [None]

    def answer(result: SendResult) -> dict[str, Any]:
        return {
            "success": True,
            "campaign_id": result.campaign_id,
            "recipients": result.recipients,
            "duplicates_removed": result.duplicates_removed,
            "invalid_removed": result.invalid_removed,
            "invalid": result.invalid,
            "parts": result.parts,
            "encoding": result.encoding,
            "cost": formats.cost(result.cost),
            "scheduled_at": formats.message_time(scheduled[0]),
        }

    async def prepare(conn: Any, account: Any, body: Any) -> PreparedSend:
        req = parse_campaign(body, now)
        scheduled[0] = req.scheduled_at
        return await prepare_campaign(conn, account, req, now,
                                      request.app.state.settings.max_parts_per_request)

    return await _send_once(request, db, "messages", prepare, answer)


async def _send_once(
    request: Request, db: Any, endpoint: str,
    prepare: Callable[[Any, Any, Any], Awaitable[PreparedSend]],
    answer: Callable[[SendResult], dict[str, Any]],
) -> Response:
    """Authenticate, check, price and store a send. The reads share one connection (token,
    idempotency key, numbering plan, rate); a replay of an Idempotency-Key is answered before
    anything else is done, and the key is stored in the send's own transaction."""
    # the reads share one connection, checked out only if a cache misses
    async with db.lazy_connect() as conn:
        account = await authenticate_request(request, conn, cached=True)
        try:
            raw = await request.body()
            body = await json_body(request, required=True)
            key = idempotency.check_key(request.headers.get("idempotency-key"))
            digest = idempotency.body_hash(endpoint, raw) if key else ""
            if key:
                stored = await idempotency.lookup(conn, account.id, key, digest)
                if stored is not None:
                    await _still_allowed(request, conn, account)
                    return _replay(stored)
            prepared = await prepare(conn, account, body)
        except TikoError:
            # answered without the writer, which checks the token again for a send: a token
            # from the cache is checked here first (revoked: 401, not the request's error)
            await _still_allowed(request, conn, account)
            raise
    payload = orjson.dumps(answer(prepared.result))
    idem = Idempotency(key, endpoint, digest) if key else None
    writer = request.app.state.send_writers[endpoint]
    try:
        outcome = await writer.write(prepared, payload, idem)
    except (NotAuthenticated, AccountSuspended):
        request.app.state.token_cache.drop(request.headers.get("authorization"))
        raise
    if outcome == KEY_TAKEN:
        # the same key was taken by a concurrent request first: answer as it did (to a token
        # still allowed: this send's own token was not checked by the writer)
        async with db.connect() as conn:
            await _still_allowed(request, conn, account)
            stored = await idempotency.lookup(conn, account.id, key, digest)  # type: ignore[arg-type]
        if stored is not None:
            return _replay(stored)
        # that request was refused (402) and let the key go: this one is tried on its own
        outcome = await writer.write(prepared, payload, idem)
        if outcome == KEY_TAKEN:
            raise Invalid("This Idempotency-Key is in use by a request still in progress.",
                          code="idempotency_key_in_use")
    return JSONResponse(payload)


async def _still_allowed(request: Request, conn: Any, account: Any) -> None:
    """401 / 403 if the token was revoked or the account suspended since it was cached (a
    token just read from the database is not read again)."""
    if not account.cached or not account.token_id:
        return
    revoked, status = (await batch_sql.token_states(conn, [account.token_id])).get(
        account.token_id, (True, ""))
    if revoked or status != "active":
        request.app.state.token_cache.drop(request.headers.get("authorization"))
        raise NotAuthenticated() if revoked else AccountSuspended()


def _replay(stored: idempotency.StoredAnswer) -> Response:
    return JSONResponse(stored.body, status_code=stored.status_code,
                        headers={"Idempotent-Replayed": "true"})


@router.get("/get_messages")
async def get_messages(request: Request, account: CurrentAccount, db: Db) -> Response:
    p = await params(request, ("campaign_id", "page", "per_page"))
    campaign_id = p["campaign_id"]
    if campaign_id is not None:
        campaign_id = _uuid_or_404(campaign_id, MSG_CAMPAIGN_NOT_FOUND)
    page = _pagination(p)
    stmt = repo.campaigns_query(account.id, campaign_id)
    async with db.connect() as conn:
        if campaign_id is not None:
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise NotFound(MSG_CAMPAIGN_NOT_FOUND)
            return JSONResponse({"success": True, "campaigns": [campaign_view(row)]})
        if page is not None:
            number, per_page = page
            total = await repo.count(conn, stmt)
            rows = (await conn.execute(stmt.limit(per_page).offset((number - 1) * per_page)))
            return JSONResponse({
                "success": True,
                "campaigns": [campaign_view(r) for r in rows],
                "meta": {"page": number, "per_page": per_page, "total": total},
            })
    return _stream(request, account.id, db, stmt, streams.campaigns_after, "campaigns",
                   campaign_view)


@router.get("/get_message")
async def get_message(request: Request, account: CurrentAccount, db: Db) -> Response:
    p = await params(request, ("message_id", "campaign_id", "page", "per_page"))
    message_id, campaign_id = p["message_id"], p["campaign_id"]
    for name, value in (("message_id", message_id), ("campaign_id", campaign_id)):
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise Invalid(f"The {name} must be a string of at most 255 characters.",
                          errors={name: ["Must not be greater than 255 characters."]})
    if not message_id and not campaign_id:
        raise Invalid("The message_id or campaign_id field is required.",
                      errors={"message_id": ["The message_id or campaign_id field is required."]})
    page = _pagination(p)
    message_id = _uuid_or_404(message_id, MSG_MESSAGES_NOT_FOUND) if message_id else None
    campaign_id = _uuid_or_404(campaign_id, MSG_MESSAGES_NOT_FOUND) if campaign_id else None
    stmt = repo.parts_query(account.id, message_id=message_id, campaign_id=campaign_id)
    async with db.connect() as conn:
        if message_id is not None or page is not None:
            total = None
            if page is not None:
                number, per_page = page
                total = await repo.count(conn, stmt)
                stmt = stmt.limit(per_page).offset((number - 1) * per_page)
            rows = (await conn.execute(stmt)).all()
            if not rows and not total:
                raise NotFound(MSG_MESSAGES_NOT_FOUND)
            body: dict[str, Any] = {"success": True, "data": [part_view(r) for r in rows]}
            if page is not None:
                body["meta"] = {"page": page[0], "per_page": page[1], "total": total}
            return JSONResponse(body)
        assert campaign_id is not None
        if await repo.get_campaign(conn, account.id, campaign_id) is None:
            raise NotFound(MSG_MESSAGES_NOT_FOUND)
    return _stream(request, account.id, db, stmt, streams.parts_after, "data", part_view)


@router.post("/campaigns/{campaign_id}/cancel")
async def post_cancel(campaign_id: str, request: Request, account: CurrentAccount, db: Db
                      ) -> Response:
    campaign_id = _uuid_or_404(campaign_id, MSG_CAMPAIGN_NOT_FOUND)
    async with db.begin() as conn:
        result = await cancel_campaign(conn, account.id, campaign_id)
    return JSONResponse({
        "success": True,
        "campaign_id": campaign_id,
        "cancelled": result.cancelled,
        "refunded": formats.cost(result.refunded),
        "status": result.status,
    })


def _uuid_or_404(value: Any, message: str) -> str:
    """Not a UUID is answered like an unknown id: 404 with the spec's sentence."""
    if not isinstance(value, str):
        raise NotFound(message)
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise NotFound(message) from None


def _pagination(p: dict[str, Any]) -> tuple[int, int] | None:
    if p.get("page") is None and p.get("per_page") is None:
        return None
    page = _int_param(p.get("page"), "page", 1, 10_000_000, default=1)
    per_page = _int_param(p.get("per_page"), "per_page", 1, 1000, default=100)
    return page, per_page


def _int_param(value: Any, name: str, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and value != number):
            raise ValueError
    except (TypeError, ValueError):
        raise Invalid(f"The {name} must be an integer between {low} and {high}.",
                      errors={name: [f"Must be an integer between {low} and {high}."]}) from None
    if not low <= number <= high:
        raise Invalid(f"The {name} must be an integer between {low} and {high}.",
                      errors={name: [f"Must be an integer between {low} and {high}."]})
    return number


def _stream(request: Request, account_id: int, db: Any, stmt: Any, after: Any, key: str,
            view: Any) -> Response:
    """Every row, in keyset pages with the connection released between them (streams.py)."""
    settings = request.app.state.settings
    return streams.stream(db, request.app.state.stream_slots, account_id, stmt, after, key, view,
                          settings.stream_page_rows)
