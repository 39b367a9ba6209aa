"""The migrations build exactly the schema of `kriten_common.db.models`, once, safely.

The schema a migration produces is compared, through SQLAlchemy's inspector, with
`SQLModel.metadata`: a model changed without a migration (or the reverse) fails here.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Dialect
from sqlmodel import SQLModel

import kriten_common.db.models  # noqa: F401  (registers the tables)
from kriten_api.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    migration_engine,
    upgrade_database,
)

HEAD = "0006"
BASE = "0001"

Schema = dict[str, dict[str, Any]]


def _type(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> str:
    return str(type_.compile(dialect=dialect))


def _ondelete(value: str | None) -> str | None:
    return value.upper() if value and value.upper() != "NO ACTION" else None


def metadata_schema(dialect: Dialect) -> Schema:
    """What the models say each table should be, as `database_schema` reports it."""
    schema: Schema = {}
    for table in SQLModel.metadata.sorted_tables:
        schema[table.name] = {
            "columns": {c.name: (_type(c.type, dialect), c.nullable) for c in table.columns},
            "primary_key": tuple(c.name for c in table.primary_key.columns),
            "indexes": {
                (tuple(c.name for c in index.columns), bool(index.unique))
                for index in table.indexes
            },
            "unique": {
                tuple(c.name for c in constraint.columns)
                for constraint in table.constraints
                if isinstance(constraint, sa.UniqueConstraint)
            },
            "foreign_keys": {
                (
                    tuple(fk.parent.name for fk in constraint.elements),
                    constraint.referred_table.name,
                    tuple(fk.column.name for fk in constraint.elements),
                    _ondelete(constraint.ondelete),
                )
                for constraint in table.foreign_key_constraints
            },
        }
    return schema


def database_schema(connection: Connection) -> Schema:
    """Every table of the connected database, as the inspector reflects it."""
    inspector = sa.inspect(connection)
    schema: Schema = {}
    for name in inspector.get_table_names():
        schema[name] = {
            "columns": {
                c["name"]: (_type(c["type"], connection.dialect), c["nullable"])
                for c in inspector.get_columns(name)
            },
            "primary_key": tuple(inspector.get_pk_constraint(name)["constrained_columns"]),
            "indexes": {
                (tuple(str(c) for c in index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(name)
                # PostgreSQL also lists the index behind each unique constraint.
                if "duplicates_constraint" not in index
            },
            "unique": {
                tuple(constraint["column_names"])
                for constraint in inspector.get_unique_constraints(name)
            },
            "foreign_keys": {
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    _ondelete(fk.get("options", {}).get("ondelete")),
                )
                for fk in inspector.get_foreign_keys(name)
            },
        }
    return schema


async def run_sync_on(url: str, fn: Any) -> Any:
    engine = migration_engine(url)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(fn)
    finally:
        await engine.dispose()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def test_the_migrations_ship_with_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()


def test_there_is_one_head_and_one_base() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [HEAD]
    assert scripts.get_bases() == [BASE]


async def test_upgrade_creates_every_table_of_the_models(database_url: str) -> None:
    await upgrade_database(database_url)

    def check(connection: Connection) -> None:
        actual = database_schema(connection)
        assert actual.pop("alembic_version")
        expected = metadata_schema(connection.dialect)
        assert sorted(actual) == sorted(expected)
        for table in expected:
            assert actual[table] == expected[table], table
        assert current_revision(connection) == HEAD

    await run_sync_on(database_url, check)


async def test_autogenerate_sees_no_difference_from_the_models(database_url: str) -> None:
    await upgrade_database(database_url)

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))

    assert await run_sync_on(database_url, differences) == []


async def test_upgrading_again_changes_nothing(database_url: str) -> None:
    await upgrade_database(database_url)

    def add_runner(connection: Connection) -> None:
        connection.execute(
            sa.text(
                "INSERT INTO runners (name, image, git_url, branch, created_at, updated_at)"
                " VALUES ('r', 'img', 'https://example.com/r.git', 'main',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )

    await run_sync_on(database_url, add_runner)
    before = await run_sync_on(database_url, database_schema)

    await upgrade_database(database_url)

    def runners(connection: Connection) -> list[str]:
        return list(connection.execute(sa.text("SELECT name FROM runners")).scalars())

    assert await run_sync_on(database_url, database_schema) == before
    assert await run_sync_on(database_url, runners) == ["r"]
    assert await run_sync_on(database_url, current_revision) == HEAD


# Each child imports everything, says "ready", then upgrades when told "go": the
# upgrades start together, as when several api replicas start at once.
CHILD = """
import asyncio, sys
from kriten_api.migrate import upgrade_database
print("ready", flush=True)
sys.stdin.readline()
asyncio.run(upgrade_database(sys.argv[1]))
"""


async def upgrade_in_processes(url: str, count: int) -> None:
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stdout is not None
        assert await child.stdout.readline() == b"ready\n"
    outcomes = await asyncio.gather(*(child.communicate(b"go\n") for child in children))
    for child, (_out, err) in zip(children, outcomes, strict=True):
        assert child.returncode == 0, err.decode()


def assert_upgraded_once(connection: Connection) -> None:
    versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
    assert versions.scalars().all() == [HEAD]
    assert set(database_schema(connection)) == {*SQLModel.metadata.tables, "alembic_version"}


async def test_upgrades_from_concurrent_processes_all_succeed(database_url: str) -> None:
    # Without the database lock, the losers fail creating tables the winner created.
    await upgrade_in_processes(database_url, 3)
    await run_sync_on(database_url, assert_upgraded_once)


async def test_concurrent_upgrades_in_one_process_all_succeed(database_url: str) -> None:
    await asyncio.gather(*(upgrade_database(database_url) for _ in range(3)))
    await run_sync_on(database_url, assert_upgraded_once)


async def test_downgrade_to_base_removes_every_table(database_url: str) -> None:
    await upgrade_database(database_url)

    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    await run_sync_on(database_url, downgrade)

    def tables(connection: Connection) -> list[str]:
        return sa.inspect(connection).get_table_names()

    assert await run_sync_on(database_url, tables) == ["alembic_version"]


def test_alembic_commands_run_by_hand_connect_by_themselves(tmp_path: Path) -> None:
    # What a developer does while writing a migration: no connection handed over.
    path = tmp_path / "by-hand.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "head")
    with sa.create_engine(f"sqlite:///{path}").connect() as connection:
        assert current_revision(connection) == HEAD
        assert set(sa.inspect(connection).get_table_names()) >= set(SQLModel.metadata.tables)


def test_offline_mode_prints_the_sql(capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(alembic_config("postgresql+asyncpg://nobody@nowhere/none"), "head", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE users" in sql
    assert "ON DELETE CASCADE" in sql


def test_the_config_keeps_a_password_with_a_percent_sign() -> None:
    url = "postgresql+asyncpg://kriten:p%40ss%25@db/kriten"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url
