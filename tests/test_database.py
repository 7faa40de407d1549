"""Write transactions on SQLite: one process's writers take turns on its lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from tikosms.db.engine import Database


async def _counter(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        await conn.execute(text("INSERT INTO counter (n) VALUES (0)"))


async def _increment_all(db: Database, writers: int) -> int:
    async def increment() -> None:
        async with db.begin() as conn:
            n = (await conn.execute(text("SELECT n FROM counter"))).scalar_one()
            await asyncio.sleep(0)  # the other writers are waiting now
            await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    await asyncio.gather(*(increment() for _ in range(writers)))
    async with db.connect() as conn:
        return int((await conn.execute(text("SELECT n FROM counter"))).scalar_one())


async def test_writers_of_one_process_take_turns_in_the_order_they_came(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    try:
        await _counter(db)
        async with db.begin() as conn:
            await conn.execute(text("CREATE TABLE turns (seq INTEGER PRIMARY KEY, writer INT)"))

        async def write(writer: int) -> None:
            async with db.begin() as conn:
                await asyncio.sleep(0.001)  # holds the lock while the others ask for it
                await conn.execute(text("INSERT INTO turns (writer) VALUES (:w)"), {"w": writer})

        tasks = []
        for writer in range(12):  # more writers than the pool's 8 connections
            tasks.append(asyncio.create_task(write(writer)))
            await asyncio.sleep(0)  # each asks for the lock after the one before
        await asyncio.gather(*tasks)
        async with db.connect() as conn:
            order = (await conn.execute(text("SELECT writer FROM turns ORDER BY seq"))
                     ).scalars().all()
        # first come, first served: a send batch is not overtaken by writers that came later
        # (SQLite's busy handler hands the lock to whichever poll comes first)
        assert order == list(range(12))
        assert await _increment_all(db, 40) == 40  # no write lost, none refused
    finally:
        await db.dispose()


async def test_a_write_transaction_inside_another_fails_at_once_instead_of_waiting_for_itself(
        tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'nested.db'}")
    try:
        await _counter(db)
        async with asyncio.timeout(5):  # SQLite's own busy wait would take 30 s, then fail
            with pytest.raises(RuntimeError, match="inside another"):
                async with db.begin():
                    async with db.begin():
                        pass
        assert await _increment_all(db, 2) == 2  # the lock was given back
    finally:
        await db.dispose()


def test_a_database_kept_across_event_loops_still_lets_its_writers_take_turns(
        tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'loops.db'}")
    asyncio.run(_counter(db))
    assert asyncio.run(_increment_all(db, 5)) == 5
    assert asyncio.run(_increment_all(db, 5)) == 10  # another loop: the lock is its own
    asyncio.run(db.dispose())


# -- the driver: one trip to aiosqlite's thread per statement (tikosms.db.sqlite_driver) -------

async def _numbers(db: Database, count: int) -> None:
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE numbers (n INTEGER PRIMARY KEY, label TEXT)"))
        await conn.execute(text("INSERT INTO numbers (n, label) VALUES (:n, :label)"),
                           [{"n": n, "label": f"n{n}"} for n in range(count)])


async def test_results_larger_than_the_first_fetch_come_back_whole(tmp_path: Path) -> None:
    from tikosms.db.sqlite_driver import FIRST_ROWS

    count = 2 * FIRST_ROWS + 7
    db = Database(f"sqlite:///{tmp_path / 'rows.db'}")
    try:
        await _numbers(db, count)
        async with db.connect() as conn:
            rows = (await conn.execute(text("SELECT n FROM numbers ORDER BY n"))).all()
            assert [r.n for r in rows] == list(range(count))
            exactly = (await conn.execute(text("SELECT n FROM numbers ORDER BY n LIMIT :k"),
                                          {"k": FIRST_ROWS})).all()
            assert len(exactly) == FIRST_ROWS  # a first fetch that was full, then nothing
        async with db.connect(stream=True) as conn:
            streamed = []
            result = await conn.stream(text("SELECT n, label FROM numbers ORDER BY n"))
            async for partition in result.partitions(333):
                streamed.extend(partition)
            assert [(r.n, r.label) for r in streamed] == [(n, f"n{n}") for n in range(count)]
            # a stream left half read, then another statement on the same connection
            half = await conn.stream(text("SELECT n FROM numbers ORDER BY n"))
            assert [r.n for r in await half.fetchmany(5)] == [0, 1, 2, 3, 4]
            await half.close()
            assert (await conn.execute(text("SELECT count(*) FROM numbers"))).scalar_one() \
                == count
    finally:
        await db.dispose()


async def test_row_counts_returned_rows_and_errors_are_the_drivers(tmp_path: Path) -> None:
    from sqlalchemy.exc import IntegrityError

    db = Database(f"sqlite:///{tmp_path / 'counts.db'}")
    try:
        await _numbers(db, 10)
        async with db.begin() as conn:
            updated = await conn.execute(text("UPDATE numbers SET label = 'even' "
                                              "WHERE n % 2 = 0"))
            assert updated.rowcount == 5
            returned = await conn.execute(text(
                "INSERT INTO numbers (n, label) VALUES (100, 'new') RETURNING n, label"))
            assert returned.one() == (100, "new")
        with pytest.raises(IntegrityError):
            async with db.begin() as conn:
                await conn.execute(text("INSERT INTO numbers (n) VALUES (3)"))
        async with db.connect() as conn:  # the failed transaction left nothing, broke nothing
            labels = (await conn.execute(text(
                "SELECT label FROM numbers WHERE n IN (2, 3, 100) ORDER BY n"))).scalars().all()
            assert labels == ["even", "n3", "new"]
    finally:
        await db.dispose()


# -- writers of several processes: the `<database>-lock` flock (tikosms.db.sqlite_driver) ----

_CHILD_INCREMENTS = """
import asyncio, sys
from sqlalchemy import text
from tikosms.db.engine import Database

