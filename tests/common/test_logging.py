"""The logging configuration: every record, ours or a library's, is one JSON line."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import json
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ConnectionFrameError,
)

from kriten_common.logging import (
    bind_ids,
    bound_ids,
    configure_logging,
    current_id,
    get_logger,
    without_ids,
)


class Output:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def configure(self, level: str = "info", service: str | None = None) -> None:
        configure_logging(level=level, log_format="json", service=service, stream=self.stream)
        # Loggers cached by this test would keep this stream after it.
        structlog.configure(cache_logger_on_first_use=False)

    def lines(self) -> list[dict[str, Any]]:
        raw = self.stream.getvalue().splitlines()
        return [json.loads(line) for line in raw]


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch) -> Iterator[Output]:
    """Configures logging into a string, and restores everything global afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_structlog = structlog.get_config()
    noisy = {
        name: list(logging.getLogger(name).filters)
        for name in ("aiormq.connection", "aio_pika.robust_connection", "aio_pika.tools")
    }
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    try:
        yield Output()
    finally:
        logging.captureWarnings(False)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        for name, filters in noisy.items():
            logging.getLogger(name).filters[:] = filters
        structlog.configure(**saved_structlog)


def test_our_line_is_json_with_level_event_and_time(output: Output) -> None:
    output.configure()
    get_logger("kriten.test").info("something_happened", count=2)
    (line,) = output.lines()
    assert line["event"] == "something_happened"
    assert line["level"] == "info"
    assert line["count"] == 2
    assert line["timestamp"].endswith("Z")


def test_a_library_record_is_one_json_line_in_the_same_format(output: Output) -> None:
    output.configure()
    logging.getLogger("sqlalchemy.pool").warning("pool %s is %d%% full", "main", 90)
    (line,) = output.lines()
    assert line["event"] == "pool main is 90% full"
    assert line["level"] == "warning"
    assert line["logger"] == "sqlalchemy.pool"
    assert "timestamp" in line


def test_every_line_names_the_service(output: Output) -> None:
    output.configure(service="ingress")
    get_logger("kriten.test").info("ours")
    logging.getLogger("aiohttp.server").warning("theirs")
    get_logger("kriten.test").info("service_starting", service="named")
    ours, theirs, named = output.lines()
    assert ours["service"] == theirs["service"] == "ingress"
    assert named["service"] == "named"


def test_libraries_speak_from_warning_on(output: Output) -> None:
    output.configure(level="debug")
    logging.getLogger("aio_pika.connection").info("chatty")
    logging.getLogger("aiohttp.access").debug("chattier")
    assert output.lines() == []


def test_an_exception_is_in_its_line_not_lines_of_its_own(output: Output) -> None:
    output.configure()
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
        get_logger("kriten.test").exception("handler_failed")
    text = output.stream.getvalue()
    assert len(text.splitlines()) == 2
    library, ours = output.lines()
    for line in (library, ours):
        assert line["level"] == "error"
        assert line["exception"].startswith("Traceback (most recent call last)")
        assert "ValueError: broken\non two lines" in line["exception"]
    assert (library["event"], library["logger"]) == ("Error handling request", "aiohttp.server")
    assert ours["event"] == "handler_failed"


def test_an_exception_never_retrieved_is_one_json_line(output: Output) -> None:
    output.configure()

    async def fails() -> None:
        raise RuntimeError("nobody awaited me")

    async def main() -> None:
        task = asyncio.ensure_future(fails())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del task
        gc.collect()

    asyncio.run(main())
    (line,) = output.lines()
    assert line["logger"] == "asyncio"
    assert line["level"] == "error"
    assert line["event"].startswith("Task exception was never retrieved")
    assert "RuntimeError: nobody awaited me" in line["exception"]


def test_warnings_and_uncaught_exceptions_are_json_lines(output: Output) -> None:
    output.configure()
    warnings.warn("old api", DeprecationWarning, stacklevel=1)
    try:
        raise KeyError("lost")
    except KeyError:
        kind, value, traceback = sys.exc_info()
        assert kind is not None
        assert value is not None
        sys.excepthook(kind, value, traceback)
    warned, uncaught = output.lines()
    assert warned["logger"] == "py.warnings"
    assert "old api" in warned["event"]
    assert (uncaught["event"], uncaught["level"]) == ("uncaught_exception", "critical")
    assert "KeyError: 'lost'" in uncaught["exception"]


