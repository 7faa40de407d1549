"""An open-loop HTTP load generator: requests issued on a fixed schedule, whatever the answers.

    python bench/openloop.py URL --rate 2000 --duration 10 [--method POST --body JSON]
        [--header 'Authorization: Bearer ...'] [--connections 512] [--start-at EPOCH]
        [--phase 0 --of 1]

Request k is due at start + k / rate. At each tick every request that is due is handed to an
idle keep-alive connection; when none is idle a new one is opened, up to `--connections`, and past
that the request waits for one. Latency is measured from the request's *scheduled* time to the
last byte of its answer, so a server that stalls is charged for every request it held back (no
coordinated omission, as in wrk2). `{to}` in the URL or the body is replaced by a new
Ukrainian mobile number per request (38050 + 7 digits).

Several processes share one rate with `--start-at` (a common epoch) and `--phase i --of n`:
process i sends requests k = i, i + n, i + 2n... Prints one JSON line: the counts, wall-clock
`started`/`ended` (epoch seconds), `statuses`, `errors`, and `latency_ms`, a histogram (0.1 ms
buckets below 10 ms, 1 ms below 1 s, 10 ms above) that merges across processes (`merge`).

HTTP/1.1 over raw asyncio protocols (no client library): on 2 cores shared with the gateway,
the generator's own CPU per request is what matters; it answers Content-Length and chunked
bodies and reconnects after `Connection: close`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

TICK = 0.001  # seconds: the schedule is kept to within a millisecond


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = self._complete()
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def _complete(self) -> int | None:
        """The status once the whole answer is buffered (and dropped from the buffer)."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (line.partition(":") for line in head[1:])}
        start = end + 4
        if "content-length" in fields:
            stop = start + int(fields["content-length"])
            if len(self.buffer) < stop:
                return None
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            stop = start
            while True:
                eol = self.buffer.find(b"\r\n", stop)
                if eol < 0:
                    return None
                size = int(bytes(self.buffer[stop:eol]).split(b";")[0], 16)
                stop = eol + 2 + size + 2
                if len(self.buffer) < stop:
                    return None
                if size == 0:
                    break
        else:  # no length: the body ends with the connection
            return None
        del self.buffer[:stop]
        if fields.get("connection", "").lower() == "close" and self.transport is not None:
            self.transport.close()
            self.closed = True
        return status


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = [f"Host: {host}:{port}", *args.header]
    if args.body is not None:
        headers.append("Content-Type: application/json")
    idle: list[Connection] = []
    waiting: asyncio.Queue[Connection] = asyncio.Queue()
    opened = 0
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    latency: Counter[float] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    number = args.phase

    def build() -> bytes:
        nonlocal number
        to = f"38050{number % 10_000_000:07d}"
        number += args.of
        path = target.replace("{to}", to)
        lines = [f"{args.method} {path} HTTP/1.1", *headers]
        body = b""
        if args.body is not None:
            body = args.body.replace("{to}", to).encode()
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def connection() -> Connection:
        nonlocal opened
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
            opened -= 1
        if opened < args.connections:
            opened += 1
            try:
                _, conn = await loop.create_connection(Connection, host, port)
            except OSError:
                opened -= 1
                raise
            return conn
        return await waiting.get()

    def release(conn: Connection) -> None:
        nonlocal opened
        if conn.closed:
            opened -= 1
        elif waiting._getters:  # type: ignore[attr-defined]  # someone waits: hand it over
            waiting.put_nowait(conn)
        else:
            idle.append(conn)

    async def one(scheduled: float, data: bytes) -> None:
        conn: Connection | None = None
        try:
            conn = await connection()
            status = await asyncio.wait_for(conn.request(data), args.timeout)
        except Exception as exc:  # counted, never raised: the schedule goes on
            errors[type(exc).__name__] += 1
            if conn is not None:
                conn.closed = True
                if conn.transport is not None:
                    conn.transport.close()
                release(conn)
            return
        ms = (time.perf_counter() - scheduled) * 1000
        statuses[status] += 1
        latency[_bucket(ms)] += 1
        release(conn)

    # a common epoch for all processes, then a monotonic clock for the schedule
    wall_start = args.start_at if args.start_at else time.time() + 0.2
    await asyncio.sleep(max(0.0, wall_start - time.time()))
    start = time.perf_counter() - (time.time() - wall_start)
    interval = 1.0 / args.rate
    total = int(args.rate * args.duration)
    k = args.phase
    while k < total:
        now = time.perf_counter()
        while k < total and start + k * interval <= now:
            task = loop.create_task(one(start + k * interval, build()))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            k += args.of
        if k < total:  # wake at most every TICK: a sleep below the loop's resolution spins
            await asyncio.sleep(max(TICK, start + k * interval - time.perf_counter()))
    sent_until = time.time()
    if in_flight:
        await asyncio.wait(list(in_flight), timeout=args.timeout + 1)
    ended = time.time()
    return {"offered_rate": args.rate, "scheduled": len(range(args.phase, total, args.of)),
            "started": wall_start, "sent_until": sent_until, "ended": ended,
            "duration": args.duration, "connections": opened, "cpu_s": time.process_time(),
            "statuses": {str(k): v for k, v in statuses.items()}, "errors": dict(errors),
            "latency_ms": {str(k): v for k, v in latency.items()}}


