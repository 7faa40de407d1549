"""Which command_status a refused submit_sm gets: chosen by whether the client should retry.

Clients retry ESME_RSYSERR, ESME_RTHROTTLED and ESME_RMSGQFUL (temporary) and give up on the
rest. So a send the customer must change or pay for first (no balance, no rate, a bad number)
never answers ESME_RSYSERR, which clients would retry forever (Jasmin's habit); only a fault of
the gateway (the database away) does. The table is in docs/smpp.md.
"""

from __future__ import annotations

from tikosms.errors import RateLimited, TikoError, ValidationFailed
from tikosms.smpp.pdu import Status

# domain error codes -> command_status
_BY_CODE: dict[str, int] = {
    "invalid_number": Status.ESME_RINVDSTADR,  # no country's numbering plan has it
    "no_rate": Status.ESME_RINVDSTADR,  # no price for this destination: cannot route it
    "insufficient_balance": Status.ESME_RSUBMITFAIL,  # permanent until topped up
    "account_suspended": Status.ESME_RSUBMITFAIL,
    "message_too_long": Status.ESME_RINVMSGLEN,
    "segment_too_long": Status.ESME_RINVMSGLEN,
    "control_character": Status.ESME_RSUBMITFAIL,
    "rate_limited": Status.ESME_RTHROTTLED,
    "opted_out": Status.ESME_RINVDSTADR,  # the handset wrote STOP: permanent until START
}
# the field a ValidationFailed names -> command_status
_BY_FIELD: dict[str, int] = {
    "from": Status.ESME_RINVSRCADR,
    "sender_type": Status.ESME_RINVSRCADR,
    "to": Status.ESME_RINVDSTADR,
    "message": Status.ESME_RINVMSGLEN,
}


def status_for(exc: TikoError) -> int:
    """The command_status of a domain error. Codes this table does not know are mapped by
    their HTTP class: 429 throttled, 5xx ESME_RSYSERR (retry), any other 4xx ESME_RSUBMITFAIL
    (permanent)."""
    status = _BY_CODE.get(exc.code)
    if status is not None:
        return status
    if isinstance(exc, ValidationFailed) and exc.errors:
        field = next(iter(exc.errors))
        if field in _BY_FIELD:
            return _BY_FIELD[field]
    if isinstance(exc, RateLimited):
        return Status.ESME_RTHROTTLED
    if exc.status_code >= 500:
        return Status.ESME_RSYSERR
    return Status.ESME_RSUBMITFAIL
