"""The Alembic environment of the api's migrations, run by `kriten_api.migrate`.

`upgrade_database` hands over an open connection, already in a transaction, through
`config.attributes`; without one (Alembic commands run by hand while writing a
migration) this connects to the configured `sqlalchemy.url` itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import kriten_common.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from kriten_api.migrate import CONNECTION_ATTRIBUTE, migration_engine

# b"kritenmg" as a bigint: one fixed key that every api replica agrees on.
ADVISORY_LOCK_ID = 0x6B726974656E6D67

target_metadata = SQLModel.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Taken before Alembic reads alembic_version, so a replica that waited
            # here sees the revision the first one committed and has nothing to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
        context.run_migrations()


async def run_migrations_with_own_engine(url: str) -> None:
    engine = migration_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline(url: str) -> None:
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get(CONNECTION_ATTRIBUTE)
    if connection is not None:
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no connection and no sqlalchemy.url: use kriten_api.migrate")
    if context.is_offline_mode():
        run_migrations_offline(url)
    else:
        asyncio.run(run_migrations_with_own_engine(url))


main()