def _reader_exited(exception: BaseException) -> None:
    try:
        raise exception
    except type(exception):
        logging.getLogger("aiormq.connection").warning(
            "Cancelling cause reader exited abnormally", exc_info=sys.exc_info()[1]
        )


def test_the_libraries_records_of_a_lost_connection_are_debug(output: Output) -> None:
    output.configure()
    _reader_exited(AMQPConnectionError("Server connection unexpectedly closed"))
    logging.getLogger("aio_pika.robust_connection").warning(
        'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
        "amqp://guest:******@broker/",
        ConnectionRefusedError(111, "refused"),
        5,
    )
    logging.getLogger("aio_pika.tools").error(
        "Callback %r error: %s: %s",
        "<OneShotCallback: cb=<bound method RobustChannel._on_close of <...>>>",
        "RuntimeError",
        RuntimeError("<Connection> closed"),
    )
    logging.getLogger("aio_pika.tools").error(
        "Callback %r error: %s: %s",
        "<OneShotCallback: cb=<bound method RobustChannel._on_close of <...>>>",
        "ChannelInvalidStateError",
        ChannelInvalidStateError("No active transport in channel"),
    )
    logging.getLogger("aiormq.connection").error(
        "error when creating transport: %r", ConnectionRefusedError(111, "refused")
    )
    assert output.lines() == []


def test_at_debug_the_demoted_records_are_seen_as_debug(output: Output) -> None:
    output.configure(level="debug")
    _reader_exited(AMQPConnectionError("Server connection unexpectedly closed"))
    (line,) = output.lines()
    assert line["level"] == "debug"
    assert "AMQPConnectionError" in line["exception"]


def test_other_records_of_those_loggers_keep_their_level(output: Output) -> None:
    output.configure()
    # A malformed frame is a fault, not a cut: its traceback stays a warning.
    _reader_exited(ConnectionFrameError(501, "bad frame"))
    logging.getLogger("aio_pika.tools").error(
        "Callback %r error: %s: %s", "<our_callback>", "KeyError", KeyError("x")
    )
    frame, callback = output.lines()
    assert (frame["level"], callback["level"]) == ("warning", "error")


def test_bound_ids_are_in_every_line_and_gone_afterwards(output: Output) -> None:
    output.configure()
    log = get_logger("kriten.test")
    with bound_ids(correlation_id="c-1", job_id="j-1", webhook_id=None):
        log.info("inside")
        bind_ids(webhook_id="w-1")
        assert current_id("webhook_id") == "w-1"
        log.info("learnt")
        # An explicit value wins over the bound one.
        log.info("explicit", job_id="j-other")
    log.info("outside")
    inside, learnt, explicit, outside = output.lines()
    assert (inside["correlation_id"], inside["job_id"]) == ("c-1", "j-1")
    assert "webhook_id" not in inside
    assert learnt["webhook_id"] == "w-1"
    assert explicit["job_id"] == "j-other"
    assert not {"correlation_id", "job_id", "webhook_id"} & outside.keys()


def test_bound_ids_replace_every_id_of_an_earlier_edge(output: Output) -> None:
    output.configure()
    log = get_logger("kriten.test")
    with bound_ids(correlation_id="outer", job_id="job-outer"):
        with bound_ids(correlation_id="inner"):
            log.info("inner")
        log.info("outer")
    inner, outer = output.lines()
    assert inner["correlation_id"] == "inner"
    assert "job_id" not in inner
    assert (outer["correlation_id"], outer["job_id"]) == ("outer", "job-outer")


def test_without_ids_gives_a_task_no_ids_of_its_starter(output: Output) -> None:
    output.configure()
    log = get_logger("kriten.test")

    async def main() -> None:
        OTHER.set("kept")
        with bound_ids(correlation_id="c-1", job_id="j-1"):
            inherited = asyncio.create_task(_log(log, "inherited"))
            detached = asyncio.create_task(_log(log, "detached"), context=without_ids())
            await asyncio.gather(inherited, detached)

    asyncio.run(main())
    lines = {line["event"]: line for line in output.lines()}
    assert lines["inherited"]["job_id"] == "j-1"
    assert "job_id" not in lines["detached"]
    assert "correlation_id" not in lines["detached"]
    # Other context variables are kept.
    assert lines["detached"]["other"] == "kept"


OTHER: contextvars.ContextVar[str] = contextvars.ContextVar("other", default="")


async def _log(log: Any, event: str) -> None:
    log.info(event, other=OTHER.get())
