"""One rate per carrier account, shared by every process that sends to it.

A carrier agrees one rate for the whole account (say 300 parts a second), whatever number of
worker processes bind to it. Each process's `SmppCarrier` takes its tokens from a
`SharedRate`, which takes them in chunks (`CHUNK` seconds' worth, 5 %: 15 tokens at 300/s, so
about 20 statements a second for the whole fleet) from a store every process reaches:

- PostgreSQL (the default when the database is PostgreSQL): one row per carrier in
  `carrier_rates`, one UPDATE per chunk (tikosms.delivery.rate_store);
- Redis (`TIKOSMS_RATE_REDIS_URL`): one hash per carrier, one Lua script call per chunk
  (`RedisRateStore` below);
- SQLite (one process): no store, the carrier's own bucket as before.

The store keeps a GCRA ("generic cell rate algorithm"): `tat`, the time at which the tokens
given so far are spent at the rate. A chunk of n tokens is given only when `tat` has passed,
and moves it n/rate seconds on; so over any interval of T seconds the fleet is given at most
rate x T + n tokens, and a process drops what is left of its chunk after the chunk's own
duration. It spends a quarter of the chunk at once and paces the rest over about half the
chunk's time (`UPFRONT`, `PACE`), so a chunk adds about a quarter of itself to the most sent
in any second, not all of it.
(`SLACK` aside: a chunk may come 10 ms early, and a sender asking a little late keeps that
credit.) The clock is the store's (PostgreSQL's `clock_timestamp()`, Redis's TIME), never the
machines': their clocks may disagree.

**Adaptive throttling, one for the fleet.** With no rate configured, the `TokenBucket` finds
the carrier's limit from its refusals (smpp/throttle.py). Slow start runs in each process on
its own answers (a full SMSC refuses every process's submits, so each sees the run or the rise
of the share that ends it); the rates it measures then are scaled by the fleet's tokens over
its own (`TokenBucket.scale`, measured from the store's running count). After slow start one
controller judges for the fleet: every process adds the answers it had since its last chunk
(answered, refused) to the store's running counts with its next request, and the process that
holds the store's *judge* lease (the first to ask, for as long as it asks at least every
`JUDGE_LEASE` seconds; then whoever asks next) judges each period on the differences of those
counts: the fleet's answers, not its own share of them. The others do not judge; they adopt.
So the fleet backs off once, probes once a period and tells rate-independent refusals apart as
one sender does. Every decision (limit found, back off, probe) goes to the store with the
deciding process's next chunk, with the baseline share of refusals; the others adopt it with
theirs (within a chunk's time, ~50 ms at full speed; a process waiting for tokens asks again
within `IDLE_SYNC`); the token budget follows the rate. A decision names the version it was
decided on and is published only if no other came since (compare-and-set): a decision from
older evidence never overwrites a newer one (a late slow start's "limit reached" once wrote
4/s over the fleet's 200/s found a moment before); the process adopts the newer one instead,
except two estimates of the limit at once, where the higher stands. A process in slow start
that adopts another's "limit reached" searches from that rate as if it had seen the run.

**Outages.** A store that fails or does not answer within `STORE_TIMEOUT` is logged once and
the process paces itself alone at its share of the rate (its part of the fleet's tokens
over the last second, from the same count: the shares add up to the rate, even when the
processes were not given equal parts), trying the store again every `RETRY` seconds; once it
answers, one line says so and the shared budget applies again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tikosms.smpp.throttle import TokenBucket

log = logging.getLogger(__name__)

CHUNK = 0.05  # seconds of the rate taken per statement (at least one token)
MAX_CHUNK = 500  # tokens: a chunk is never larger (a very high rate)
# seconds a chunk may be given before `tat`, and lateness kept as credit: a sender that wakes
# up and asks a round trip after `tat` loses nothing (over any second, at most 2 x this more)
SLACK = 0.01
MIN_HOLD = 0.02  # seconds a chunk's tokens stay usable at least
UPFRONT = 0.25  # share of a chunk usable at once; the rest is paced ...
PACE = 0.7  # ... at this fraction of the time per token at the rate (ahead of the chunk's end:
# a sender woken a little late still spends it)
STORE_TIMEOUT = 1.0  # seconds a statement of the store may take before it counts as down
RETRY = 1.0  # seconds between two tries of a store that is down
IDLE_SYNC = 1.0  # seconds: an idle process still looks at the shared rate this often
JUDGE_LEASE = 3.0  # seconds: a judge that has not asked for tokens for this long is replaced
SCALE_WINDOW = 1.0  # seconds over which the fleet's share is measured (at least)
MAX_SCALE = 64.0


@dataclass(frozen=True, slots=True)
class Grant:
    """The store's answer to a request for a chunk."""

    granted: bool
    wait: float  # seconds until a chunk may be given (when not granted)
    taken: int  # tokens given to the fleet so far, ever
    rate: float | None  # the fleet's rate as last decided by a controller (None: never)
    slow_start: bool
    version: int  # decisions published so far
    baseline: float = 0.0  # the share of refusals not about the rate, as last decided
    answered: int = 0  # the fleet's submits answered, ever (with this request's)
    refused: int = 0  # ... of which throttled
    judging: bool = True  # this sender holds the judge's lease
    published: bool = False  # the request's decision was published (not stale)


