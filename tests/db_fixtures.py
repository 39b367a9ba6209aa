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
- `migrated_sqlite_url`, `migrated_postgres_url`, `migrated_database_url`: the same,
  but the database already has the api's schema (and nothing else). `migrated_sqlite_url`
  is the file of `sqlite_url`: a test asking for both sees one database. It is a copy of a
  template migrated once per session: running the migrations for every test cost half
  a second each on PostgreSQL.
- `db_sessions`: a `SessionFactory` on `migrated_database_url`, for tests that need the
  schema; its engine is disposed afterwards.

`database_url` and `migrated_database_url` share their parameter (`database_backend`),
so a test asking for both runs once per backend, not once per pair of backends.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from kriten_api.migrate import upgrade_database
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from tests.broker_fixtures import docker_available

ADMIN_URL_ENV = "KRITEN_TEST_DATABASE_URL"
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "kriten_test_"
TEMPLATE_PREFIX = "kriten_template_"


def _run_apart(coroutine: Coroutine[object, object, None]) -> None:
    """Runs `coroutine` to the end on an event loop of its own, in another thread: a
    session fixture is set up while a test's loop may already be current here."""
    problems: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as problem:  # re-raised in the caller's thread
            problems.append(problem)

    thread = threading.Thread(target=run, name="db-template")
    thread.start()
    thread.join()
    if problems:
        raise problems[0]


def _admin_engine(admin_url: URL) -> AsyncEngine:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    return create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """The URL of a not yet existing SQLite database file under `tmp_path`."""
    return f"sqlite+aiosqlite:///{tmp_path / 'kriten.db'}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file with the api's schema, migrated once per session."""
    path = tmp_path_factory.mktemp("sqlite-template") / "kriten.db"
    _run_apart(upgrade_database(f"sqlite+aiosqlite:///{path}"))
    # A copy of the file alone must be the whole database: no journal left beside it.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    return path


@pytest.fixture
async def migrated_sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """Like `sqlite_url`, but the file exists, a copy of the migrated template."""
    path = tmp_path / "kriten.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


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
    async for url in _fresh_postgres(postgres_admin_url, template=None):
        yield url


@pytest.fixture(scope="session")
def postgres_template(postgres_admin_url: str) -> Iterator[str]:
    """The name of a PostgreSQL database with the api's schema, migrated once per session
    and dropped at its end; only ever copied (`CREATE DATABASE ... TEMPLATE`), never
    connected to by a test, since PostgreSQL copies no database that has connections."""
    admin_url = make_url(postgres_admin_url)
    name = f"{TEMPLATE_PREFIX}{uuid.uuid4().hex[:16]}"

    async def create() -> None:
        admin = _admin_engine(admin_url)
        try:
            async with admin.connect() as connection:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            await admin.dispose()
        await upgrade_database(admin_url.set(database=name).render_as_string(hide_password=False))

    async def drop() -> None:
        admin = _admin_engine(admin_url)
        try:
            async with admin.connect() as connection:
                await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.dispose()

    try:
        _run_apart(create())
        yield name
    finally:
        _run_apart(drop())


@pytest.fixture
async def migrated_postgres_url(
    postgres_admin_url: str, postgres_template: str
) -> AsyncIterator[str]:
    """Like `postgres_url`, but a copy of the migrated template."""
    async for url in _fresh_postgres(postgres_admin_url, template=postgres_template):
        yield url


async def _fresh_postgres(postgres_admin_url: str, template: str | None) -> AsyncIterator[str]:
    """Creates a database (empty, or a copy of `template`), yields its URL, drops it."""
    admin_url = make_url(postgres_admin_url)
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:16]}"
    admin = _admin_engine(admin_url)
    copy_of = f' TEMPLATE "{template}"' if template is not None else ""
    try:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"{copy_of}')
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
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgresql", marks=pytest.mark.integration),
    ],
)
def database_backend(request: pytest.FixtureRequest) -> str:
    """`sqlite`, then `postgres`: the parameter of `database_url` and its migrated twin."""
    backend: str = request.param
    return backend


@pytest.fixture
def database_url(database_backend: str, request: pytest.FixtureRequest) -> str:
    """A fresh database of each backend in turn (see `sqlite_url`, `postgres_url`)."""
    url: str = request.getfixturevalue(f"{database_backend}_url")
    return url


@pytest.fixture
def migrated_database_url(database_backend: str, request: pytest.FixtureRequest) -> str:
    """A fresh database with the api's schema, of each backend in turn."""
    url: str = request.getfixturevalue(f"migrated_{database_backend}_url")
    return url


@pytest.fixture
async def db_sessions(migrated_database_url: str) -> AsyncIterator[SessionFactory]:
    """A session factory on a migrated fresh database of each backend."""
    engine = create_engine(migrated_database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
