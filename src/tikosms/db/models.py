"""The schema: every table of the gateway in one picture.

Kept in one module so that the migrations, the repositories of every domain package and the
bulk paths (COPY) agree on one definition. Queries live in each domain's `repository.py`.

The `parts` table is the durable delivery queue: one row per SMS part, with its public status,
its due time, a worker's lease and the carrier's message id.

On PostgreSQL (migration 0012) `parts`, `callback_events`, `callback_attempts`,
`pending_receipts` and `idempotency_keys` are partitioned by time (db/partitions.py), which
these classes do not say: the ids of parts, callback events and pending receipts are then
time-ordered (a server default), `callback_events.event_id` is indexed but not UNIQUE, and the
primary keys of `callback_attempts` and `idempotency_keys` gain their partition key
(`event_id`; `created_at`). Statements are the same on both databases.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tikosms.db.types import Money, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY is the rowid alias
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    # balance may go down to -credit_limit; always equals the sum of the account's ledger
    balance: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    credit_limit: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended
    signing_secret: Mapped[str] = mapped_column(String(100))  # Standard Webhooks "whsec_..."
    balance_updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # inbound (0009): where the account's MO are POSTed, and its own stop keywords (comma list)
    inbound_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    stop_keywords: Mapped[str | None] = mapped_column(Text, nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    # SHA-256 of the token (hex); the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)  # negative: a charge; positive: money in
    balance_after: Mapped[Decimal] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(String(32))  # topup | reserve | refund | adjustment
    campaign_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    note: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Rate(Base):
    __tablename__ = "rates"
    __table_args__ = (Index("ix_rates_lookup", "mcc", "mnc", "account_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    mcc: Mapped[str] = mapped_column(String(3))
    mnc: Mapped[str] = mapped_column(String(3))  # zero-padded to 3 digits; "" = country-wide
    country: Mapped[str] = mapped_column(String(100))
    rate: Mapped[Decimal] = mapped_column(Money)
    start_date: Mapped[datetime] = mapped_column(UTCDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # None: open
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NumberingPrefix(Base):
    __tablename__ = "numbering_plan"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    mcc: Mapped[str] = mapped_column(String(3))
    mnc: Mapped[str | None] = mapped_column(String(3), nullable=True)


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_account_created", "account_id", "created_at"),
        # campaign lifecycle (0006): the campaigns the housekeeping roll-up still counts
        Index("ix_campaigns_unfinished", "id",
              postgresql_where=text("completed_at IS NULL"),
              sqlite_where=text("completed_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(8))  # single (POST /v1/message) | bulk
    sender: Mapped[str] = mapped_column(String(16))
    sender_type: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)
    recipients: Mapped[int] = mapped_column(Integer)
    duplicates_removed: Mapped[int] = mapped_column(Integer, default=0)
    invalid_removed: Mapped[int] = mapped_column(Integer, default=0)
    total_parts: Mapped[int] = mapped_column(Integer)
    cost: Mapped[Decimal] = mapped_column(Money)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    concurrency: Mapped[int] = mapped_column(SmallInteger, default=10)
    # stored: active | completed | canceled; shown "scheduled" while scheduled_at is ahead
    # (messaging.lifecycle.shown_status)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # campaign lifecycle (0006), written by the worker's housekeeping roll-up, never by the
    # send path: parts by status as JSON ({"DELIVRD": 3, ...}; NULL until first counted), when
    # they were counted, and when every part was found final (NULL until then; set for a
    # canceled campaign too, once its last parts in flight have their final state)
    counts: Mapped[str | None] = mapped_column(Text, nullable=True)
    counted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


ATTEMPTS_CAP = 1_000_000_000  # parts.attempts stops counting here (INTEGER holds 2^31 - 1)
# Column widths the delivery side checks before SQL (carrier strings are cut or refused there)
CARRIER_MESSAGE_ID_MAX = 64
ERROR_CODE_MAX = 32

# Part statuses (SPEC_NOTES "Status of a part")
SCHEDULED, QUEUED, ENROUTE = "SCHEDULED", "QUEUED", "ENROUTE"
FINAL_STATUSES = frozenset(
    {"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN", "CANCELED"}
)
WAITING_STATUSES = (SCHEDULED, QUEUED)  # not yet with a carrier: cancellable, refundable


class Part(Base):
    __tablename__ = "parts"
    __table_args__ = (
        Index("ix_parts_campaign", "campaign_id", "id"),
        Index("ix_parts_message", "message_id", "part_no"),
        # the queue: only waiting parts are in it; claimed by priority, account, due time
        Index(
            "ix_parts_queue", "priority", "account_id", "due_at",
            postgresql_where=text("status IN ('SCHEDULED', 'QUEUED')"),
            sqlite_where=text("status IN ('SCHEDULED', 'QUEUED')"),
        ),
        # set when a carrier accepts the part: lookups say `carrier_message_id IS NOT NULL`
        Index("ix_parts_carrier_msgid", "carrier_message_id",
              postgresql_where=text("carrier_message_id IS NOT NULL"),
              sqlite_where=text("carrier_message_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(36))
    message_id: Mapped[str] = mapped_column(String(36))
    account_id: Mapped[int] = mapped_column(Integer)
    part_no: Mapped[int] = mapped_column(SmallInteger)
    total_parts: Mapped[int] = mapped_column(SmallInteger)
    to: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    data_coding: Mapped[int] = mapped_column(SmallInteger)
    mccmnc: Mapped[str] = mapped_column(String(6))
    cost: Mapped[Decimal] = mapped_column(Money)
    client_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(12))
    # 0: single messages (one-time codes) go first; 1: campaign parts
    priority: Mapped[int] = mapped_column(SmallInteger)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # claims of the part (capped at ATTEMPTS_CAP by the claim itself: it never overflows)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # submits the carrier may have sent without a usable answer (SubmitOutcome.maybe_sent);
    # capped by the max_unanswered_attempts setting
    unanswered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    concat_ref: Mapped[int] = mapped_column(Integer, default=0)
    carrier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    carrier_message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PendingReceipt(Base):
    """A receipt that arrived before its part's carrier message id was stored."""

    __tablename__ = "pending_receipts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    carrier_message_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(12))
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # kept for pending_receipt_expiry_seconds after this, then deleted (housekeeping)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # the carrier that reported it (message ids are unique per carrier only)
    carrier: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CallbackEvent(Base):
    """The callback outbox: one row per status change of a part with a callback URL."""

    __tablename__ = "callback_events"
    __table_args__ = (
        Index("ix_callback_events_due", "state", "next_attempt_at"),
        Index("ix_callback_events_part", "part_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)  # stable across retries
    part_id: Mapped[int] = mapped_column(BigInteger)
    account_id: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, fixed at the time of the change
    state: Mapped[str] = mapped_column(String(10))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CallbackAttempt(Base):
    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)  # callback_events.id
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    # the delivery worker's housekeeping deletes keys older than 24 h by created_at
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    account_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CarrierRow(Base):
    __tablename__ = "carriers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="smpp")
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    system_id: Mapped[str] = mapped_column(String(16))
    password: Mapped[str] = mapped_column(String(9))
    settings: Mapped[str] = mapped_column(Text, default="{}")  # JSON: binds, window, tps, ...
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Route(Base):
    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    match: Mapped[str] = mapped_column(String(6))  # "*", an MCC, or an MCC+MNC
    carrier_id: Mapped[int] = mapped_column(ForeignKey("carriers.id"))
    priority: Mapped[int] = mapped_column(Integer, default=100)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # 0006: a disabled route is kept but not used (tikosms routes disable ID)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


# --- the operator's console (migration 0005) -------------------------------------------------

class Operator(Base):
    """A person who logs in to /admin (not an API customer: API tokens never open /admin)."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OperatorSession(Base):
    """A logged-in browser: the cookie holds a random token, the row only its SHA-256."""

    __tablename__ = "operator_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"),
                                             index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))  # put in every form of the session
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed logins per key ("user:NAME" or "ip:ADDRESS") in the current window."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)


class TrafficMinute(Base):
    """Roll-up of part events per minute, carrier and MCC/MNC, kept by `console.rollup`, so the
    overview never scans `parts`. `dlv_hist` counts delivered parts per time-to-deliver bucket
    (JSON {upper bound in ms: count}) for the median."""

    __tablename__ = "traffic_minutes"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)  # start, UTC
    carrier: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" before routing
    mccmnc: Mapped[str] = mapped_column(String(6), primary_key=True)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    dlv_hist: Mapped[str] = mapped_column(Text, default="{}")


class RollupState(Base):
    """How far each roll-up has read; its row is also the lock that lets one process at a time
    run it."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    watermark: Mapped[datetime] = mapped_column(UTCDateTime)
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime)



