"""Values a carrier sends that the database would refuse, told apart before and after SQL.

Before SQL (`check_carrier_id`, `clean_error_code`): a carrier's message id or receipt error
that is longer than its column or holds control characters (NUL, which PostgreSQL refuses in
text; a lone surrogate from a badly decoded id) is cut or refused at the boundary, so the usual
cases never reach the database.

After SQL (`is_data_error`): a value the database still refused (string too long, invalid byte
sequence, numeric out of range) is a *data error*, which retrying the same statement can never
fix: the recorder splits its batch to isolate the item. Anything else (connection lost, server
restarting, a deadlock) is treated as an outage and retried with backoff.
"""

from __future__ import annotations

from tikosms.db.models import CARRIER_MESSAGE_ID_MAX, ERROR_CODE_MAX

# SQLSTATE class 22 "data exception": 22001 string too long, 22003 numeric out of range,
# 22021 invalid byte sequence (NUL included), 22P05 untranslatable character ...
_DATA_SQLSTATE_CLASS = "22"


def check_carrier_id(value: str | None) -> str | None:
    """The reason a carrier message id cannot be stored and matched, or None if it can."""
    if not value:
        return "empty"
    if len(value) > CARRIER_MESSAGE_ID_MAX:
        return f"{len(value)} characters (at most {CARRIER_MESSAGE_ID_MAX})"
    if not _printable(value):
        return "control or undecodable characters"
    return None


def clean_error_code(value: str | None) -> str | None:
    """A receipt's error code as it can be stored: control characters dropped, cut to the
    column (the code is informational; the receipt's status is what counts)."""
    if value is None:
        return None
    cleaned = "".join(c for c in value if _printable(c))[:ERROR_CODE_MAX]
    return cleaned or None


def is_data_error(exc: BaseException) -> bool:
    """True when the database (or the driver, encoding the value) refused a value."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UnicodeError | OverflowError):
            return True  # the driver could not encode the value (surrogates, int too large)
        sqlstate = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_DATA_SQLSTATE_CLASS):
            return True
        if type(e).__name__ == "DataError":  # sqlalchemy.exc.DataError, the DBAPI's DataError
            return True
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return False


def _printable(text: str) -> bool:
    """Printable characters that encode to UTF-8 (no lone surrogates)."""
    if not text.isprintable():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
