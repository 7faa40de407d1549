"""One carrier MO in: reassemble, decode, route to an account, apply a stop/start keyword,
store, and hand it to the account (`deliver_inbound`).

`InboundReceiver.handle` is the carriers' `on_inbound` handler (the router gives it to every
SMPP carrier). Each deliver_sm is one transaction, committed before the carrier acknowledges
it: a part of a long message is a row of `inbound_fragments` until the last part is in, in
whatever order they come, so a worker restart between two parts loses nothing. When the
message is whole, its parts' octets are joined and decoded once (a UTF-16 surrogate pair or a
GSM escape split between two parts comes out whole).

Routing: the number (or short code) the MO was sent to, and the first word of the decoded text
when a keyword row of that number matches it (case-insensitive); else the number's default
owner; else the message is stored unrouted (no account sees it) with a log line.

Opt-outs (scope documented in docs/inbound.md): STOP & co. suppress the sender's number for
the account *and the number the MO was sent to*; STOPALL for every number of the account;
START/UNSTOP lift both for that number.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from tikosms import formats
from tikosms.callbacks.outbox import enqueue_inbound_event
from tikosms.db.engine import Database
from tikosms.db.types import utcnow
from tikosms.delivery.carrier import InboundPdu
from tikosms.inbound import concat, keywords
from tikosms.inbound import repository as repo
from tikosms.inbound.decoding import decode
from tikosms.messaging.service import new_id
from tikosms.smpp_server.outbox import enqueue_inbound

log = logging.getLogger("tikosms.inbound")

EXPIRY_EVERY = 60.0  # seconds between two looks for incomplete messages past their expiry


@dataclass(frozen=True, slots=True)
class Inbound:
    """An inbound message as stored."""

    id: int
    public_id: str
    account_id: int | None
    sender: str
    recipient: str
    text: str
    encoding: str
    data_coding: int
    parts: int
    keyword: str | None
    opt_out: str | None
    carrier: str | None
    received_at: datetime


def normalise_address(address: str) -> str:
    """An SMPP address as we store and match it: spaces, dashes and a leading '+' removed."""
    value = "".join(address.split()).replace("-", "")
    return value[1:] if value.startswith("+") else value


# --- the sinks: where an inbound message goes once stored -----------------------------------

InboundSink = Callable[[AsyncConnection, Inbound], Awaitable[None]]


async def enqueue_callback(conn: AsyncConnection, inbound: Inbound) -> None:
    """The account's inbound callback URL gets it (signed, retried: `tikosms.callbacks`)."""
    if inbound.account_id is None:
        return
    account = await repo.inbound_settings(conn, inbound.account_id)
    if account is None or not account.inbound_url:
        return
    await enqueue_inbound_event(conn, inbound.id, inbound.account_id, account.inbound_url,
                                inbound_view(inbound), inbound.received_at)


# Called in order, in the transaction that stored the message: the account's inbound callback,
# and its SMPP receiver binds (through the SMPP server's outbox, when it has SMPP users).
INBOUND_SINKS: list[InboundSink] = [enqueue_callback, enqueue_inbound]


async def deliver_inbound(conn: AsyncConnection, inbound: Inbound) -> None:
    """Hand a stored inbound message to every sink (same transaction: all or none)."""
    for sink in INBOUND_SINKS:
        await sink(conn, inbound)


def inbound_view(inbound: Inbound) -> dict[str, object]:
    """The message as the API and the callback show it."""
    return {
        "inbound_id": inbound.public_id,
        "from": inbound.sender,
        "to": inbound.recipient,
        "text": inbound.text,
        "encoding": inbound.encoding,
        "parts": inbound.parts,
        "keyword": inbound.keyword,
        "opt_out": inbound.opt_out,
        "received_at": formats.message_time(inbound.received_at),
    }


# --- receiving --------------------------------------------------------------------------------

async def receive_pdu(conn: AsyncConnection, pdu: InboundPdu, now: datetime) -> Inbound | None:
    """Store one MO deliver_sm; the inbound message when it is whole now (None: a part of a
    message still waiting for others)."""
    sender = normalise_address(pdu.source_addr)
    recipient = normalise_address(pdu.destination_addr)
    data, info = concat.split_user_data(pdu.short_message, pdu.esm_class, pdu.tlvs)
    if info is None:
        text, encoding = decode(data, pdu.data_coding)
        return await store_inbound(conn, sender, recipient, text, encoding, pdu.data_coding,
                                   1, pdu.carrier, now)
    key = concat.assembly_key(sender, recipient, info)
    await repo.lock_assembly(conn, key)
    await repo.add_fragment(conn, {
        "assembly": key, "seq": info.seq, "total": info.total, "sender": sender,
        "recipient": recipient, "data_coding": pdu.data_coding, "payload": data.hex(),
        "carrier": pdu.carrier, "received_at": now,
    })
    fragments = await repo.fragments_of(conn, key)
    if {f.seq for f in fragments} != set(range(1, info.total + 1)):
        return None
    await repo.delete_fragments(conn, key)
    text, encoding, coding = join_fragments(
        [(f.data_coding, bytes.fromhex(f.payload)) for f in fragments])
    return await store_inbound(conn, sender, recipient, text, encoding, coding, info.total,
                               pdu.carrier, now)


