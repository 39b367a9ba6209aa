"""Fixtures shared by every test: real RabbitMQ and databases (see the two modules), and
password hashing at argon2's cheapest costs."""

from collections.abc import Iterator

import pytest
from argon2 import Parameters, Type
from argon2.profiles import get_default_parameters

from kriten_api import passwords
from tests.broker_fixtures import amqp_prefix, amqp_url, topology
from tests.callback_receiver import serve_receiver
from tests.db_fixtures import (
    database_backend,
    database_url,
    db_sessions,
    migrated_database_url,
    migrated_postgres_url,
    migrated_sqlite_url,
    postgres_admin_url,
    postgres_template,
    postgres_url,
    sqlite_template,
    sqlite_url,
)

__all__ = [
    "amqp_prefix",
    "amqp_url",
    "database_backend",
    "database_url",
    "db_sessions",
    "migrated_database_url",
    "migrated_postgres_url",
    "migrated_sqlite_url",
    "postgres_admin_url",
    "postgres_template",
    "postgres_url",
    "serve_receiver",
    "sqlite_template",
    "sqlite_url",
    "topology",
]

# argon2id still, so hashes look like production's, but at the lowest costs argon2
# allows: at the default costs each hash took about half a second on a CI machine, and
# every app start, user creation and login pays one. hash_len and salt_len stay at
# useful lengths so two hashes of one password still differ.
CHEAP_PASSWORD_HASHING = Parameters(
    type=Type.ID,
    version=19,
    salt_len=16,
    hash_len=16,
    time_cost=1,
    memory_cost=8,
    parallelism=1,
)


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    passwords.use_parameters(CHEAP_PASSWORD_HASHING)
    yield
    passwords.use_parameters(get_default_parameters())


@pytest.fixture(autouse=True)
def production_password_costs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Production's costs in tests marked `production_password_costs` (those of the
    hashing itself); every other test keeps the session's cheap ones."""
    if request.node.get_closest_marker("production_password_costs") is None:
        yield
        return
    passwords.use_parameters(get_default_parameters())
    yield
    passwords.use_parameters(CHEAP_PASSWORD_HASHING)
