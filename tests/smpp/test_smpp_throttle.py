"""The adaptive token bucket, on a fake clock, against model SMSCs (tables of scenarios)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from tikosms.smpp.throttle import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def take_all(bucket: TokenBucket) -> int:
    taken = 0
    while bucket.try_acquire() == 0.0:
        taken += 1
    return taken


@dataclass
class Run:
    submits: int = 0
    refused: int = 0
    accepted_late: int = 0  # accepted in the measured (last) part of the run
    seconds_late: float = 0.0


def run_against(
    bucket: TokenBucket,
    clock: Clock,
    *,
    limit: float | None,
    ratio: float,
    seconds: float,
    offered: float = 5000.0,
    measure_from: float = 5.0,
) -> Run:
    """The gateway offering `offered` parts/s through the bucket to an SMSC with a fixed
    one-second window of `limit` submits and a rate-independent refusal share `ratio`."""
    rng = random.Random(7)
    step = 1.0 / offered
    start = clock.now
    window_start, window_count = start, 0
    run = Run()
    while clock.now - start < seconds:
        clock.now += step
        if bucket.try_acquire() != 0.0:
            continue
        run.submits += 1
        if clock.now - window_start >= 1.0:
            window_start, window_count = clock.now, 0
        throttled = False
        if limit is not None:
            if window_count >= limit:
                throttled = True
            else:
                window_count += 1
        if not throttled and rng.random() < ratio:
            throttled = True
        bucket.on_result(throttled)
        run.refused += throttled
        if clock.now - start >= measure_from and not throttled:
            run.accepted_late += 1
    run.seconds_late = seconds - measure_from
    return run


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(None, clock=Clock())
    assert all(bucket.try_acquire() == 0.0 for _ in range(10_000))


def test_limit_is_kept_over_a_second() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, clock=clock)
    taken = take_all(bucket)  # the burst: a tenth of a second's worth
    for _ in range(100):
        clock.now += 0.01
        taken += take_all(bucket)
    assert 100 <= taken <= 110


def test_waiting_time_is_reported() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock=clock)
    take_all(bucket)
    assert bucket.try_acquire() == pytest.approx(0.1)


def test_first_refusal_sets_the_rate_to_what_was_accepted() -> None:
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    for _ in range(200):
        clock.now += 0.0005
        bucket.on_result(False)
    for _ in range(100):  # the rest of the window comes back refused
        clock.now += 0.0005
        bucket.on_result(True)
    assert bucket.rate == pytest.approx(200.0 * 0.97)


@pytest.mark.parametrize(
    ("limit", "ratio", "min_share", "max_refused"),
    [
        (200, 0.0, 0.90, 0.05),  # a plain rate limit
        (1000, 0.0, 0.90, 0.05),
        (50, 0.0, 0.90, 0.05),
        # a rate limit plus congestion: the rate is what is allowed, refusals ~ the ratio
        (200, 0.10, 0.85, 0.16),
    ],
)
def test_converges_on_an_unknown_rate_limit(
    limit: float, ratio: float, min_share: float, max_refused: float
) -> None:
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    run = run_against(bucket, clock, limit=limit, ratio=ratio, seconds=30)
    achieved = run.accepted_late / run.seconds_late
    assert achieved >= min_share * limit * (1 - ratio)
    assert run.refused / run.submits < max_refused


@pytest.mark.parametrize("ratio", [0.05, 0.10, 0.20])
def test_rate_independent_refusals_do_not_collapse_the_rate(ratio: float) -> None:
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    run = run_against(bucket, clock, limit=None, ratio=ratio, seconds=30, offered=2000)
    achieved = run.accepted_late / run.seconds_late
    assert achieved >= 0.8 * 2000 * (1 - ratio)
    assert bucket.baseline == pytest.approx(ratio, abs=0.05)


def test_rate_independent_refusals_under_a_configured_limit() -> None:
    clock = Clock()
    bucket = TokenBucket(300.0, clock=clock)
    run = run_against(bucket, clock, limit=None, ratio=0.10, seconds=20)
    assert run.accepted_late / run.seconds_late >= 0.8 * 300 * 0.9
    assert bucket.rate is not None and bucket.rate >= 250


def test_configured_limit_is_never_passed_by_probing() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, clock=clock)
    run_against(bucket, clock, limit=None, ratio=0.0, seconds=10)
    assert bucket.rate == 100.0


def test_a_limit_met_later_is_still_found() -> None:
    """Congestion first (learned as the baseline), then the SMSC starts limiting."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    run_against(bucket, clock, limit=None, ratio=0.10, seconds=10, offered=2000)
    run = run_against(bucket, clock, limit=300, ratio=0.10, seconds=20, offered=2000)
    achieved = run.accepted_late / run.seconds_late
    assert achieved >= 0.85 * 300 * 0.9
