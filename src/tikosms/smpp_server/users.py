"""SMPP credentials of customers: create, list, revoke, and check a bind.

A customer binds with a system_id and password of its own (`tikosms smpp-users create`); the
password is stored as an argon2id hash only. A verify costs ~220 ms of CPU, so it runs in a
thread, and a password verified once is remembered (its SHA-256, beside the hash it matched) so
that a customer reconnecting its binds is not charged 220 ms each time; a changed or revoked
user is read from the database at every bind, so the memory never outlives the credential.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import Account, SmppUser
from tikosms.db.types import utcnow
from tikosms.errors import OperatorError

_hasher = PasswordHasher()
# verified against when the system_id is unknown: a wrong system_id costs what a wrong
# password does (no telling which system_ids exist by timing)
_DUMMY_HASH = _hasher.hash("not a password")
MAX_SYSTEM_ID = 15  # SMPP 3.4, 4.1.1: a C-Octet String of 16 octets with its NUL
MAX_PASSWORD = 8  # 9 octets with the NUL
SYSTEM_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True, slots=True)
class SmppCredential:
    """A user as the server needs it at bind time."""

    id: int
    account_id: int
    system_id: str
    password_hash: str
    max_binds: int
    window: int
    tps: float | None
    burst: int | None
    allow_ip: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    account_status: str

    def allows(self, address: str) -> bool:
        """True when no allowlist is set or the peer address is in one of its networks."""
        if not self.allow_ip:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allow_ip)


def parse_networks(value: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                ...]:
    """'10.0.0.0/8, 192.0.2.7' -> networks; OperatorError for a malformed one."""
    if not value:
        return ()
    nets = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise OperatorError(f"--allow-ip {item!r} is not an address or CIDR network "
                                "(example: 203.0.113.0/24)") from None
    return tuple(nets)


async def create_user(
    conn: AsyncConnection, account_id: int, system_id: str, password: str, *,
    max_binds: int = 4, window: int = 100, tps: float | None = None, burst: int | None = None,
    allow_ip: Sequence[str] = (),
) -> int:
    if not 1 <= len(system_id) <= MAX_SYSTEM_ID or not set(system_id) <= SYSTEM_ID_CHARS:
        raise OperatorError(f"system_id {system_id!r}: use 1-{MAX_SYSTEM_ID} letters, digits, "
                            "'_', '.', '-' (SMPP 3.4 allows 15 octets)")
    if not 1 <= len(password) <= MAX_PASSWORD or not password.isascii() \
            or not password.isprintable():
        raise OperatorError(f"password: use 1-{MAX_PASSWORD} printable ASCII characters "
                            "(SMPP 3.4 allows 8 octets)")
    if max_binds < 1 or window < 1:
        raise OperatorError("--max-binds and --window must be at least 1")
    if tps is not None and tps <= 0:
        raise OperatorError("--tps must be more than 0 (leave it out for no limit)")
    if burst is not None and burst < 1:
        raise OperatorError("--burst must be at least 1")
    networks = ",".join(str(n) for n in parse_networks(",".join(allow_ip))) or None
    account = (await conn.execute(select(Account.id).where(Account.id == account_id))).first()
    if account is None:
        raise OperatorError(f"no account with id {account_id} (see: tikosms accounts list)")
    taken = (await conn.execute(select(SmppUser.id).where(
        SmppUser.system_id == system_id))).first()
    if taken is not None:
        raise OperatorError(f"system_id {system_id} is taken (see: tikosms smpp-users list)")
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    result = await conn.execute(insert(SmppUser).values(
        account_id=account_id, system_id=system_id, password_hash=password_hash,
        max_binds=max_binds, window=window, tps=tps, burst=burst, allow_ip=networks,
        created_at=utcnow(),
    ).returning(SmppUser.id))
    return int(result.scalar_one())


async def list_users(conn: AsyncConnection, account_id: int | None = None,
                     include_revoked: bool = False) -> list[dict[str, object]]:
    stmt = select(*SmppUser.__table__.c).order_by(SmppUser.id)
    if account_id is not None:
        stmt = stmt.where(SmppUser.account_id == account_id)
    if not include_revoked:
        stmt = stmt.where(SmppUser.revoked_at.is_(None))
    return [
        {"id": r.id, "account_id": r.account_id, "system_id": r.system_id,
         "max_binds": r.max_binds, "window": r.window, "tps": r.tps, "burst": r.burst,
         "allow_ip": r.allow_ip, "created_at": r.created_at, "revoked_at": r.revoked_at}
        for r in (await conn.execute(stmt)).all()
    ]


async def revoke_user(conn: AsyncConnection, system_id: str) -> None:
    """Revoke by system_id: new binds are refused; binds up now are closed by the server at
    its next look (within `smpp_credentials_check_seconds`)."""
    result = await conn.execute(
        update(SmppUser).where(SmppUser.system_id == system_id, SmppUser.revoked_at.is_(None))
        .values(revoked_at=utcnow()).returning(SmppUser.id))
    if result.first() is None:
        raise OperatorError(f"no active SMPP user {system_id} (see: tikosms smpp-users list)")


async def credential(conn: AsyncConnection, system_id: str) -> SmppCredential | None:
    """The active user with this system_id (and its account's status), or None."""
    user = (await conn.execute(
        select(SmppUser.id, SmppUser.account_id, SmppUser.system_id, SmppUser.password_hash,
               SmppUser.max_binds, SmppUser.window, SmppUser.tps, SmppUser.burst,
               SmppUser.allow_ip, Account.status)
        .join(Account, Account.id == SmppUser.account_id)
        .where(SmppUser.system_id == system_id, SmppUser.revoked_at.is_(None)))).first()
    if user is None:
        return None
    return SmppCredential(
        id=user.id, account_id=user.account_id, system_id=user.system_id,
        password_hash=user.password_hash, max_binds=user.max_binds, window=user.window,
        tps=user.tps, burst=user.burst, allow_ip=parse_networks(user.allow_ip),
        account_status=user.status,
    )


class PasswordCheck:
    """Verifies bind passwords off the event loop, remembering the ones verified."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._verified: dict[tuple[str, str], str] = {}  # (system_id, sha256) -> hash matched
        self.verifies = 0  # argon2 verifications run (tests, metrics)

    async def check(self, user: SmppCredential | None, password: str) -> bool:
        digest = hashlib.sha256(password.encode("utf-8", "surrogateescape")).hexdigest()
        if user is not None:
            known = self._verified.get((user.system_id, digest))
            if known is not None and hmac.compare_digest(known, user.password_hash):
                return True
        ok = await asyncio.to_thread(self._verify, user.password_hash if user else None,
                                     password)
        if ok and user is not None:
            if len(self._verified) >= self.max_entries:
                self._verified.clear()
            self._verified[(user.system_id, digest)] = user.password_hash
        return ok and user is not None

    def _verify(self, password_hash: str | None, password: str) -> bool:
        self.verifies += 1
        try:
            return bool(_hasher.verify(password_hash or _DUMMY_HASH, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
