"""Bring the database schema up to date: `alembic upgrade head`, run from code.

The api service owns the migrations and runs them on start, so there is no
`alembic.ini`: the Alembic configuration is built here and points at the
`kriten_api/migrations` package directory, which ships inside the wheel.

Several api replicas may start at once. On PostgreSQL `migrations/env.py` takes an
advisory transaction lock before reading the current revision; on SQLite the
migration transaction starts with `BEGIN IMMEDIATE`, which holds the write lock
from the start. Either way the second replica waits, then finds nothing to do.
Within one process, upgrades are serialized by an asyncio lock, because Alembic
keeps the running migration's context in module globals.
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
CONNECTION_ATTRIBUTE = "connection"
"""Key in `Config.attributes` under which `env.py` finds an open connection."""

_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic `Config` for the api's migrations, built without an ini file.

    With `database_url`, commands that connect by themselves (e.g.
    `command.revision(config, autogenerate=True)` while writing a new migration)
    connect to that database.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        # Config is a ConfigParser: a "%" in a password would start an interpolation.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migration_engine(database_url: str) -> AsyncEngine:
    """A one-shot engine for running migrations on `database_url`.

    Not `kriten_common.db.engine.create_engine`: that one enables SQLite foreign keys,
    and with them on, the table rebuilds of batch migrations would cascade deletes.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, poolclass=NullPool)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

    # The sqlite3 module would otherwise run DDL outside any transaction; taking
    # control of BEGIN makes a migration atomic and serializes concurrent upgrades.
    @event.listens_for(engine.sync_engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes[CONNECTION_ATTRIBUTE] = connection
    command.upgrade(config, "head")


def _in_process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


async def upgrade_database(database_url: str) -> None:
    """Run every pending migration on `database_url`, in one transaction.

    Safe to call on every start, and from several processes at once.
    """
    # Two upgrades interleaved on one event loop would clobber each other's
    # `alembic.context` and `alembic.op`; the database locks cannot prevent that.
    async with _in_process_lock():
        engine = migration_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_upgrade, alembic_config())
        finally:
            await engine.dispose()
