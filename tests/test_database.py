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


async def test_writers_of_one_process_take_turns_and_each_commits(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    try:
        await _counter(db)
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
