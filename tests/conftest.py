"""Fixtures shared by every test: real RabbitMQ and databases (see the two modules)."""

from tests.broker_fixtures import amqp_prefix, amqp_url, topology
from tests.db_fixtures import (
    database_url,
    db_sessions,
    postgres_admin_url,
    postgres_url,
    sqlite_url,
)

__all__ = [
    "amqp_prefix",
    "amqp_url",
    "database_url",
    "db_sessions",
    "postgres_admin_url",
    "postgres_url",
    "sqlite_url",
    "topology",
]
