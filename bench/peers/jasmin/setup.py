"""Jasmin 0.11.1 (the Python SMS gateway TikoSMS replaces) set up for the sustained benchmark.

- A venv of its own (`JASMIN_VENV`, default /tmp/jasmin-venv, Python 3.11): `jasmin==0.11.1`
  from PyPI, created on first use, with one fix (`patch_dlr_bug`): without it 0.11.1 never looks
  up nor posts a receipt of a single-part message.
- A private root (ROOT_PATH: config, logs, store) in the run's work directory, a private
  RabbitMQ vhost (`rabbitmqctl add_vhost`, guest/guest on 127.0.0.1:5672, deleted afterwards)
  and a Redis database number nobody uses (127.0.0.1:6379, checked empty, flushed afterwards).
- The wheel lacks `resource/amqp0-9-1.xml`: `[amqp-broker] spec` points at the copy txAMQP
  ships. jasmind takes a fixed lock file (/tmp/jasmind.lock), so one runs per machine: while
  another jasmind runs, this one is not started.
- One jasmind process with the DLR lookup and thrower in it (`--enable-dlr-lookup
  --enable-dlr-thrower`); its SMPP server listens on a free port, unused (jCli and the DLR
  thrower need it to start); every log at WARNING, as the gateway's. A receipt that comes
  before Jasmin has stored its message id (the simulator answers at once) is looked up again
  after `dlr_lookup_retry_delay`: 1 s here (default 10 s), up to 5 times.
- The SMPP connector `sim` (to `tikosms smsc-sim`, throughput unlimited), a group, a user and a
  default MT route are set through jCli (telnet, no authentication, on a free port).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import telnetlib
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.procs import Process

VERSION = "0.11.1"
VENV = Path(os.environ.get("JASMIN_VENV", "/tmp/jasmin-venv"))
PYTHON311 = os.environ.get("JASMIN_PYTHON", "python3.11")
USER, PASSWORD = "bench", "bench"
REDIS_DBS = range(15, 7, -1)  # the first empty one is taken
LOCK = Path("/tmp/jasmind.lock")  # jasmind.py: FileLock("/tmp/jasmind"), whatever TMPDIR says


def ensure_venv() -> Path:
    """The venv's python, with jasmin installed (pip from PyPI on the first run)."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", f"import jasmin, sys; sys.exit(jasmin.get_release() != "
             f"'{VERSION}')"]
    if not (python.exists() and subprocess.run(check, capture_output=True).returncode == 0):
        subprocess.run([PYTHON311, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"jasmin=={VERSION}"],
                       check=True)
    patch_dlr_bug(python)
    return python


def patch_dlr_bug(python: Path) -> None:
    """Jasmin 0.11.1 reads the submit_sm_resp from the request PDU of a single-part message
    (`_pdu.response`: AttributeError), so no DLR is ever looked up nor posted (jookies/jasmin
    issue 1236, open). The fix the issue gives, in the venv's copy only: the transaction's
    response where the PDU has none. Idempotent."""
    out = subprocess.run([str(python), "-c", "import jasmin.managers.listeners as m; "
                          "print(m.__file__)"], capture_output=True, text=True, check=True)
    listeners = Path(out.stdout.strip())
    text = listeners.read_text("utf-8")
    fixed = text.replace("_pdu.response.", "getattr(_pdu, 'response', r.response).")
    if fixed != text:
        listeners.write_text(fixed, "utf-8")
        for cached in listeners.parent.glob("__pycache__/listeners.*.pyc"):
            cached.unlink()


def amqp_spec(python: Path) -> str:
    out = subprocess.run([str(python), "-c", "import txamqp, os; print(os.path.dirname("
                          "txamqp.__file__))"], capture_output=True, text=True, check=True)
    spec = Path(out.stdout.strip()) / "specs" / "standard" / "amqp0-9-1.stripped.xml"
    if not spec.exists():
        raise RuntimeError(f"txAMQP's spec not found at {spec}")
    return str(spec)


@dataclass
class Jasmin:
    http_url: str  # .../send
    pid: int
    sim_log: Path
    sim_pid: int
    vhost: str
    redis_db: int


