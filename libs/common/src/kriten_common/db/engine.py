"""The async engine and session factory for PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(url: str, *, pre_ping: bool = True) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and enforced foreign keys.

    `pre_ping` tests a pooled connection before each use (a round trip), so a request
    after a database restart does not fail on a dead connection. Without it, the first
    use of a dead connection fails, which invalidates the whole pool: right for
    consumers, whose handlers retry anyway and for which the ping is a tenth of a job.

    A statement's parameters are left out of its errors (`hide_parameters`): they are
    logged, and may hold a callback URL's token, a job's input or an encrypted secret.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # asyncpg waits 60 s for a host that drops packets silently; 10 s lets an outage
        # show as a failed connect, which consumers then back off from (kriten_common.backoff).
        return create_async_engine(
            url,
            pool_pre_ping=pre_ping,
            # Room for a consumer's prefetch of handlers at once: a connection opened
            # beyond the pool is closed again when returned, a connect per message.
            pool_size=20,
            max_overflow=10,
            connect_args={"timeout": 10},
            hide_parameters=True,
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@contextlib.asynccontextmanager
async def read_session(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session for reads alone, outside any transaction (AUTOCOMMIT): a read then costs
    its query's round trip, not a BEGIN and a ROLLBACK besides, which on a per-job path
    (the dispatcher's read of a job's records) was a fifth of its database CPU.

    Each statement sees what was committed when it ran, as under PostgreSQL's default
    READ COMMITTED: use it for one query, or for several that need not agree. Do not
    write in it: a write would be committed at once, whatever follows.
    """
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session
