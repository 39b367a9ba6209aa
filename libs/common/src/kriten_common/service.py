"""What every service's `main()` and `create_app()` share: cleanup contexts for the
database and the broker, and the one way to run an app until SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from sqlalchemy import text

from kriten_common.amqp import BrokerUnreachable, Publisher, Topology, connect
from kriten_common.consumer_metrics import PublisherMetrics
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from kriten_common.http import METRICS_REGISTRY, READINESS_CHECKS
from kriten_common.logging import configure_logging, get_logger
from kriten_common.settings import CommonSettings, ConfigurationError

log = get_logger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
_Settings = TypeVar("_Settings", bound=CommonSettings)


def database_context(
    settings: CommonSettings, key: web.AppKey[SessionFactory], *, pre_ping: bool = True
) -> CleanupContext:
    """Opens the engine at start, closes it at shutdown; adds a `database` readiness check.
    `pre_ping`: see `kriten_common.db.engine.create_engine`."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url.get_secret_value(), pre_ping=pre_ping)
        sessions = session_factory(engine)
        app[key] = sessions

        async def database_ready() -> bool:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return True

        if READINESS_CHECKS in app:
            app[READINESS_CHECKS]["database"] = database_ready
        yield
        await engine.dispose()

    return context


def broker_context(
    settings: CommonSettings,
    connection_key: web.AppKey[AbstractRobustConnection],
    publisher_key: web.AppKey[Publisher] | None = None,
) -> CleanupContext:
    """Connects to RabbitMQ (a one-line error when it cannot), declares the topology.
    The publisher counts what it sends in the app's metrics registry, if it has one."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        connection = await connect(settings.amqp_url.get_secret_value())
        app[connection_key] = connection
        registry = app.get(METRICS_REGISTRY)
        publisher = Publisher(
            connection,
            Topology(settings.amqp_prefix),
            max_batch=settings.publish_max_batch,
            metrics=None if registry is None else PublisherMetrics.of(registry),
        )
        await publisher.open()
        if publisher_key is not None:
            app[publisher_key] = publisher

        async def broker_ready() -> bool:
            # A robust connection is "not closed" while it reconnects; `connected` is
            # set only while it really is.
            return not connection.is_closed and connection.connected.is_set()

        if READINESS_CHECKS in app:
            app[READINESS_CHECKS]["broker"] = broker_ready
        yield
        await publisher.close()
        await connection.close()

    return context


def load_settings(make: Callable[[], _Settings], name: str) -> _Settings:
    """The service's settings from `make()`; when they cannot be read (an unreadable
    secret file, a secret given both as a variable and as a file), one clear line and
    exit status 2, as for any configuration that cannot run."""
    try:
        return make()
    except ConfigurationError as problem:
        print(f"kriten-{name}: {problem}", file=sys.stderr)
        sys.exit(2)


def run_service(app: Callable[[], web.Application], settings: CommonSettings, name: str) -> None:
    """Runs until SIGTERM/SIGINT; exits with one clear line when the config cannot run."""
    configure_logging(level=settings.log_level, log_format=settings.log_format, service=name)
    try:
        settings.check_production()
        log.info("service_starting", service=name, host=settings.host, port=settings.port)
        application = app()

        async def stopping(_app: web.Application) -> None:
            # SIGTERM or SIGINT: what follows (in-flight work finishing, connections
            # closing) belongs to this stop, which an operator should see begin and end.
            log.info("service_stopping", service=name)

        application.on_shutdown.append(stopping)
        web.run_app(
            application,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_grace_seconds,
            print=None,
            access_log=None,
            handle_signals=True,
        )
        log.info("service_stopped", service=name)
    except (ConfigurationError, BrokerUnreachable) as problem:
        print(f"kriten-{name}: {problem}", file=sys.stderr)
        sys.exit(2)


def production_secret_problems(settings: Any, names: dict[str, str]) -> list[str]:
    """The env var names whose secret settings are unset or still the development default."""
    problems = []
    for attribute, default in names.items():
        value = getattr(settings, attribute)
        secret = value.get_secret_value() if value is not None else ""
        if not secret or secret == default:
            problems.append(f"KRITEN_{attribute.upper()}")
    return problems
