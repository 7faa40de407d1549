"""`tikosms operators create|list|delete`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tikosms.cli import cli


def _run(database_url: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", database_url, *args], input=stdin)
    return result.exit_code, result.output


def test_password_from_standard_input_creates_a_loginable_operator(database_url: str) -> None:
    code, out = _run(database_url, "operators", "create", "alice", stdin="a long passphrase\n")
    assert code == 0, out
    code, out = _run(database_url, "operators", "list", "--json")
    assert [o["name"] for o in json.loads(out)] == ["alice"]


def test_short_password_is_refused_and_nothing_stored(database_url: str) -> None:
    code, out = _run(database_url, "operators", "create", "bob", "--password", "short")
    assert code == 1 and "at least 8" in out
    _, out = _run(database_url, "operators", "list", "--json")
    assert json.loads(out) == []


def test_same_name_twice_is_refused(database_url: str) -> None:
    _run(database_url, "operators", "create", "carol", "--password", "a long passphrase")
    code, out = _run(database_url, "operators", "create", "carol", "--password", "another one!")
    assert code == 1 and "already exists" in out


def test_deleted_operator_is_gone(database_url: str) -> None:
    _run(database_url, "operators", "create", "dave", "--password", "a long passphrase")
    code, _ = _run(database_url, "operators", "delete", "dave")
    assert code == 0
    _, out = _run(database_url, "operators", "list", "--json")
    assert json.loads(out) == []
