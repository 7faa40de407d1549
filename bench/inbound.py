"""Figures of the inbound side (docs/inbound.md): the opt-out check of the send path and MO
stored per second, on a scratch SQLite file and a scratch PostgreSQL database.

    .venv/bin/python -m bench.inbound [--opt-outs 100000] [--mo 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.procs import scratch_database
from tikosms.accounts import service as accounts
from tikosms.db.engine import Database
from tikosms.db.migrate import upgrade
from tikosms.delivery.carrier import InboundPdu
from tikosms.inbound import manage, optouts
from tikosms.inbound import repository as repo
from tikosms.inbound.service import InboundReceiver
from tikosms.smpp.mo import build_mo_parts


async def measure(url: str, opt_outs: int, mo: int) -> dict[str, float]:
    db = Database(url)
    try:
        async with db.begin() as conn:
            account_id, _, _ = await accounts.create_account(conn, name="Bench")
            await manage.assign_number(conn, account_id, "4455", None)
            rows = ((n, f"38050{n:07d}", "") for n in range(1, opt_outs + 1))
            await manage.import_opt_outs(conn, account_id, rows)
        lookups = 2000
        async with db.connect() as conn:
            start = time.perf_counter()
            batch = 16  # single sends per group commit under load (docs/benchmarks.md)
            for first in range(0, lookups, batch):  # half of them opted out, half not
                await optouts.opted_out_sends(conn, [
                    (account_id, f"38050{n * 97 % (2 * opt_outs):07d}", "4455")
                    for n in range(first, first + batch)])
            single = (time.perf_counter() - start) / lookups  # per send
            start = time.perf_counter()
            for _ in range(lookups):  # the floor: a round trip that reads nothing
                await conn.exec_driver_sql("SELECT 1")
            floor = (time.perf_counter() - start) / lookups
            campaign = [f"38050{n:07d}" for n in range(0, 200_000, 2)]  # 100,000 recipients
            start = time.perf_counter()
            found = await repo.opted_out_among(conn, account_id, "4455", campaign)
            among = time.perf_counter() - start
        receiver = InboundReceiver(db, 3600)
        start = time.perf_counter()
        for n in range(mo):
            await receiver.handle(InboundPdu(f"38067{n:07d}", "4455", 0, 0, b"Hello there",
                                             {}, "bench"))
        single_mo = mo / (time.perf_counter() - start)
        parts = [InboundPdu(f"38068{n:07d}", "4455", p.esm_class, 0, p.short_message,
                            dict(p.tlvs), "bench")
                 for n in range(mo // 3)
                 for p in build_mo_parts("x" * 400, 0, ref=n, order="shuffle", seed=n)]
        start = time.perf_counter()
        for pdu in parts:
            await receiver.handle(pdu)
        part_rate = len(parts) / (time.perf_counter() - start)
        return {"lookup_ms": single * 1000, "floor_ms": floor * 1000,
                "among_ms": among * 1000, "among_found": len(found),
                "mo_per_s": single_mo, "parts_per_s": part_rate}
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--opt-outs", type=int, default=100_000)
    parser.add_argument("--mo", type=int, default=2000)
    args = parser.parse_args()
    for kind in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory() as tmp, scratch_database(kind, Path(tmp)) as scratch:
            upgrade(scratch.url)
            figures = asyncio.run(measure(scratch.url, args.opt_outs, args.mo))
        print(f"{kind}: opt-out check {figures['lookup_ms']:.3f} ms per single send "
              f"({args.opt_outs:,} opt-outs in the account; SELECT 1 on the same connection "
              f"{figures['floor_ms']:.3f} ms); campaign of 100,000 recipients "
              f"{figures['among_ms']:.0f} ms ({figures['among_found']:,} suppressed); "
              f"{figures['mo_per_s']:.0f} single MO/s stored; "
              f"{figures['parts_per_s']:.0f} parts/s of 3-part MO (shuffled)")


if __name__ == "__main__":
    main()
