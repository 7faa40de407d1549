"""The worker's loops log a database outage once when it starts and once when it ends, not a
traceback every second; any other error keeps its traceback every time."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from tikosms.delivery.worker import DatabaseTrouble


def _down() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_an_outage_is_two_lines_however_long_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    trouble = DatabaseTrouble("claiming parts")
    with caplog.at_level(logging.INFO, logger="tikosms.delivery"):
        for _ in range(30):  # thirty seconds of an outage, one failed claim a second
            trouble.failed(_down(), "retrying every 1 s")
        trouble.ok()
        trouble.ok()  # working on: nothing more to say
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    (first_level, first), (second_level, second) = lines
    assert first_level == "ERROR" and "claiming parts failed: the database is unreachable" in first
    assert "ConnectionRefusedError" in first and "until it is back" in first
    assert second_level == "WARNING" and "claiming parts works again" in second
    assert "30 failed attempts" in second
    assert all(r.exc_info is None for r in caplog.records)  # no traceback for an outage


def test_a_second_outage_is_reported_again(caplog: pytest.LogCaptureFixture) -> None:
    trouble = DatabaseTrouble("housekeeping")
    with caplog.at_level(logging.INFO, logger="tikosms.delivery"):
        for _ in range(2):
            trouble.failed(_down(), "retrying every 5 s")
            trouble.ok()
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING", "ERROR", "WARNING"]


def test_an_error_that_is_not_an_outage_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trouble = DatabaseTrouble("claiming parts")
    with caplog.at_level(logging.INFO, logger="tikosms.delivery"):
        for _ in range(2):
            trouble.failed(KeyError("campaign"), "retrying every 1 s")
        trouble.ok()  # it was never an outage: no "works again"
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]
    assert all(r.exc_info is not None for r in caplog.records)
