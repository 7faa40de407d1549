"""Carriers and routes in the database: what `tikosms carriers|routes` and the console manage,
and what every running delivery worker applies within seconds (`routing.Router.reload` polls
these tables; no restart).

A carrier row holds where and who we bind as (host, port, system_id, password) and, as JSON in
`settings`, only the other `SmppCarrierConfig` fields the operator set; the rest take the
config's defaults when the worker builds the carrier, so improved defaults reach old rows.
Every write is checked by building the `SmppCarrierConfig` it would give, so a row the worker
cannot use is never stored. Mistakes raise `OperatorError` (one line for the CLI).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms.db.models import ENROUTE, CarrierRow, Part, Route
from tikosms.db.types import utcnow
from tikosms.delivery import slots_repo
from tikosms.delivery.simulated import NAME as SIMULATED
from tikosms.errors import OperatorError
from tikosms.smpp.config import SmppCarrierConfig

# SMPP 3.4 section 4.1: C-Octet Strings of at most 16 / 9 / 13 octets, the NUL included
MAX_SYSTEM_ID = 15
MAX_PASSWORD = 8
MAX_SYSTEM_TYPE = 12
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # goes into logs as carrier=NAME
MATCH_PATTERN = re.compile(r"\*|\d{3}|\d{5,6}")  # any, an MCC, or an MCC+MNC
# The settings a row may carry in its JSON (SmppCarrierConfig fields beyond the columns)
SETTING_FIELDS = frozenset({
    "system_type", "bind_mode", "binds", "window", "tps", "enquire_link_interval",
    "reconnect_initial", "reconnect_max", "connect_timeout", "response_timeout",
    "source_ton_npi", "dest_ton", "dest_npi", "concat", "validity_period",
    "registered_delivery", "service_type", "throttle_retry_after", "bind_lost_retry_after",
    "stop_timeout",
})


# --- carriers ------------------------------------------------------------------------------

async def add_carrier(
    conn: AsyncConnection, *, name: str, host: str, port: int, system_id: str, password: str,
    settings: Mapping[str, Any] | None = None,
) -> int:
    """Store a carrier (enabled) after checking it; returns its id."""
    extra = dict(settings or {})
    check_carrier(name=name, host=host, port=port, system_id=system_id, password=password,
                  settings=extra)
    if await get_carrier(conn, name) is not None:
        raise OperatorError(f"carrier {name} already exists (see: tikosms carriers show {name})")
    result = await conn.execute(
        insert(CarrierRow)
        .values(name=name, kind="smpp", host=host, port=port, system_id=system_id,
                password=password, settings=json.dumps(extra, sort_keys=True), enabled=True,
                created_at=utcnow())
        .returning(CarrierRow.id)
    )
    await slots_repo.sync(conn)  # its bind slots, for the workers to lease
    return int(result.scalar_one())


def check_carrier(*, name: str, host: str, port: int, system_id: str, password: str,
                  settings: Mapping[str, Any]) -> SmppCarrierConfig:
    """The config a carrier row would give, or OperatorError saying what is wrong with it."""
    if not NAME_PATTERN.fullmatch(name):
        raise OperatorError(f"carrier name {name!r}: use up to 64 letters, digits, '_', '.', "
                            "'-', starting with a letter or digit")
    if name == SIMULATED:
        raise OperatorError(f"carrier name {SIMULATED!r} is reserved for the built-in "
                            "simulated carrier")
    if not host.strip():
        raise OperatorError("host is empty")
    if not 1 <= port <= 65535:
        raise OperatorError(f"port {port}: must be 1-65535")
    _check_length("system_id", system_id, MAX_SYSTEM_ID, allow_empty=False)
    _check_length("password", password, MAX_PASSWORD)
    unknown = set(settings) - SETTING_FIELDS
    if unknown:
        raise OperatorError(f"unknown carrier settings: {', '.join(sorted(unknown))}")
    _check_length("system_type", settings.get("system_type", ""), MAX_SYSTEM_TYPE)
    validity = settings.get("validity_period")
    if validity is not None and not 0 < validity < 100 * 86400:
        # relative time 0000DDhhmmss000R has two digits of days
        raise OperatorError(f"validity period {validity} s: must be 1 s to 99 days")
    interval = settings.get("enquire_link_interval")
    if interval is not None and interval <= 0:
        raise OperatorError("enquire_link interval must be positive (seconds)")
    try:
        return SmppCarrierConfig(name=name, host=host, port=port, system_id=system_id,
                                 password=password, **settings)
    except (TypeError, ValueError) as exc:
        raise OperatorError(f"carrier {name}: {exc}") from None


def carrier_config(row: Row) -> SmppCarrierConfig:
    """The SmppCarrierConfig of a stored row (what the worker will use)."""
    settings: dict[str, Any] = json.loads(row.settings or "{}")
    return SmppCarrierConfig(name=row.name, host=row.host, port=row.port,
                             system_id=row.system_id, password=row.password, **settings)


async def update_carrier(
    conn: AsyncConnection, name: str, *, host: str | None = None, port: int | None = None,
    system_id: str | None = None, password: str | None = None,
    settings: Mapping[str, Any] | None = None, reset: Sequence[str] = (),
    enabled: bool | None = None,
) -> Row:
    """Change a carrier in place: the fields given replace the stored ones, `settings` are
    merged into the stored ones, `reset` names settings that go back to their default. The
    result is checked as a whole before anything is written; returns the row as stored.

    Running workers see the change at their next look at the table (routing.Router.reload):
    new binds come up, the old ones drain."""
    row = await require_carrier(conn, name)
    unknown = set(reset) - SETTING_FIELDS
    if unknown:
        raise OperatorError(f"unknown carrier settings: {', '.join(sorted(unknown))}")
    merged: dict[str, Any] = json.loads(row.settings or "{}")
    merged.update(settings or {})
    for field in reset:
        merged.pop(field, None)
    values: dict[str, Any] = {
        "host": row.host if host is None else host,
        "port": row.port if port is None else port,
        "system_id": row.system_id if system_id is None else system_id,
        "password": row.password if password is None else password,
    }
    check_carrier(name=name, settings=merged, **values)
    values["settings"] = json.dumps(merged, sort_keys=True)
    if enabled is not None:
        values["enabled"] = enabled
    await conn.execute(update(CarrierRow).where(CarrierRow.id == row.id).values(**values))
    await slots_repo.sync(conn)  # binds changed: slots added or removed; disabled: released
    return await require_carrier(conn, name)


async def carriers_with_state(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every carrier as the console lists it: its row, the settings in force (defaults
    included) and its routes; never the password. Two small queries whatever the size of the
    parts table (parts_enroute_with counts one carrier's parts without an index: not for a
    page). Bind states live in the workers (their metrics), not here."""
    carriers = await list_carriers(conn)
    routes = (await conn.execute(select(Route).order_by(Route.id))).all()
    out = []
    for row in carriers:
        config = carrier_config(row)
        out.append({
            "name": row.name, "enabled": row.enabled, "host": row.host, "port": row.port,
            "system_id": row.system_id, "password_set": bool(row.password),
            "settings": {f: getattr(config, f) for f in sorted(SETTING_FIELDS)},
            "routes": [{"route_id": r.id, "match": r.match, "priority": r.priority,
                        "enabled": r.enabled} for r in routes if r.carrier_id == row.id],
            "created_at": row.created_at,
        })
    return out


