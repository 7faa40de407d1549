"""The send path's opt-out check: a send to a recipient who opted out is refused.

Kept to two calls so that the send path stays as it is: `opted_out_sends` (single sends: one
query for a whole group-commit batch, in the transaction that stores them, so a send needs no
database round trip of its own before the write) and `leave_out_opted_out` (a campaign: one
query for the whole list, after a one-row check that the account has any opt-out at all).
A recipient is suppressed for a send when the account holds an opt-out for it from the send's
sender (a number the recipient wrote STOP to) or from every sender (STOPALL, or one added
without a sender).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tikosms.errors import ValidationFailed
from tikosms.inbound import repository as repo

MSG_OPTED_OUT = ("This recipient has opted out of messages from this sender (they replied "
                 "STOP); nothing was sent. They can opt in again by replying START.")
CODE_OPTED_OUT = "opted_out"


class OptedOut(ValidationFailed):
    code = CODE_OPTED_OUT

    def __init__(self) -> None:
        super().__init__(MSG_OPTED_OUT, errors={"to": [MSG_OPTED_OUT]})


def sender_key(value: str, sender_type: str) -> str:
    """How a send's `from` is compared with the number an opt-out names: digits without the
    '+' for numeric senders and short codes, the text itself for an alphanumeric sender (which
    no number matches: only account-wide opt-outs apply to it)."""
    if sender_type in ("Numeric", "Shortcode"):
        return value.lstrip("+")
    return value


def opt_out_key(recipient: str, sender: Any) -> tuple[str, str]:
    """What a single send is checked against: (recipient, sender key) (`schemas.Sender`)."""
    return recipient, sender_key(sender.value, sender.type)


async def opted_out_sends(conn: Any, sends: Sequence[tuple[int, str, str]]) -> set[int]:
    """The indexes of the single sends (account, recipient, sender key) whose recipient opted
    out of that sender or of the whole account."""
    held = await repo.opt_outs_of(conn, sorted({(a, r) for a, r, _ in sends}))
    if not held:
        return set()
    return {i for i, (a, r, s) in enumerate(sends)
            if (a, r, s) in held or (a, r, "") in held}


async def leave_out_opted_out(conn: Any, account_id: int, sender: Any,
                              accepted: list[Any], invalid: list[tuple[int, str, str]]
                              ) -> list[Any]:
    """A campaign's recipients (index, number, ...) without those who opted out; these are
    added to `invalid` with the reason, as invalid numbers are."""
    numbers = [a[1] for a in accepted]
    suppressed = await repo.opted_out_among(conn, account_id,
                                            sender_key(sender.value, sender.type), numbers)
    if not suppressed:
        return accepted
    invalid.extend((a[0], a[1], MSG_OPTED_OUT) for a in accepted if a[1] in suppressed)
    return [a for a in accepted if a[1] not in suppressed]
