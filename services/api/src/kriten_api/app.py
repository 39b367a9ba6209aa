"""The api service's aiohttp app: login, CRUD, RBAC and the jobs API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CollectorRegistry

from kriten_api import audit, jwt_tokens, openapi, ui
from kriten_api.bootstrap import ensure_builtins
from kriten_api.job_events import JobEvents
from kriten_api.keys import (
    CONNECTION,
    JOB_EVENTS,
    PUBLISHER,
    SAMPLER,
    SECRET_BOX,
    SESSIONS,
    SETTINGS,
)
from kriten_api.migrate import upgrade_database
from kriten_api.request_metrics import request_metrics_middleware
from kriten_api.routes import (
    api_tokens,
    audit_logs,
    cronjobs,
    dead_letters,
    deliveries,
    groups,
    jobs,
    login,
    role_bindings,
    roles,
    runners,
    task_callbacks,
    tasks,
    users,
    webhooks,
)
from kriten_api.settings import ApiSettings
from kriten_api.trailing_slash import trailing_slash_middleware
from kriten_common.amqp import BroadcastSubscription, Topology
from kriten_common.consumer_metrics import ConsumerMetrics
from kriten_common.crypto import SecretBox
from kriten_common.http import METRICS_REGISTRY, create_service_app
from kriten_common.logging import get_logger
from kriten_common.messages import JobFinished
from kriten_common.paths import API_BASE
from kriten_common.retention import API_LOCK_KEY, Purger, RetentionMetrics
from kriten_common.service import CleanupContext, broker_context, database_context

log = get_logger(__name__)
MAINTENANCE_INTERVAL_SECONDS = 3600.0


def create_app(settings: ApiSettings) -> web.Application:
    """Builds the app; every connection is opened by its cleanup context, not here."""
    app = create_service_app(registry=CollectorRegistry(), client_max_size=settings.max_body_bytes)
    # Outermost: it times the whole answer, and sees the status the error middleware chose.
    app.middlewares.insert(0, request_metrics_middleware(app[METRICS_REGISTRY]))
    # Before the audit: a redirect is no event of its own (the request it leads to is).
    app.middlewares.append(trailing_slash_middleware)
    # Inside the error middleware, so it sees a refused request's exception and status.
    app.middlewares.append(audit.audit_middleware)
    app[SAMPLER] = audit.AnonymousSampler(per_minute=settings.audit_anonymous_per_minute)
    app[SETTINGS] = settings
    app[SECRET_BOX] = SecretBox(settings.encryption_keys.get_secret_value())
    app.cleanup_ctx.append(_migrations(settings))
    app.cleanup_ctx.append(database_context(settings, SESSIONS))
    app.cleanup_ctx.append(_builtins)
    RetentionMetrics.of(app[METRICS_REGISTRY])  # on /metrics before the first purge
    app.cleanup_ctx.append(_maintenance)
    app.cleanup_ctx.append(broker_context(settings, CONNECTION, PUBLISHER))
    app.cleanup_ctx.append(dead_letters.gauge_context)  # uses the broker's connection
    app.cleanup_ctx.append(_job_events)  # so does this
    for module in (
        login,
        runners,
        tasks,
        task_callbacks,
        webhooks,
        jobs,
        api_tokens,
        cronjobs,
        users,
        groups,
        roles,
        role_bindings,
        audit_logs,
        deliveries,
        dead_letters,
    ):
        module.add_routes(app, API_BASE)
    # After the routes it documents (the document itself is built on its first request).
    openapi.add_routes(app, API_BASE)
    # The web console: pages over the routes above, at /ui/ (not in the API's document).
    ui.add_routes(app)
    return app


def _migrations(settings: ApiSettings) -> CleanupContext:
    async def context(_app: web.Application) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await upgrade_database(settings.database_url.get_secret_value())
        yield

    return context


async def _builtins(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.root_password.get_secret_value() == "root" and settings.env == "development":
        log.warning("development_root_password", message="root's password is 'root'")
    await ensure_builtins(app[SESSIONS], root_password=settings.root_password.get_secret_value())
    yield


async def _job_events(app: web.Application) -> AsyncIterator[None]:
    """Subscribes this replica to `job.finished` (its own exclusive, auto-delete queue), so
    synchronous requests and followed logs wake when their job finishes."""
    job_events = JobEvents()
    app[JOB_EVENTS] = job_events
    subscription = BroadcastSubscription(
        connection=app[CONNECTION],
        topology=Topology(app[SETTINGS].amqp_prefix),
        name="api-jobs",
        routing_keys=(JobFinished.routing_key,),
        handler=job_events.on_event,
        # Events sent while the connection was down are lost: let every waiter re-read.
        on_restored=job_events.wake_all,
        metrics=ConsumerMetrics.of(app[METRICS_REGISTRY]),
    )
    await subscription.start()
    yield
    await subscription.stop()


async def _maintenance(app: web.Application) -> AsyncIterator[None]:
    """Deletes what no longer matters, at start and then hourly: audit rows past their
    retention (in batches, one replica at a time, with the retention metrics:
    `kriten_common.retention`), and revocations of tokens that have expired anyway
    (every replica; the deletes are idempotent)."""
    task = asyncio.create_task(_maintain(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _maintain(app: web.Application) -> None:
    purger = Purger(
        app[SESSIONS],
        [audit.retention_rule(app[SETTINGS].audit_retention_days)],
        RetentionMetrics.of(app[METRICS_REGISTRY]),
        lock_key=API_LOCK_KEY,
    )
    while True:
        await purger.run_guarded()  # logs its own line; a failure is logged, not raised
        now = datetime.now(UTC)
        try:
            async with app[SESSIONS]() as session:
                revocations = await jwt_tokens.purge_expired(session, now)
            if revocations:
                log.info("purged", revocations=revocations)
        except Exception:
            # A database briefly away: the next round catches up.
            log.exception("purge_failed")
        await asyncio.sleep(MAINTENANCE_INTERVAL_SECONDS)
