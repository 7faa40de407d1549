"""The number-resolution pool's processes never outlive the server that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

# A server stand-in: starts the pool as `tikosms serve` does, prints the pool's pids, waits.
SERVER = """
import sys, time
from tikosms.messaging import resolver
resolver.warm_up()
pool = resolver.pool()
deadline = time.monotonic() + 60
while len(pool._processes or {}) < resolver._workers() and time.monotonic() < deadline:
    time.sleep(0.05)
print(" ".join(str(pid) for pid in pool._processes), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_processes_exit_when_the_server_is_killed() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        pids = [int(p) for p in server.stdout.readline().split()]
        assert pids, "the pool started no process"
        assert all(_alive(pid) for pid in pids)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in pids if _alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"pool processes outlived their server: {left}"
    finally:
        if server.poll() is None:
            server.kill()