def _bucket(ms: float) -> float:
    """0.1 ms below 10 ms, 1 ms below 1 s, 10 ms above: at most ~2,000 buckets a minute."""
    if ms < 10:
        return round(ms, 1)
    if ms < 1000:
        return float(round(ms))
    return float(round(ms, -1))


def merge(results: Iterable[dict]) -> dict[str, object]:
    """One summary of several processes' results: counts added, histograms merged, the
    percentiles of accept latency (ms, from the scheduled time) and the rate answered 2xx."""
    results = list(results)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latency: Counter[float] = Counter()
    for r in results:
        statuses.update(r["statuses"])
        errors.update(r["errors"])
        latency.update({float(k): v for k, v in r["latency_ms"].items()})
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    duration = results[0]["duration"]
    return {"offered_rate": sum(r["offered_rate"] for r in results) / len(results),
            "scheduled": sum(r["scheduled"] for r in results), "ok": ok,
            # answered per second of schedule, or of the time the answers took if longer
            "rate": ok / max(duration, max(r["ended"] for r in results)
                             - min(r["started"] for r in results)),
            "started": min(r["started"] for r in results),
            "ended": max(r["ended"] for r in results), "duration": duration,
            "connections": sum(r["connections"] for r in results),
            "statuses": dict(statuses), "errors": dict(errors),
            "p50_ms": percentile(latency, 0.50), "p99_ms": percentile(latency, 0.99),
            "max_ms": max(latency) if latency else 0.0}


def percentile(histogram: Counter[float], p: float) -> float:
    total = sum(histogram.values())
    if not total:
        return 0.0
    rank = p * total
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--rate", type=float, required=True, help="requests per second, all phases")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of schedule")
    p.add_argument("--method", default="POST")
    p.add_argument("--body", default=None, help="request body ({to}: a new number each)")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--connections", type=int, default=512, help="most connections opened")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch seconds of request 0")
    p.add_argument("--phase", type=int, default=0)
    p.add_argument("--of", type=int, default=1)
    p.add_argument("--output", default=None, help="write the JSON here, not to stdout")
    args = p.parse_args(argv)
    return args


if __name__ == "__main__":
    arguments = parse()
    try:
        import uvloop

        result = uvloop.run(run(arguments))
    except ImportError:
        result = asyncio.run(run(arguments))
    if arguments.output:  # a file: a pipe left non-blocking by the loop may cut a long line
        with open(arguments.output, "w") as out:
            json.dump(result, out)
    else:
        print(json.dumps(result))
