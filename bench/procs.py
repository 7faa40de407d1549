"""Real processes for the benchmarks: scratch databases, the gateway, helpers, memory readings.

Everything listens on 127.0.0.1 on a free port and every wait is bounded in time. Processes are
stopped by their own pid (SIGTERM, then SIGKILL after a grace period), never by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable
TIKOSMS = str(Path(PYTHON).parent / "tikosms")  # the console script of the same venv
HOST = "127.0.0.1"
# where scratch PostgreSQL databases are created (trust auth on loopback)
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ACTIVE = ("SCHEDULED", "QUEUED", "ENROUTE")  # statuses of parts not yet final


_PORTS_GIVEN: set[int] = set()
_PICK = random.SystemRandom()  # not the random module's state, which a test may have seeded


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port nothing listens on, for a process about to be started.

    The port comes from below the kernel's ephemeral range when there is room there: a port
    found with bind(0) is one that any outgoing connection on the machine (to PostgreSQL, to a
    callback receiver) may be given as its source port between this check and the child's own
    bind, and the child then fails to start. Ports handed out once are not handed out again in
    this process."""
    low = _ephemeral_low()
    if low - 10000 >= 1024:
        for _ in range(200):
            port = _PICK.randrange(low - 10000, low)
            if port in _PORTS_GIVEN:
                continue
            with socket.socket() as s:
                try:
                    s.bind((HOST, port))
                except OSError:
                    continue
            _PORTS_GIVEN.add(port)
            return port
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    _PORTS_GIVEN.add(port)
    return port


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None,
              timeout: float = 30.0) -> None:
    """Block until something accepts connections on `port` (or fail, naming the process log)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout:g}s")


# --- scratch databases ---------------------------------------------------------------------

@dataclass(frozen=True)
class ScratchDb:
    kind: str  # sqlite | postgresql
    url: str  # as the gateway takes it (TIKOSMS_DATABASE_URL)
    path: Path | None = None  # the SQLite file
    name: str | None = None  # the PostgreSQL database


@contextmanager
def scratch_database(kind: str, workdir: Path) -> Iterator[ScratchDb]:
    """A fresh, empty database dropped afterwards; the gateway migrates it on first use."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield ScratchDb("sqlite", f"sqlite:///{path}", path=path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"tikosms_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield ScratchDb("postgresql", f"{base}/{name}", name=name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def receiver_count(receiver_url: str) -> int:
    """POSTs bench/receiver.py (at `receiver_url`, no path) has answered so far."""
    import json
    import urllib.request
    with urllib.request.urlopen(f"{receiver_url}/stats", timeout=10) as r:
        return int(json.loads(r.read())["count"])


def count_active_parts(db: ScratchDb) -> int:
    """Parts not yet in a final state, read straight from the database (a cheap poll)."""
    return count(db, "SELECT count(*) FROM parts WHERE status IN ('SCHEDULED', 'QUEUED', "
                     "'ENROUTE')")


def count(db: ScratchDb, sql: str) -> int:
    """One `SELECT count(*)` on the scratch database, outside the gateway."""
    if db.kind == "sqlite":
        assert db.path is not None
        conn = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()

    async def go() -> int:
        conn = await asyncpg.connect(db.url)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(go())


# --- processes -----------------------------------------------------------------------------

class Process:
    """One child process with its output in a log file; stopped by pid on exit."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.args = list(args)
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=ROOT)
        if self.port is not None:
            try:
                wait_port(self.port, self.proc)
            except BaseException as exc:
                self.stop()
                raise RuntimeError(f"{self.args[1:3]} did not start ({exc}); see {self.log}, "
                                   f"which ends:\n{self._log_tail()}") from None
        self._attach_profiler()
        return self

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def _attach_profiler(self) -> None:
        """With BENCH_PYSPY=DIR, sample each gateway process with py-spy (collapsed stacks in
        DIR/<log name>.txt; summarise them with bench/profile_summary.py)."""
        out = os.environ.get("BENCH_PYSPY")
        if not out or self.args[0] != TIKOSMS or self.args[1] not in ("serve", "api", "worker"):
            return
        target = Path(out) / f"{self.log.stem}-{self.pid}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        spy = str(Path(PYTHON).parent / "py-spy")
        self.profiler = subprocess.Popen(
            [spy, "record", "--pid", str(self.pid), "--format", "raw", "--rate", "200",
             "--nonblocking", "--subprocesses", "--output", str(target)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, grace: float = 10.0) -> None:
        profiler = getattr(self, "profiler", None)
        if profiler is not None and profiler.poll() is None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def gateway_env(db: ScratchDb, port: int | None = None, **extra: object) -> dict[str, str]:
    env = {"TIKOSMS_DATABASE_URL": db.url, "TIKOSMS_HOST": HOST, "TIKOSMS_LOG_LEVEL": "WARNING"}
    if port is not None:
        env["TIKOSMS_PORT"] = str(port)
    env.update({f"TIKOSMS_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in extra.items()})
    return env


def tikosms(args: Sequence[str], db: ScratchDb, workdir: Path) -> str:
    """Run one `tikosms ...` command against the scratch database; its stdout."""
    done = subprocess.run([TIKOSMS, *args], env={**os.environ, **gateway_env(db)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"tikosms {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class BenchAccount:
    account_id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def create_account(db: ScratchDb, workdir: Path) -> BenchAccount:
    """An account with room for every benchmark's campaigns, and a price list for Ukraine."""
    data = json.loads(tikosms(["accounts", "create", "--name", "Bench", "--balance", "10000000",
                               "--json"], db, workdir))
    rates = workdir / "bench-rates.csv"
    rates.write_text("mcc,mnc,country,rate,start_date,end_date\n"
                     "255,,Ukraine,0.05,2020-01-01,\n", encoding="utf-8")
    tikosms(["rates", "import", str(rates)], db, workdir)
    return BenchAccount(int(data["account_id"]), data["token"])


def recipients(n: int, offset: int = 0) -> list[str]:
    """`n` distinct Ukrainian mobile numbers (Vodafone UA, 38050...)."""
    return [f"38050{i:07d}" for i in range(offset, offset + n)]


# --- memory of a process (Linux /proc) -----------------------------------------------------

def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, own processes); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (a server's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids, todo = [], [pid]
    while todo:  # the whole tree: a supervisor's workers are its children
        p = todo.pop()
        pids.append(p)
        try:
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
        except FileNotFoundError:
            continue
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def wait_idle(pids: Sequence[int], timeout: float = 30.0, busy: float = 0.15) -> float:
    """Wait until the processes (their trees) are done starting: less than `busy` of a core
    used together over half a second (an idle gateway's timers use a few per cent). A gateway
    answers before it is idle (the API's process pool for campaign numbers still importing,
    ~1 s of CPU a process, longer on a loaded machine); that start-up, inside a measured
    window, counts as CPU per message and takes cores from the load. Returns the seconds waited."""
    start = time.monotonic()
    before = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        now = sum(cpu_seconds(p) for p in pids)
        if now - before < busy * 0.5:
            break
        before = now
    return time.monotonic() - start


def _status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise KeyError(field)


def machine() -> dict[str, str]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    if dirty:  # the gateway runs from the working tree (editable install)
        commit += " + uncommitted changes under src/"
    # the 1-minute load average: other work on a shared machine moves every absolute figure
    load = Path("/proc/loadavg").read_text().split()[0]
    return {"cores": str(os.cpu_count()), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "python": sys.version.split()[0], "commit": commit, "load": load}


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tikosms-bench-"))
