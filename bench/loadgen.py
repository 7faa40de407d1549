"""The load generator: a separate process that POSTs one JSON body over keep-alive connections.

    python bench/loadgen.py URL --concurrency 64 --duration 5 --max-requests 200000 \
        --body '{"from": "TikoBench", ...}' [--header 'Authorization: Bearer ...'] [--vary-to]

Each of `concurrency` tasks sends its next request as soon as the last is answered, over one
aiohttp session (a keep-alive pool of `concurrency` connections), until the time or the count is
spent. The first `--warmup` seconds are sent but not counted. Prints one JSON line:
{"requests", "sent" (warm-up included), "ok", "errors", "seconds", "rate", "p50_ms", "p99_ms",
"statuses"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp


async def main(args: argparse.Namespace) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    template = json.loads(args.body)
    fixed = json.dumps(template).encode()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    error_kinds: Counter[str] = Counter()
    errors = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.perf_counter()
    counting_from = started + args.warmup
    stop_at = counting_from + args.duration

    async def client(session: aiohttp.ClientSession, worker: int) -> None:
        nonlocal errors, sent
        n = 0
        while time.perf_counter() < stop_at and sent < args.max_requests:
            sent += 1
            n += 1
            if args.vary_to:
                template["to"] = f"38050{(worker * 1_000_000 + n) % 10_000_000:07d}"
                body = json.dumps(template).encode()
            else:
                body = fixed
            t0 = time.perf_counter()
            try:
                async with session.post(args.url, data=body) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors += 1
                error_kinds[type(exc).__name__] += 1
                continue
            t1 = time.perf_counter()
            if t0 >= counting_from:
                latencies.append(t1 - t0)
                statuses[status] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers=headers) as session:
        await asyncio.gather(*(client(session, i) for i in range(args.concurrency)))
    seconds = time.perf_counter() - max(counting_from, started)
    latencies.sort()
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 \
            if latencies else 0.0

    return {"requests": len(latencies), "sent": sent, "ok": ok, "errors": errors,
            "seconds": seconds,
            "rate": ok / seconds if seconds > 0 else 0.0, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "statuses": {str(k): v for k, v in statuses.items()},
            "error_kinds": dict(error_kinds)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=5.0, help="seconds counted")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds sent, not counted")
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--body", default="{}")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--vary-to", action="store_true", help="a new 'to' number per request")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    try:
        import uvloop

        result = uvloop.run(main(args))
    except ImportError:
        result = asyncio.run(main(args))
    print(json.dumps(result))
