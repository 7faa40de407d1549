"""The Prometheus series, their multiprocess set-up, and the `/metrics` text.

Several processes (`tikosms api --processes N`, `tikosms worker`) each count into files in one
directory (prometheus-client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR): a scrape of any of
them adds up every process of its command. The CLI makes the directory, empties it at start
(files of dead pids are never removed by the library) and marks exited processes dead.

Labels are bounded: carrier names, statuses, priorities, route templates. Accounts, numbers and
MCC/MNC belong in SQL roll-ups, never in labels. Queue depth, parts by status and callbacks
pending/failed are read from the database at scrape time (`database.py`), so they are right
whichever process is scraped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import OrderedDict
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # `*_created` samples double the text and no dashboard reads them

# seconds; SMPP answers in ms, receipts in seconds to hours (a phone switched off)
_SUBMIT_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
_RECEIPT_BUCKETS = (.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
_HTTP_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10)
_CALLBACK_BUCKETS = (.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter("tikosms_http_requests_total", "HTTP requests answered",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("tikosms_http_request_duration_seconds",
                          "Time to answer an HTTP request", ["method", "route"],
                          buckets=_HTTP_BUCKETS)
SUBMITS = Counter("tikosms_submits_total",
                  "Parts submitted to a carrier, by the outcome of the submit",
                  ["carrier", "result"])  # result: accepted | rejected | retry | failover
SUBMIT_LATENCY = Histogram("tikosms_submit_response_seconds",
                           "Time from submit_sm to its response, per carrier", ["carrier"],
                           buckets=_SUBMIT_BUCKETS)
THROTTLED = Counter("tikosms_throttled_total",
                    "Submits refused by the carrier as throttling (ESME_RTHROTTLED, "
                    "ESME_RMSGQFUL)", ["carrier"])
RECEIPTS = Counter("tikosms_receipts_total", "Delivery receipts received, by state",
                   ["carrier", "status"])
RECEIPT_LATENCY = Histogram("tikosms_submit_to_receipt_seconds",
                            "Time from a carrier's accept to its final receipt (parts "
                            "submitted by this process)", ["carrier"], buckets=_RECEIPT_BUCKETS)
CALLBACKS = Counter("tikosms_callback_attempts_total", "Callback POSTs, by what followed",
                    ["state"])  # delivered | pending (retried later) | failed (given up)
CALLBACK_DURATION = Histogram("tikosms_callback_attempt_seconds",
                              "Time a callback POST took", buckets=_CALLBACK_BUCKETS)
CALLBACK_LATENCY = Histogram("tikosms_callback_delivery_seconds",
                             "Time from the status change to the callback delivered",
                             buckets=_RECEIPT_BUCKETS)
SEND_BATCH = Histogram("tikosms_send_batch_size",
                       "Single sends written per transaction (the send writer's group commit; "
                       "a trickle lingers TIKOSMS_SEND_LINGER_SECONDS to make them larger)",
                       buckets=(1, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256))
SHARED_RATE = Gauge("tikosms_carrier_shared_rate_per_second",
                    "The rate in force for the whole fleet per carrier (the carrier's tps or the "
                    "rate found by the throttling), as this process sees it; store: postgresql | "
                    "redis, and alone=1 while the store is down (this process at its share)",
                    ["carrier", "store", "alone"], multiprocess_mode="max")
HTTP_IN_FLIGHT = Gauge("tikosms_http_requests_in_flight", "HTTP requests being answered",
                       multiprocess_mode="livesum")

CALLBACK_YIELD_RATE = Gauge("tikosms_callback_yield_rate",
                            "Callback chains a second a process lets start while its callbacks "
                            "yield to its delivery (parts waiting, event loop busy); 0: no "
                            "limit (summed over the live processes)", multiprocess_mode="livesum")

SLOTS_HELD = Gauge("tikosms_carrier_slots_held", "Bind slots of a carrier this process holds "
                   "(summed over the live processes: the carrier's binds in use)", ["carrier"],
                   multiprocess_mode="livesum")

_THROTTLE_CODES = frozenset({"0x00000058", "0x00000014"})  # ESME_RTHROTTLED, ESME_RMSGQFUL
_FINAL_RECEIPTS = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})
# submit times of accepted parts awaiting their receipt: (carrier, message id) -> monotonic s.
# Bounded: the oldest are forgotten (their receipt latency is then not observed).
_AWAITING: OrderedDict[tuple[str, str], float] = OrderedDict()
AWAITING_MAX = 200_000


# --- set-up -------------------------------------------------------------------------------
def prepare_multiprocess_dir(path: str | None) -> str:
    """Make (or empty) the directory the processes of this command count into, and point
    PROMETHEUS_MULTIPROC_DIR at it. Called by the CLI before any metric is created; its
    child processes inherit the variable. `path` None: a fresh temporary directory."""
    if path:
        if os.path.isdir(path):
            for name in os.listdir(path):
                if name.endswith(".db"):
                    os.unlink(os.path.join(path, name))
        else:
            os.makedirs(path, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="tikosms-metrics-")
    os.environ[MULTIPROC_ENV] = path
    _use_files()
    return path


def remove_multiprocess_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int | None = None) -> None:
    """Drop the live gauges of a process that has exited (called by a process on its way out;
    a killed one is found by `_reap_dead()` at the next scrape)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid or os.getpid())


