"""Idempotency keys for the send endpoints (SPEC_NOTES "Additions").

The same key with the same body within 24 hours replays the first answer and sends nothing; the
same key with another body is a 422. The key is stored in the same transaction as the send, so a
retry racing the first request either waits for it (PostgreSQL row lock on the key) and then
replays it, or finds it already there: never two sends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import IdempotencyKey
from tikosms.db.types import utcnow
from tikosms.errors import ValidationFailed

TTL = timedelta(hours=24)
MAX_KEY = 255


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status_code: int
    body: bytes


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise ValidationFailed(
            "The Idempotency-Key header must be 1 to 255 printable characters.",
            code="invalid_idempotency_key",
        )
    return key


def body_hash(endpoint: str, body: bytes) -> str:
    return hashlib.sha256(endpoint.encode() + b"\n" + body).hexdigest()


async def lookup(
    conn: AsyncConnection, account_id: int, key: str, request_hash: str
) -> StoredAnswer | None:
    row = (
        await conn.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.account_id == account_id, IdempotencyKey.key == key,
                # the partitions that can hold a live key (PostgreSQL: by created_at)
                IdempotencyKey.created_at >= utcnow() - TTL,
            ).order_by(IdempotencyKey.created_at.desc()).limit(1)
        )
    ).first()
    if row is None or utcnow() - row.created_at > TTL:
        return None
    if row.request_hash != request_hash:
        raise ValidationFailed(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_key_reused",
        )
    return StoredAnswer(row.status_code, row.response_body.encode())
