"""`tikosms carriers ...` and `tikosms routes ...` against a real database (both backends), and
what the worker's router then reads from it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tikosms.cli import cli
from tikosms.config import Settings
from tikosms.db.engine import Database
from tikosms.delivery import carriers_repo
from tikosms.delivery.routing import Router
from tikosms.smpp.connector import SmppCarrier

ACME = ["carriers", "add", "acme", "--host", "127.0.0.1", "--port", "2775",
        "--system-id", "acme_esme", "--password", "s3cret"]


def tikosms(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", database_url, *args])


def tikosms_json(database_url: str, *args: str) -> Any:
    result = tikosms(database_url, *args, "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return json.loads(result.stdout)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def stored_settings(database_url: str, name: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        db = Database(database_url)
        try:
            async with db.connect() as conn:
                row = await carriers_repo.require_carrier(conn, name)
        finally:
            await db.dispose()
        return dict(json.loads(row.settings))

    return asyncio.run(go())


def test_add_shows_every_setting_in_force_but_never_the_password(database_url: str) -> None:
    out = tikosms_json(database_url, *ACME, "--binds", "2", "--tps", "250",
                       "--source-ton-npi", "Alpha=5/1", "--concat", "sar")
    assert out["name"] == "acme" and out["enabled"] is True
    assert out["settings"]["binds"] == 2 and out["settings"]["tps"] == 250
    assert out["settings"]["window"] == 100  # a default, in force
    assert out["settings"]["source_ton_npi"] == {"Alpha": "5/1", "Numeric": "1/1",
                                                 "Shortcode": "3/0"}
    assert "s3cret" not in json.dumps(out) and out["password_set"] is True
    shown = tikosms_json(database_url, "carriers", "show", "acme")
    assert shown["settings"] == out["settings"] and shown["routes"] == []


def test_only_the_options_given_are_stored(database_url: str) -> None:
    tikosms_json(database_url, *ACME, "--window", "50", "--validity-period", "3600")
    assert stored_settings(database_url, "acme") == {"window": 50, "validity_period": 3600}


def test_add_says_workers_need_a_route_and_apply_it_at_once(database_url: str) -> None:
    result = tikosms(database_url, *ACME)
    assert result.exit_code == 0
    assert "routes add --match '*' --carrier acme" in result.stdout
    assert "running workers apply this" in result.stdout


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--password", "123456789"], "password is 9 characters"),  # SMPP 3.4: 8 at most
    (["--system-id", "a" * 16], "system_id is 16 characters"),  # 15 at most
    (["--system-id", ""], "system_id is empty"),
    (["--port", "0"], "port 0"),
    (["--port", "70000"], "port 70000"),
    (["--binds", "0"], "binds must be at least 1"),  # from SmppCarrierConfig itself
    (["--window", "0"], "window must be at least 1"),
    (["--tps", "0"], "tps must be positive"),
    (["--enquire-link-interval", "0"], "enquire_link interval"),
    (["--validity-period", "0"], "validity period 0"),
    (["--system-type", "x" * 13], "system_type is 13 characters"),
    (["--source-ton-npi", "Alpha"], "use TYPE=TON/NPI"),
    (["--source-ton-npi", "Robot=5/0"], "use TYPE=TON/NPI"),  # not a sender type
    (["--source-ton-npi", "Alpha=9/0"], "TON is 0-6"),
    (["--source-ton-npi", "Alpha=5/2"], "NPI one of"),  # 2 is not an NPI of SMPP 3.4
])
def test_add_refuses_bad_settings_in_one_line(database_url: str, extra: list[str],
                                              fragment: str) -> None:
    # later options win in click: ACME's own --password etc. are overridden by `extra`
    assert_one_line_error(tikosms(database_url, *ACME, *extra), fragment)
    assert tikosms_json(database_url, "carriers", "list") == []


@pytest.mark.parametrize(("name", "fragment"), [
    ("simulated", "reserved"),  # the built-in carrier's name
    ("two words", "use up to 64 letters"),
    ("_under", "use up to 64 letters"),  # must start with a letter or digit
    ("a" * 65, "use up to 64 letters"),
])
def test_add_refuses_bad_names(database_url: str, name: str, fragment: str) -> None:
    args = [*ACME[:2], name, *ACME[3:]]
    assert_one_line_error(tikosms(database_url, *args), fragment)


def test_a_name_is_taken_once(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    assert_one_line_error(tikosms(database_url, *ACME), "carrier acme already exists")


@pytest.mark.parametrize("match", [
    "*",  # everything
    "262",  # a country (MCC)
    "26201",  # an operator with a 2-digit MNC
    "310410",  # an operator with a 3-digit MNC
])
def test_routes_accept_any_mcc_mccmnc_or_star(database_url: str, match: str) -> None:
    tikosms_json(database_url, *ACME)
    out = tikosms_json(database_url, "routes", "add", "--match", match, "--carrier", "acme")
    assert out["match"] == match and out["priority"] == 100
    assert "running workers apply this" in out["notes"][0]


@pytest.mark.parametrize("match", [
    "26",  # too short for an MCC
    "2620",  # MCC plus one digit
    "3104100",  # 7 digits
    "26x",  # not digits
    "**",
])
def test_routes_refuse_other_matches(database_url: str, match: str) -> None:
    tikosms_json(database_url, *ACME)
    assert_one_line_error(
        tikosms(database_url, "routes", "add", "--match", match, "--carrier", "acme"),
        f"match {match!r}")


def test_a_route_needs_an_existing_carrier(database_url: str) -> None:
    assert_one_line_error(
        tikosms(database_url, "routes", "add", "--match", "*", "--carrier", "nobody"),
        "no carrier named nobody")


def test_the_same_route_twice_is_refused(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    first = tikosms_json(database_url, "routes", "add", "--match", "262", "--carrier", "acme")
    assert_one_line_error(
        tikosms(database_url, "routes", "add", "--match", "262", "--carrier", "acme",
                "--priority", "5"),
        f"route {first['route_id']} already sends 262 to acme")


def test_routes_are_listed_most_specific_first_then_by_priority(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    tikosms_json(database_url, *ACME[:2], "beta", *ACME[3:])
    for match, carrier, priority in [("*", "acme", "1"), ("262", "beta", "20"),
                                     ("26201", "acme", "50"), ("262", "acme", "10")]:
        tikosms_json(database_url, "routes", "add", "--match", match, "--carrier", carrier,
                     "--priority", priority)
    rows = tikosms_json(database_url, "routes", "list")
    assert [(r["match"], r["carrier"]) for r in rows] == [
        ("26201", "acme"), ("262", "acme"), ("262", "beta"), ("*", "acme")]


def test_remove_is_refused_while_routes_use_the_carrier(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    r1 = tikosms_json(database_url, "routes", "add", "--match", "*", "--carrier", "acme")
    r2 = tikosms_json(database_url, "routes", "add", "--match", "262", "--carrier", "acme")
    assert_one_line_error(tikosms(database_url, "carriers", "remove", "acme"),
                          f"route(s) {r1['route_id']} (*), {r2['route_id']} (262)")
    for r in (r1, r2):
        tikosms_json(database_url, "routes", "remove", str(r["route_id"]))
    assert tikosms_json(database_url, "carriers", "remove", "acme")["removed"] is True
    assert tikosms_json(database_url, "carriers", "list") == []


def test_unknown_names_and_ids_are_one_line_errors(database_url: str) -> None:
    for args in (["carriers", "show", "x"], ["carriers", "enable", "x"],
                 ["carriers", "disable", "x"], ["carriers", "remove", "x"]):
        assert_one_line_error(tikosms(database_url, *args), "no carrier named x")
    assert_one_line_error(tikosms(database_url, "routes", "remove", "99"), "no route with id 99")


def test_disabling_the_last_carrier_warns_of_the_simulated_fallback(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    out = tikosms_json(database_url, "carriers", "disable", "acme")
    assert out["enabled"] is False
    assert any("simulated carrier" in note for note in out["notes"])
    assert tikosms_json(database_url, "carriers", "list")[0]["enabled"] is False
    back = tikosms_json(database_url, "carriers", "enable", "acme")
    assert back["enabled"] is True and len(back["notes"]) == 1  # only "running workers ..."


def test_human_output_says_how_to_apply_changes(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    for args in (["routes", "add", "--match", "*", "--carrier", "acme"],
                 ["carriers", "disable", "acme"], ["carriers", "enable", "acme"],
                 ["routes", "remove", "1"]):
        result = tikosms(database_url, *args)
        assert result.exit_code == 0, result.stderr
        assert "running workers apply this" in result.stdout
    assert "acme" in tikosms(database_url, "carriers", "list").stdout
    assert "no routes" in tikosms(database_url, "routes", "list").stdout


def test_the_router_reads_what_the_cli_wrote(database_url: str, settings: Settings) -> None:
    tikosms_json(database_url, *ACME, "--binds", "3", "--window", "20", "--tps", "100",
                 "--bind-mode", "transmitter_receiver", "--source-ton-npi", "Numeric=1/0")
    tikosms_json(database_url, *ACME[:2], "backup", *ACME[3:])
    tikosms_json(database_url, *ACME[:2], "off", *ACME[3:])
    tikosms_json(database_url, "routes", "add", "--match", "*", "--carrier", "backup",
                 "--priority", "1")
    tikosms_json(database_url, "routes", "add", "--match", "255", "--carrier", "acme",
                 "--priority", "10")
    tikosms_json(database_url, "routes", "add", "--match", "255", "--carrier", "backup")
    tikosms_json(database_url, "routes", "add", "--match", "255", "--carrier", "off",
                 "--priority", "0")
    tikosms_json(database_url, "carriers", "disable", "off")

    async def go() -> Router:
        db = Database(database_url)
        try:
            return await Router.from_database(db, settings)
        finally:
            await db.dispose()

    router = asyncio.run(go())
    assert set(router.carriers) == {"acme", "backup"}  # "off" is disabled: neither it nor its route
    acme = router.carriers["acme"]
    assert isinstance(acme, SmppCarrier)
    config = acme.config
    assert (config.binds, config.window, config.tps, config.bind_mode) == (
        3, 20, 100, "transmitter_receiver")
    assert config.password == "s3cret" and config.system_id == "acme_esme"
    assert tuple(config.source_ton_npi_for("Numeric")) == (1, 0)
    assert tuple(config.source_ton_npi_for("Alpha")) == (5, 0)  # not overridden: the default
    assert router.route("25501") == ["acme", "backup"]  # acme's priority 10 first
    assert router.route("26201") == ["backup"]


# --- carriers update ---------------------------------------------------------------------

def test_update_changes_only_what_is_given(database_url: str) -> None:
    tikosms_json(database_url, *ACME, "--window", "50", "--tps", "100")
    out = tikosms_json(database_url, "carriers", "update", "acme", "--port", "2776",
                       "--binds", "2")
    assert (out["host"], out["port"], out["system_id"]) == ("127.0.0.1", 2776, "acme_esme")
    assert stored_settings(database_url, "acme") == {"window": 50, "tps": 100, "binds": 2}
    assert "running workers apply this" in out["notes"][0]
    assert "s3cret" not in json.dumps(out)


def test_update_puts_a_reset_setting_back_to_its_default(database_url: str) -> None:
    tikosms_json(database_url, *ACME, "--window", "50", "--tps", "100")
    out = tikosms_json(database_url, "carriers", "update", "acme", "--reset", "tps")
    assert out["settings"]["tps"] is None and out["settings"]["window"] == 50
    assert stored_settings(database_url, "acme") == {"window": 50}


def test_update_can_disable_and_enable(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    assert tikosms_json(database_url, "carriers", "update", "acme",
                        "--disabled")["enabled"] is False
    assert tikosms_json(database_url, "carriers", "list")[0]["enabled"] is False
    assert tikosms_json(database_url, "carriers", "update", "acme",
                        "--enabled", "--window", "7")["enabled"] is True


def test_update_changes_the_password_without_printing_it(database_url: str) -> None:
    tikosms_json(database_url, *ACME)
    result = tikosms(database_url, "carriers", "update", "acme", "--password", "n3wpw")
    assert result.exit_code == 0 and "n3wpw" not in result.stdout

    async def go() -> str:
        db = Database(database_url)
        try:
            async with db.connect() as conn:
                return str((await carriers_repo.require_carrier(conn, "acme")).password)
        finally:
            await db.dispose()

    assert asyncio.run(go()) == "n3wpw"


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--password", "123456789"], "password is 9 characters"),
    (["--port", "0"], "port 0"),
    (["--window", "0"], "window must be at least 1"),
    (["--system-id", ""], "system_id is empty"),
    (["--reset", "colour"], "unknown carrier settings: colour"),
    ([], "nothing to change for carrier acme"),
])
def test_update_refuses_bad_changes_and_changes_nothing(database_url: str, extra: list[str],
                                                       fragment: str) -> None:
    before = tikosms_json(database_url, *ACME, "--window", "50")
    assert_one_line_error(tikosms(database_url, "carriers", "update", "acme", *extra), fragment)
    assert tikosms_json(database_url, "carriers", "show", "acme")["settings"] == \
        before["settings"]
    assert tikosms_json(database_url, "carriers", "show", "acme")["port"] == 2775


def test_update_of_an_unknown_carrier_is_a_one_line_error(database_url: str) -> None:
    assert_one_line_error(tikosms(database_url, "carriers", "update", "x", "--port", "1"),
                          "no carrier named x")


def test_carriers_with_state_lists_settings_in_force_and_routes(database_url: str) -> None:
    tikosms_json(database_url, *ACME, "--tps", "25")
    route = tikosms_json(database_url, "routes", "add", "--match", "262", "--carrier", "acme")

    async def go() -> list[dict[str, Any]]:
        db = Database(database_url)
        try:
            async with db.connect() as conn:
                return await carriers_repo.carriers_with_state(conn)
        finally:
            await db.dispose()

    [acme] = asyncio.run(go())
    assert acme["name"] == "acme" and acme["enabled"] is True
    assert acme["settings"]["tps"] == 25 and acme["settings"]["window"] == 100
    assert acme["routes"] == [{"route_id": route["route_id"], "match": "262", "priority": 100,
                               "enabled": True}]
    assert "password" not in acme and acme["password_set"] is True


def test_a_disabled_route_is_kept_listed_but_not_used(database_url: str,
                                                     settings: Settings) -> None:
    tikosms_json(database_url, *ACME)
    route = tikosms_json(database_url, "routes", "add", "--match", "255", "--carrier", "acme")
    out = tikosms_json(database_url, "routes", "disable", str(route["route_id"]))
    assert out["enabled"] is False and "running workers apply this" in out["notes"][0]
    assert tikosms_json(database_url, "routes", "list")[0]["enabled"] is False
    assert "(route disabled)" in tikosms(database_url, "routes", "list").stdout

    async def go() -> Router:
        db = Database(database_url)
        try:
            return await Router.from_database(db, settings)
        finally:
            await db.dispose()

    assert asyncio.run(go()).route("25501") == []
    tikosms_json(database_url, "routes", "enable", str(route["route_id"]))
    assert asyncio.run(go()).route("25501") == ["acme"]


def test_enabling_an_unknown_route_is_a_one_line_error(database_url: str) -> None:
    for verb in ("enable", "disable"):
        assert_one_line_error(tikosms(database_url, "routes", verb, "99"), "no route with id 99")