def _use_files() -> None:
    """prometheus-client picks file-backed values when it is imported; if it was imported
    before the directory was set (tests, an embedding program), switch now."""
    from prometheus_client import values
    from prometheus_client.metrics import MetricWrapperBase

    if values.ValueClass.__name__ != "MmapedValue":
        values.ValueClass = values.MultiProcessValue()
        # a series without labels made its value when this module was imported, in memory:
        # made anew in the files, or a scrape (which reads only the files) never shows it
        for metric in list(globals().values()):
            if isinstance(metric, MetricWrapperBase) and not metric._labelnames:
                metric._metric_init()


# --- the hooks the delivery side calls (one line each) ---------------------------------------
async def timed_submit(router: Any, part: Any) -> Any:
    """`router.submit(part)`, counted: the outcome per carrier, the time to the carrier's
    answer, throttling refusals; an accepted part's submit time is kept for its receipt."""
    started = time.monotonic()
    carrier, outcome = await router.submit(part)
    if carrier is not None:
        elapsed = time.monotonic() - started
        result = outcome.result.value
        SUBMITS.labels(carrier, result).inc()
        SUBMIT_LATENCY.labels(carrier).observe(elapsed)
        if outcome.error_code in _THROTTLE_CODES:
            THROTTLED.labels(carrier).inc()
        if outcome.carrier_message_id is not None and result == "accepted":
            _AWAITING[(carrier, outcome.carrier_message_id)] = started + elapsed
            if len(_AWAITING) > AWAITING_MAX:
                _AWAITING.popitem(last=False)
    return carrier, outcome


def shared_rates(rates: Any) -> None:
    """The fleet's rate per carrier (tikosms.smpp.shared_rate.SharedRates), every 0.25 s."""
    for name, limiter in rates.limiters.items():
        alone = limiter.down_since is not None
        SHARED_RATE.labels(name, rates.store.name, "1" if alone else "0").set(limiter.rate)
        SHARED_RATE.labels(name, rates.store.name, "0" if alone else "1").set(0)


def receipt_received(receipt: Any) -> None:
    """Count a carrier's receipt; a final one for a part this process submitted gives its
    submit-to-receipt time."""
    carrier = receipt.carrier or "unknown"
    RECEIPTS.labels(carrier, receipt.status).inc()
    if receipt.status in _FINAL_RECEIPTS:
        sent = _AWAITING.pop((carrier, receipt.carrier_message_id), None)
        if sent is not None:
            RECEIPT_LATENCY.labels(carrier).observe(time.monotonic() - sent)


def callback_attempted(state: str, duration_ms: float, created_at: Any, now: Any) -> None:
    """One callback POST done: `state` is what follows (delivered, pending, failed)."""
    CALLBACKS.labels(state).inc()
    CALLBACK_DURATION.observe(duration_ms / 1000)
    if state == "delivered":
        CALLBACK_LATENCY.observe(max(0.0, (now - created_at).total_seconds()))


def callback_yield_rate(rate: float) -> None:
    CALLBACK_YIELD_RATE.set(rate)


# --- rendering ---------------------------------------------------------------------------
def render(extra: list[Any] | None = None) -> bytes:
    """The Prometheus text: every process of this command (multiprocess mode) or this one,
    plus `extra` collectors (the database figures, this process's binds)."""
    registry = CollectorRegistry()
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        _reap_dead(path)
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY  # type: ignore[assignment]
    text = generate_latest(registry)
    if extra:
        own = CollectorRegistry(auto_describe=False)
        for collector in extra:
            own.register(collector)
        text += generate_latest(own)
    return text


def _reap_dead(path: str) -> None:
    """Live gauges of a process killed without saying so (SIGKILL, OOM) stay in their files
    until marked dead: find the pids in the file names that no longer run."""
    for name in os.listdir(path):
        if not name.startswith("gauge_live"):
            continue
        try:
            pid = int(name.rsplit("_", 1)[1].split(".")[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _running(pid):
            multiprocess.mark_process_dead(pid, path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slots_held(carrier: str, held: int) -> None:
    """The bind slots of `carrier` this process holds now (delivery.slots)."""
    SLOTS_HELD.labels(carrier).set(held)
