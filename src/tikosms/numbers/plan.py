"""The operator's own numbering plan: number prefix -> MCC/MNC, consulted before shipped data.

An operator imports it (`tikosms numbering import FILE.csv`) when it knows better than
libphonenumber's range data: circle-level MNCs in India, ranges moved between networks, or
routing deals keyed on MCC/MNC. Prefixes are of the international number without "+"
("38050"), so one table covers every country.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

Row = tuple[str, str, str | None]  # (prefix, mcc, mnc or None for "the country, any network")

_PREFIX = re.compile(r"[0-9]{1,15}")  # E.164 numbers have at most 15 digits
_MCC = re.compile(r"[0-9]{3}")
_MNC = re.compile(r"[0-9]{2,3}")
_HEADER = ("prefix", "mcc", "mnc")


class NumberingPlan:
    """An operator-imported table prefix -> (mcc, mnc); the longest matching prefix wins.

    A later row with the same prefix replaces an earlier one.
    """

    __slots__ = ("_by_prefix", "_lengths")

    def __init__(self, rows: Iterable[Row]) -> None:
        table: dict[str, tuple[str, str | None]] = {}
        for prefix, mcc, mnc in rows:
            problem = _row_problem(prefix, mcc, mnc or "")
            if problem:
                raise ValueError(f"prefix {prefix!r}: {problem}")
            table[prefix] = (mcc, mnc or None)
        self._by_prefix = table
        # Only the prefix lengths present are tried, longest first: a lookup costs at most
        # one dict probe per distinct length.
        self._lengths = sorted({len(prefix) for prefix in table}, reverse=True)

    def lookup(self, number: str) -> tuple[str, str | None] | None:
        """(mcc, mnc) of the longest prefix of `number` (digits) in the plan, else None."""
        for length in self._lengths:
            if length <= len(number):
                hit = self._by_prefix.get(number[:length])
                if hit is not None:
                    return hit
        return None

    def __len__(self) -> int:
        return len(self._by_prefix)

    def __repr__(self) -> str:
        return f"NumberingPlan({len(self)} prefixes)"


def parse_numbering_csv(text: str) -> list[Row]:
    """Rows of a numbering-plan CSV with the header `prefix,mcc,mnc` (in any order).

    `mnc` may be empty (the country, no particular network). Blank lines are skipped. Raises
    ValueError("line N: <problem>") for the first bad line, N counted from 1 at the header.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))  # BOM from spreadsheets
    header = next(reader, None)
    if header is None:
        raise ValueError("line 1: the file is empty; expected the header prefix,mcc,mnc")
    names = tuple(field.strip().lower() for field in header)
    if sorted(names) != sorted(_HEADER):
        raise ValueError(f"line 1: expected the header prefix,mcc,mnc, found {','.join(header)}")
    order = [names.index(column) for column in _HEADER]

    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for fields in reader:
        line = reader.line_num
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(_HEADER):
            raise ValueError(f"line {line}: expected 3 fields, found {len(fields)}")
        prefix, mcc, mnc = (fields[i].strip() for i in order)
        problem = _row_problem(prefix, mcc, mnc)
        if problem:
            raise ValueError(f"line {line}: {problem}")
        if prefix in first_line:
            raise ValueError(
                f"line {line}: prefix {prefix} is already on line {first_line[prefix]}"
            )
        first_line[prefix] = line
        rows.append((prefix, mcc, mnc or None))
    return rows


def _row_problem(prefix: str, mcc: str, mnc: str) -> str | None:
    if not _PREFIX.fullmatch(prefix):
        return f"prefix must be 1 to 15 digits, found {prefix!r}"
    if not _MCC.fullmatch(mcc):
        return f"mcc must be 3 digits, found {mcc!r}"
    if mnc and not _MNC.fullmatch(mnc):
        return f"mnc must be empty or 2 to 3 digits, found {mnc!r}"
    return None
