"""A token bucket whose rate converges on what the SMSC accepts, without being told the rate.

One bucket per carrier, shared by all its binds, one token per part (not per message). The
connector reports every submit's answer (`on_result`): throttled (ESME_RTHROTTLED /
ESME_RMSGQFUL) or not.

**Slow start** (no `limit` configured). The bucket starts at `SS_INITIAL` parts a second and,
while it is what holds the senders back, grows by `SS_GAIN` per answer: the rate doubles about
every quarter second, as TCP's slow start doubles its window every round trip. Sending at full
speed from the first part would put a whole window in flight before the first refusal comes
back, and an SMSC limiting to 200/s refuses all of it (that was 200 refusals in the first
quarter second, 7.5 % of a 2,800-submit run). Slow start ends at the first sign of a limit:

- `IN_A_ROW` refusals in a row (an SMSC counting per second, in fixed seconds or over a sliding
  one, refuses everything once its count is reached): the bucket sends slowly (`SEARCH_RATE`)
  until the SMSC accepts again, and its limit is what it accepted over the second before;
- or a share of refusals among the last `SS_RECENT` answers clearly above the share seen before
  them, or most of them refused (a token-bucket SMSC refuses among acceptances): the bucket
  sends a little above the rate it seems to accept for `MEASURE` seconds, and its limit is
  what it accepted meanwhile.

Refusals whose share stays the same while the rate grows are not about rate: that share is the
*baseline*, learned during slow start and kept afterwards.

**Then** no more than a second's worth is sent in any second (an SMSC counting over a sliding
second still holds what slow start sent faster), and once a second (`PERIOD`) the controller
judges the answers of the last period:

- no refusals beyond the baseline share: probe upward gently, `PROBE` a period, faster after
  several clean periods or well under the rate last refused (only when the bucket held senders
  back, and for a fleet its answers came at `USED` of the rate: a rate nobody uses is not
  raised); past the rate last refused, gently again, then
  faster up to `BEYOND` a period (a limit estimated low, or one that rose, is found again in
  seconds);
- more refusals than that: back off to the rate the SMSC actually *accepted* over the period
  (scaled up by the baseline share), not to half: an SMSC with a limit of 200/s accepted 200
  in the last second, so 200/s is where to go, not 100/s; at most `BACK_OFF` at the first, and
  at most halved for the next ones in a row (a second period of refusals confirms the first);
- if the previous period was a back-off and the lower rate did not lower the share of
  refusals, and the rate accepted fell with the rate sent (a rate limit accepts its limit
  whatever is sent: a back-off still above it leaves the share about where it was, but not
  the rate accepted), the refusals are not about rate (congestion, per-destination
  throttles): that share becomes the baseline, the rate goes back to where it was before
  the back-off, and the refused parts are simply retried (by the connector). A rate limit met
  later still shows as refusals above the baseline. That verdict waits for
  `NOT_HELPED_REFUSALS` refusals (several periods at a low rate) rather than backing off
  again on too few.

A configured `limit` is where the bucket starts (no slow start) and a ceiling the probing never
passes.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Callable

PERIOD = 1.0  # seconds between two decisions of the controller
PROBE = 0.02  # fraction of the rate added per clean period (the first three in a row)
MAX_PROBE = 0.25  # ... then doubling each period up to this (below the rate last refused)
BEYOND = 0.15  # ... and up to this past it, from the third clean period there (a limit that
# was estimated low, or has risen, is found again in a few seconds, not at 2 % a second)
TOLERANCE = 0.01  # share of refusals above the baseline still taken as "clean"
MARGIN = 0.97  # a back-off goes a little below the measured accepted rate (jitter at the edge)
BACK_OFF = 0.9  # ... but not below this fraction of the rate at once (the first back-off)
BACK_OFF_AGAIN = 0.5  # ... and this for the next ones in a row
MIN_SAMPLES = 20  # answers needed in a period to judge it
NOT_HELPED = 0.7  # a back-off "helped" when the share fell below this fraction of the last one
NOT_HELPED_REFUSALS = 10  # refusals needed for that verdict (not noise)
SLOWER = 0.95  # ... and a rate at most this fraction of the one before (it did slow down)
MAX_JUDGED = 5.0  # periods a judgement may wait for enough answers or refusals
HELD = 0.2  # seconds: the bucket "holds senders back" if one waited this recently
USED = 0.9  # a fleet's period is probed from when its answers came at this share of the rate

SS_INITIAL = 50.0  # parts per second at the start of slow start
SS_GAIN = 2.8  # parts per second added per answer in slow start: x2 about every 0.25 s
IN_A_ROW = 10  # refusals in a row that end slow start: a rate limit reached
SS_RECENT = 40  # answers compared with the ones before them for a rise of the share
SS_RISE = 0.1  # the rise of the share of refusals that ends slow start ...
SS_Z = 4.0  # ... when this many standard errors above the share before (two-sample test)
SS_HIGH = 0.6  # a share of refusals among the recent answers that ends slow start in any case
SS_MIN_REFUSALS = 5  # ... with at least this many refusals among the recent answers
SS_BASELINE_SAMPLES = 100  # answers before a share seen in slow start is taken as the baseline
SEARCH_RATE = 40.0  # parts per second (at most a tenth of the rate reached) sent while a run
# of refusals lasts, to see it end
SEARCH_MAX = 2.0  # periods: a run longer than that is not a full per-second window
KEPT = 0.25  # seconds of answers kept beyond a PERIOD (for _search_over)
MEASURE = 0.25  # seconds the rate is held to measure what a token-bucket SMSC accepts


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
        self._slow_start = limit is None
        self._rate: float = SS_INITIAL if limit is None else limit
        now = clock()
        self._tokens = self._capacity()
        self._updated = now
        self._held_at = -math.inf  # last time a sender found no token
        self._sent: deque[float] = deque()  # times of the tokens taken over the last PERIOD
        self._lock = asyncio.Lock()
        # answers of the last PERIOD: (time, throttled)
        self._answers: deque[tuple[float, bool]] = deque()
        self._ss_sent = 0  # answers during slow start
        self._ss_throttled = 0
        self._ss_before = (0, 0)  # (answers, refusals) in slow start before the limit showed
        # slow start: "grow", then "search" (after a run of refusals) or "measure" (after a
        # rise of their share), then "done"
        self._phase = "grow" if limit is None else "done"
        self._phase_since = now
        self._phase_sent = 0
        self._phase_accepted = 0
        self._regrow = False  # slow start ended on a rise of the share, not on a run
        self._armed = True  # a search ends at the next acceptance (else after a refusal first)
        self._period_start = now
        self._period_sent = 0
        self._period_throttled = 0
        self._period_held = False  # the bucket held senders back during the period
        self._settling = False  # the current period follows a back-off: not judged
        self._clean = 0  # probes in a row (clean periods since the last back-off)
        self._beyond = 0  # ... of which past the rate last refused
        self._ceiling = math.inf  # the rate last refused: probing slows down there
        self._in_a_row = 0  # refusals in a row
        self._baseline = 0.0  # share of refusals that does not depend on the rate
        # (the rate before the back-offs in a row, the share of refusals at the last, the
        # rate accepted in the period that led to the first)
        self._backed_off: tuple[float, float, float] | None = None
        self.decisions: list[tuple[float, str, float | None]] = []  # (time, what, rate): logs
        self.decided = 0  # decisions taken here (_set), for a shared rate to publish
        # The fleet's answers over this process's (tikosms.smpp.shared_rate): with N processes
        # sharing the carrier's rate, each sees about 1/N of the answers, and the rates it
        # measures from them are scaled by this to be the fleet's. 1.0: alone.
        self.scale = 1.0
        # ... and after slow start one process's controller judges the fleet's answers: their
        # running counts (answered, refused) as the store last gave them, and those at the
        # start of the period; None: this bucket judges its own answers (alone)
        self._fleet: tuple[int, int] | None = None
        self._fleet_base: tuple[int, int] = (0, 0)
        # (time, the fleet's answers, ever, and acceptances among them), from each chunk
        self._fleet_seen: deque[tuple[float, int, int]] = deque()
        self.judging = True  # False: another process judges for the fleet (this one adopts)

    @property
    def rate(self) -> float:
        """The rate in force now (parts per second)."""
        self._decide(self._clock())
        return self._rate

    @property
    def baseline(self) -> float:
        """The share of refusals that does not depend on the rate; in slow start, the share
        seen so far while the rate grew (once there are enough answers and no limit)."""
        if self._phase == "grow" and self._ss_sent >= SS_BASELINE_SAMPLES:
            return self._ss_throttled / self._ss_sent
        return self._baseline

    @property
    def slow_start(self) -> bool:
        """Still looking for the carrier's limit from below (no rate-limit refusal seen yet)."""
        return self._slow_start

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
        self._tokens = min(self._capacity(), self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        sent = self._sent
        while sent and now - sent[0] >= PERIOD:
            sent.popleft()
        if self._phase == "done" and len(sent) >= self._rate * PERIOD:
            # Never more than a second's worth in any second: an SMSC counting over a
            # sliding second still holds what was sent faster before (slow start).
            delay = sent[0] + PERIOD - now
        elif self._tokens >= 1.0:
            self._tokens -= 1.0
            sent.append(now)
            return 0.0
        else:
            delay = (1.0 - self._tokens) / self._rate
        self._held_at = now
        self._period_held = True
        return delay

    def on_result(self, throttled: bool) -> None:
        """One submit answered: throttled (ESME_RTHROTTLED / ESME_RMSGQFUL) or not."""
        now = self._clock()
        answers = self._answers
        answers.append((now, throttled))
        if now - answers[0][0] > PERIOD + KEPT:
            answers.popleft()  # one in, at most one out: the deque stays about a second long
        self._period_sent += 1
        self._in_a_row = self._in_a_row + 1 if throttled else 0
        if throttled:
            self._period_throttled += 1
        if not self._slow_start:
            self._decide(now)
            return
        self._ss_sent += 1
        self._ss_throttled += throttled
        if self._phase == "search":
            if not throttled and self._armed:
                self._search_over(now)
            self._armed = self._armed or throttled
        elif throttled and self._in_a_row >= IN_A_ROW:
            self._run_found(now)
        elif self._phase == "measure":
            self._measure(now)
        elif throttled:
            self._limit_reached(now)
        elif now - self._held_at <= HELD:
            self._rate += SS_GAIN * self.scale

    def _restart_probing(self) -> None:
        """Probing starts again from its first step, with no back-off in a row behind it."""
        self._backed_off = None
        self._clean = self._beyond = 0

    def rejected(self) -> None:
        """This process's last decision was not published (another came first, from newer
        evidence, and is adopted): what it had noted for its next judgement is forgotten."""
        self._restart_probing()
        if not self._slow_start:
            self._new_period(self._clock(), settle=True)

    def set_limit(self, limit: float | None) -> None:
        """A new agreed rate (this process's share of the carrier's slots changed): the rate
        in force scales with it, so a back-off already learned is kept in proportion."""
        if limit == self.limit:
            return
        before, self.limit = self.limit, limit
        if limit is None:
            return  # no ceiling any more: probing goes on from the rate in force
        now = self._clock()
        if self._slow_start:  # a ceiling now: no need to look for one from below
            self._slow_start, self._phase = False, "done"
            self._set(limit, now, "share")
        else:
            self._set(self._rate * limit / before if before else limit, now, "share")

    def on_throttled(self) -> None:
        """Kept for callers that only report refusals."""
        self.on_result(True)

    def note_held(self) -> None:
        """A sender waited for a token given elsewhere (a shared rate): the rate is what holds
        senders back, as when this bucket has none."""
        now = self._clock()
        self._held_at = now
        self._period_held = True

    def observe_fleet(self, answered: int, refused: int, judging: bool) -> None:
        """The fleet's answers so far (running counts from the shared store), and whether this
        process's controller is the one that judges them (tikosms.smpp.shared_rate)."""
        now = self._clock()
        start = self._fleet is None or (judging and not self.judging)
        self._fleet = (answered, refused)
        seen = self._fleet_seen
        seen.append((now, answered, answered - refused))
        while len(seen) > 2 and now - seen[1][0] >= PERIOD:
            seen.popleft()
        self.judging = judging
        if start:  # the fleet's counts from here: a period of its own
            self._new_period(now, settle=self._settling)

    def alone(self) -> None:
        """No fleet's counts any more (the shared store is down): this bucket judges its own
        answers, from a new period."""
        if self._fleet is None and self.judging:
            return
        self._fleet = None
        self._fleet_seen.clear()
        self.judging = True
        self._new_period(self._clock(), settle=self._settling)

    def adopt(self, rate: float, slow_start: bool, baseline: float | None = None) -> None:
        """Take the rate another process's controller decided (tikosms.smpp.shared_rate): the
        fleet has one rate. A limit found elsewhere ends slow start here too; a limit reached
        elsewhere (its search's rate) starts a search here; a lower rate is a back-off (the
        refusals were seen there): the next period is not judged; a higher one is a probe,
        and this process's period starts again."""
        now = self._clock()
        if self.limit is not None:
            rate = min(rate, self.limit)
        lower = rate < self._rate * 0.99
        if self._slow_start and not slow_start:
            # a limit found elsewhere: as if found here
            self._slow_start = False
            self._regrow = False
            self._phase = "done"
            self._ceiling = rate
            self._restart_probing()
            self._new_period(now, settle=True)
        elif lower and slow_start and self._phase == "grow" and rate <= SEARCH_RATE:
            # a limit reached elsewhere (the rate of that process's search, after a run of
            # refusals): search here too, from that rate (a run of refusals here would
            # divide it again); ended by an acceptance after a refusal seen here (answers
            # to submits sent before may still be acceptances)
            self._ss_before = (self._ss_sent, self._ss_throttled)
            self._phase_start(now, "search")
            self._armed = False
        elif lower and not self._slow_start:
            self._restart_probing()
            self._ceiling = self._rate  # refused there
            self._new_period(now, settle=True)
        elif not self._slow_start:
            # a probe elsewhere, on the same evidence as this period's: it counts as ours (N
            # processes each probing once a period would probe N times as fast)
            self._clean += 1
            self._beyond += self._rate >= self._ceiling
            self._new_period(now)
        self._rate = max(self.min_rate, rate)
        self._tokens = min(self._tokens, self._capacity())
        self._updated = now
        if baseline is not None:
            self._baseline = baseline

    # -- slow start -------------------------------------------------------------------------

    def _limit_reached(self, now: float) -> None:
        """A refusal while growing: does it show a rate limit (see the module's docstring)?"""
        self._trim(now)
        if self._in_a_row >= 3:
            return  # the start of a run, maybe (see _run_found): not a rise of the share
        recent = list(itertools.islice(reversed(self._answers), SS_RECENT))[::-1]
        recent_refused = sum(1 for _, t in recent if t)
        if recent_refused < SS_MIN_REFUSALS:
            return
        before_sent = self._ss_sent - len(recent)
        before_refused = self._ss_throttled - recent_refused
        share = recent_refused / len(recent)
        before_share = before_refused / before_sent if before_sent > 0 else 0.0
        if share < SS_HIGH or len(recent) < SS_RECENT:
            # not most of them refused (refused from the start: a limit under SS_INITIAL):
            # a rise of the share?
            if before_sent < SS_RECENT:
                return  # too few answers before the recent ones to tell
            pooled = self._ss_throttled / self._ss_sent
            error = math.sqrt(pooled * (1 - pooled) * (1 / len(recent) + 1 / before_sent))
            if share - before_share < SS_RISE or share - before_share < SS_Z * error:
                return
        # Refusals among acceptances (a token bucket): what it accepts while it refuses is
        # its rate. Measured over MEASURE seconds, sending a tenth above the rate it seems
        # to accept (still above it: the recent answers are not all from while it refused;
        # fewer refused than at the rate reached).
        self._ss_before = (before_sent, before_refused)
        self._phase_start(now, "measure")
        held = self._rate * (1 - share + before_share) * 1.1
        self._set(max(self.min_rate, min(self._rate, held)), now, "limit reached")

    def _run_found(self, now: float) -> None:
        """IN_A_ROW refusals in a row: an SMSC that counts per second (in fixed seconds or over
        a sliding one) and is full. What it accepted over the last second is not its limit
        when its second began after ours (a fixed window: the end of its previous second is
        counted too); what it accepted over the second before it takes parts again is. So:
        send slowly until it accepts again (`_search_over`)."""
        if self._phase == "grow":
            refused = self._in_a_row
            self._ss_before = (self._ss_sent - refused, self._ss_throttled - refused)
        self._phase_start(now, "search")
        self._armed = True
        self._set(min(self._rate / 10, SEARCH_RATE), now, "limit reached")

    def _measure(self, now: float) -> None:
        elapsed = now - self._phase_since
        if elapsed < MEASURE or self._phase_sent < MIN_SAMPLES:
            self._phase_sent += 1
            self._phase_accepted += not self._answers[-1][1]
            return
        self._learn_baseline()
        # what was accepted over the last second is a floor (a pause of the event loop
        # during the measure would make it look slower)
        estimate = max(self._phase_accepted / elapsed * self.scale, self._accepted_rate(now),
                       self._fleet_floor())
        self._end_slow_start(estimate, now)
        self._regrow = True  # a rise of the share may have been chance: see _decide

    def _search_over(self, now: float) -> None:
        """The first acceptance after a run of refusals: the SMSC's second has begun again,
        and what it accepted over the second before is its limit. Its second began between
        our previous submit (refused) and this one: half of what it accepted in that gap, a
        second earlier, is counted too."""
        searched = now - self._phase_since
        estimate = self._accepted_rate(now)
        if self._fleet is not None:
            # the fleet's counts come late (with each process's next chunk): they include
            # more of the faster second before than a count of one's own answers would
            self._learn_baseline()
            estimate = max(estimate, self._fleet_floor())
            if searched > SEARCH_MAX * PERIOD:
                self._phase = "grow"
                self._set(max(SS_INITIAL, estimate), now, "slow start again")
            else:
                self._end_slow_start(estimate, now)
            return
        if len(self._answers) >= 2:
            previous = self._answers[-2][0]
            gap = sum(
                1 for t, throttled in self._answers
                if previous - PERIOD < t <= now - PERIOD and not throttled
            )
            estimate += gap / 2 / PERIOD * self.scale
        self._learn_baseline()
        if searched > SEARCH_MAX * PERIOD:
            # refused for longer than any per-second window: not a window that was full
            # (an outage, a long pause); grow again from where it accepts now
            self._phase = "grow"
            self._set(max(SS_INITIAL, estimate), now, "slow start again")
            return
        self._end_slow_start(estimate, now, margin=1.0)

    def _learn_baseline(self) -> None:
        """Refusals seen while the rate grew, at a steady share: not about the rate."""
        sent, refused = self._ss_before
        if sent >= SS_BASELINE_SAMPLES and refused / sent <= SS_HIGH / 2:
            self._baseline = refused / sent

    def _phase_start(self, now: float, phase: str) -> None:
        self._phase = phase
        self._phase_since = now
        self._phase_sent = 0
        self._phase_accepted = 0

    def _end_slow_start(self, estimate: float, now: float, margin: float = MARGIN) -> None:
        self._slow_start = False
        self._regrow = False
        self._phase = "done"
        rate = estimate / max(0.05, 1.0 - self._baseline)
        # the estimate is the rate last refused: probing past it starts gently, and speeds
        # up if it was low (a fleet's, from counts that come in chunks, may be)
        self._ceiling = rate
        self._clean = self._beyond = 0
        self._set(max(self.min_rate, rate * margin), now, "limit found")
        self._new_period(now, settle=True)

    # -- the controller ---------------------------------------------------------------------

    def _trim(self, now: float) -> None:
        answers = self._answers
        while answers and now - answers[0][0] > PERIOD + KEPT:
            answers.popleft()

    def _accepted_rate(self, now: float) -> float:
        """Answers not throttled over the last PERIOD, per second: the fleet's, from its
        counts, when it shares a rate and they span most of a period; else this process's,
        scaled."""
        fleet = self._fleet_rates(PERIOD * 0.8)
        if fleet is not None:
            return fleet[1]
        self._trim(now)
        if not self._answers:
            return self.min_rate
        since = now - PERIOD
        accepted = sum(1 for t, throttled in self._answers if t > since and not throttled)
        return accepted / PERIOD * self.scale

    def _fleet_rates(self, span: float) -> tuple[float, float] | None:
        """The fleet's answers and acceptances per second over the last PERIOD, from its
        counts as the store gave them (None: alone, or they span less than `span`)."""
        seen = self._fleet_seen
        if self._fleet is None or len(seen) < 2 or seen[-1][0] - seen[0][0] < span:
            return None
        (then, answered_then, accepted_then), (last, answered, accepted) = seen[0], seen[-1]
        elapsed = last - then
        return (answered - answered_then) / elapsed, (accepted - accepted_then) / elapsed

    def _fleet_floor(self) -> float:
        """A floor for a fleet's estimate of the limit at the end of slow start: half the rate
        the fleet was answered at (a slow start doubles its rate about every quarter second:
        the limit was passed less than half a second ago). One process's own answers early in
        a run, its share of the fleet not yet measured, would say too little."""
        fleet = self._fleet_rates(PERIOD / 4)
        return 0.0 if fleet is None else fleet[0] / 2

    def _period_answers(self) -> tuple[int, int]:
        """(answered, refused) over the current period: the fleet's when it shares a rate."""
        if self._fleet is None:
            return self._period_sent, self._period_throttled
        return self._fleet[0] - self._fleet_base[0], self._fleet[1] - self._fleet_base[1]

    def _decide(self, now: float) -> None:
        if self._slow_start or not self.judging or now - self._period_start < PERIOD:
            return
        if self._settling:
            # The answers of the period after a change still include submits sent before it
            # (and an SMSC's current window was spent before it): not judged.
            self._new_period(now)
            return
        sent, throttled = self._period_answers()
        long_enough = now - self._period_start >= MAX_JUDGED * PERIOD
        if sent < MIN_SAMPLES and not (long_enough and sent >= 5):
            return  # too few answers to judge: the period goes on
        share = throttled / sent
        # the share's noise at this sample size (three standard deviations) is not a signal
        noise = 3 * math.sqrt(self._baseline * (1 - self._baseline) / sent)
        backed_off = self._backed_off
        if share <= self._baseline + max(TOLERANCE, noise):
            self._backed_off = None
            # a rate nobody uses is not raised: the bucket held senders back, and a fleet's
            # answers came at about the rate (its senders wait for chunks whether or not they
            # could send faster: a waiter is no proof)
            used = self._fleet is None or sent >= USED * self._rate * (now - self._period_start)
            if self._period_held and used:
                # 2 % a period; doubling from the fourth clean period in a row, or from the
                # second well under the rate last refused (a rate far under the limit, after
                # an estimate spoiled by a pause of the event loop, is not kept long), up to
                # that rate; past it, 2 % again and doubling from the third clean period
                # there, at most BEYOND (a limit estimated low is not approached at 2 % a
                # second; one back-off undoes a step)
                far = self._rate < self._ceiling * 0.95
                step = min(MAX_PROBE, PROBE * 2 ** max(0, self._clean - (0 if far else 2)))
                self._clean += 1
                grown = self._rate * (1 + PROBE)
                if self._rate < self._ceiling:
                    # faster only up to the rate last refused
                    grown = max(grown, min(self._rate * (1 + step), self._ceiling))
                else:
                    self._beyond += 1
                    grown = self._rate * (1 + min(BEYOND, PROBE * 2 ** max(0, self._beyond - 2)))
                self._set(grown if self.limit is None else min(self.limit, grown), now, "probe")
        elif backed_off is not None and throttled < NOT_HELPED_REFUSALS and not long_enough:
            return  # too few refusals to tell whether the back-off helped: the period goes on
        elif (
            backed_off is not None
            and throttled >= NOT_HELPED_REFUSALS
            and share >= backed_off[1] * NOT_HELPED
            and self._rate <= backed_off[0] * SLOWER
            and self._accepted(now, sent, throttled)
            < backed_off[2] * (1 - (1 - self._rate / backed_off[0]) / 2)
        ):
            # Slowing down did not lower the share, and the SMSC accepted less with the rate:
            # those refusals are not about the rate. (Under a rate limit it accepts its
            # limit whatever is sent: a back-off still above it leaves the share of refusals
            # about where it was, but not the rate accepted.)
            self._backed_off = None
            self._baseline = share
            self._set(backed_off[0], now, "rate-independent")
            if self._regrow:
                # slow start ended on a rise of the share that was not about the rate after
                # all: no limit found yet, grow again (the baseline known now)
                self._regrow = False
                self._slow_start = True
                self._phase = "grow"
        else:
            measured = self._accepted(now, sent, throttled)
            # what was accepted per second, and what was accepted of the rate (the share of
            # refusals: the same counts over and under, whenever they came in): the higher
            accepted = min(max(measured, self._rate * (1 - share))
                           / max(0.05, 1.0 - self._baseline), self._rate)
            # the rate before the first of back-offs in a row, and what was accepted then
            before, accepted_before = (
                (self._rate, measured) if backed_off is None else (backed_off[0], backed_off[2]))
            self._clean = self._beyond = 0
            self._ceiling = self._rate
            # at most BACK_OFF at the first: a pause of the event loop (here or at the SMSC)
            # bunches submits and refusals, and makes the accepted rate look low; a second
            # period of refusals in a row confirms it (at most halved, as TCP does)
            floor = self._rate * (BACK_OFF if backed_off is None else BACK_OFF_AGAIN)
            self._backed_off = (before, share, accepted_before)
            rate = max(accepted * MARGIN, floor)
            self._set(max(self.min_rate, rate), now, "back off")
            self._new_period(now, settle=True)
            return
        self._new_period(now)

    def _accepted(self, now: float, sent: int, throttled: int) -> float:
        """The rate the SMSC accepted: over the last second (this process's answers, scaled),
        or over the period (the fleet's)."""
        if self._fleet is None:
            return self._accepted_rate(now)
        return (sent - throttled) / max(PERIOD, now - self._period_start)

    def _new_period(self, now: float, settle: bool = False) -> None:
        self._settling = settle
        self._period_start = now
        self._period_sent = 0
        self._period_throttled = 0
        self._period_held = False
        if self._fleet is not None:
            self._fleet_base = self._fleet

    def _set(self, rate: float, now: float, why: str) -> None:
        if self.limit is not None:
            rate = min(rate, self.limit)
        self._rate = rate
        self._tokens = min(self._tokens, self._capacity())
        self._updated = now
        self.decided += 1
        self.decisions.append((now, why, rate))
        if len(self.decisions) > 100:
            del self.decisions[:50]

    def _capacity(self) -> float:
        # A burst of a tenth of a second's worth (at least one token): smooth, not bursty.
        return max(1.0, self._rate / 10)
