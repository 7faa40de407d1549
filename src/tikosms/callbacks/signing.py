"""Signing delivery callbacks the Standard Webhooks way (https://www.standardwebhooks.com).

Every callback carries three headers:

- `webhook-id`: the event's id, stable across retries, so a receiver can drop duplicates;
- `webhook-timestamp`: integer seconds since the Unix epoch, when this attempt was signed;
- `webhook-signature`: `v1,<base64 HMAC-SHA256>` of `"{webhook-id}.{webhook-timestamp}.{body}"`,
  keyed with the account's secret. Several space-separated signatures may be sent (for
  example while a secret is being rotated); a receiver accepts the message if any matches.

A secret is `whsec_` followed by the base64 of the raw key (24 to 64 bytes by the spec); the
HMAC key is the decoded bytes, not the text. The timestamp is signed so that a captured request
cannot be replayed once it falls outside the receiver's tolerance (five minutes by default).

No I/O here: `sign`/`headers` are used by the callback dispatcher, `verify` by customers and
tests.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300  # seconds either side of the receiver's clock, as the spec recommends

_SECRET_BYTES = 32  # 256-bit key: the HMAC-SHA256 block gets a full-strength key
_MIN_KEY_BYTES = 24  # the spec's lower bound for a secret's decoded key
_MAX_KEY_BYTES = 64  # the spec's upper bound
_PRINTABLE = re.compile(r"[!-~]+")  # printable ASCII, no space: what a webhook id may hold


def generate_secret() -> str:
    """A new signing secret: `whsec_` + base64 of 32 random bytes (52 characters in all)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message: `v1,<base64 digest>`.

    `body` must be the exact bytes sent on the wire: a receiver signs what it receives, so
    re-serialising the JSON (other spacing, other key order) breaks the signature.
    `msg_id` may not hold a `.` (the spec forbids it: the dots delimit the signed fields) nor
    whitespace or control characters (it travels in a header).
    """
    _check_msg_id(msg_id)
    digest = _digest(_secret_key(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header a signed callback needs, the body's content type included."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: int | None = None,
) -> bool:
    """True when `headers` carry a valid signature of `body` made within `tolerance` seconds.

    Header names are matched case-insensitively. Any one matching `v1` signature among the
    space-separated ones suffices; other versions are ignored. Digests are compared in constant
    time. `now` (Unix seconds) replaces the clock, for tests against fixed vectors.

    A malformed *secret* is a configuration error and raises `ValueError`; malformed or missing
    headers simply fail verification.
    """
    key = _secret_key(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not timestamp_text or not signatures:
        return False

    timestamp = _parse_timestamp(timestamp_text)
    if timestamp is None:
        return False
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        return False

    raw_body = body.encode("utf-8") if isinstance(body, str) else body
    expected = _digest(key, msg_id, timestamp, raw_body)
    matched = False
    for candidate in signatures.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue
        try:
            received = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        # No early exit: the time taken does not tell which candidate matched.
        matched |= hmac.compare_digest(expected, received)
    return matched


@functools.lru_cache(maxsize=1024)  # the dispatcher signs each callback with one of few secrets
def _secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_...` secret (the prefix is optional, as in the spec)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError("signing secret is not valid base64 after 'whsec_'") from exc
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise ValueError(
            f"signing secret holds {len(key)} bytes; expected {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES}"
        )
    return key


def _check_msg_id(msg_id: str) -> None:
    if "." in msg_id or not _PRINTABLE.fullmatch(msg_id):
        raise ValueError(f"webhook id {msg_id!r} must be printable ASCII without '.' or spaces")


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.digest(key, signed_content, "sha256")


def _parse_timestamp(text: str) -> int | None:
    """Integer Unix seconds, as the spec sends them; anything else is not a timestamp."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        return None
    return int(stripped)