async def get_carrier(conn: AsyncConnection, name: str) -> Row | None:
    return (await conn.execute(select(CarrierRow).where(CarrierRow.name == name))).first()


async def require_carrier(conn: AsyncConnection, name: str) -> Row:
    row = await get_carrier(conn, name)
    if row is None:
        raise OperatorError(f"no carrier named {name} (see: tikosms carriers list)")
    return row


async def list_carriers(conn: AsyncConnection) -> Sequence[Row]:
    return (await conn.execute(select(CarrierRow).order_by(CarrierRow.name))).all()


async def count_enabled_carriers(conn: AsyncConnection) -> int:
    return int((await conn.execute(
        select(func.count()).select_from(CarrierRow).where(CarrierRow.enabled))).scalar_one())


async def set_carrier_enabled(conn: AsyncConnection, name: str, enabled: bool) -> Row:
    row = await require_carrier(conn, name)
    await conn.execute(update(CarrierRow).where(CarrierRow.id == row.id).values(enabled=enabled))
    await slots_repo.sync(conn)  # disabled: its slots released (holders close their binds)
    return row


async def remove_carrier(conn: AsyncConnection, name: str) -> Row:
    """Delete a carrier that no route uses (else OperatorError naming the routes)."""
    row = await require_carrier(conn, name)
    using = await routes_of(conn, row.id)
    if using:
        ids = ", ".join(f"{r.id} ({r.match})" for r in using)
        raise OperatorError(f"carrier {name} is used by route(s) {ids}: remove them first "
                            f"(tikosms routes remove ID)")
    await conn.execute(delete(CarrierRow).where(CarrierRow.id == row.id))
    await slots_repo.sync(conn)
    return row


