"""A token bucket per SMPP user: `rate` submit_sm a second on average, `burst` at once.

Unlike a minimum gap between two submits (Jasmin's `smpps_throughput`, which refuses any
submit closer than 1/TPS to the one before), a client that sends ten submit_sm at once within
its rate is served: only a client that goes on above the rate for longer than its burst allows
gets ESME_RTHROTTLED.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Bucket:
    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> bool:
        """One token if there is one (True), else False: the caller refuses the submit."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
