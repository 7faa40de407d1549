"""A private PostgreSQL cluster for one test: `initdb` in a temporary directory, `pg_ctl start`
on a free port, and a real stop and start (what an operator's restart or a server crash does),
without ever touching the shared server on 5432 (BRIEF: never stop it).

    with PgCluster(tmp_path) as pg:       # initdb + start: about 1.5 s
        url = pg.url("mydb")              # postgresql://postgres@127.0.0.1:<port>/mydb
        pg.create_database("mydb")
        pg.stop("fast")                   # backends terminated, their transactions rolled back
        pg.start()                        # same port, same data

`stop("immediate")` is a crash: every backend is killed at once and the next start replays the
WAL. fsync is off: the cluster lives only for the test, and a process crash (not an OS crash)
loses nothing with fsync off, since every commit's WAL is written to the kernel before the
commit is answered. `synchronous_commit` stays on: with it off, a crash loses the last
~200 ms of answered commits (seen: 50 receipts recorded, acknowledged to the SMSC, then gone,
their parts ENROUTE for good).

The server may not run as root: when the tests run as root, the cluster belongs to the
`postgres` system user and its commands run through `runuser`.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg
from bench.procs import free_port


def postgres_bindir() -> Path | None:
    """The directory of `initdb` and `pg_ctl` (Debian keeps them out of PATH), or None."""
    on_path = shutil.which("pg_config")
    if on_path:
        out = subprocess.run([on_path, "--bindir"], capture_output=True, text=True)
        found = Path(out.stdout.strip())
        if (found / "initdb").exists():
            return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def unavailable() -> str | None:
    """Why a private cluster cannot be run here, or None."""
    if postgres_bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to own a cluster"
        if shutil.which("runuser") is None:
            return "running as root and no runuser"
    return None


class PgCluster:
    def __init__(self, workdir: Path) -> None:
        bindir = postgres_bindir()
        assert bindir is not None, unavailable()
        self.bindir = bindir
        # short path: the Unix socket's path must fit in 107 bytes
        self.home = Path(tempfile.mkdtemp(prefix="tikopg-", dir="/tmp"))
        self.data = self.home / "data"
        self.log = self.home / "postgresql.log"  # copied to workdir when the cluster goes
        self.workdir = workdir
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            user = pwd.getpwnam("postgres")
            os.chown(self.home, user.pw_uid, user.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.home} "
                   "-c fsync=off -c full_page_writes=off "
                   "-c max_connections=60 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: backends are told to stop and roll back; `immediate`: killed (a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "-w", "stop"], capture_output=True)
        if self.log.exists():
            shutil.copy(self.log, self.workdir / "postgresql.log")
        shutil.rmtree(self.home, ignore_errors=True)

    def create_database(self, name: str) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(self.url())
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(go())

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self._as_user, str(self.bindir / program), *args],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}")
