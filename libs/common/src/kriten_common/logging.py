"""structlog, configured once per process: JSON when not on a terminal, console otherwise.

Every line of a service's output goes through the same processors and renderer: our own
structlog calls and, through structlog's stdlib bridge (`ProcessorFormatter`), whatever
the standard library's loggers say (aiormq, aio-pika, SQLAlchemy, aiohttp, asyncio's
"Task exception was never retrieved"), as do warnings and uncaught exceptions. A
traceback is a field of its line (`exception`), never lines of its own.

Libraries speak at WARNING and above. What aiormq and aio-pika log when the broker
connection drops (a traceback, then one error per channel and per reconnection attempt)
is demoted to debug: `kriten_common.amqp` logs the cut once, as `broker_connection_lost`,
and its end as `broker_reconnected`.

The ids that let an operator follow one delivery across the services (`LOG_IDS`) are
bound at the edges, an HTTP request and a consumed message (`bound_ids`); every line
logged meanwhile carries them (`merge_ids`). They live in one context variable holding
all of them, not in structlog's one variable per key: binding them is then one `set`
per request or message, a fifth of the cost.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import structlog

LOG_IDS = ("correlation_id", "job_id", "webhook_id")
"""The ids bound at the edges, named once."""

# The libraries' own records of a broker connection that dropped or cannot be made
# again yet: (logger, the record's unformatted message). The reconnection loop repeats
# some of them every few seconds for as long as the broker is away.
_CONNECTION_NOISE = {
    ("aiormq.connection", "Cancelling cause reader exited abnormally"),
    ("aiormq.connection", "error when creating transport: %r"),
    (
        "aiormq.connection",
        'Unexpected connection close from remote "%s", '
        "Connection.Close(reply_code=%r, reply_text=%r)",
    ),
    (
        "aiormq.connection",
        "Server connection %r was stuck. No frames were received in %d seconds.",
    ),
    (
        "aio_pika.robust_connection",
        'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
    ),
    (
        "aio_pika.robust_connection",
        'Connection attempt to "%s" cancelled. Reconnecting after %r seconds.',
    ),
}
# A robust channel's close callback fails when its connection went first; aio-pika
# logs that as an error per channel.
_CHANNEL_CLOSE_CALLBACK = "RobustChannel._on_close"


class _ConnectionNoise(logging.Filter):
    """Demotes the libraries' records of a lost broker connection to debug.

    Only those: a broken frame from the broker, a failing consumer callback or any
    other record of these loggers keeps its level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_connection_noise(record):
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
        return True


def _is_connection_noise(record: logging.LogRecord) -> bool:
    if record.name == "aio_pika.tools":
        args = record.args if isinstance(record.args, tuple) else ()
        return (
            record.msg == "Callback %r error: %s: %s"
            and len(args) == 3
            and _CHANNEL_CLOSE_CALLBACK in repr(args[0])
            # "<Connection ...> closed", or aiormq's "No active transport in channel"
            # (`ChannelInvalidStateError`, a `RuntimeError` too).
            and isinstance(args[2], RuntimeError)
        )
    if (record.name, record.msg) not in _CONNECTION_NOISE:
        return False
    exception = record.exc_info[1] if record.exc_info else None
    # A malformed frame also ends the reader: that one is a fault worth its traceback.
    return exception is None or not _is_protocol_fault(exception)


def _is_protocol_fault(exception: BaseException) -> bool:
    from aiormq import exceptions

    return isinstance(
        exception,
        exceptions.ConnectionFrameError
        | exceptions.ConnectionSyntaxError
        | exceptions.ConnectionUnexpectedFrame
        | exceptions.ProtocolSyntaxError,
    )


_NOISY_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection", "aio_pika.tools")


class _Service:
    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", self._name)
        return event


class _Output(logging.Handler):
    """Writes the standard library's records through structlog's own writer, so both
    take the same lock and a line is never interleaved with another."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._out = structlog.PrintLogger(file=stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(
    *,
    level: str = "info",
    log_format: str = "auto",
    service: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """`service`, when given, names the process on every line (`"service"`), so that
    the services' logs read together still tell who said what."""
    output = sys.stderr if stream is None else stream
    use_json = log_format == "json" or (log_format == "auto" and not output.isatty())
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        merge_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service is not None:
        shared.insert(0, _Service(service))
    # JSON: the traceback is a string field of the line. Console: drawn below it, plain
    # (a rich one would show the locals, secrets among them).
    rendering: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if use_json
        else [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    )
    structlog.configure(
        processors=[*shared, *rendering],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=True,
    )

    handler = _Output(output)
    handler.setLevel(numeric_level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries: quiet, but their warnings and errors are seen (in the same format).
    root.setLevel(logging.WARNING)
    for name in _NOISY_LOGGERS:
        noisy = logging.getLogger(name)
        for old_filter in [f for f in noisy.filters if isinstance(f, _ConnectionNoise)]:
            noisy.removeFilter(old_filter)
        noisy.addFilter(_ConnectionNoise())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: types.TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    get_logger("kriten").critical("uncaught_exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else None
    get_logger("kriten").error(
        "thread_exception",
        thread=thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


_LOG_ID_NAMES = frozenset(LOG_IDS)
_NO_IDS: Mapping[str, str] = types.MappingProxyType({})
# The ids bound where this runs; replaced, never changed in place, so that a task that
# copied the context keeps what it saw.
_IDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "kriten_log_ids", default=_NO_IDS
)


def merge_ids(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The processor that adds the bound ids to a line (a line's own value wins)."""
    for name, value in _IDS.get().items():
        event.setdefault(name, value)
    return event


def _check_ids(ids: Mapping[str, str | None]) -> None:
    if not _LOG_ID_NAMES.issuperset(ids):
        raise ValueError(f"not a log id: {sorted(set(ids) - _LOG_ID_NAMES)}")


@contextlib.contextmanager
def bound_ids(**ids: str | None) -> Iterator[None]:
    """Binds the given `LOG_IDS` that have a value for what runs inside, and unbinds
    every one of them for it first, so nothing of an earlier delivery stays behind."""
    _check_ids(ids)
    token = _IDS.set({name: value for name, value in ids.items() if value})
    try:
        yield
    finally:
        _IDS.reset(token)


def bind_ids(**ids: str | None) -> None:
    """Adds ids learnt along the way (the ingress learns the job id after admission) to
    those bound by the edge around it; they go when that edge's `bound_ids` ends."""
    _check_ids(ids)
    _IDS.set({**_IDS.get(), **{name: value for name, value in ids.items() if value}})


def current_id(name: str) -> str | None:
    """The id of that name bound where this runs, if any."""
    return _IDS.get().get(name)


def without_ids() -> contextvars.Context:
    """A copy of the current context without the bound ids: for a task started on
    behalf of many (a batch, a shared read), which must not carry its first caller's."""
    context = contextvars.copy_context()
    context.run(_IDS.set, _NO_IDS)
    return context