async def parts_enroute_with(conn: AsyncConnection, name: str) -> int:
    """Parts the carrier accepted and whose receipt has not come yet."""
    return int((await conn.execute(
        select(func.count()).select_from(Part)
        .where(Part.carrier == name, Part.status == ENROUTE))).scalar_one())


# --- routes ----------------------------------------------------------------------------------

async def add_route(conn: AsyncConnection, *, match: str, carrier: str, priority: int = 100
                    ) -> int:
    check_match(match)
    if priority < 0:
        raise OperatorError(f"priority {priority}: must be 0 or more (lower goes first)")
    row = await require_carrier(conn, carrier)
    same = [r for r in await routes_of(conn, row.id) if r.match == match]
    if same:
        raise OperatorError(f"route {same[0].id} already sends {match} to {carrier} "
                            f"(priority {same[0].priority})")
    result = await conn.execute(
        insert(Route)
        .values(match=match, carrier_id=row.id, priority=priority, created_at=utcnow())
        .returning(Route.id)
    )
    return int(result.scalar_one())


def check_match(match: str) -> None:
    if not MATCH_PATTERN.fullmatch(match):
        raise OperatorError(f"match {match!r}: use '*', an MCC (3 digits, e.g. 262) or an "
                            "MCC+MNC (5-6 digits, e.g. 26201)")


async def list_routes(conn: AsyncConnection) -> Sequence[Row]:
    """Routes in the order the router weighs them: most specific first, then priority."""
    rows = (await conn.execute(
        select(Route.id, Route.match, Route.priority, Route.created_at,
               Route.enabled.label("route_enabled"), CarrierRow.name.label("carrier"),
               CarrierRow.enabled)
        .join(CarrierRow, CarrierRow.id == Route.carrier_id)
    )).all()
    return sorted(rows, key=lambda r: (r.match == "*", -len(r.match), r.match, r.priority, r.id))


async def routes_of(conn: AsyncConnection, carrier_id: int) -> Sequence[Row]:
    return (await conn.execute(
        select(Route).where(Route.carrier_id == carrier_id).order_by(Route.id))).all()


async def set_route_enabled(conn: AsyncConnection, route_id: int, enabled: bool) -> None:
    """Keep a route but stop (or resume) using it; running workers apply it within seconds."""
    result = await conn.execute(
        update(Route).where(Route.id == route_id).values(enabled=enabled))
    if not result.rowcount:
        raise OperatorError(f"no route with id {route_id} (see: tikosms routes list)")


async def remove_route(conn: AsyncConnection, route_id: int) -> None:
    result = await conn.execute(delete(Route).where(Route.id == route_id))
    if not result.rowcount:
        raise OperatorError(f"no route with id {route_id} (see: tikosms routes list)")


def _check_length(field: str, value: str, limit: int, *, allow_empty: bool = True) -> None:
    if not value and not allow_empty:
        raise OperatorError(f"{field} is empty")
    if len(value.encode()) > limit:
        raise OperatorError(f"{field} is {len(value.encode())} characters: SMPP 3.4 allows "
                            f"at most {limit}")
    if not value.isascii():
        raise OperatorError(f"{field} must be ASCII")
