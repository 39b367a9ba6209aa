"""Reads outside a transaction (`read_session`), on SQLite and PostgreSQL: no transaction
is open while they read, and the pooled connection they used is transactional again for
the next ordinary session."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from kriten_common.db.engine import create_engine, read_session, session_factory
from kriten_common.db.models import Runner


def _in_transaction(driver_connection: Any) -> bool:
    if hasattr(driver_connection, "is_in_transaction"):  # asyncpg
        return bool(driver_connection.is_in_transaction())
    return bool(driver_connection.in_transaction)  # sqlite3, through aiosqlite


async def test_a_read_session_holds_no_transaction_and_leaves_none_behind(
    migrated_database_url: str,
) -> None:
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            session.add(Runner(name="kept", git_url="https://example.org/r.git"))
            await session.commit()

        async with read_session(sessions) as session:
            names = (await session.exec(select(Runner.name))).all()
            raw = await (await session.connection()).get_raw_connection()
            assert not _in_transaction(raw.driver_connection)
        assert list(names) == ["kept"]

        # The same pooled connection, in an ordinary session: a write is undone by its
        # rollback, as it would not be if the read's AUTOCOMMIT had stayed on it.
        async with sessions() as session:
            session.add(Runner(name="undone", git_url="https://example.org/r.git"))
            await session.flush()
            raw = await (await session.connection()).get_raw_connection()
            assert _in_transaction(raw.driver_connection)
            await session.rollback()
        async with sessions() as session:
            assert list((await session.exec(select(Runner.name))).all()) == ["kept"]
    finally:
        await engine.dispose()
