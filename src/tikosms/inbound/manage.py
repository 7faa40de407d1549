"""What operators and customers change: owned numbers, inbound URLs, opt-out lists.

Shared by the CLI (`tikosms numbers`, `tikosms opt-outs`, `tikosms accounts update`) and the
API (`/v1/opt-outs`); the SQL is in `repository.py`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms import formats
from tikosms.accounts import repository as accounts_repo
from tikosms.callbacks.ssrf import InvalidCallbackUrl, validate_callback_url
from tikosms.db.types import utcnow
from tikosms.errors import OperatorError
from tikosms.inbound import keywords
from tikosms.inbound import repository as repo

_SEPARATORS = re.compile(r"[\s\-.()]")


def clean_number(raw: str, what: str = "number") -> str:
    """An international number or a short code as stored: digits only ('+'/'00', spaces,
    dashes, dots and brackets removed); ValueError unless 3-20 digits remain."""
    value = _SEPARATORS.sub("", str(raw))
    if value.startswith("+"):
        value = value[1:]
    elif value.startswith("00") and len(value) > 5:
        value = value[2:]
    if not (value.isascii() and value.isdigit() and 3 <= len(value) <= 20):
        raise ValueError(f"{what} {raw!r} is not a number or short code (3-20 digits)")
    return value


async def _account_must_exist(conn: AsyncConnection, account_id: int) -> None:
    if await accounts_repo.get_account(conn, account_id) is None:
        raise OperatorError(f"no account with id {account_id} (see: tikosms accounts list)")


async def assign_number(conn: AsyncConnection, account_id: int, number: str,
                        keyword: str | None) -> tuple[str, str, int | None]:
    """(number, keyword, previous owner) after giving the number to the account."""
    try:
        clean = clean_number(number)
        word = keywords.clean_keyword(keyword) if keyword else ""
    except ValueError as exc:
        raise OperatorError(str(exc)) from None
    await _account_must_exist(conn, account_id)
    previous = await repo.assign_number(conn, account_id, clean, word, utcnow())
    return clean, word, previous


async def unassign_number(conn: AsyncConnection, number: str, keyword: str | None) -> int:
    try:
        clean = clean_number(number)
        word = None if keyword is None else keywords.clean_keyword(keyword)
    except ValueError as exc:
        raise OperatorError(str(exc)) from None
    removed = await repo.unassign_number(conn, clean, word)
    if not removed:
        raise OperatorError(f"number {clean} is not assigned"
                            + (f" for keyword {word}" if word else ""))
    return removed


async def update_account(conn: AsyncConnection, account_id: int, *,
                         inbound_url: str | None = None,
                         stop_keywords: str | None = None) -> dict[str, str | None]:
    """Set the account's inbound URL ("" removes it) and its own stop keywords."""
    values: dict[str, str | None] = {}
    if inbound_url is not None:
        if inbound_url == "":
            values["inbound_url"] = None
        else:
            try:
                values["inbound_url"] = validate_callback_url(inbound_url)
            except InvalidCallbackUrl as exc:
                raise OperatorError(f"inbound URL refused: {exc.reason}") from None
    if stop_keywords is not None:
        words = keywords.parse_stop_keywords(stop_keywords)
        values["stop_keywords"] = ",".join(words) or None
    if not values:
        raise OperatorError("nothing to update (give --inbound-url or --stop-keywords)")
    if not await accounts_repo.set_account_fields(conn, account_id, **values):
        raise OperatorError(f"no account with id {account_id} (see: tikosms accounts list)")
    return values


async def add_opt_out(conn: AsyncConnection, account_id: int, to: str, sender: str | None,
                      source: str) -> tuple[str, str, bool]:
    """(recipient, sender or "", new?) — ValueError for a malformed number."""
    recipient = clean_number(to, "to")
    from_ = clean_number(sender, "from") if sender else ""
    created = await repo.add_opt_out(conn, account_id, recipient, from_, source, None, utcnow())
    return recipient, from_, created


async def remove_opt_out(conn: AsyncConnection, account_id: int, to: str,
                         sender: str | None) -> int:
    """Remove the recipient's opt-out from this sender ("" or None: every one of it)."""
    recipient = clean_number(to, "to")
    senders = [clean_number(sender, "from")] if sender else None
    return await repo.remove_opt_outs(conn, account_id, recipient, senders)


def read_opt_out_csv(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, to, from) of each row of a CSV: a `to` column (or the first), an optional
    `from` column; a header row is recognised by a `to` or `number` cell."""
    rows = csv.reader(io.StringIO(text))
    to_col, from_col = 0, None
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if line == 1 and {c.lower() for c in cells} & {"to", "number", "recipient", "msisdn"}:
            lowered = [c.lower() for c in cells]
            to_col = next(i for i, c in enumerate(lowered)
                          if c in ("to", "number", "recipient", "msisdn"))
            from_col = lowered.index("from") if "from" in lowered else None
            continue
        yield (line, cells[to_col] if to_col < len(cells) else "",
               cells[from_col] if from_col is not None and from_col < len(cells) else "")


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: int
    existing: int  # already there (or given twice)
    bad: int  # rows skipped: not a number
    errors: list[str]  # the first 20 of them, with their line


async def import_opt_outs(conn: AsyncConnection, account_id: int,
                          rows: Iterable[tuple[int, str, str]], source: str = "import"
                          ) -> ImportResult:
    """Add the rows' opt-outs (set-based: a few multi-row INSERTs); bad rows are skipped."""
    await _account_must_exist(conn, account_id)
    errors: list[str] = []
    now = utcnow()
    wanted: dict[tuple[str, str], dict[str, Any]] = {}  # a row given twice counts once
    bad = valid = 0
    for line, to, sender in rows:
        try:
            recipient = clean_number(to, "to")
            from_ = clean_number(sender, "from") if sender else ""
        except ValueError as exc:
            bad += 1
            if len(errors) < 20:
                errors.append(f"line {line}: {exc}")
            continue
        valid += 1
        wanted.setdefault((recipient, from_), {
            "account_id": account_id, "recipient": recipient, "sender": from_,
            "source": source, "keyword": None, "created_at": now})
    added = await repo.add_opt_outs(conn, list(wanted.values()))
    return ImportResult(added, valid - added, bad, errors)


def opt_out_view(row: Any) -> dict[str, Any]:
    """An opt-out as the API and the CLI show it."""
    return {
        "to": row.recipient,
        "from": row.sender or None,
        "source": row.source,
        "keyword": row.keyword,
        "created_at": formats.message_time(row.created_at),
    }