class WorkerHeartbeat(Base):
    """One row per running worker process (`tikosms worker`, or the worker `tikosms serve`
    embeds), upserted every `worker_heartbeat_seconds` and deleted on a clean stop: how the
    API processes' `/readyz` and the console know which workers are alive and what their
    carriers' binds are doing (migration 0007). Rows not seen for long are pruned."""

    __tablename__ = "worker_heartbeats"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # as in parts.lease_owner
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    roles: Mapped[str] = mapped_column(String(64))  # "delivery,callbacks" | "delivery" | ...
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # JSON {carrier: {"available": bool, "window": int|null, "binds": [{label, type, state,
    # detail, in_flight}]}}: the carriers this worker holds, as of seen_at
    carriers: Mapped[str] = mapped_column(Text, default="{}")

class CarrierSlot(Base):
    """One of a carrier's allowed binds, leased by a worker process (migration 0011): only the
    holder opens that bind and submits the carrier's parts (see `delivery.slots`). `fencing`
    grows by one at every take-over, so a holder that lost its lease cannot renew it."""

    __tablename__ = "carrier_slots"

    carrier: Mapped[str] = mapped_column(String(64), primary_key=True)  # carriers.name
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1..binds
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a lease_owner
    fencing: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# The console's lookups on parts (migration 0005): the roll-up reads parts changed since its
