"""`tikosms serve --demo` as a newcomer runs it: a real process on a fresh SQLite file.

It seeds a demo account once, prints a token and curl commands; the message those commands
send is delivered by the simulated carrier; SIGTERM stops the server cleanly. Delivery runs in
a process of serve's own, started again when it dies and gone when serve is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
from bench.procs import free_port

from tests.cli.test_accounts_cli import invoke

STARTUP_TIMEOUT = 60.0  # seconds: a fresh database is migrated first
STOP_TIMEOUT = 10.0  # seconds; SIGTERM gives uvicorn and the worker 5 s each at most


@dataclass
class Demo:
    """What `serve --demo` printed: the token and the send command, as parts of a request."""

    token: str
    send_url: str
    send_headers: dict[str, str]
    send_body: dict[str, object]
    status_url: str


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    stdout: Path
    stderr: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(), self.stderr.read_text()


@contextmanager
def serve_demo(db_path: Path, run_dir: Path, *extra: str) -> Iterator[Server]:
    port = free_port()
    run_dir.mkdir()
    out, err = run_dir / "stdout.txt", run_dir / "stderr.txt"
    env = {**os.environ, "TIKOSMS_DATABASE_URL": f"sqlite:///{db_path}",
           "TIKOSMS_SIM_RECEIPT_DELAY_MS": "50"}
    env.pop("TIKOSMS_PORT", None)
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tikosms")), "serve", "--demo", "--port",
             str(port), *extra],
            stdout=stdout, stderr=stderr, env=env, cwd=run_dir,
        )
    server = Server(process, f"http://127.0.0.1:{port}", out, err)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"serve exited with {server.process.returncode}: "
                                 f"{server.output()}")
        try:
            if httpx.get(f"{server.base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"/health did not answer within {STARTUP_TIMEOUT} s: {server.output()}")


def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=STOP_TIMEOUT)


def printed_demo(stdout: str) -> Demo:
    """Read the token and the curl commands back from what `serve --demo` printed."""
    token = re.search(r"API token: (\S+)", stdout)
    send = re.search(r"curl -s (\S+/v1/message) -H 'Authorization: Bearer (\S+)' \\\s*"
                     r"-H '([^:]+): ([^']+)' \\\s*-d '([^']+)'", stdout)
    status = re.search(r"curl -s '(\S+/v1/get_message\?message_id=)MESSAGE_ID'", stdout)
    assert token and send and status, stdout
    assert send.group(2) == token.group(1)
    return Demo(
        token=token.group(1),
        send_url=send.group(1),
        send_headers={"Authorization": f"Bearer {send.group(2)}", send.group(3): send.group(4)},
        send_body=json.loads(send.group(5)),
        status_url=status.group(1),
    )


def on(server: Server, printed_url: str) -> str:
    """The printed URL's path and query on the address the server really listens on."""
    return server.base + re.sub(r"^https?://[^/]+", "", printed_url)