@dataclass(frozen=True, slots=True)
class Answers:
    """What one sender adds to the fleet's counts with a request: its answers since its last
    request, and who it is (for the judge's lease)."""

    sender: str
    answered: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """A rate decided by this process's controller, to publish with the next chunk."""

    rate: float
    slow_start: bool
    baseline: float = 0.0
    # the store's version it was decided on: published only if no other came since (a
    # decision from older evidence must not overwrite a newer one); None: in any case
    base: int | None = None


class StoreDown(Exception):
    """The rate store failed or did not answer: the process paces itself alone."""


class RateStore(Protocol):
    """Where a fleet's token budgets live (PostgreSQL, Redis)."""

    name: str

    async def take(self, carrier: str, tokens: int, rate: float,
                   decision: Decision | None, answers: Answers) -> Grant:
        """Give `tokens` tokens of `carrier` at `rate` per second if its budget allows,
        publish `decision` if given and still based on the latest version, add `answers` to
        the fleet's counts and give the judge's lease to its sender if free (or its own);
        raises StoreDown."""
        ...

    async def close(self) -> None: ...


class SharedRates:
    """The process's shared budgets: one `SharedRate` per carrier object, all in one store."""

    def __init__(self, store: RateStore) -> None:
        self.store = store
        self.limiters: dict[str, SharedRate] = {}  # by carrier name (the latest object's)

    def limiter_for(self, carrier: str, bucket: TokenBucket) -> SharedRate:
        limiter = SharedRate(carrier, bucket, self.store)
        self.limiters[carrier] = limiter
        return limiter

    async def close(self) -> None:
        await self.store.close()


_installed: SharedRates | None = None


def install(rates: SharedRates | None) -> None:
    """Make `rates` the budgets of the SMPP carriers this process starts from now on (the
    delivery worker does, before it starts its carriers); None: each its own bucket."""
    global _installed
    _installed = rates


def installed() -> SharedRates | None:
    return _installed


def chunk_for(rate: float) -> int:
    return max(1, min(MAX_CHUNK, math.floor(rate * CHUNK)))


