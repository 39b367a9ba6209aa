"""Which failures a consumer waits out (transient) and which it counts as attempts."""

from __future__ import annotations

import asyncpg.exceptions  # type: ignore[import-untyped]
import pytest
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelInvalidStateError,
    ConnectionClosed,
    ProbableAuthenticationError,
)
from kubernetes.client.exceptions import ApiException
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from kriten_common import errors
from kriten_common.backoff import (
    JITTER_MAX_SECONDS,
    RETRY_DELAYS_SECONDS,
    jitter_seconds,
    transient_level,
)
from kriten_common.outcomes import PermanentError, RetryableError, TransientError
from kriten_common.transient import is_transient


def _wrapped(inner: BaseException) -> Exception:
    try:
        raise RuntimeError("while saving the job") from inner
    except RuntimeError as outer:
        return outer


def _kube(status: int) -> ApiException:
    return ApiException(status=status, reason="x")


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused")),
        InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        DBAPIError("SELECT 1", {}, Exception("lost"), connection_invalidated=True),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle"),
        asyncpg.exceptions.CannotConnectNowError("starting up"),
        ConnectionRefusedError(111, "refused"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        TimeoutError(),
        ChannelInvalidStateError("channel closed"),
        ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"),
        errors.Unavailable("message broker unavailable"),
        TransientError("create job: HTTP 503"),
        _kube(503),
        _kube(429),
        _wrapped(ConnectionResetError(104, "reset")),
    ],
)
def test_infrastructure_failures_are_transient(error: BaseException) -> None:
    assert is_transient(error)


def _raised_while_handling_oserror() -> Exception:
    try:
        try:
            raise FileNotFoundError("status")
        except FileNotFoundError:
            raise KeyError("a bug in the handler")  # noqa: B904 - the point of the test
    except KeyError as bug:
        return bug


@pytest.mark.parametrize(
    "error",
    [
        KeyError("a bug"),
        ValueError("bad"),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        DBAPIError("SELECT 1", {}, Exception("syntax"), connection_invalidated=False),
        FileNotFoundError("no such file"),
        PermissionError("denied"),
        RetryableError("job not running yet"),
        PermanentError("task gone"),
        _kube(403),
        _kube(404),
        _raised_while_handling_oserror(),
        ChannelAccessRefused("ACCESS_REFUSED"),
        ProbableAuthenticationError("ACCESS_REFUSED - login refused"),
    ],
)
def test_bugs_and_refusals_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_the_transient_schedule_grows_then_stays_at_the_longest_delay() -> None:
    assert [transient_level(step) for step in range(7)] == [1, 5, 30, 120, 120, 120, 120]
    # A longer Retry-After from the server wins over the schedule.
    assert transient_level(0, hint=20) == 30
    assert transient_level(2, hint=1) == 30


def test_jitter_is_short_and_bounded() -> None:
    for level in RETRY_DELAYS_SECONDS:
        values = [jitter_seconds(level) for _ in range(200)]
        assert all(0 <= value <= min(JITTER_MAX_SECONDS, level * 0.1) for value in values)
        assert len(set(values)) > 1
