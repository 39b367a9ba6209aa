"""Which failures are transient infrastructure problems rather than bugs or bad input.

A consumer retries a transient failure with backoff for as long as it lasts, without
using one of the message's attempts (see `kriten_common.amqp.Consumer`); anything else
unexpected is treated as a bug and uses an attempt. The test is on the exception and on
what it explicitly wraps (`raise ... from`, SQLAlchemy's `orig`), because drivers and
SQLAlchemy re-raise connection problems under their own classes. An exception merely
raised while handling another (`__context__`) is not judged by that other one: a bug in
an `except OSError:` block is still a bug.
"""

from __future__ import annotations

import asyncpg.exceptions  # type: ignore[import-untyped]
import sqlalchemy.exc
from aiormq.exceptions import (
    AMQPChannelError,
    AMQPConnectionError,
    AuthenticationError,
    ChannelAccessRefused,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    IncompatibleProtocolError,
    ProbableAuthenticationError,
)

from kriten_common import errors
from kriten_common.outcomes import TransientError

# Exceptions that by their class alone mean "a dependency is not there right now".
_TRANSIENT_CLASSES: tuple[type[BaseException], ...] = (
    TransientError,
    errors.Unavailable,
    # SQLAlchemy: OperationalError is what a lost or refused connection becomes; it is
    # also "no such table" on SQLite, which a migration still to run fixes, so retrying
    # is right there too. InterfaceError is a connection used after it was closed.
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # the connection pool had nothing to hand out
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,  # the server is starting or in recovery
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    # The broker: a channel closed under us, or the connection is gone.
    AMQPConnectionError,
    AMQPChannelError,
    ChannelInvalidStateError,
)
# Refusals that close a channel or connection like an outage does, but that waiting does
# not cure (permission gone, a queue or its arguments wrong): they use attempts instead.
# Some are OSErrors (aiormq's connection errors are ConnectionErrors), so they are
# checked first.
_NEVER_TRANSIENT: tuple[type[BaseException], ...] = (
    ChannelAccessRefused,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    AuthenticationError,
    ProbableAuthenticationError,
    IncompatibleProtocolError,
)
# OSError covers ConnectionError, TimeoutError (asyncio's too since 3.11), socket errors
# and a plain OSError from a failed connect; these subclasses are about local files
# instead, where waiting changes nothing.
_LOCAL_FILE_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
# Kubernetes API statuses that say "later": 0 is no answer at all (a transport error).
_TRANSIENT_HTTP_STATUSES = frozenset({0, 408, 429})


def _kubernetes_transient(error: BaseException) -> bool:
    # Duck-typed so that kriten_common does not import the Kubernetes client.
    if type(error).__name__ != "ApiException" or not type(error).__module__.startswith(
        "kubernetes"
    ):
        return False
    status = getattr(error, "status", 0)
    status = status if isinstance(status, int) else 0
    return status >= 500 or status in _TRANSIENT_HTTP_STATUSES


def _is_transient_alone(error: BaseException) -> bool:
    if isinstance(error, _NEVER_TRANSIENT):
        return False
    if isinstance(error, _TRANSIENT_CLASSES):
        return True
    if isinstance(error, OSError):
        return not isinstance(error, _LOCAL_FILE_ERRORS)
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    return _kubernetes_transient(error)


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or anything it wraps, is a transient infrastructure failure."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _is_transient_alone(current):
            return True
        for inner in (current.__cause__, getattr(current, "orig", None)):
            if isinstance(inner, BaseException):
                pending.append(inner)
    return False
