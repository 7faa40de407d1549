"""Keywords of an MO: the routing keyword (first word) and the opt-out ones (pure).

Stop keywords: the FCC's list (47 CFR 64.1200(a)(10), in force since 2025-04-11: STOP, QUIT,
END, REVOKE, OPT OUT, CANCEL, UNSUBSCRIBE, which always count), the usual variants carriers and
CTIA handle (STOPALL, STOP ALL, OPTOUT, OPT-OUT), plus any an account adds. START and UNSTOP
re-subscribe. A message is a stop (or start) when its whole text, case-folded, with the
punctuation and spaces around it removed and inner runs of spaces and hyphens made one space,
is a keyword: "Stop", " STOP. ", "opt-out" count; "don't stop" and "stop the 3pm reminder"
do not (they are stored and forwarded like any MO; the account decides).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

STOP_KEYWORDS: frozenset[str] = frozenset({
    "STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE",  # FCC, always
    "STOPALL", "STOP ALL", "OPTOUT",
})
# suppress every number of the account (not only the one the MO was sent to)
ACCOUNT_WIDE_STOP: frozenset[str] = frozenset({"STOPALL", "STOP ALL"})
START_KEYWORDS: frozenset[str] = frozenset({"START", "UNSTOP"})

_EDGES = re.compile(r"^[\s\W_]+|[\s\W_]+$")
_INNER = re.compile(r"[\s\-_]+")
_FIRST_WORD = re.compile(r"[^\s\W_]+")


def normalise(text: str) -> str:
    """Upper case, punctuation and spaces around removed, inner spaces/hyphens one space."""
    return _INNER.sub(" ", _EDGES.sub("", text.upper()))


def opt_out_action(text: str, extra_stop: Iterable[str] = ()) -> tuple[str, str] | None:
    """("stop" | "stop_all" | "start", the keyword) when the text is such a keyword."""
    word = normalise(text)
    if not word:
        return None
    if word in START_KEYWORDS:
        return "start", word
    if word in ACCOUNT_WIDE_STOP:
        return "stop_all", word
    if word in STOP_KEYWORDS or word in {normalise(k) for k in extra_stop if k.strip()}:
        return "stop", word
    return None


def first_word(text: str) -> str:
    """The routing keyword candidate: the first word, upper case ("" when none)."""
    found = _FIRST_WORD.search(text)
    return found.group().upper() if found else ""


def clean_keyword(word: str) -> str:
    """An operator's keyword as stored: one word, upper case; ValueError otherwise."""
    value = word.strip().upper()
    if not value or len(value) > 32 or _FIRST_WORD.fullmatch(value) is None:
        raise ValueError(f"a keyword is one word of letters or digits (at most 32): {word!r}")
    return value


def parse_stop_keywords(raw: str | None) -> tuple[str, ...]:
    """An account's own stop keywords, stored as a comma-separated list."""
    if not raw:
        return ()
    return tuple(k for k in (normalise(p) for p in raw.split(",")) if k)