async def main():
    db = Database(sys.argv[1])
    try:
        for _ in range(int(sys.argv[2])):
            async with db.begin() as conn:
                n = (await conn.execute(text("SELECT n FROM counter"))).scalar_one()
                await asyncio.sleep(0.001)  # the other process asks for the lock meanwhile
                await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
    finally:
        await db.dispose()

asyncio.run(main())
"""


async def test_writers_of_two_processes_wait_for_each_other_and_lose_no_write(
        tmp_path: Path) -> None:
    import sys

    url = f"sqlite:///{tmp_path / 'two.db'}"
    db = Database(url)
    try:
        await _counter(db)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD_INCREMENTS, url, "60")
        await _increment_all(db, 60)  # meanwhile, here
        assert await child.wait() == 0
        async with db.connect() as conn:
            assert (await conn.execute(text("SELECT n FROM counter"))).scalar_one() == 120
        assert (tmp_path / "two.db-lock").exists()
    finally:
        await db.dispose()


async def test_a_failed_write_gives_the_lock_back_to_the_other_processes(
        tmp_path: Path) -> None:
    import fcntl
    import os

    from sqlalchemy.exc import OperationalError

    db = Database(f"sqlite:///{tmp_path / 'failed.db'}")
    try:
        await _counter(db)
        with pytest.raises(OperationalError):
            async with db.begin() as conn:
                await conn.execute(text("INSERT INTO nowhere VALUES (1)"))
        # another process (here: a descriptor of our own, as flock sees it) takes it at once
        fd = os.open(tmp_path / "failed.db-lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        await db.dispose()


async def test_a_writer_held_up_too_long_by_another_process_fails_as_sqlite_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import os

    from sqlalchemy.exc import OperationalError

    from tikosms.db import sqlite_driver

    db = Database(f"sqlite:///{tmp_path / 'held.db'}")
    try:
        await _counter(db)
        monkeypatch.setattr(sqlite_driver, "LOCK_WAIT", 0.3)
        fd = os.open(tmp_path / "held.db-lock", os.O_RDWR)  # another process's writer
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with pytest.raises(OperationalError, match="database is locked"):
                async with db.begin() as conn:
                    await conn.execute(text("UPDATE counter SET n = 1"))
        finally:
            os.close(fd)
        assert await _increment_all(db, 3) == 3  # free again: nothing was left half-held
    finally:
        await db.dispose()


async def test_a_connection_closed_by_force_in_a_write_gives_the_lock_back(
        tmp_path: Path) -> None:
    """SQLAlchemy's terminate (a connection collected without being returned) stops aiosqlite's
    thread without `close()`: the lock must not outlive it, or every writer waits 30 s."""
    import fcntl
    import os

    from tikosms.db import sqlite_driver

    conn = await sqlite_driver.connect(str(tmp_path / "forced.db"), isolation_level=None)
    cursor = conn.cursor()
    await cursor.execute("BEGIN IMMEDIATE")
    fd = os.open(tmp_path / "forced.db-lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):  # held by the write
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        await conn.stop()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # given back
    finally:
        os.close(fd)


async def test_a_wait_given_up_leaves_the_lock_to_the_others_once_it_comes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait goes on in the kernel after the writer gave up; the lock it gets then must be
    let go at once (the connection still open), or no other process could ever write again."""
    import fcntl
    import os
    import sqlite3

    from tikosms.db import sqlite_driver

    monkeypatch.setattr(sqlite_driver, "LOCK_WAIT", 0.2)
    conn = await sqlite_driver.connect(str(tmp_path / "given-up.db"), isolation_level=None)
    holder = os.open(tmp_path / "given-up.db-lock", os.O_RDWR)
    other = os.open(tmp_path / "given-up.db-lock", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process's writer
        cursor = conn.cursor()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            await cursor.execute("BEGIN IMMEDIATE")
        fcntl.flock(holder, fcntl.LOCK_UN)  # the given-up wait takes it now, and lets go
        for _ in range(200):
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("the lock stayed with a writer that had given up")
        fcntl.flock(other, fcntl.LOCK_UN)
        await cursor.execute("BEGIN IMMEDIATE")  # and the connection writes again
        await cursor.execute("CREATE TABLE t (n INTEGER)")
        await conn.commit()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # given back after its COMMIT
    finally:
        os.close(holder)
        os.close(other)
        await conn.close()
