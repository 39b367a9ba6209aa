"""Database fixtures for tests: a fresh, empty database per test, on SQLite or PostgreSQL.

`tests/conftest.py` imports them, so every test can ask for them by name::

    async def test_something(database_url: str) -> None:  # runs once per backend
        ...

Fixtures (all function-scoped: every test gets its own database, removed afterwards):

- `sqlite_url`: an `sqlite+aiosqlite://` URL of a file in `tmp_path`; the file does not
  exist yet.
- `postgres_url`: an asyncpg URL of a newly created, empty database
  `kriten_test_<random>`, dropped after the test (connections still open are cut).
  The server is reached through the admin URL in `KRITEN_TEST_DATABASE_URL`; without
  it, a PostgreSQL container when Docker is available, else the machine's server at
  `postgresql+asyncpg://postgres@127.0.0.1:5432/postgres`. A server that does not
  answer fails the test: it is never skipped.
- `database_url`: parametrized over both: `[sqlite]` and `[postgresql]` (the latter
  marked `integration`), so a test using it runs against each backend.
- `db_sessions`: a `SessionFactory` on `database_url` after the api's migrations,
  for tests that need the schema; its engine is disposed afterwards.

None of them creates tables except `db_sessions`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from kriten_api.migrate import upgrade_database
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from tests.broker_fixtures import docker_available

ADMIN_URL_ENV = "KRITEN_TEST_DATABASE_URL"
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "kriten_test_"


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """The URL of a not yet existing SQLite database file under `tmp_path`."""
    return f"sqlite+aiosqlite:///{tmp_path / 'kriten.db'}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """Where test databases are created (see the module docstring)."""
    configured = os.environ.get(ADMIN_URL_ENV)
    if configured:
        yield configured
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="asyncpg") as container:
            yield container.get_connection_url()
        return
    yield DEFAULT_ADMIN_URL


@pytest.fixture
async def postgres_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database, dropped when the test ends."""
    admin_url = make_url(postgres_admin_url)
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:16]}"
    # CREATE/DROP DATABASE cannot run inside a transaction.
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError, DBAPIError) as exc:
        await admin.dispose()
        where = admin_url.render_as_string(hide_password=True)
        raise AssertionError(f"no PostgreSQL at {where} (set {ADMIN_URL_ENV}): {exc}") from exc
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            async with admin.connect() as connection:
                # FORCE: an engine the test forgot to dispose must not keep the database.
                await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite_url", id="sqlite"),
        pytest.param("postgres_url", id="postgresql", marks=pytest.mark.integration),
    ],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of each backend in turn (see `sqlite_url`, `postgres_url`)."""
    url: str = request.getfixturevalue(request.param)
    return url


@pytest.fixture
async def db_sessions(database_url: str) -> AsyncIterator[SessionFactory]:
    """A session factory on a migrated fresh database of each backend."""
    await upgrade_database(database_url)
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
