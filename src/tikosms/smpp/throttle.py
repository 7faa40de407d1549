"""An adaptive token bucket: the carrier's agreed rate, lowered when the SMSC says "throttled".

One bucket per carrier, shared by all its binds, one token per part (not per message). On
ESME_RTHROTTLED / ESME_RMSGQFUL the rate is halved (at most once a second: the window's worth of
submits in flight all come back throttled together), then grows back by 10 % a second without a
throttle, up to the configured limit. A carrier without a configured limit is unlimited until
its first throttle, then starts from half the rate it was actually sending at, and becomes
unlimited again after `recovery_time` seconds without a throttle.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

HALVE_COOLDOWN = 1.0  # seconds between two halvings
GROWTH_PER_SECOND = 0.10  # fraction of the current rate regained per second without throttle


class TokenBucket:
    def __init__(
        self,
        limit: float | None,
        *,
        min_rate: float = 1.0,
        recovery_time: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit  # parts per second agreed with the carrier; None: none
        self.min_rate = min_rate if limit is None else min(min_rate, limit)
        self.recovery_time = recovery_time
        self._clock = clock
        self._rate: float | None = limit
        now = clock()
        self._tokens = self._capacity()
        self._updated = now
        self._last_throttle: float | None = None
        self._adapted = now  # when the rate last grew back
        self._recent: deque[float] = deque()  # acquisition times within the last second
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float | None:
        """The rate in force now (parts per second); None: not limited."""
        self._adapt(self._clock())
        return self._rate

    async def acquire(self) -> None:
        """Wait for one token. Waiters are served in order (one sleeps at a time)."""
        if not self._lock.locked() and self.try_acquire() == 0.0:
            return  # nobody waits and a token is there: no lock to take (the usual case)
        async with self._lock:
            while True:
                delay = self.try_acquire()
                if delay == 0.0:
                    return
                await asyncio.sleep(delay)

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or return the seconds until one is due."""
        now = self._clock()
        self._adapt(now)
        self._note(now)
        if self._rate is None:
            return 0.0
        self._tokens = min(self._capacity(), self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        self._recent.pop()  # not taken after all
        return (1.0 - self._tokens) / self._rate

    def on_throttled(self) -> None:
        """The SMSC answered ESME_RTHROTTLED or ESME_RMSGQFUL: slow down."""
        now = self._clock()
        if self._last_throttle is not None and now - self._last_throttle < HALVE_COOLDOWN:
            return
        self._adapt(now)
        current = self._rate if self._rate is not None else max(len(self._recent), self.min_rate)
        self._rate = max(self.min_rate, current / 2)
        self._tokens = min(self._tokens, 1.0)
        self._updated = now
        self._last_throttle = now
        self._adapted = now

    def _adapt(self, now: float) -> None:
        if self._last_throttle is None or self._rate is None:
            return
        quiet = now - self._last_throttle
        if quiet < HALVE_COOLDOWN:
            return
        if self.limit is None and quiet >= self.recovery_time:
            self._rate = None
            self._last_throttle = None
            return
        since = max(self._adapted, self._last_throttle + HALVE_COOLDOWN)
        grown = self._rate * (1 + GROWTH_PER_SECOND) ** max(0.0, now - since)
        self._adapted = now
        self._rate = grown if self.limit is None else min(self.limit, grown)
        if self.limit is not None and self._rate >= self.limit:
            self._last_throttle = None

    def _note(self, now: float) -> None:
        self._recent.append(now)
        while self._recent and now - self._recent[0] > 1.0:
            self._recent.popleft()

    def _capacity(self) -> float:
        # A burst of a tenth of a second's worth (at least one token): smooth, not bursty.
        return max(1.0, (self._rate or 0.0) / 10)
