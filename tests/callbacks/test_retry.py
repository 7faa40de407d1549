import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tikosms.callbacks.retry import RetryPolicy

T0 = datetime(2025, 8, 11, 13, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


class Fixed:
    """A random source that always answers the same point of the range (0 low, 1 high)."""

    def __init__(self, position: float) -> None:
        self.position = position

    def uniform(self, a: float, b: float, /) -> float:
        return a + (b - a) * self.position


def attempt_times(policy: RetryPolicy, rng: Fixed | random.Random) -> list[datetime]:
    """When each attempt happens if every one fails at once (the first at T0)."""
    times = [T0]
    while (due := policy.next_attempt_at(T0, len(times), times[-1], rng)) is not None:
        times.append(due)
        assert len(times) < 10_000, "the policy never gives up"
    return times


def test_defaults_are_the_documented_ones() -> None:
    policy = RetryPolicy()
    assert (policy.initial, policy.factor, policy.max_delay, policy.jitter) == (5, 2, 3600, 0.1)
    assert policy.give_up_after == 36 * 3600


@pytest.mark.parametrize("position", [0.0, 0.5, 1.0])  # shortest, middle and longest jitter
def test_default_schedule_keeps_trying_for_at_least_24_hours(position: float) -> None:
    times = attempt_times(RetryPolicy(), Fixed(position))
    assert times[-1] - T0 >= DAY


@pytest.mark.parametrize("position", [0.0, 0.5, 1.0])
def test_default_schedule_gives_up_by_give_up_after(position: float) -> None:
    policy = RetryPolicy()
    times = attempt_times(policy, Fixed(position))
    assert times[-1] - T0 <= timedelta(seconds=policy.give_up_after)


def test_default_schedule_makes_dozens_of_attempts_not_thousands() -> None:
    assert 35 <= len(attempt_times(RetryPolicy(), Fixed(0.5))) <= 60


def test_delays_double_then_cap_at_max_delay() -> None:
    policy = RetryPolicy()
    delays = [policy.base_delay(attempts) for attempts in range(1, 15)]
    assert delays[:11] == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert delays[11:] == [3600, 3600, 3600]


def test_delays_never_shrink() -> None:
    policy = RetryPolicy()
    delays = [policy.base_delay(attempts) for attempts in range(1, 100)]
    assert delays == sorted(delays)


def test_a_huge_attempt_count_does_not_overflow() -> None:
    assert RetryPolicy().base_delay(10**9) == 3600


def test_a_constant_factor_keeps_the_initial_delay() -> None:
    policy = RetryPolicy(initial=30, factor=1, max_delay=60)
    assert [policy.base_delay(attempts) for attempts in (1, 2, 50)] == [30, 30, 30]


def test_the_wait_counts_from_now_not_from_the_first_attempt() -> None:
    now = T0 + timedelta(minutes=7)
    assert RetryPolicy(jitter=0).next_attempt_at(T0, 3, now) == now + timedelta(seconds=20)


def test_no_attempt_made_yet_is_due_now() -> None:
    assert RetryPolicy().next_attempt_at(T0, 0, T0) == T0


def test_gives_up_when_the_next_attempt_would_be_too_late() -> None:
    policy = RetryPolicy(jitter=0, give_up_after=100)
    assert policy.next_attempt_at(T0, 1, T0 + timedelta(seconds=95)) == T0 + timedelta(
        seconds=100
    )  # exactly at the limit: still tried
    assert policy.next_attempt_at(T0, 1, T0 + timedelta(seconds=96)) is None


@given(
    attempts=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jitter_stays_within_its_bounds(attempts: int, seed: int) -> None:
    policy = RetryPolicy(give_up_after=10**9)
    due = policy.next_attempt_at(T0, attempts, T0, random.Random(seed))
    assert due is not None
    base = policy.base_delay(attempts)
    assert base * 0.9 <= (due - T0).total_seconds() <= base * 1.1


def test_jitter_spreads_callbacks_that_failed_together() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    dues = {policy.next_attempt_at(T0, 5, T0, rng) for _ in range(50)}
    assert len(dues) > 40


def test_the_default_random_source_is_used_when_none_is_given() -> None:
    due = RetryPolicy().next_attempt_at(T0, 1, T0)
    assert due is not None
    assert 4.5 <= (due - T0).total_seconds() <= 5.5


def test_for_tests_waits_milliseconds_and_still_gives_up() -> None:
    policy = RetryPolicy.for_tests()
    times = attempt_times(policy, random.Random(1))
    waits = [(later - earlier).total_seconds() for earlier, later in pairwise(times)]
    assert max(waits) <= 0.05
    assert 1 < len(times) < 100
    assert times[-1] - T0 <= timedelta(seconds=1)


def test_for_tests_takes_its_own_give_up_time() -> None:
    assert RetryPolicy.for_tests(give_up_after=0.1).give_up_after == 0.1


@pytest.mark.parametrize(
    "settings",
    [
        {"initial": 0},  # no wait at all
        {"factor": 0.5},  # shrinking waits
        {"max_delay": 1},  # cap below the first wait
        {"give_up_after": -1},  # negative
        {"jitter": 1},  # could make a wait zero
        {"jitter": -0.1},  # negative
    ],
)
def test_nonsensical_policies_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**settings)


def test_negative_attempt_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().next_attempt_at(T0, -1, T0)
