"""One customer bind against the gateway's SMPP server, beside the same client against the
bare SMSC simulator (issue 12): how much the gateway costs an SMPP customer.

    .venv/bin/python bench/smpp_customer.py [--messages 5000] [--windows 10,100] [--db sqlite]
        [--latency-ms 0]

Real processes: `tikosms smsc-sim` as the carrier, `tikosms serve` (SQLite, the embedded
default)
with that carrier added by `tikosms carriers add`. The customer is the project's ESME session
(`tikosms.smpp.session`, smpp34's codec), bound as a transceiver with the window given; it
submits every message as fast as the window lets it and waits for every receipt. The same
client then does the same against a bare `tikosms smsc-sim`. Figures: submit_sm answered per
second (accept) and receipts per second over the whole run (end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import HOST, TIKOSMS, free_port, wait_port
from tikosms.smpp.pdu import BindRequest
from tikosms.smpp.session import DeliverSm, SmppSession
from tikosms.smpp.submit import SubmitFields


async def one_bind(port: int, system_id: str, password: str, n: int, window: int
                   ) -> tuple[float, float]:
    """(submit_sm answered per second, receipts per second) of one transceiver bind."""
    got = 0
    done = asyncio.Event()

    async def on_deliver(_pdu: DeliverSm) -> int:
        nonlocal got
        got += 1
        if got >= n:
            done.set()
        return 0

    session = SmppSession(HOST, port, BindRequest(system_id, password), "transceiver",
                          window=window, on_deliver=on_deliver, enquire_link_interval=0,
                          response_timeout=30)
    await session.open()
    start = time.perf_counter()
    answers = await asyncio.gather(*(session.submit(SubmitFields(
        f"38050{1000000 + i}", "Bench", f"Bench message {i}".encode(), source_addr_ton=5))
        for i in range(n)))
    accepted = time.perf_counter() - start
    refused = sum(1 for a in answers if a.command_status != 0)
    if refused:
        raise RuntimeError(f"{refused} submits refused")
    try:
        async with asyncio.timeout(120):
            await done.wait()
    except TimeoutError:
        raise RuntimeError(f"{got} receipts of {n} within 120 s") from None
    total = time.perf_counter() - start
    await session.unbind()
    return n / accepted, n / total


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def tikosms(env: dict[str, str], *args: str) -> str:
    return subprocess.run([TIKOSMS, *args], env=env, check=True, capture_output=True,
                          text=True).stdout


async def setup_account(url: str) -> int:
    from tikosms.accounts import service as accounts
    from tikosms.db.engine import Database
    from tikosms.db.migrate import upgrade
    from tikosms.db.types import utcnow
    from tikosms.rates.service import RateRow, import_rates

    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        async with db.begin() as conn:
            account_id, _, _ = await accounts.create_account(
                conn, name="Bench", balance=Decimal(1_000_000))
            await import_rates(conn, [RateRow(None, "255", "", "Ukraine", Decimal("0.05"),
                                              utcnow().replace(year=2020), None)], None)
    finally:
        await db.dispose()
    return account_id


async def run(n: int, windows: list[int], db_kind: str, latency_ms: int) -> None:
    # credentials of this run only: on a shared machine a port freed by another process may be
    # reused by ours, and that process's clients reconnect to it with their own credentials
    tag = secrets.token_hex(3)
    carrier_id, customer_id, password = f"sim{tag}", f"cust{tag}", secrets.token_hex(4)
    work = Path(tempfile.mkdtemp(prefix="tikosms-smpp-bench-"))
    sim_port, http_port, smpp_port = free_port(), free_port(), free_port()
    url = f"sqlite:///{work / 'bench.db'}"  # db_kind: SQLite only for now
    env = {**os.environ, "TIKOSMS_DATABASE_URL": url, "TIKOSMS_ACCESS_LOG": "false",
           "TIKOSMS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
           "TIKOSMS_SMPP_PORT": str(smpp_port)}
    sim = start([TIKOSMS, "smsc-sim", "--port", str(sim_port), "--system-id", carrier_id,
                 "--password", password, "--stats-interval", "0", "--latency-ms", str(latency_ms)],
                env, work / "sim.log")
    # the bare SMSC of the comparison: a simulator of its own (one shared with the gateway's
    # carrier would hand half of the receipts to the carrier's bind of the same system_id)
    bare_port = free_port()
    bare = start([TIKOSMS, "smsc-sim", "--port", str(bare_port), "--system-id", customer_id,
                  "--password", password, "--stats-interval", "0", "--latency-ms",
                  str(latency_ms)], env, work / "bare-sim.log")
    procs = [sim, bare]
    try:
        wait_port(sim_port, sim)
        wait_port(bare_port, bare)
        account_id = await setup_account(url)
        tikosms(env, "carriers", "add", "sim", "--host", HOST, "--port", str(sim_port),
                "--system-id", carrier_id, "--password", password, "--window", "100")
        tikosms(env, "routes", "add", "--match", "*", "--carrier", "sim")
        tikosms(env, "smpp-users", "create", str(account_id), "--system-id", customer_id,
                "--password", password, "--window", "100")
        serve = start([TIKOSMS, "serve", "--port", str(http_port)], env, work / "serve.log")
        procs.append(serve)
        wait_port(smpp_port, serve, timeout=60)
        await asyncio.sleep(1.0)  # the carrier binds
        print(f"{n} messages, one transceiver bind, SMSC latency {latency_ms} ms, {db_kind}")
        print(f"{'window':>6} {'target':<22} {'accept/s':>9} {'end-to-end/s':>13}")
        for window in windows:
            for target, port, sid in (("gateway (tikosms serve)", smpp_port, customer_id),
                                      ("bare smsc-sim", bare_port, customer_id)):
                accept, e2e = await one_bind(port, sid, password, n, window)
                print(f"{window:>6} {target:<22} {accept:>9,.0f} {e2e:>13,.0f}", flush=True)
    finally:
        stop(*reversed(procs))
    print(f"(logs in {work})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--windows", default="10,100")
    parser.add_argument("--db", choices=["sqlite"], default="sqlite")
    parser.add_argument("--latency-ms", type=int, default=0)
    a = parser.parse_args()
    asyncio.run(run(a.messages, [int(w) for w in a.windows.split(",")], a.db, a.latency_ms))


if __name__ == "__main__":
    main()
