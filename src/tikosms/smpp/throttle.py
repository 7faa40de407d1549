"""A token bucket whose rate converges on what the SMSC accepts, without being told the rate.

One bucket per carrier, shared by all its binds, one token per part (not per message). The
connector reports every submit's answer (`on_result`): throttled (ESME_RTHROTTLED /
ESME_RMSGQFUL) or not. Once a second (`PERIOD`) the controller looks at the answers of the
last period:

- no refusals beyond the *baseline share* (below): probe upward gently, `PROBE` a period;
- more refusals than that: back off to the rate the SMSC actually *accepted* over the period
  (scaled up by the baseline share), not to half: an SMSC with a limit of 200/s accepted 200
  in the last second, so 200/s is where to go, not 100/s;
- if the previous period was a back-off and the lower rate did not lower the share of
  refusals, the refusals are not about rate (congestion, per-destination throttles): that share
  becomes the baseline, the rate goes back to where it was before the back-off, and the
  refused parts are simply retried (by the connector). A rate limit met later still shows as
  refusals above the baseline.

A carrier without a configured limit (`limit` None) is unlimited until its first refusal; the
first reaction is immediate (not at the end of the period): the rate becomes what was accepted
over the last second. A configured `limit` is a ceiling the probing never passes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

PERIOD = 1.0  # seconds between two decisions of the controller
PROBE = 0.02  # fraction of the rate added per clean period
TOLERANCE = 0.01  # share of refusals above the baseline still taken as "clean"
MARGIN = 0.97  # a back-off goes a little below the measured accepted rate (jitter at the edge)
MIN_SAMPLES = 20  # answers needed in a period to judge it
FIRST_REFUSALS = 15  # refusals, and
FIRST_SHARE = 0.3  # share of the last second's answers, that make an unlimited bucket react
IN_A_ROW = 10  # refusals in a row that also make an unlimited bucket react at once
NOT_HELPED = 0.7  # a back-off "helped" when the share fell below this fraction of the last one
NOT_HELPED_REFUSALS = 10  # refusals in the period needed for that verdict (not noise)


class TokenBucket:
    def __init__(
        self,
        limit: float | None,
        *,
        min_rate: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit  # parts per second agreed with the carrier; None: none
        self.min_rate = min_rate if limit is None else min(min_rate, limit)
        self._clock = clock
        self._rate: float | None = limit
        now = clock()
        self._tokens = self._capacity()
        self._updated = now
        self._lock = asyncio.Lock()
        # answers of the last PERIOD: (time, throttled)
        self._answers: deque[tuple[float, bool]] = deque()
        self._period_start = now
        self._period_sent = 0
        self._period_throttled = 0
        self._settling = False  # the current period follows a back-off: not judged
        self._in_a_row = 0  # refusals in a row
        self.baseline = 0.0  # share of refusals that does not depend on the rate
        self._backed_off: tuple[float, float] | None = None  # (rate before, share)
        self.decisions: list[tuple[float, str, float | None]] = []  # (time, what, rate): logs

    @property
    def rate(self) -> float | None:
        """The rate in force now (parts per second); None: not limited."""
        self._decide(self._clock())
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
        self._decide(now)
        if self._rate is None:
            return 0.0
        self._tokens = min(self._capacity(), self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def on_result(self, throttled: bool) -> None:
        """One submit answered: throttled (ESME_RTHROTTLED / ESME_RMSGQFUL) or not."""
        now = self._clock()
        self._answers.append((now, throttled))
        self._period_sent += 1
        self._in_a_row = self._in_a_row + 1 if throttled else 0
        if throttled:
            self._period_throttled += 1
            if self._rate is None and self._first_refusals_significant(now):
                self._first_refusal(now)
                return
        self._decide(now)

    def _first_refusals_significant(self, now: float) -> bool:
        """Unlimited so far: react at once (not at the period's end) when the last second
        holds at least FIRST_REFUSALS refusals making FIRST_SHARE of the answers, or after IN_A_ROW
        refusals in a row."""
        if self._in_a_row >= IN_A_ROW:
            return True  # a run of refusals: a rate limit (a random share rarely makes one)
        self._accepted_rate(now)  # drops answers older than a period
        refused = sum(1 for _, t in self._answers if t)
        share = self.baseline + FIRST_SHARE
        return refused >= FIRST_REFUSALS and refused >= share * len(self._answers)

    def on_throttled(self) -> None:
        """Kept for callers that only report refusals."""
        self.on_result(True)

    # -- the controller ---------------------------------------------------------------------

    def _accepted_rate(self, now: float) -> float:
        """Answers not throttled over the last PERIOD, per second."""
        answers = self._answers
        while answers and now - answers[0][0] > PERIOD:
            answers.popleft()
        if not answers:
            return self.min_rate
        accepted = sum(1 for _, throttled in answers if not throttled)
        return accepted / PERIOD

    def _first_refusal(self, now: float) -> None:
        accepted = self._accepted_rate(now)
        share = sum(1 for _, t in self._answers if t) / max(1, len(self._answers))
        sent = len(self._answers) / PERIOD
        self._set(max(self.min_rate, accepted * MARGIN), now, "first refusal")
        if self._answers and self._rate is not None:
            # What was accepted in the last second filled the SMSC's window: wait until the
            # oldest of it is a period old before the next token.
            wait = self._answers[0][0] + PERIOD - now
            self._tokens = min(self._tokens, 1.0 - wait * self._rate)
        # what was sent over the last second: where to return if the refusals prove not to
        # be about the rate
        self._backed_off = (max(accepted, sent), share)
        self._new_period(now, settle=True)

    def _decide(self, now: float) -> None:
        if now - self._period_start < PERIOD:
            return
        if self._settling:
            # The answers of the period after a change still include submits sent before it
            # (and an SMSC's current window was spent before it): not judged.
            self._new_period(now)
            return
        sent, throttled = self._period_sent, self._period_throttled
        if sent < MIN_SAMPLES and not (now - self._period_start >= 5 * PERIOD and sent >= 5):
            return  # too few answers to judge: the period goes on
        share = throttled / sent
        backed_off, self._backed_off = self._backed_off, None
        # the share's noise at this sample size (three standard deviations) is not a signal
        noise = 3 * math.sqrt(self.baseline * (1 - self.baseline) / sent)
        if share <= self.baseline + max(TOLERANCE, noise):
            if self._rate is not None:
                grown = self._rate * (1 + PROBE)
                self._set(grown if self.limit is None else min(self.limit, grown), now, "probe")
        elif (
            backed_off is not None
            and throttled >= NOT_HELPED_REFUSALS
            and share >= backed_off[1] * NOT_HELPED
        ):
            # Slowing down did not lower the share: those refusals are not about the rate.
            self.baseline = share
            self._set(backed_off[0], now, "rate-independent")
        else:
            accepted = self._accepted_rate(now) / max(0.05, 1.0 - self.baseline)
            if self._rate is not None:
                accepted = min(accepted, self._rate)
            # the rate before the first of back-offs in a row (None: unlimited)
            if backed_off is not None:
                before = backed_off[0]
            else:
                before = self._rate if self._rate is not None else sent / (now - self._period_start)
            self._backed_off = (before, share)
            self._set(max(self.min_rate, accepted * MARGIN), now, "back off")
            self._new_period(now, settle=True)
            return
        self._new_period(now)

    def _new_period(self, now: float, settle: bool = False) -> None:
        self._settling = settle
        self._period_start = now
        self._period_sent = 0
        self._period_throttled = 0

    def _set(self, rate: float | None, now: float, why: str) -> None:
        if rate is not None and self.limit is not None:
            rate = min(rate, self.limit)
        self._rate = rate
        self._tokens = min(self._tokens, self._capacity())
        self._updated = now
        self.decisions.append((now, why, rate))
        if len(self.decisions) > 100:
            del self.decisions[:50]

    def _capacity(self) -> float:
        # A burst of a tenth of a second's worth (at least one token): smooth, not bursty.
        return max(1.0, (self._rate or 0.0) / 10)
