"""When to try a failed callback again, and when to give up.

Exponential backoff with a cap and jitter. With the defaults the waits are about 5 s, 10 s,
20 s, ... 43 min, then an hour each, and a callback is abandoned once the next attempt would
fall more than 36 hours after the first one: at least 24 hours of attempts (the API's promise),
about 45 of them, and roughly one a hour at the end so that a receiver that comes back after
a day's outage still gets its reports within the hour.

Jitter spreads the retries of many callbacks that failed together (a receiver's outage) so
that they do not all come back at the same second.

The policy is pure: `next_attempt_at` takes the clock and the random source as arguments.
Tests use `RetryPolicy.for_tests()`, whose waits are milliseconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


class RandomSource(Protocol):
    """What the policy needs from a random generator: the `random` module or a `Random`."""

    def uniform(self, a: float, b: float, /) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: float = 5.0  # seconds before the second attempt
    factor: float = 2.0  # each wait is this many times the previous one...
    max_delay: float = 3600.0  # ...up to this many seconds
    give_up_after: float = 86400 * 1.5  # seconds after the first attempt; at least 24 h in use
    jitter: float = 0.1  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]

    def __post_init__(self) -> None:
        if self.initial <= 0:
            raise ValueError("initial must be positive")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if self.max_delay < self.initial:
            raise ValueError("max_delay must be at least initial")
        if self.give_up_after < 0:
            raise ValueError("give_up_after must not be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    @classmethod
    def for_tests(cls, give_up_after: float = 1.0) -> RetryPolicy:
        """Millisecond waits and no jitter, so that a test sees several retries quickly."""
        return cls(initial=0.01, factor=2.0, max_delay=0.05, give_up_after=give_up_after, jitter=0)

    def next_attempt_at(
        self,
        first_attempt_at: datetime,
        attempts_made: int,
        now: datetime,
        rng: RandomSource = random,
    ) -> datetime | None:
        """When to make the next attempt after `attempts_made` failed ones; None: give up.

        The wait is counted from `now` (when the last attempt failed), so a slow attempt (a
        10 s timeout) does not eat into the wait. With no attempt made yet the answer is `now`.
        """
        if attempts_made < 0:
            raise ValueError("attempts_made must not be negative")
        if attempts_made == 0:
            return now
        scale = rng.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else 1.0
        due = now + timedelta(seconds=self.base_delay(attempts_made) * scale)
        if due - first_attempt_at > timedelta(seconds=self.give_up_after):
            return None
        return due

    def base_delay(self, attempts_made: int) -> float:
        """The wait after `attempts_made` (>= 1) failed attempts, in seconds, before jitter."""
        if attempts_made < 1:
            raise ValueError("attempts_made must be at least 1")
        growth_steps = attempts_made - 1
        if self.factor > 1:
            # Past this many steps the cap holds; stopping there avoids an overflowing power.
            steps_to_cap = math.ceil(math.log(self.max_delay / self.initial, self.factor))
            growth_steps = min(growth_steps, steps_to_cap)
        return min(self.initial * self.factor**growth_steps, self.max_delay)
