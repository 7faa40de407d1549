"""Request-scoped dependencies: the database, the settings, the authenticated account."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.accounts.service import AuthenticatedAccount, authenticate
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.errors import ValidationFailed


async def get_db(request: Request) -> Database:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hand-off per request
    db: Database = request.app.state.db
    return db


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def current_account(request: Request) -> AuthenticatedAccount:
    db: Database = request.app.state.db
    async with db.connect() as conn:
        return await authenticate_request(request, conn)


async def authenticate_request(request: Request, conn: AsyncConnection, *, cached: bool = False
                               ) -> AuthenticatedAccount:
    """The bearer token's account (401 otherwise), within its request rate (429 otherwise).
    `cached`: from the app's token cache when seen recently (sends, which check it again when
    they are written)."""
    cache = request.app.state.token_cache if cached else None
    account = await authenticate(conn, request.headers.get("authorization"), cache)
    limiter = request.app.state.rate_limiter
    if limiter is not None:
        limiter.check(account.id)
    return account


CurrentAccount = Annotated[AuthenticatedAccount, Depends(current_account)]
Db = Annotated[Database, Depends(get_db)]


async def json_body(request: Request, *, required: bool) -> Any:
    """The JSON body, or None when there is none and none is required (GET with a body)."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ValidationFailed("The request body must be a JSON object.")
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed("The request body is not valid JSON.") from None


async def params(request: Request, names: tuple[str, ...]) -> dict[str, Any]:
    """Parameters from the query string, else from a JSON body (the spec gives GETs a body)."""
    out: dict[str, Any] = {n: request.query_params.get(n) for n in names}
    if any(v is None for v in out.values()):
        body = await json_body(request, required=False)
        if isinstance(body, dict):
            for n in names:
                if out[n] is None and body.get(n) is not None:
                    out[n] = body[n]
        elif body is not None:
            raise ValidationFailed("The request body must be a JSON object.")
    return out
