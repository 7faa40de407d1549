"""The adaptive token bucket, on a fake clock, against model SMSCs (tables of scenarios)."""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass

import pytest

from tikosms.smpp.throttle import (
    BACK_OFF,
    IN_A_ROW,
    MARGIN,
    SEARCH_RATE,
    SS_GAIN,
    SS_INITIAL,
    TokenBucket,
)


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


def test_unlimited_bucket_starts_slowly() -> None:
    """No limit configured: not a window's worth at once (all refused by a limited SMSC),
    a slow start."""
    bucket = TokenBucket(None, clock=Clock())
    assert bucket.slow_start
    assert take_all(bucket) == int(SS_INITIAL / 10)


def test_slow_start_doubles_while_the_bucket_holds_senders_back() -> None:
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    for _ in range(100):  # a quarter of a second of answers, all accepted, senders waiting
        clock.now += 0.0025
        take_all(bucket)
        bucket.on_result(False)
    assert bucket.rate == pytest.approx(2 * SS_INITIAL + 100 * SS_GAIN - SS_INITIAL)


def test_slow_start_does_not_grow_a_rate_nobody_uses() -> None:
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    for _ in range(200):  # 10 parts a second offered: the bucket never holds anyone back
        clock.now += 0.1
        assert bucket.try_acquire() == 0.0
        bucket.on_result(False)
    assert bucket.rate == SS_INITIAL


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


def test_a_run_of_refusals_is_searched_and_the_limit_read_when_accepted_again() -> None:
    """A per-second SMSC full: a slow search until it accepts again, then the rate is what
    it accepted over the second before."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    for _ in range(200):  # its second: 200 accepted over 0.4 s
        clock.now += 0.002
        bucket.on_result(False)
    for _ in range(IN_A_ROW):  # then refused
        clock.now += 0.002
        bucket.on_result(True)
    assert bucket.rate <= SEARCH_RATE  # sending slowly through the run
    clock.now += 0.6  # its second is over: accepted again
    bucket.on_result(False)
    assert not bucket.slow_start
    assert bucket.rate == pytest.approx(200.0, rel=0.02)


def test_a_rise_of_the_share_of_refusals_is_measured() -> None:
    """A token-bucket SMSC refuses among acceptances: what it accepts while the rate is
    held is its rate."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    for _ in range(300):  # accepted while the rate grew, under the SMSC's rate (80/s)
        clock.now += 0.0125
        bucket.on_result(False)
    # 400 answers a second, 100 accepted a second: every fourth accepted
    for i in range(200):
        clock.now += 0.0025
        bucket.on_result(i % 4 != 0)
    assert not bucket.slow_start
    assert bucket.rate == pytest.approx(100.0 * MARGIN, rel=0.1)


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


class ModelSmsc:
    """An SMSC's rate limit, counted as real ones count it, plus a rate-independent share."""

    def __init__(self, shape: str, limit: float, ratio: float) -> None:
        self.shape, self.limit, self.ratio = shape, limit, ratio
        self.rng = random.Random(3)
        self.window = (-1.0, 0)  # "fixed": (start, count)
        self.accepted: deque[float] = deque()  # "sliding": times of the last second's
        self.tokens, self.updated = max(1.0, limit / 10), 0.0  # "bucket"

    def throttled(self, now: float) -> bool:
        if self.shape == "fixed":
            start, count = self.window
            if now - start >= 1.0:
                start, count = now, 0
            if count >= self.limit:
                return True
            self.window = (start, count + 1)
        elif self.shape == "sliding":
            while self.accepted and now - self.accepted[0] >= 1.0:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit:
                return True
            self.accepted.append(now)
        else:
            capacity = max(1.0, self.limit / 10)
            self.tokens = min(capacity, self.tokens + (now - self.updated) * self.limit)
            self.updated = now
            if self.tokens < 1.0:
                return True
            self.tokens -= 1.0
        return self.rng.random() < self.ratio