@contextmanager
def running_jasmin(workdir: Path, sim_port: int, sim_log: Path, sim_pid: int,
                   log: Path) -> Iterator[Jasmin]:
    """jasmind configured against the simulator already listening on `sim_port`."""
    python = ensure_venv()
    if _lock_held():
        raise RuntimeError(f"another jasmind runs on this machine (it holds {LOCK})")
    root = workdir / "jasmin-root"
    for sub in ("etc/jasmin/store", "var/log/jasmin", "resource"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ports = {k: procs.free_port() for k in ("http", "jcli", "router", "cm", "pb", "smpps")}
    vhost = f"tikosms_bench_jasmin_{os.getpid()}"
    redis_db = _free_redis_db()
    config = root / "etc" / "jasmin" / "jasmin.cfg"
    config.write_text(_config(ports, vhost, redis_db, amqp_spec(python), root), "utf-8")
    env = {"ROOT_PATH": str(root), "CONFIG_PATH": str(root / "etc" / "jasmin"),
           "LOG_PATH": str(root / "var" / "log" / "jasmin")}
    with ExitStack() as stack:
        _rabbitmqctl("add_vhost", vhost)
        stack.callback(_rabbitmqctl, "delete_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        stack.callback(_redis, "-n", str(redis_db), "FLUSHDB")
        jasmind = stack.enter_context(Process(
            [str(python), str(VENV / "bin" / "jasmind.py"), "--config", str(config),
             "--enable-dlr-lookup", "--enable-dlr-thrower"],
            log, env, port=ports["http"]))
        procs.wait_port(ports["jcli"], jasmind.proc, timeout=60)
        configure(ports["jcli"], sim_port)
        wait_bound(sim_log, timeout=30)
        yield Jasmin(f"http://{procs.HOST}:{ports['http']}/send", jasmind.pid, sim_log, sim_pid,
                     vhost, redis_db)


def configure(jcli_port: int, sim_port: int) -> None:
    """The connector, the group and user, the default route; the connector started."""
    with JCli(jcli_port) as cli:
        cli.block("smppccm -a", ["cid sim", f"host {procs.HOST}", f"port {sim_port}",
                                 "username bench", "password bench", "submit_throughput 0",
                                 "loglevel 30"], expect="Successfully added")
        cli.block("group -a", ["gid bench"], expect="Successfully added")
        cli.block("user -a", [f"username {USER}", f"password {PASSWORD}", "gid bench",
                              "uid bench"], expect="Successfully added")
        cli.block("mtrouter -a", ["type defaultroute", "connector smppc(sim)", "rate 0.00"],
                  expect="Successfully added")
        out = cli.command("smppccm -1 sim")
        if "Successfully started" not in out:
            raise RuntimeError(f"jCli: connector not started: {out!r}")


class JCli:
    """A small telnet client for jCli (prompt `jcli : `, `> ` inside a block)."""

    PROMPT = b"jcli : "

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> JCli:
        self.tn = telnetlib.Telnet(procs.HOST, self.port, timeout=10)
        self.tn.read_until(self.PROMPT, 10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.tn.write(b"quit\r\n")
        finally:
            self.tn.close()

    def command(self, line: str, prompt: bytes = PROMPT) -> str:
        self.tn.write(line.encode() + b"\r\n")
        return self.tn.read_until(prompt, 10).decode(errors="replace")

    def block(self, opener: str, lines: list[str], expect: str) -> None:
        self.command(opener, b"> ")
        for line in lines:
            self.command(line, b"> ")
        out = self.command("ok")
        if expect not in out:
            raise RuntimeError(f"jCli {opener}: {out!r}")


def wait_bound(sim_log: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sim_counters(sim_log).get("binds", 0) >= 1:
            return
        time.sleep(0.2)
    raise TimeoutError("Jasmin's connector did not bind to the simulator")


COUNTER = re.compile(r"(\w+)=(\d+)(?:/(\d+))?")


def sim_counters(sim_log: Path) -> dict[str, int]:
    """The simulator's last line of counters (`--stats-interval`): submits, accepted,
    receipts_acked..."""
    try:
        lines = [ln for ln in sim_log.read_text().splitlines() if "submits=" in ln]
    except FileNotFoundError:
        return {}
    if not lines:
        return {}
    return {m[1]: int(m[2]) for m in COUNTER.finditer(lines[-1])}


def _config(ports: dict[str, int], vhost: str, redis_db: int, spec: str, root: Path) -> str:
    logs = root / "var" / "log" / "jasmin"
    quiet = "log_level = WARNING\n"
    return f"""\
[jasmin-daemon]
[smpp-server]
bind = {procs.HOST}
port = {ports['smpps']}
{quiet}
[smpp-server-pb]
port = {ports['pb']}
{quiet}
[client-management]
port = {ports['cm']}
store_path = {root}/etc/jasmin/store
{quiet}
[sm-listener]
dlr_lookup_retry_delay = 1
dlr_lookup_max_retries = 5
{quiet}
[dlr]
dlr_lookup_retry_delay = 1
dlr_lookup_max_retries = 5
{quiet}
[router]
port = {ports['router']}
store_path = {root}/etc/jasmin/store
{quiet}
[deliversm-thrower]
{quiet}
[dlr-thrower]
{quiet}
[http-api]
bind = {procs.HOST}
port = {ports['http']}
access_log = {logs}/http-accesslog.log
{quiet}
[jcli]
bind = {procs.HOST}
port = {ports['jcli']}
authentication = False
{quiet}
[amqp-broker]
host = 127.0.0.1
port = 5672
vhost = {vhost}
spec = {spec}
username = guest
password = guest
{quiet}
[redis-client]
host = 127.0.0.1
port = 6379
dbid = {redis_db}
poolsize = 10
{quiet}
[service-smppclient]
{quiet}
"""


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "already exists" not in done.stderr:
        print(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}", file=sys.stderr)


def _redis(*args: str) -> str:
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def _free_redis_db() -> int:
    for db in REDIS_DBS:
        if _redis("-n", str(db), "DBSIZE") == "0":
            return db
    raise RuntimeError("no empty Redis database among 8-15")


def _lock_held() -> bool:
    """Held while a jasmind runs (it releases the lock when it stops)."""
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and b"jasmind.py" in (p / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def shared_pids() -> dict[str, list[int]]:
    """RabbitMQ's and Redis's server processes (shared with the machine: read, never touched)."""
    found: dict[str, list[int]] = {"RabbitMQ (shared)": [], "Redis (shared)": []}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            comm = (p / "comm").read_text().strip()
        except OSError:
            continue
        if comm == "beam.smp":
            found["RabbitMQ (shared)"].append(int(p.name))
        elif comm == "redis-server":
            found["Redis (shared)"].append(int(p.name))
    return found


def remove_root(workdir: Path) -> None:
    shutil.rmtree(workdir / "jasmin-root", ignore_errors=True)