# watermark; the message search finds a number or a client_ref without a scan.
Index("ix_parts_updated_at", Part.updated_at)
Index("ix_parts_to", Part.to)
Index("ix_parts_client_ref", Part.client_ref,
      postgresql_where=text("client_ref IS NOT NULL"),
      sqlite_where=text("client_ref IS NOT NULL"))
# the console's campaign list: newest bulk campaigns first (single sends are campaigns too)
Index("ix_campaigns_kind_created", Campaign.kind, Campaign.created_at)


# --- inbound SMS and opt-outs (migration 0009; accounts.inbound_url and stop_keywords too) ---


class OwnedNumber(Base):
    """A number or short code an account receives on, optionally only for one keyword.

    `keyword` "" is the number's default owner; a keyword row wins for MO whose first word is
    that keyword (upper case). A number has at most one default owner and one owner per
    keyword."""

    __tablename__ = "owned_numbers"

    number: Mapped[str] = mapped_column(String(20), primary_key=True)  # digits only
    keyword: Mapped[str] = mapped_column(String(32), primary_key=True, default="")
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboundMessage(Base):
    """A mobile-originated SMS, whole (reassembled when it came in parts), decoded."""

    __tablename__ = "inbound_messages"
    __table_args__ = (Index("ix_inbound_messages_account", "account_id", "received_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)  # the API's inbound_id
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: unrouted
    sender: Mapped[str] = mapped_column(String(32))  # the handset ("from"), digits as sent
    recipient: Mapped[str] = mapped_column(String(32))  # our number or short code ("to")
    text: Mapped[str] = mapped_column(Text)
    data_coding: Mapped[int] = mapped_column(SmallInteger)
    encoding: Mapped[str] = mapped_column(String(12))  # gsm7 | ascii | latin1 | ucs2 | ...
    parts: Mapped[int] = mapped_column(SmallInteger)
    keyword: Mapped[str | None] = mapped_column(String(32), nullable=True)  # routing keyword
    opt_out: Mapped[str | None] = mapped_column(String(8), nullable=True)  # stop | start
    carrier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboundFragment(Base):
    """One part of a concatenated MO, kept until its message is whole (or expires).

    `assembly` is the key of its message: sender, recipient, reference kind and number, total
    parts (the sender is in it: two handsets may use the same reference to one short code)."""

    __tablename__ = "inbound_fragments"
    __table_args__ = (Index("ix_inbound_fragments_received", "received_at"),)

    assembly: Mapped[str] = mapped_column(String(120), primary_key=True)
    seq: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    total: Mapped[int] = mapped_column(SmallInteger)
    sender: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(32))
    data_coding: Mapped[int] = mapped_column(SmallInteger)
    payload: Mapped[str] = mapped_column(Text)  # the part's user data (UDH removed), hex
    carrier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OptOut(Base):
    """A recipient who asked an account to stop: from one of its numbers (`sender`), or from
    all of them (`sender` "")."""

    __tablename__ = "opt_outs"

    account_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(20), primary_key=True)  # digits only
    sender: Mapped[str] = mapped_column(String(20), primary_key=True, default="")
    source: Mapped[str] = mapped_column(String(16))  # keyword | api | cli | import
    keyword: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