def run_with_latency(
    smsc: ModelSmsc, *, seconds: float, latency: float, window: int = 100, senders: int = 200
) -> tuple[Run, TokenBucket]:
    """The connector as it is: `senders` parts waiting, at most `window` awaiting their answer
    (`latency` seconds later), a refused part submitted again 0.1 s later, no rate
    configured. Steps of 0.5 ms."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    start = clock.now
    ready, again, in_flight = senders, [], []  # heaps of times
    run = Run()
    while clock.now - start < seconds:
        clock.now += 0.0005
        now = clock.now
        while again and again[0] <= now:
            heapq.heappop(again)
            ready += 1
        while in_flight and in_flight[0][0] <= now:
            _, throttled = heapq.heappop(in_flight)
            bucket.on_result(throttled)
            if throttled:
                heapq.heappush(again, now + 0.1)
            else:
                ready += 1
        while ready and len(in_flight) < window and bucket.try_acquire() == 0.0:
            ready -= 1
            run.submits += 1
            throttled = smsc.throttled(now + latency / 2)
            run.refused += throttled
            if now - start >= 5.0 and not throttled:
                run.accepted_late += 1
            heapq.heappush(in_flight, (now + latency, throttled))
    run.seconds_late = seconds - 5.0
    return run, bucket


@pytest.mark.parametrize("shape", ["fixed", "sliding", "bucket"])
@pytest.mark.parametrize(
    ("limit", "ratio", "latency", "max_refused"),
    [
        (200, 0.0, 0.002, 0.03),  # the fault suite's case, loopback
        (200, 0.0, 0.030, 0.03),  # a carrier 30 ms away: more in flight
        (1000, 0.0, 0.002, 0.04),
        (50, 0.0, 0.002, 0.05),  # a limit at the initial rate of the slow start: the worst
        # a limit plus congestion: refusals about the ratio, the rate what is allowed
        (300, 0.10, 0.002, 0.10 + 0.05),
    ],
)
def test_converges_on_any_shape_of_rate_limit(
    shape: str, limit: float, ratio: float, latency: float, max_refused: float
) -> None:
    if (shape, limit) == ("bucket", 50):
        # a token bucket at the initial rate: 7-8 % refused over 15 s (in docs/reliability.md)
        max_refused = 0.09
    run, bucket = run_with_latency(ModelSmsc(shape, limit, ratio), seconds=15, latency=latency)
    achieved = run.accepted_late / run.seconds_late
    assert achieved >= 0.93 * limit * (1 - ratio)
    assert run.refused / run.submits < max_refused
    assert bucket.baseline == pytest.approx(ratio, abs=0.03)


def test_slow_start_reaches_a_fast_unlimited_smsc_quickly() -> None:
    """No limit at the SMSC: the cost of slow start is the ramp (about 1.7 s to 5,000/s)."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    run = run_against(bucket, clock, limit=None, ratio=0.0, seconds=2.0, offered=5000)
    assert bucket.slow_start
    assert bucket.rate >= 5000
    assert run.submits >= 1500  # of 10,000 at full speed from the first part


def test_never_more_than_the_rate_in_any_second_once_the_limit_is_found() -> None:
    """A sliding-second SMSC after slow start: the fast sends of the ramp are still in its
    second, so the bucket waits for them to leave ours."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    sent: deque[float] = deque()
    over = 0  # tokens granted with a second's worth already sent in the last second
    smsc = ModelSmsc("sliding", 200, 0.0)
    while clock.now < 1010.0:
        clock.now += 0.0005
        while sent and clock.now - sent[0] >= 1.0:
            sent.popleft()
        limited = not bucket.slow_start
        while bucket.try_acquire() == 0.0:
            over += limited and len(sent) >= bucket.rate
            sent.append(clock.now)
            bucket.on_result(smsc.throttled(clock.now))
    assert not bucket.slow_start
    assert over == 0


def test_a_back_off_takes_at_most_a_tenth_off_the_rate() -> None:
    """A pause of the event loop bunches submits: a second of many refusals and few answers
    says little about the SMSC's rate. Taken down a tenth, not to the 20/s it seemed to take."""
    clock = Clock()
    bucket = TokenBucket(300.0, clock=clock)
    for i in range(40):
        clock.now += 0.025
        bucket.on_result(i % 2 == 0)
    clock.now += 0.01
    assert bucket.rate == pytest.approx(300.0 * BACK_OFF)


def test_a_limit_estimated_low_is_found_again_within_seconds() -> None:
    """A fleet's estimate from counts that come in chunks may be half the limit: past the rate
    last refused the probing speeds up (it once crept up at 2 % a second, 105/s to 156/s in
    17 s against a limit of 200/s)."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    bucket.adopt(100.0, slow_start=False)  # the limit "found" at 100/s
    run = run_against(bucket, clock, limit=200, ratio=0.0, seconds=12, measure_from=9)
    assert run.accepted_late / run.seconds_late >= 0.85 * 200
    assert run.refused / run.submits < 0.05


def test_a_back_off_still_above_the_limit_is_not_taken_for_rate_independent_refusals() -> None:
    """At 340/s against 200/s, a tenth off still meets the limit and leaves the share of
    refusals about as it was; what the SMSC accepted did not change with the rate, so the
    refusals are the rate's: backed off again, not learned as a baseline of 35 % (which sent
    340/s into the limit for the rest of the run)."""
    clock = Clock()
    bucket = TokenBucket(None, clock=clock)
    bucket.adopt(340.0, slow_start=False)
    run = run_against(bucket, clock, limit=200, ratio=0.0, seconds=10, measure_from=6)
    assert bucket.baseline < 0.02
    assert bucket.rate <= 200 * 1.06
    assert run.accepted_late / run.seconds_late >= 0.9 * 200
