"""tikosms carriers add|update|list|slots|show|enable|disable|remove and tikosms routes
add|list|remove.

Running workers apply every change within a few seconds (they look at these tables every
`carriers_reload_seconds`), no restart. Passwords are stored (the SMSC needs them in clear)
but never printed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy import Row

from tikosms.cli.base import cli, emit, json_option, run
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.delivery import carriers_repo as repo
from tikosms.delivery import slots_repo
from tikosms.errors import OperatorError
from tikosms.smpp.config import DEFAULT_SOURCE_TON_NPI

APPLIED = ("running workers apply this within a few seconds, no restart (they look every "
           "TIKOSMS_CARRIERS_RELOAD_SECONDS, default 2)")
NO_CARRIER = ("no carrier is enabled: workers fall back to the built-in simulated carrier, "
              "which sends nothing and reports every part DELIVRD")


@cli.group("carriers")
def carriers_group() -> None:
    """SMPP carriers the workers bind to (changes apply to running workers in seconds)."""


def _settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by `add` and `update` beyond address and credentials."""
    options = [
        click.option("--system-type", default=None,
                     help="sent in the bind, if the carrier wants one"),
        click.option("--bind-mode", type=click.Choice(["transceiver", "transmitter_receiver"]),
                     default=None, help="one transceiver connection per bind (default), or a "
                     "transmitter plus a receiver"),
        click.option("--binds", type=int, default=None,
                     help="connections kept up [default: 1]"),
        click.option("--window", type=int, default=None,
                     help="submit_sm awaiting a response, per bind [default: 100]"),
        click.option("--tps", type=float, default=None,
                     help="parts per second across all binds, as agreed [default: no limit]"),
        click.option("--enquire-link-interval", type=float, default=None, metavar="SECONDS",
                     help="keep-alive period [default: 30]"),
        click.option("--concat", type=click.Choice(["udh8", "udh16", "sar"]), default=None,
                     help="how long messages are joined [default: udh8]"),
        click.option("--validity-period", type=int, default=None, metavar="SECONDS",
                     help="relative validity sent with each part [default: the SMSC's]"),
        click.option("--source-ton-npi", multiple=True, metavar="TYPE=TON/NPI",
                     help="source TON/NPI for a sender type, e.g. Alpha=5/0 (repeatable) "
                     "[default: Alpha=5/0 Numeric=1/1 Shortcode=3/0]"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _given_settings(system_type: str | None, bind_mode: str | None, binds: int | None,
                    window: int | None, tps: float | None, enquire_link_interval: float | None,
                    concat: str | None, validity_period: int | None,
                    source_ton_npi: tuple[str, ...]) -> dict[str, Any]:
    given: dict[str, Any] = {
        "system_type": system_type, "bind_mode": bind_mode, "binds": binds, "window": window,
        "tps": tps, "enquire_link_interval": enquire_link_interval, "concat": concat,
        "validity_period": validity_period,
    }
    settings = {k: v for k, v in given.items() if v is not None}
    if source_ton_npi:
        settings["source_ton_npi"] = parse_source_ton_npi(source_ton_npi)
    return settings


@carriers_group.command("add")
@click.argument("name")
@click.option("--host", required=True, help="the SMSC's host name or address")
@click.option("--port", required=True, type=int, help="the SMSC's TCP port (often 2775)")
@click.option("--system-id", required=True, help="our account at the SMSC (max 15 characters)")
@click.option("--password", required=True, help="its password (max 8 characters)")
@_settings_options
@json_option
def add(name: str, host: str, port: int, system_id: str, password: str, as_json: bool,
        **options: Any) -> None:
    """Add carrier NAME (enabled). Only the options given are stored; the rest use defaults."""

    async def go(db: Database) -> dict[str, Any]:
        settings = _given_settings(**options)
        async with db.begin() as conn:
            await repo.add_carrier(conn, name=name, host=host, port=port, system_id=system_id,
                                   password=password, settings=settings)
            row = await repo.require_carrier(conn, name)
            routed = bool(await repo.routes_of(conn, row.id))
        return {**carrier_dict(row), "note": APPLIED if routed else
                f"add a route, e.g. tikosms routes add --match '*' --carrier {name}; "
                f"{APPLIED}"}

    emit(run(go), as_json, lambda d: (
        f"added carrier {d['name']} ({d['system_id']}@{d['host']}:{d['port']}, "
        f"{_summary(d['settings'])})\n{d['note']}"))


@carriers_group.command("update")
@click.argument("name")
@click.option("--host", default=None, help="the SMSC's host name or address")
@click.option("--port", type=int, default=None, help="the SMSC's TCP port")
@click.option("--system-id", default=None, help="our account at the SMSC (max 15 characters)")
@click.option("--password", default=None, help="its password (max 8 characters)")
@_settings_options
@click.option("--reset", multiple=True, metavar="SETTING",
              help="put a setting back to its default, e.g. --reset tps (repeatable)")
@click.option("--enabled/--disabled", "enabled", default=None,
              help="enable or disable it in the same change")
@json_option
def update(name: str, host: str | None, port: int | None, system_id: str | None,
           password: str | None, reset: tuple[str, ...], enabled: bool | None, as_json: bool,
           **options: Any) -> None:
    """Change carrier NAME in place: only the options given change. Running workers bind
    anew with the new settings within seconds; parts in flight on the old binds finish there."""

    async def go(db: Database) -> dict[str, Any]:
        settings = _given_settings(**options)
        resets = tuple(r.replace("-", "_") for r in reset)
        if not (settings or resets or enabled is not None
                or any(v is not None for v in (host, port, system_id, password))):
            raise OperatorError(f"nothing to change for carrier {name}: give an option "
                                "(see: tikosms carriers update --help)")
        async with db.begin() as conn:
            row = await repo.update_carrier(
                conn, name, host=host, port=port, system_id=system_id, password=password,
                settings=settings, reset=resets, enabled=enabled)
            left = await repo.count_enabled_carriers(conn)
        notes = [APPLIED]
        if not left:
            notes.append(NO_CARRIER)
        return {**carrier_dict(row), "notes": notes}

    emit(run(go), as_json, lambda d: "\n".join([
        f"updated carrier {d['name']} ({'enabled' if d['enabled'] else 'disabled'}, "
        f"{d['system_id']}@{d['host']}:{d['port']}, {_summary(d['settings'])})", *d["notes"]]))


@carriers_group.command("list")
@json_option
def list_(as_json: bool) -> None:
    """All carriers, enabled or not."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            return [carrier_dict(r) for r in await repo.list_carriers(conn)]

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return ("no carriers: workers use the built-in simulated carrier (add one: tikosms "
                    "carriers add NAME --host H --port P --system-id S --password W)")
        lines = [f"{'NAME':<20} {'STATE':<8} {'ADDRESS':<28} {'SYSTEM_ID':<15} "
                 f"{'BINDS':>5} {'WINDOW':>6} {'TPS':>7}"]
        lines += [
            f"{r['name'][:20]:<20} {'enabled' if r['enabled'] else 'disabled':<8} "
            f"{(r['host'] + ':' + str(r['port']))[:28]:<28} {r['system_id']:<15} "
            f"{r['settings']['binds']:>5} {r['settings']['window']:>6} "
            f"{_tps(r['settings']['tps']):>7}"
            for r in rows
        ]
        return "\n".join(lines)

    emit(run(go), as_json, table)


@carriers_group.command("slots")
@json_option
def slots(as_json: bool) -> None:
    """Each carrier's bind slots and the worker holding each (see docs/carriers.md)."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            return await slots_repo.holders(conn, utcnow())

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no bind slots: no SMPP carrier is enabled"
        lines = [f"{'CARRIER':<20} {'SLOT':>4} {'STATE':<8} {'FENCING':>7} {'LEASE':>6}  HOLDER"]
        for r in rows:
            left = f"{r['seconds_left']:.0f}s" if r["seconds_left"] is not None else "-"
            where = f" ({r['host']} pid {r['pid']})" if r["pid"] is not None else ""
            lines.append(f"{r['carrier'][:20]:<20} {r['slot']:>4} {r['state']:<8} "
                         f"{r['fencing']:>7} {left:>6}  {r['holder'] or '-'}{where}")
        return "\n".join(lines)

    emit(run(go), as_json, table)


@carriers_group.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """One carrier: every setting in force and the routes that use it."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.connect() as conn:
            row = await repo.require_carrier(conn, name)
            routes = await repo.routes_of(conn, row.id)
            enroute = await repo.parts_enroute_with(conn, name)
        return {**carrier_dict(row), "parts_enroute": enroute,
                "routes": [{"route_id": r.id, "match": r.match, "priority": r.priority,
                            "enabled": r.enabled} for r in routes]}

    def human(d: dict[str, Any]) -> str:
        lines = [f"carrier {d['name']} ({'enabled' if d['enabled'] else 'disabled'})",
                 f"  address                {d['host']}:{d['port']}",
                 f"  system_id              {d['system_id']} (password set: "
                 f"{'yes' if d['password_set'] else 'no'})"]
        lines += [f"  {k:<22} {_value(v)}" for k, v in d["settings"].items()]
        lines.append(f"  parts enroute          {d['parts_enroute']} (awaiting their receipt)")
        lines.append("  routes                 " + (", ".join(
            f"{r['route_id']}: {r['match']} priority {r['priority']}"
            + ("" if r["enabled"] else " (disabled)") for r in d["routes"])
            or "none (it gets no parts)"))
        return "\n".join(lines)

    emit(run(go), as_json, human)


@carriers_group.command("enable")
@click.argument("name")
@json_option
def enable(name: str, as_json: bool) -> None:
    """Let workers bind to NAME and route parts to it (within seconds)."""
    _set_enabled(name, True, as_json)


@carriers_group.command("disable")
@click.argument("name")
@json_option
def disable(name: str, as_json: bool) -> None:
    """Workers drain NAME and skip its routes (within seconds); parts fail over to others."""
    _set_enabled(name, False, as_json)


def _set_enabled(name: str, enabled: bool, as_json: bool) -> None:
    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            await repo.set_carrier_enabled(conn, name, enabled)
            left = await repo.count_enabled_carriers(conn)
            enroute = await repo.parts_enroute_with(conn, name)
        notes = [APPLIED]
        if not left:
            notes.append(NO_CARRIER)
        if not enabled and enroute:
            notes.append(f"{enroute} parts sent through {name} still await receipts, which "
                         "arrive only while a worker is bound to it")
        return {"name": name, "enabled": enabled, "notes": notes}

    emit(run(go), as_json, lambda d: "\n".join(
        [f"carrier {name} {'enabled' if enabled else 'disabled'}", *d["notes"]]))


@carriers_group.command("remove")
@click.argument("name")
@json_option
def remove(name: str, as_json: bool) -> None:
    """Delete NAME (refused while routes use it: remove those first)."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            await repo.remove_carrier(conn, name)
            left = await repo.count_enabled_carriers(conn)
            enroute = await repo.parts_enroute_with(conn, name)
        notes = [APPLIED]
        if not left:
            notes.append(NO_CARRIER)
        if enroute:
            notes.append(f"{enroute} parts sent through {name} will get no receipt")
        return {"name": name, "removed": True, "notes": notes}

    emit(run(go), as_json, lambda d: "\n".join([f"carrier {name} removed", *d["notes"]]))


@cli.group("routes")
def routes_group() -> None:
    """Which carriers take which destinations (changes apply to running workers in seconds)."""


@routes_group.command("add")
@click.option("--match", required=True, metavar="MCCMNC|MCC|*",
              help="'*', an MCC (262) or an MCC+MNC (26201); the longest match wins")
@click.option("--carrier", required=True, help="a carrier's name")
@click.option("--priority", type=int, default=100, show_default=True,
              help="among equal matches the lower number goes first; the others take over "
              "when it is down or cannot route a part")
@json_option
def route_add(match: str, carrier: str, priority: int, as_json: bool) -> None:
    """Send destinations matching --match to --carrier."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            route_id = await repo.add_route(conn, match=match, carrier=carrier,
                                            priority=priority)
            row = await repo.require_carrier(conn, carrier)
        notes = [APPLIED]
        if not row.enabled:
            notes.append(f"carrier {carrier} is disabled: the route applies once it is "
                         "enabled")
        return {"route_id": route_id, "match": match, "carrier": carrier,
                "priority": priority, "notes": notes}

    emit(run(go), as_json, lambda d: "\n".join(
        [f"route {d['route_id']}: {match} -> {carrier} (priority {priority})", *d["notes"]]))


@routes_group.command("list")
@json_option
def route_list(as_json: bool) -> None:
    """Routes, in the order the router weighs them."""

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.connect() as conn:
            return [{"route_id": r.id, "match": r.match, "carrier": r.carrier,
                     "priority": r.priority, "enabled": r.route_enabled,
                     "carrier_enabled": r.enabled}
                    for r in await repo.list_routes(conn)]

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no routes (add one: tikosms routes add --match '*' --carrier NAME)"
        lines = [f"{'ID':>5}  {'MATCH':<7} {'PRIORITY':>8}  CARRIER"]
        lines += [f"{r['route_id']:>5}  {r['match']:<7} {r['priority']:>8}  {r['carrier']}"
                  + ("" if r["carrier_enabled"] else " (carrier disabled)")
                  + ("" if r["enabled"] else " (route disabled)") for r in rows]
        return "\n".join(lines)

    emit(run(go), as_json, table)


@routes_group.command("enable")
@click.argument("route_id", type=int)
@json_option
def route_enable(route_id: int, as_json: bool) -> None:
    """Use route ROUTE_ID again."""
    _set_route_enabled(route_id, True, as_json)


@routes_group.command("disable")
@click.argument("route_id", type=int)
@json_option
def route_disable(route_id: int, as_json: bool) -> None:
    """Keep route ROUTE_ID but stop using it; parts take the next matching route."""
    _set_route_enabled(route_id, False, as_json)


def _set_route_enabled(route_id: int, enabled: bool, as_json: bool) -> None:
    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            await repo.set_route_enabled(conn, route_id, enabled)
        return {"route_id": route_id, "enabled": enabled, "notes": [APPLIED]}

    emit(run(go), as_json, lambda d: "\n".join(
        [f"route {route_id} {'enabled' if enabled else 'disabled'}", *d["notes"]]))


@routes_group.command("remove")
@click.argument("route_id", type=int)
@json_option
def route_remove(route_id: int, as_json: bool) -> None:
    """Delete route ROUTE_ID."""

    async def go(db: Database) -> dict[str, Any]:
        async with db.begin() as conn:
            await repo.remove_route(conn, route_id)
        return {"route_id": route_id, "removed": True, "notes": [APPLIED]}

    emit(run(go), as_json, lambda d: f"route {route_id} removed\n{APPLIED}")


# --- helpers ---------------------------------------------------------------------------------

def carrier_dict(row: Row) -> dict[str, Any]:
    """A carrier for output: every setting in force (defaults included), never the password."""
    config = repo.carrier_config(row)
    settings = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config)
        if f.name not in ("name", "host", "port", "system_id", "password")
    }
    in_force = {**DEFAULT_SOURCE_TON_NPI, **config.source_ton_npi}
    settings["source_ton_npi"] = {k: f"{ton}/{npi}" for k, (ton, npi) in in_force.items()}
    return {"name": row.name, "enabled": row.enabled, "host": row.host, "port": row.port,
            "system_id": row.system_id, "password_set": bool(row.password),
            "settings": settings, "created_at": row.created_at.isoformat()}


def parse_source_ton_npi(values: tuple[str, ...]) -> dict[str, list[int]]:
    """("Alpha=5/0", ...) -> {"Alpha": [5, 0]}: TON 0-6 and the NPIs of SMPP 3.4 5.2.5-5.2.6."""
    known = {"alpha": "Alpha", "numeric": "Numeric", "shortcode": "Shortcode"}
    out: dict[str, list[int]] = {}
    for value in values:
        kind, _, pair = value.partition("=")
        ton, _, npi = pair.partition("/")
        sender_type = known.get(kind.strip().lower())
        if sender_type is None or not ton.isdigit() or not npi.isdigit():
            raise OperatorError(f"--source-ton-npi {value!r}: use TYPE=TON/NPI with TYPE "
                                "Alpha, Numeric or Shortcode, e.g. Alpha=5/0")
        if int(ton) > 6 or int(npi) not in (0, 1, 3, 4, 6, 8, 9, 10, 14, 18):
            raise OperatorError(f"--source-ton-npi {value!r}: TON is 0-6, NPI one of "
                                "0 1 3 4 6 8 9 10 14 18")
        out[sender_type] = [int(ton), int(npi)]
    return out


def _summary(settings: dict[str, Any]) -> str:
    rate = "no rate limit" if settings["tps"] is None else f"{settings['tps']:g} parts/s"
    return (f"{settings['binds']} {settings['bind_mode']} bind(s), "
            f"window {settings['window']}, {rate}")


def _tps(tps: float | None) -> str:
    return "no limit" if tps is None else f"{tps:g}"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return "-" if value is None or value == "" else str(value)