def wait_for_status(server: Server, demo: Demo, message_id: str, wanted: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(on(server, demo.status_url) + message_id,
                      headers={"Authorization": f"Bearer {demo.token}"}, timeout=5)
        assert r.status_code == 200, r.text
        [row] = r.json()["data"]
        if row["status"] == wanted:
            return dict(row)
        if time.monotonic() > deadline:
            raise AssertionError(f"status is still {row['status']}, not {wanted}")
        time.sleep(0.05)


def test_demo_sends_a_message_that_is_delivered_and_stops_cleanly(tmp_path: Path) -> None:
    db_path = tmp_path / "tikosms.db"
    with serve_demo(db_path, tmp_path / "first") as server:
        demo = printed_demo(server.output()[0])
        sent = httpx.post(on(server, demo.send_url), headers=demo.send_headers,
                          content=json.dumps(demo.send_body), timeout=10)
        assert sent.status_code == 200, sent.text
        row = wait_for_status(server, demo, sent.json()["message_id"], "DELIVRD")
        assert row["sent_at"] and row["delivered_at"]


def test_sigterm_stops_the_delivery_worker_and_the_process(tmp_path: Path) -> None:
    with serve_demo(tmp_path / "tikosms.db", tmp_path / "run") as server:
        stop(server)  # raises TimeoutExpired unless it ends within STOP_TIMEOUT
        assert "stopped (" in server.output()[1]  # the worker's clean stop, not a kill


def test_sigterm_exits_with_status_0(tmp_path: Path) -> None:
    with serve_demo(tmp_path / "tikosms.db", tmp_path / "run") as server:
        assert stop(server) == 0


def test_demo_commands_point_at_the_port_it_listens_on(tmp_path: Path) -> None:
    with serve_demo(tmp_path / "tikosms.db", tmp_path / "run") as server:
        demo = printed_demo(server.output()[0])
        assert demo.send_url == f"{server.base}/v1/message"


def test_a_second_start_does_not_seed_the_demo_again(tmp_path: Path) -> None:
    db_path = tmp_path / "tikosms.db"
    with serve_demo(db_path, tmp_path / "first") as server:
        first = printed_demo(server.output()[0])
        sent = httpx.post(on(server, first.send_url), headers=first.send_headers,
                          content=json.dumps(first.send_body), timeout=10)
        assert sent.status_code == 200, sent.text
        stop(server)
    with serve_demo(db_path, tmp_path / "second") as server:
        second = printed_demo(server.output()[0])
        assert "exists" in server.output()[1]
        # the new token belongs to the same, already charged account
        r = httpx.get(f"{server.base}/v1/balance",
                      headers={"Authorization": f"Bearer {second.token}"}, timeout=5)
        assert r.status_code == 200
        assert json.loads(r.text, parse_float=Decimal)["balance"] == Decimal("99.955")
        stop(server)
    url = f"sqlite:///{db_path}"
    accounts = json.loads(invoke(url, "accounts", "list", "--json").stdout)
    assert [a["name"] for a in accounts] == ["Demo"]
    rates = json.loads(invoke(url, "rates", "list", "--json").stdout)
    assert len(rates) == 7  # the demo price list, once


def delivery_processes(pid: int) -> list[int]:
    """The live `tikosms worker` children of a serve process."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"worker" in cmdline and alive(int(child)):
                found.append(int(child))
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def send_and_deliver(server: Server, demo: Demo) -> None:
    sent = httpx.post(on(server, demo.send_url), headers=demo.send_headers,
                      content=json.dumps(demo.send_body), timeout=10)
    assert sent.status_code == 200, sent.text
    wait_for_status(server, demo, sent.json()["message_id"], "DELIVRD")


def test_a_delivery_process_that_dies_is_started_again_and_delivery_goes_on(
        tmp_path: Path) -> None:
    with serve_demo(tmp_path / "tikosms.db", tmp_path / "run") as server:
        demo = printed_demo(server.output()[0])
        wait_for(lambda: len(delivery_processes(server.process.pid)) == 1,
                 "one delivery process")
        [first] = delivery_processes(server.process.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: delivery_processes(server.process.pid) not in ([], [first]),
                 "a new delivery process")
        send_and_deliver(server, demo)  # the new one delivers
        assert stop(server) == 0
        err = server.output()[1]
        assert f"the delivery process (pid {first}) exited with code -9" in err
        assert "starting it again in 1 s" in err


def test_the_delivery_process_stops_when_serve_is_killed(tmp_path: Path) -> None:
    with serve_demo(tmp_path / "tikosms.db", tmp_path / "run") as server:
        wait_for(lambda: len(delivery_processes(server.process.pid)) == 1,
                 "one delivery process")
        [child] = delivery_processes(server.process.pid)
        server.process.kill()  # no chance to stop it: it must notice by itself
        server.process.wait(timeout=10)
        wait_for(lambda: not alive(child), "the orphaned delivery process gone")
        assert "the serve process is gone: stopping" in server.output()[1]


def test_one_process_delivers_without_a_process_of_its_own(tmp_path: Path) -> None:
    with serve_demo(tmp_path / "tikosms.db", tmp_path / "run", "--one-process") as server:
        demo = printed_demo(server.output()[0])
        send_and_deliver(server, demo)
        assert delivery_processes(server.process.pid) == []
        assert stop(server) == 0
