"""The adaptive token bucket, on a fake clock."""

from __future__ import annotations

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


def test_throttle_halves_the_rate_once_per_second() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, clock=clock)
    bucket.on_throttled()
    bucket.on_throttled()  # the rest of the window coming back throttled: no further halving
    assert bucket.rate == 50.0
    clock.now += 1.0
    bucket.on_throttled()
    assert bucket.rate == pytest.approx(25.0)


def test_rate_grows_back_to_the_limit() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, clock=clock)
    bucket.on_throttled()
    clock.now += 3.0
    assert 50.0 < (bucket.rate or 0) < 100.0
    clock.now += 60.0
    assert bucket.rate == 100.0


def test_unlimited_bucket_throttled_starts_from_what_it_sent() -> None:
    clock = Clock()
    bucket = TokenBucket(None, clock=clock, recovery_time=30.0)
    for _ in range(400):  # 400 parts within the last second
        bucket.try_acquire()
    bucket.on_throttled()
    assert bucket.rate == pytest.approx(200.0)
    clock.now += 31.0
    assert bucket.rate is None  # unlimited again after a quiet period


def test_never_below_min_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(4.0, clock=clock, min_rate=1.0)
    for _ in range(5):
        bucket.on_throttled()
        clock.now += 1.0
        bucket.on_throttled()
    assert (bucket.rate or 0) >= 1.0
