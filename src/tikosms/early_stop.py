"""A stop asked for before a process's event loop handles its signals (`python -m tikosms`)."""

from __future__ import annotations

from typing import Any

asked = False


def ask(_signum: int, _frame: Any) -> None:
    global asked
    asked = True