class SharedRate:
    """One carrier's tokens in one process, taken in chunks from the shared store; the
    carrier's `TokenBucket` keeps deciding the rate (see the module's docstring)."""

    def __init__(self, carrier: str, bucket: TokenBucket, store: RateStore, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.carrier = carrier
        self.bucket = bucket
        self.store = store
        self._clock = clock
        self._lock = asyncio.Lock()
        self._tokens = 0  # left of the chunk
        self._expires = -math.inf  # a chunk's tokens left unused are dropped then
        self._chunk = 0  # the chunk's size
        self._upfront = 0  # ... usable at once
        self._given_at = -math.inf
        self._spacing = 0.0  # seconds between two of its tokens past the first UPFRONT
        self._own = 0  # tokens given to this process, ever
        self._samples: deque[tuple[float, int, int]] = deque()  # (time, fleet's, own)
        self.processes = 1  # processes sharing the rate, as last measured (for the logs)
        self.part = 1.0  # this process's part of the fleet's tokens, last measured (fallback)
        self._published = 0  # bucket.decided as of the last decision sent
        self._seen: int | None = None  # the store's version last seen or written
        self._synced = -math.inf
        self.down_since: float | None = None
        self._retry_at = -math.inf
        self._alone_tat = -math.inf  # the fallback's own GCRA
        self.sender = uuid.uuid4().hex[:16]  # this process's carrier object, for the lease
        self._found: float | None = None  # the fleet's rate once a limit was found (stored)
        self._answered = 0  # answers not yet added to the fleet's counts
        self._refused = 0

    @property
    def rate(self) -> float:
        """The fleet's rate in force (parts per second)."""
        return self.bucket.rate

    @property
    def share(self) -> float:
        """This process's part of the rate while the store is down."""
        return max(self.bucket.min_rate, self.bucket.rate * self.part)

    async def acquire(self) -> None:
        """Wait for one token of the fleet's budget."""
        if self._take():
            return
        async with self._lock:
            while not self._take():
                now = self._clock()
                if self._tokens > 0 and now < self._expires:
                    delay = self._due(now)  # the chunk's next token, paced
                else:
                    delay = await self._refill()
                if delay > 0:
                    self.bucket.note_held()
                    await asyncio.sleep(delay)

    def on_result(self, throttled: bool) -> None:
        """One submit answered (see TokenBucket.on_result)."""
        self._answered += 1
        self._refused += throttled
        self.bucket.on_result(throttled)  # a decision goes to the store with the next chunk

    @property
    def judging(self) -> bool:
        """This process's controller judges for the fleet (or alone, the store down)."""
        return self.bucket.judging

    # -- internals --------------------------------------------------------------------------

    def _take(self) -> bool:
        now = self._clock()
        if self._tokens > 0 and now < self._expires and self._due(now) == 0.0:
            self._tokens -= 1
            return True
        return False

    def _due(self, now: float) -> float:
        """Seconds until the chunk's next token is due: a quarter of it at once, the rest
        PACE / rate apart, over about half its time (spent at once, a chunk adds itself to the
        most sent in a second: 15 over 300/s; paced, about a quarter)."""
        used = self._chunk - self._tokens
        return max(0.0, self._given_at + (used + 1 - self._upfront) * self._spacing - now)

    def _hold(self, now: float, tokens: int, rate: float) -> None:
        """A chunk of `tokens` given at `rate`: usable for its time (at least MIN_HOLD)."""
        self._tokens = self._chunk = tokens
        self._upfront = math.ceil(tokens * UPFRONT)
        self._given_at = now
        self._spacing = PACE / rate
        self._expires = now + max(MIN_HOLD, tokens / rate)

    async def _refill(self) -> float:
        """Ask for a chunk: 0.0 when given (self._tokens refilled), else seconds to wait."""
        now = self._clock()
        rate = self.bucket.rate
        tokens = chunk_for(rate)
        if self.down_since is not None and now < self._retry_at:
            return self._alone(now, tokens)
        decided = self.bucket.decided
        decision = None
        if decided != self._published:
            found = self._found
            if (found is not None and not self.bucket.slow_start and self.bucket.decisions
                    and self.bucket.decisions[-1][1] == "limit found" and rate < found):
                # another process found the limit first, higher: its estimate stands (a
                # process that came late sees fewer of the fleet's answers, and says less)
                self._published = decided
                self.bucket.adopt(found, False)
                rate = self.bucket.rate
                tokens = chunk_for(rate)
            else:
                # never seen the store: published only on one nobody decided on yet (a
                # process that began while it was down does not write over the fleet's)
                decision = Decision(rate, self.bucket.slow_start, self.bucket.baseline,
                                    0 if self._seen is None else self._seen)
        answers = Answers(self.sender, self._answered, self._refused)
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                grant = await self.store.take(self.carrier, tokens, rate, decision, answers)
        except (StoreDown, TimeoutError) as exc:
            # the answers meanwhile are this process's alone: its controller judges them
            self._answered = self._refused = 0
            self.bucket.alone()
            if self.down_since is None:
                self.down_since = now
                log.error("shared rate store %s unreachable for carrier=%s (%s): sending "
                          "alone at this process's share, %.1f/s (%.0f %% of %.1f/s, about %d "
                          "processes), until it is back", self.store.name, self.carrier,
                          exc or type(exc).__name__, self.share, self.part * 100, rate,
                          self.processes)
            self._retry_at = now + RETRY
            return self._alone(now, tokens)
        if self.down_since is not None:
            log.warning("shared rate store %s works again for carrier=%s (down %.0f s)",
                        self.store.name, self.carrier, now - self.down_since)
            self.down_since = None
        self._answered -= answers.answered  # those are counted (more came meanwhile)
        self._refused -= answers.refused
        if self._seen is not None and grant.version < self._seen:
            # the store started again (a Redis key expired or flushed, a standby behind):
            # its versions count from scratch; a decision of ours goes again on its count
            log.warning("shared rate store %s lost carrier=%s's decisions (version %d, was "
                        "%d): publishing this process's rate %.1f/s again", self.store.name,
                        self.carrier, grant.version, self._seen, rate)
            self._seen = grant.version
            if decision is not None and grant.published:
                self._published = decided
            else:
                self._published = -1  # this process's rate goes again with the next chunk
        elif decision is not None:
            if grant.published:
                self._published = decided
                self._seen = grant.version
            elif (decision.base is not None and grant.version == decision.base + 1
                  and not decision.slow_start and grant.rate is not None
                  and not grant.slow_start and self.bucket.decisions
                  and self.bucket.decisions[-1][1] == "limit found"
                  and decision.rate > grant.rate):
                # two processes found the limit at once (one decision came between, and
                # ended slow start too): the higher estimate stands (one that came late sees
                # fewer of the fleet's answers, and says less); ours goes again, once, on the
                # version just seen
                self._seen = grant.version
            else:
                # another decided since: theirs is adopted, ours forgotten
                self._published = decided
                self.bucket.rejected()
        self._follow(grant)
        if grant.rate is not None and not grant.slow_start:
            self._found = grant.rate
        self.bucket.observe_fleet(grant.answered, grant.refused, grant.judging)
        now = self._clock()
        if not grant.granted:
            return max(0.001, min(grant.wait, IDLE_SYNC))
        self._own += tokens
        self._measure(now, grant.taken)
        self._hold(now, tokens, rate)
        return 0.0

    def _follow(self, grant: Grant) -> None:
        """Adopt the rate another process decided (a newer version than ours)."""
        seen, self._seen = self._seen, max(grant.version, self._seen or 0)
        if seen is None and self.bucket.limit is not None:
            return  # first look: a configured rate is the operator's, not the past's
        # a newer decision, or at the first look the fleet's rate, found before this came
        if (seen is None or grant.version > seen) and grant.rate is not None:
            self.bucket.adopt(grant.rate, grant.slow_start, grant.baseline)

    def _measure(self, now: float, fleet: int) -> None:
        """The fleet's tokens over this process's, over the last second or more."""
        samples = self._samples
        samples.append((now, fleet, self._own))
        while len(samples) > 2 and now - samples[1][0] >= SCALE_WINDOW:
            samples.popleft()
        then, fleet_then, own_then = samples[0]
        if now - then < SCALE_WINDOW / 2 or self._own <= own_then:
            return
        scale = (fleet - fleet_then) / (self._own - own_then)
        self.bucket.scale = min(MAX_SCALE, max(1.0, scale))
        self.processes = max(1, round(self.bucket.scale))
        # erring low: the parts of processes measured over different windows may add up to
        # more than one (a margin: rounded up to a whole number of processes)
        self.part = 1.0 / max(1, math.ceil(self.bucket.scale - 0.1))

    def _alone(self, now: float, tokens: int) -> float:
        """The store is down: a GCRA of this process's own at its share."""
        if self._alone_tat > now:
            return self._alone_tat - now
        share = self.share
        tokens = chunk_for(share)
        self._alone_tat = now + tokens / share
        self._hold(now, tokens, share)
        return 0.0


_REDIS_TAKE = """
local key = KEYS[1]
local n = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local slack = tonumber(ARGV[6])
local tat = tonumber(redis.call('HGET', key, 'tat') or '0')
local granted = 0
if tat <= now + slack then
  redis.call('HSET', key, 'tat', string.format('%.6f', math.max(tat, now - slack) + cost))
  redis.call('HINCRBY', key, 'taken', n)
  granted = 1
end
local published = 0
local base = tonumber(ARGV[12])
if ARGV[3] == '1' and (base < 0 or tonumber(redis.call('HGET', key, 'version') or '0') == base)
then
  redis.call('HSET', key, 'rate', ARGV[4], 'ss', ARGV[5], 'baseline', ARGV[7])
  redis.call('HINCRBY', key, 'version', 1)
  published = 1
end
redis.call('HINCRBY', key, 'answered', tonumber(ARGV[8]))
redis.call('HINCRBY', key, 'refused', tonumber(ARGV[9]))
local me = ARGV[10]
local judge = redis.call('HGET', key, 'judge')
local seen = tonumber(redis.call('HGET', key, 'judge_seen') or '0')
if (not judge) or judge == me or seen < now - tonumber(ARGV[11]) then
  redis.call('HSET', key, 'judge', me, 'judge_seen', string.format('%.6f', now))
  judge = me
end
redis.call('EXPIRE', key, 86400)
local v = redis.call('HMGET', key, 'taken', 'rate', 'ss', 'version', 'baseline', 'answered',
                     'refused')
return {granted, string.format('%.6f', tat - now - slack), v[1] or '0', v[2] or '', v[3] or '1',
        v[4] or '0', v[5] or '0', v[6] or '0', v[7] or '0', judge == me and 1 or 0, published}
"""


class RedisRateStore:
    """The budgets in Redis: a hash per carrier (`{prefix}rate:{carrier}`), one script call
    per chunk; kept a day after the last use."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "tikosms:") -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=STORE_TIMEOUT,
                                            socket_connect_timeout=STORE_TIMEOUT)
        self._script = self._client.register_script(_REDIS_TAKE)

    async def take(self, carrier: str, tokens: int, rate: float,
                   decision: Decision | None, answers: Answers) -> Grant:
        from redis.exceptions import RedisError

        args: list[str | int | float] = [tokens, repr(tokens / rate)]
        if decision is None:
            args += ["0", "", ""]
        else:
            args += ["1", repr(decision.rate), "1" if decision.slow_start else "0"]
        args.append(repr(SLACK))
        args.append(repr(decision.baseline) if decision is not None else "0")
        args += [answers.answered, answers.refused, answers.sender, repr(JUDGE_LEASE)]
        args.append(-1 if decision is None or decision.base is None else decision.base)
        try:
            (granted, wait, taken, shared, slow, version, baseline, answered, refused,
             judging, published) = await self._script(
                keys=[f"{self.prefix}rate:{carrier}"], args=args)
        except (RedisError, OSError) as exc:
            raise StoreDown(f"{type(exc).__name__}: {exc}") from exc
        return Grant(bool(int(granted)), float(wait), int(taken),
                     float(shared) if shared else None, slow != b"0", int(version),
                     float(baseline), int(answered), int(refused), bool(int(judging)),
                     bool(int(published)))

    async def close(self) -> None:
        await self._client.aclose()
