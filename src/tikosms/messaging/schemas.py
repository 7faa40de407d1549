"""Request validation for the send endpoints: JSON in, plain dataclasses out.

Written by hand rather than as pydantic models because the API's errors are sentences chosen by
the spec ("Invalid callback URL provided", the number sentence ...), the first problem decides
the `error`, and a 100,000-recipient body must not become 100,000 model objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tikosms.callbacks.ssrf import InvalidCallbackUrl as _BadUrl
from tikosms.callbacks.ssrf import validate_callback_url
from tikosms.errors import InvalidCallbackUrl, ValidationFailed

MAX_SINGLE_CHARS = 160
MAX_CAMPAIGN_CHARS = 1600
MAX_RECIPIENTS = 100_000
MAX_CLIENT_REF = 255
SENDER_TYPES = ("Alpha", "Numeric", "Shortcode")
_DIGITS = re.compile(r"\+?[0-9]+")
# Control characters refused in a field (docs/api.md "Control characters"): NUL and the other
# C0 controls, DEL and the C1 controls. PostgreSQL cannot store NUL in text at all, and the rest
# are never part of a sender, a reference or a URL. A message keeps LF and CR, which GSM 03.38
# carries (0x0A, 0x0D) and customers use for line breaks.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MESSAGE_CONTROLS = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
CODE_CONTROL_CHARACTER = "control_character"


@dataclass(frozen=True, slots=True)
class Sender:
    value: str
    type: str  # Alpha | Numeric | Shortcode


@dataclass(frozen=True, slots=True)
class SingleSend:
    sender: Sender
    message: str
    to: str
    callback_url: str | None
    client_ref: str | None


@dataclass(frozen=True, slots=True)
class CampaignSend:
    """`numbers[i]` is recipient `indexes[i]`'s `to`; `extras` holds (client_ref, callback_url)
    by recipient index for the recipients that gave any: a list of 100,000 plain numbers
    becomes two lists, not 100,000 objects."""

    sender: Sender
    message: str
    indexes: list[int]
    numbers: list[str]
    extras: dict[int, tuple[str | None, str | None]]
    callback_url: str | None
    scheduled_at: datetime | None
    concurrency: int
    invalid: list[tuple[int, str, str]]  # (index, to, error) found while parsing recipients


def fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors={field: [message]})


def refuse_controls(field: str, value: str, pattern: re.Pattern[str] = _CONTROLS) -> None:
    """422 `control_character` naming the field and the first offending character (as U+XXXX:
    the character itself would not show)."""
    found = pattern.search(value)
    if found is not None:
        message = (f"The {field} field contains a control character (U+{ord(found.group()):04X})"
                   " that cannot be sent.")
        raise ValidationFailed(message, code=CODE_CONTROL_CHARACTER, errors={field: [message]})


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    return body


def parse_single(body: Any) -> SingleSend:
    body = require_object(body)
    sender = parse_sender(body)
    message = parse_text(body, MAX_SINGLE_CHARS)
    to = body.get("to")
    if to is None or (isinstance(to, str) and not to.strip()):
        raise fail("to", "The to field is required.")
    if isinstance(to, int) and not isinstance(to, bool):
        to = str(to)
    if not isinstance(to, str):
        raise fail("to", "The to field must be a string.")
    return SingleSend(
        sender=sender,
        message=message,
        to=to,
        callback_url=parse_callback(body.get("callback_url")),
        client_ref=parse_client_ref(body.get("client_ref")),
    )


def parse_campaign(body: Any, now: datetime) -> CampaignSend:
    body = require_object(body)
    sender = parse_sender(body)
    message = parse_text(body, MAX_CAMPAIGN_CHARS)
    callback_url = parse_callback(body.get("callback_url"))
    scheduled_at = parse_scheduled_at(body.get("scheduled_at"), now)
    concurrency = parse_concurrency(body.get("concurrency"))
    raw = body.get("recipients")
    if raw is None:
        raise fail("recipients", "The recipients field is required.")
    if not isinstance(raw, list):
        raise fail("recipients", "The recipients field must be an array.")
    if not raw:
        raise fail("recipients", "The recipients field must have at least 1 item.")
    if len(raw) > MAX_RECIPIENTS:
        raise fail(
            "recipients",
            f"The recipients field must not have more than {MAX_RECIPIENTS:,} items.",
        )
    indexes: list[int] = []
    numbers: list[str] = []
    extras: dict[int, tuple[str | None, str | None]] = {}
    invalid: list[tuple[int, str, str]] = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            indexes.append(index)
            numbers.append(item)
            continue
        if isinstance(item, int) and not isinstance(item, bool):
            indexes.append(index)
            numbers.append(str(item))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("to"), str | int) or \
                isinstance(item.get("to"), bool):
            invalid.append((index, _as_text(item), "Each recipient must have a 'to' field."))
            continue
        to = str(item["to"])
        try:
            ref = parse_client_ref(item.get("client_ref"))
            url = parse_callback(item.get("callback_url"))
        except ValidationFailed as exc:
            if exc.code == CODE_CONTROL_CHARACTER:
                # not a recipient to leave out but a malformed request: the whole send is a 422
                field = next(iter(exc.errors or {"recipients": []}))
                raise ValidationFailed(
                    f"Recipient {index}: {exc.message}", code=CODE_CONTROL_CHARACTER,
                    errors={f"recipients.{index}.{field}": [exc.message]}) from None
            invalid.append((index, to, exc.message))
            continue
        indexes.append(index)
        numbers.append(to)
        if ref is not None or url is not None:
            extras[index] = (ref, url)
    return CampaignSend(sender, message, indexes, numbers, extras, callback_url, scheduled_at,
                        concurrency, invalid)


def parse_sender(body: dict[str, Any]) -> Sender:
    value = body.get("from")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise fail("from", "The from field is required.")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise fail("from", "The from field must be a string.")
    refuse_controls("from", value)
    value = value.strip()
    declared = body.get("sender_type")
    if declared is not None and declared not in SENDER_TYPES:
        raise fail("sender_type", "The sender_type must be one of Alpha, Numeric, Shortcode.")
    numeric = _DIGITS.fullmatch(value) is not None
    if numeric:
        digits = value.lstrip("+")
        if len(digits) > 15:
            raise fail("from", "A numeric sender may have at most 15 digits.")
        kind = declared or ("Shortcode" if len(digits) <= 8 and not value.startswith("+")
                            else "Numeric")
        if kind == "Shortcode" and not 3 <= len(digits) <= 8:
            raise fail("from", "A shortcode sender must have 3 to 8 digits.")
        if kind == "Alpha" and len(value) > 11:
            raise fail("from", "An alphanumeric sender may have at most 11 characters.")
        return Sender(value, kind)
    if declared in ("Numeric", "Shortcode"):
        raise fail("from", f"A {declared.lower()} sender must contain digits only.")
    if len(value) > 11:
        raise fail("from", "An alphanumeric sender may have at most 11 characters.")
    if not value.isprintable():
        raise fail("from", "The sender contains characters that cannot be sent.")
    return Sender(value, "Alpha")


def parse_text(body: dict[str, Any], limit: int) -> str:
    value = body.get("message")
    if value is None:
        raise fail("message", "The message field is required.")
    if not isinstance(value, str):
        raise fail("message", "The message field must be a string.")
    if value == "":
        raise fail("message", "The message field must not be empty.")
    if len(value) > limit:
        raise fail("message", f"The message must not be longer than {limit:,} characters.")
    refuse_controls("message", value, _MESSAGE_CONTROLS)
    return value


def parse_callback(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidCallbackUrl()
    refuse_controls("callback_url", value)
    try:
        return validate_callback_url(value)
    except _BadUrl:
        raise InvalidCallbackUrl() from None


def parse_client_ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise fail("client_ref", "The client_ref field must be a string.")
    if len(value) > MAX_CLIENT_REF:
        raise fail("client_ref", "The client_ref must not be longer than 255 characters.")
    refuse_controls("client_ref", value)
    return value


def parse_concurrency(value: Any) -> int:
    if value is None:
        return 10
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise fail("concurrency", "The concurrency must be an integer between 1 and 100.")
    return value


def parse_scheduled_at(value: Any, now: datetime) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise fail("scheduled_at", "The scheduled_at must be a date such as 2025-08-12 10:00:00.")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            "scheduled_at", "The scheduled_at must be a date such as 2025-08-12 10:00:00."
        ) from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if at <= now:
        raise fail("scheduled_at", "The scheduled_at must be a time in the future.")
    if at.year > 2099:
        raise fail("scheduled_at", "The scheduled_at is too far in the future.")
    return at


def _as_text(item: Any) -> str:
    text = str(item)
    return text if len(text) <= 64 else text[:61] + "..."
