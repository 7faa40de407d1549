"""Per-account request rate limit (token bucket, per process): 429 with Retry-After."""

from __future__ import annotations

import math
import time

from tikosms.errors import RateLimited


class AccountRateLimiter:
    def __init__(self, per_second: float, burst: float | None = None) -> None:
        self.rate = per_second
        self.burst = burst if burst is not None else max(1.0, per_second * 2)
        self._buckets: dict[int, tuple[float, float]] = {}

    def check(self, account_id: int) -> None:
        now = time.monotonic()
        tokens, last = self._buckets.get(account_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            wait = math.ceil((1 - tokens) / self.rate)
            self._buckets[account_id] = (tokens, now)
            raise RateLimited(
                f"Too many requests: at most {self.rate:g} per second. Retry after {wait} s.",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[account_id] = (tokens - 1, now)
