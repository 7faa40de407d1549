"""Settings: one source of configuration, read from `TIKOSMS_*` environment variables.

CLI options default to these same variables, so `TIKOSMS_DATABASE_URL=... tikosms serve` and
`tikosms serve` with the option given agree.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIKOSMS_", extra="ignore")

    # sqlite:///./tikosms.db (embedded default, WAL) or postgresql://user@host:5432/db (asyncpg)
    database_url: str = "sqlite:///./tikosms.db"
    # connections kept open per process (PostgreSQL); requests beyond wait for one rather than
    # open and close connections under load. SQLite uses a small pool of its own
    database_pool_size: int = Field(default=20, ge=1, le=200)
    # PostgreSQL, `tikosms api`: a statement left without an answer this many seconds fails (a
    # 503) instead of holding its request and connection for good (a server or network that
    # went away without closing the connection); 0 = no limit. The worker has none
    database_command_timeout_seconds: float = Field(default=10.0, ge=0)
    # PostgreSQL, `tikosms worker`: the same for the worker's statements (seconds; 0 = no
    # limit). Longer than the API's: a batch update may wait on row locks. The batch fails and
    # is retried on a new connection, so a connection that went dead or stuck does not hold
    # the worker for good
    database_worker_command_timeout_seconds: float = Field(default=60.0, ge=0)
    # PostgreSQL, every process: the server ends a session left idle inside a transaction this
    # long (seconds; 0 = never), so a client gone mid-transaction (a half-open connection)
    # does not hold its row locks. Sent as a startup parameter, like the two below (behind
    # pgbouncer: ignore_startup_parameters, or 0 here)
    database_idle_in_transaction_timeout_seconds: float = Field(default=60.0, ge=0)
    # PostgreSQL, every process: TCP keepalive on both ends of each connection. Probes start
    # after this many idle seconds, 3 of them a third of it apart, and data left unacknowledged
    # this long fails the connection: a peer that went away without closing is noticed in
    # about 2x this (seconds; 0 = the OS defaults, about 2 hours)
    database_tcp_keepalive_seconds: float = Field(default=10.0, ge=0, le=3600)

    host: str = "127.0.0.1"
    port: int = 8000
    # processes of `tikosms api` sharing the port (PostgreSQL; SQLite has one writer anyway)
    api_processes: int = Field(default=1, ge=1, le=64)
    # `tikosms serve`: delivery (worker and callbacks) in a process of its own beside the API's,
    # so that sends are answered on one core while delivery works on the other; false: one
    # process (a SQLite memory database always is)
    serve_delivery_process: bool = True
    # requests larger than this are refused with 413 (bytes); 100,000 recipients fit in ~6 MB
    max_body_bytes: int = 32 * 1024 * 1024
    # requests per second per account (token bucket; burst = 2x); 0 disables the limit
    rate_limit_per_second: float = 0.0

    # seconds an idle send writer lets a stream of single sends gather before it writes them
    # in one transaction; only when sends come closer together than this (messaging/writer.py).
    # 0: every send is written at once
    send_linger_seconds: float = Field(default=0.003, ge=0, le=0.1)

    # --- delivery ---
    # seconds a worker holds claimed parts before another worker may take them over
    lease_seconds: float = 60.0
    # parts claimed per round trip to the database
    claim_batch: int = Field(default=500, ge=1, le=10000)
    # seconds a worker sleeps when the queue is empty (woken at once by a send in-process)
    idle_poll_seconds: float = 0.2
    # seconds a worker lets new sends gather after a wake before it claims them, and its
    # recorder lets results gather when it has few: a trickle of single sends is claimed and
    # recorded in batches instead of a transaction per send (0: at once)
    claim_linger_seconds: float = Field(default=0.02, ge=0, le=1)
    record_linger_seconds: float = Field(default=0.01, ge=0, le=1)
    # parts that have waited longer than this in the queue expire (EXPIRED, refunded); seconds
    queue_expiry_seconds: float = 48 * 3600.0

    # --- carriers hot reload ---
    # seconds between two looks of each worker at the carriers and routes tables (a few rows);
    # a change applies within this plus the new binds' bind time. 0 turns hot reload off
    carriers_reload_seconds: float = Field(default=2.0, ge=0, le=3600)
    # --- bind slots (issue 13) ---
    # seconds a worker's lease on one of a carrier's bind slots lasts; renewed every third of
    # it. A dead holder's slot is taken over by a live worker within about this; a holder that
    # cannot renew closes that bind a fifth of it before the lease ends
    slot_lease_seconds: float = Field(default=15.0, ge=1, le=3600)
    # --- delivery reliability (issue 9) ---
    # attempts per part that a carrier may have sent without a usable answer (no response, bind
    # lost after the submit left, ROK without an id); at this many the part ends UNKNOWN
    # (error_code no_carrier_answer) and stays charged: each attempt was possibly a real SMS
    max_unanswered_attempts: int = Field(default=3, ge=1, le=100)
    # parts a carrier has answered that the database has not yet recorded, per worker: above
    # this, submitting pauses until the recorder catches up: a SIGKILL can make another worker
    # resend at most this many (parts). 0: two windows of every bind (window x binds of each
    # SMPP carrier, x 2), at least 100, or 0.75 s of the worker's measured throughput if more
    max_unrecorded: int = Field(default=0, ge=0, le=1_000_000)
    # receipts that matched no part are kept this long in case their submit is recorded late,
    # then deleted (seconds)
    pending_receipt_expiry_seconds: float = Field(default=72 * 3600.0, gt=0)
    # a part with a carrier and no news for this long (no final receipt) ends UNKNOWN,
    # error_code receipt_timeout, charged (seconds; 0: never)
    receipt_timeout_seconds: float = Field(default=72 * 3600.0, ge=0)
    # idempotency keys are deleted after this (seconds); they replay for 24 h
    idempotency_key_expiry_seconds: float = Field(default=24 * 3600.0, gt=0)
    # --- retention (issue 13) ---
    # days of delivery history kept (days, fractions allowed): `tikosms db prune` (run daily,
    # e.g. from cron) deletes final parts last changed longer ago than this, of finished
    # campaigns, with their callbacks, and the campaigns left without parts; the ledger is kept
    # for good. 0 = keep everything (off: prune then needs --older-than). Off by default: how
    # long delivery reports are kept is the operator's decision (contracts, disputes, privacy
    # law), not one the gateway can guess; docs/operations.md suggests 90
    retention_days: float = Field(default=0.0, ge=0, le=36500)
    # PostgreSQL: days each partition of parts, callback events and attempts, pending receipts
    # and idempotency keys covers (1: a partition a day; intervals aligned on 2026-01-01 UTC).
    # A change applies to partitions created from then on
    partition_days: int = Field(default=1, ge=1, le=366)
    # PostgreSQL: days ahead of now that partitions exist (created by the worker's
    # housekeeping, the migration, `tikosms db partitions --ensure`): an insert beyond the last
    # partition fails, so this is how long the gateway can run with no worker at all
    partition_ahead_days: int = Field(default=3, ge=1, le=366)
    # PostgreSQL: seconds between two rounds of partition upkeep in a worker's housekeeping
    # (create ahead; drop expired receipts' and keys' partitions, and history partitions past
    # retention_days when it is set)
    partition_upkeep_seconds: float = Field(default=300.0, gt=0)

    # --- carriers' rates shared by the fleet (issue 13) ---
    # every worker process sending to a carrier takes its tokens from one budget per carrier
    # (the carrier's tps, or the rate the adaptive throttling found), kept in PostgreSQL or in
    # Redis (below); false: each process applies the carrier's tps on its own. SQLite: off
    rate_shared: bool = True
    # redis://host:6379/0: the shared budgets live in Redis instead of PostgreSQL ("" = not)
    rate_redis_url: str = ""
    # prefix of the Redis keys (one hash per carrier: PREFIXrate:CARRIER)
    rate_redis_prefix: str = "tikosms:"

    # --- inbound SMS (MO) ---
    # parts of a concatenated MO still incomplete after this are dropped, with a log line
    # (seconds; the handset's SMSC retries a lost part for far less than a day)
    inbound_fragment_expiry_seconds: float = Field(default=24 * 3600.0, gt=0)

    # --- simulated carrier (used when no SMPP carrier is configured) ---
    sim_receipt_delay_ms: int = 200  # milliseconds from submit to the receipt
    sim_undeliv_ratio: float = Field(default=0.0, ge=0, le=1)  # share of UNDELIV receipts
    sim_reject_ratio: float = Field(default=0.0, ge=0, le=1)  # share of REJECTD receipts

    # --- callbacks ---
    # allow callback URLs whose host is loopback/private (development and tests only)
    callback_allow_private: bool = False
    callback_timeout_seconds: float = 10.0
    callback_concurrency: int = Field(default=64, ge=1, le=1000)
    # posts in flight at once to one host (scheme, host, port), and for one account; 0 takes a
    # share of callback_concurrency (a quarter per host, a half per account), so that one slow
    # endpoint leaves the other posters to everyone else
    callback_concurrency_per_host: int = Field(default=0, ge=0, le=1000)
    callback_concurrency_per_account: int = Field(default=0, ge=0, le=1000)
    # first retry delay (seconds); doubles per attempt up to an hour; given up after 36 hours
    callback_retry_initial_seconds: float = Field(default=5.0, gt=0)
    # `tikosms worker --only callbacks` looks for due callbacks this often when idle (no worker
    # in its process wakes it)
    callback_poll_seconds: float = Field(default=0.2, gt=0, le=60)

    # --- customers over SMPP (tikosms.smpp_server) ---
    # `tikosms serve` runs the SMPP server for customers too (false: HTTP only)
    smpp_enabled: bool = True
    # port of the SMPP server (`tikosms serve`, `tikosms smpp-server`); 0: any free port
    smpp_port: int = Field(default=2775, ge=0, le=65535)
    # address it listens on; "" = the same as `host`
    smpp_host: str = ""
    # seconds without a PDU from a customer before the server sends enquire_link; 0: never
    smpp_enquire_link_seconds: float = Field(default=30.0, ge=0)
    # seconds a customer has to answer a deliver_sm or enquire_link
    smpp_response_timeout_seconds: float = Field(default=10.0, gt=0)
    # seconds between two looks for due receipts and MO when nothing wakes the server
    smpp_outbox_poll_seconds: float = Field(default=0.2, gt=0, le=60)

    # --- operator console (/admin) ---
    console_session_hours: float = Field(default=12.0, gt=0)  # hours a login lasts
    # failed logins allowed per operator name / per client IP within the window (seconds)
    console_login_failures_per_user: int = Field(default=5, ge=1)
    console_login_failures_per_ip: int = Field(default=20, ge=1)
    console_login_window_seconds: float = Field(default=900.0, gt=0)
    # cookies marked Secure: "auto" (when the request came over https, X-Forwarded-Proto
    # included), "always" or "never"
    console_cookie_secure: str = "auto"
    # seconds between runs of the traffic roll-up (started by `serve` and `worker`); 0: off
    console_rollup_seconds: float = Field(default=10.0, ge=0)
    # --- observability (metrics, health) ---
    # directory the processes of one command count their metrics into, emptied at start
    # (prometheus-client multiprocess mode); "" = a fresh temporary directory per command
    metrics_dir: str = ""
    # seconds the database figures of /metrics (queue depth, parts, callbacks) are reused
    metrics_database_seconds: float = Field(default=5.0, ge=0, le=3600)
    # port `tikosms worker` answers /healthz, /readyz and /metrics on (on `host`); 0 = none
    worker_health_port: int = Field(default=0, ge=0, le=65535)
    # seconds between a worker process's heartbeats (its row in worker_heartbeats: alive, the
    # bind states of its carriers); a worker is fresh while seen within
    # `worker_heartbeat_missed` periods (15 s by default), its row pruned after 60 periods
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0, le=300)
    worker_heartbeat_missed: int = Field(default=3, ge=1, le=100)
    # /readyz of the API processes asks for a fresh worker heartbeat and every enabled carrier
    # bound by a fresh worker; false: the database alone (an API deployed without workers)
    readyz_require_workers: bool = True

    # log format: "text" (key=value) or "json". Logs name parts, messages, campaigns and
    # carriers by id; phone numbers and message text are never logged.
    log_format: str = "text"
    log_level: str = "INFO"
    # one access line per HTTP request (logger tikosms.access); off saves ~5% CPU per send
    access_log: bool = True

    # --- API hardening (issue 9, api) ---
    # debugging only: let SQL errors carry their parameters (phone numbers, text) into logs
    log_sensitive: bool = False
    # streamed reads (get_message by campaign, get_messages unpaged) open at once per account,
    # per process; one more is a 429 with Retry-After
    max_streams_per_account: int = Field(default=4, ge=1, le=1000)
    # rows read per page by a streamed read; the connection is released between pages
    stream_page_rows: int = Field(default=1000, ge=10, le=100_000)
    # parts one send request may create (recipients x parts per message); more is a 422
    max_parts_per_request: int = Field(default=500_000, ge=1)
    # bytes of request line + headers uvicorn accepts (h11); larger is refused by the server
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