# --- customers over SMPP (migration 0008) ----------------------------------------------------

class SmppUser(Base):
    """A customer's SMPP credentials: binds as `system_id` send for `account_id`."""

    __tablename__ = "smpp_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    system_id: Mapped[str] = mapped_column(String(16), unique=True)  # SMPP 3.4: 15 + NUL
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string
    max_binds: Mapped[int] = mapped_column(Integer, default=4)  # connections at once
    window: Mapped[int] = mapped_column(Integer, default=100)  # submit_sm in flight per bind
    tps: Mapped[float | None] = mapped_column(Float, nullable=True)  # submit_sm/s; None: any
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: 2 x tps
    allow_ip: Mapped[str | None] = mapped_column(Text, nullable=True)  # CIDRs, comma-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SmppOutboxItem(Base):
    """What the SMPP server owes a customer's receiver binds (deliver_sm): a receipt or an MO.

    Kept until the customer acknowledges it (deliver_sm_resp ROK), however long it is offline;
    `next_attempt_at` is also the lease of an item sent and not yet answered."""

    __tablename__ = "smpp_outbox"
    __table_args__ = (
        Index("ix_smpp_outbox_due", "account_id", "next_attempt_at",
              postgresql_where=text("delivered_at IS NULL"),
              sqlite_where=text("delivered_at IS NULL")),
        Index("ix_smpp_outbox_delivered", "delivered_at",
              postgresql_where=text("delivered_at IS NOT NULL"),
              sqlite_where=text("delivered_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # receipt | mo
    payload: Mapped[str] = mapped_column(Text)  # JSON: the deliver_sm's fields
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# the console's Inbound page (migration 0010): newest first by id, for one account or number,
# and opt-outs of every account by number
Index("ix_inbound_messages_account_id", InboundMessage.account_id, InboundMessage.id)
Index("ix_inbound_messages_sender", InboundMessage.sender, InboundMessage.id)
Index("ix_inbound_messages_recipient", InboundMessage.recipient, InboundMessage.id)
Index("ix_opt_outs_recipient", OptOut.recipient, OptOut.account_id, OptOut.sender)


# --- one rate per carrier account, shared by the fleet (migration 0013) ---
class CarrierRate(Base):
    """One row per SMPP carrier: the fleet's token budget for it (tikosms.smpp.shared_rate).
    Every worker process sending to the carrier takes tokens in chunks with one UPDATE of this
    row (a GCRA: `tat` is when the budget given so far is spent at `rate`), and reads and
    writes the rate found by the adaptive throttling, so the processes share one rate."""

    __tablename__ = "carrier_rates"

    carrier: Mapped[str] = mapped_column(String(64), primary_key=True)
    # the theoretical arrival time: seconds since the epoch, of the database's clock
    tat: Mapped[float] = mapped_column(Float, default=0.0)
    taken: Mapped[int] = mapped_column(BigInteger, default=0)  # tokens given out, ever
    # the rate in force for the fleet (parts per second) and whether it is still in slow
    # start, as last decided by one process's controller; version counts those decisions
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    slow_start: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    # the share of refusals that does not depend on the rate, as last decided
    baseline: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # the fleet's submits answered and refused (throttled), ever: the judge's controller
    # judges their differences over its periods
    answered: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refused: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # the process whose controller judges the fleet's answers, and when it last asked for
    # tokens (the database's clock): a judge silent for JUDGE_LEASE seconds is replaced
    judge: Mapped[str | None] = mapped_column(String(40), nullable=True)
    judge_seen: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