def join_fragments(parts: Sequence[tuple[int, bytes]]) -> tuple[str, str, int]:
    """(text, encoding, data_coding) of a message's parts in order: octets joined, decoded
    once; parts of different codings (never seen, but possible) are decoded one by one."""
    codings = {coding for coding, _ in parts}
    if len(codings) == 1:
        coding = parts[0][0]
        text, encoding = decode(b"".join(data for _, data in parts), coding)
        return text, encoding, coding
    decoded = [decode(data, coding) for coding, data in parts]
    return "".join(t for t, _ in decoded), "mixed", parts[0][0]


async def store_inbound(conn: AsyncConnection, sender: str, recipient: str, text: str,
                        encoding: str, data_coding: int, parts: int, carrier: str | None,
                        now: datetime) -> Inbound:
    """Route, apply an opt-out keyword, store, deliver: a whole inbound message."""
    owners = await repo.owners_of(conn, recipient)
    account_id, keyword = route(owners, text)
    action: str | None = None
    # an opt-out names a phone number (digits, as sends store `to`); an alphanumeric or
    # over-long sender cannot be sent to, so there is nothing to suppress
    if account_id is not None and sender.isdigit() and len(sender) <= 20:
        account = await repo.inbound_settings(conn, account_id)
        extra = keywords.parse_stop_keywords(account.stop_keywords if account else None)
        found = keywords.opt_out_action(text, extra)
        if found is not None:
            action, word = found
            # a standard keyword to a number shared by keyword counts for every account on
            # it (as on a shared short code); an account's own keyword for that account only
            standard = keywords.opt_out_action(text) is not None
            for owner in sorted(set(owners.values())) if standard else [account_id]:
                await apply_opt_out(conn, owner, sender, recipient, action, word, now)
    shown = None if action is None else ("start" if action == "start" else "stop")
    inbound = Inbound(0, new_id(), account_id, sender[:32], recipient[:32], text, encoding,
                      data_coding, parts, keyword, shown, carrier, now)
    inbound_id = await repo.insert_inbound(conn, {
        "public_id": inbound.public_id, "account_id": account_id, "sender": inbound.sender,
        "recipient": inbound.recipient, "text": text, "data_coding": data_coding,
        "encoding": encoding, "parts": parts, "keyword": keyword, "opt_out": shown,
        "carrier": carrier, "received_at": now,
    })
    inbound = dataclasses.replace(inbound, id=inbound_id)
    public_id = inbound.public_id
    if account_id is None:
        log.warning("inbound message for a number no account owns stored unrouted "
                    "inbound_id=%s carrier=%s (tikosms numbers assign ACCOUNT_ID NUMBER)",
                    public_id, carrier)
    else:
        log.info("inbound message stored inbound_id=%s account=%d parts=%d encoding=%s%s",
                 public_id, account_id, parts, encoding, f" opt_out={action}" if action else "")
    await deliver_inbound(conn, inbound)
    return inbound


def route(owners: dict[str, int], text: str) -> tuple[int | None, str | None]:
    """(account id or None, the keyword that routed it or None), from the number's owners
    (keyword "" for the default owner -> account id)."""
    if not owners:
        return None, None
    word = keywords.first_word(text)
    if word and word in owners:
        return owners[word], word
    return owners.get(""), None


async def apply_opt_out(conn: AsyncConnection, account_id: int, recipient: str, our_number: str,
                        action: str, word: str, now: datetime) -> None:
    """`recipient` is the handset that wrote; `our_number` the number it wrote to."""
    if action == "start":
        await repo.remove_opt_outs(conn, account_id, recipient, [our_number, ""])
    else:
        sender = "" if action == "stop_all" else our_number
        await repo.add_opt_out(conn, account_id, recipient, sender, "keyword", word, now)


class InboundReceiver:
    """The carriers' `on_inbound`: one transaction per deliver_sm, then `on_stored()` (the
    callback dispatcher's wake) when a whole message was stored. `run_expiry` drops messages
    still incomplete after `expiry` seconds."""

    def __init__(self, db: Database, expiry: float,
                 on_stored: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.expiry = expiry
        self.on_stored = on_stored
        self._task: asyncio.Task[None] | None = None

    async def handle(self, pdu: InboundPdu) -> None:
        async with self.db.begin() as conn:
            inbound = await receive_pdu(conn, pdu, utcnow())
        if inbound is not None:
            self.on_stored()

    async def expire(self, now: datetime | None = None) -> int:
        """Drop incomplete messages whose first part is older than the expiry; how many."""
        before = (now or utcnow()) - timedelta(seconds=self.expiry)
        async with self.db.begin() as conn:
            dropped = await repo.expire_fragments(conn, before)
        for received, total in dropped:
            log.warning("incomplete inbound message dropped after %.0f s: %d of %d parts "
                        "received", self.expiry, received, total)
        return len(dropped)

    def start(self) -> None:
        self._task = asyncio.create_task(self._expire_periodically(), name="inbound-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _expire_periodically(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_EVERY)
            try:
                await self.expire()
            except Exception as exc:  # the database away: try again next round
                log.warning("expiring inbound fragments failed (%s)", type(exc).__name__)
