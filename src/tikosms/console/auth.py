"""Operators, their passwords, sessions, CSRF tokens and login throttling.

Passwords are argon2id hashes (argon2-cffi's defaults; ~220 ms a verify on this machine kind, so
verifies run in a thread, off the event loop). A session is a random cookie token whose SHA-256
is stored with the session's CSRF token; every form of the session carries that CSRF token.
Logins are throttled per operator name and per client IP: after N failures inside the window
the key is refused until the window ends, whether or not the password is right.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import LoginThrottle, Operator, OperatorSession
from tikosms.db.types import utcnow
from tikosms.errors import OperatorError

_hasher = PasswordHasher()
# verified against when the name is unknown, so that a wrong name costs as long as a wrong
# password (no telling which names exist by timing)
_DUMMY_HASH = _hasher.hash("not a password of anyone")
MIN_PASSWORD = 8
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    operator_id: int
    operator_name: str
    csrf_token: str


# --- operators ---------------------------------------------------------------------------------

def check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 64 or not set(name) <= NAME_CHARS:
        raise OperatorError(f"operator name {name!r}: use 1-64 letters, digits, '_', '.', "
                            "'-', '@'")
    return name


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"password too short: use at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


async def create_operator(conn: AsyncConnection, name: str, password: str) -> int:
    name = check_name(name)
    password_hash = await asyncio.to_thread(hash_password, password)
    if await get_operator(conn, name) is not None:
        raise OperatorError(f"operator {name} already exists (see: tikosms operators list)")
    result = await conn.execute(
        insert(Operator).values(name=name, password_hash=password_hash, created_at=utcnow())
        .returning(Operator.id))
    return int(result.scalar_one())


async def get_operator(conn: AsyncConnection, name: str) -> Row | None:
    return (await conn.execute(select(Operator).where(Operator.name == name))).first()


async def list_operators(conn: AsyncConnection) -> Sequence[Row]:
    return (await conn.execute(select(Operator).order_by(Operator.name))).all()


async def delete_operator(conn: AsyncConnection, name: str) -> None:
    row = await get_operator(conn, name)
    if row is None:
        raise OperatorError(f"no operator named {name} (see: tikosms operators list)")
    await conn.execute(delete(OperatorSession).where(OperatorSession.operator_id == row.id))
    await conn.execute(delete(Operator).where(Operator.id == row.id))


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


# --- throttling --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ThrottleRule:
    per_user: int
    per_ip: int
    window: timedelta


def throttle_keys(name: str, ip: str) -> tuple[str, str]:
    return f"user:{name.strip().lower()[:100]}", f"ip:{ip[:100]}"


async def throttled_until(conn: AsyncConnection, name: str, ip: str, rule: ThrottleRule,
                          now: datetime) -> datetime | None:
    """When the name or IP may try again, if either has used up its failures, else None."""
    user_key, ip_key = throttle_keys(name, ip)
    rows = (await conn.execute(
        select(LoginThrottle).where(LoginThrottle.key.in_((user_key, ip_key))))).all()
    until: datetime | None = None
    for row in rows:
        limit = rule.per_user if row.key == user_key else rule.per_ip
        ends = row.window_start + rule.window
        if row.failures >= limit and ends > now:
            until = ends if until is None else max(until, ends)
    return until


async def record_failure(conn: AsyncConnection, name: str, ip: str, rule: ThrottleRule,
                         now: datetime) -> None:
    for key in throttle_keys(name, ip):
        row = (await conn.execute(
            select(LoginThrottle).where(LoginThrottle.key == key))).first()
        if row is None:
            await conn.execute(insert(LoginThrottle).values(key=key, failures=1,
                                                            window_start=now))
        elif row.window_start + rule.window <= now:
            await conn.execute(update(LoginThrottle).where(LoginThrottle.key == key)
                               .values(failures=1, window_start=now))
        else:
            await conn.execute(update(LoginThrottle).where(LoginThrottle.key == key)
                               .values(failures=LoginThrottle.failures + 1))


async def clear_user_failures(conn: AsyncConnection, name: str) -> None:
    """A right password clears the name's count (not the IP's: one good login from an address
    does not excuse its guesses at other names)."""
    user_key, _ = throttle_keys(name, "")
    await conn.execute(delete(LoginThrottle).where(LoginThrottle.key == user_key))


# --- sessions ----------------------------------------------------------------------------------

def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(conn: AsyncConnection, operator_id: int, hours: float) -> str:
    """A new session; returns the cookie token (shown to the browser only)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await conn.execute(insert(OperatorSession).values(
        token_hash=_digest(token), operator_id=operator_id, csrf_token=secrets.token_urlsafe(32),
        created_at=now, expires_at=now + timedelta(hours=hours)))
    await conn.execute(delete(OperatorSession).where(OperatorSession.expires_at < now))
    await conn.execute(update(Operator).where(Operator.id == operator_id)
                       .values(last_login_at=now))
    return token


async def session_for(conn: AsyncConnection, token: str | None) -> SessionInfo | None:
    if not token or len(token) > 100:
        return None
    row = (await conn.execute(
        select(OperatorSession.csrf_token, OperatorSession.expires_at, OperatorSession.token_hash,
               Operator.id, Operator.name)
        .join(Operator, Operator.id == OperatorSession.operator_id)
        .where(OperatorSession.token_hash == _digest(token)))).first()
    if row is None or row.expires_at <= utcnow():
        return None
    if not hmac.compare_digest(row.token_hash, _digest(token)):
        return None
    return SessionInfo(operator_id=row.id, operator_name=row.name, csrf_token=row.csrf_token)


async def end_session(conn: AsyncConnection, token: str | None) -> None:
    if token:
        await conn.execute(delete(OperatorSession)
                           .where(OperatorSession.token_hash == _digest(token)))


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
