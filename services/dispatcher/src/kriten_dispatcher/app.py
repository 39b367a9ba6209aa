"""The dispatcher service's aiohttp app: consumes `job.requested` (and cancellations)
and launches through the configured executor; its scheduler fires the cronjobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web
from prometheus_client import CollectorRegistry

from kriten_common.amqp import DISPATCHER_CONTROL, DISPATCHER_JOBS, Consumer, Topology
from kriten_common.consumer_metrics import ConsumerMetrics
from kriten_common.crypto import SecretBox
from kriten_common.http import METRICS_REGISTRY, create_service_app
from kriten_common.service import broker_context, database_context
from kriten_dispatcher.dispatching import Dispatcher
from kriten_dispatcher.keys import CONNECTION, METRICS, PUBLISHER, SESSIONS, SETTINGS
from kriten_dispatcher.metrics import DispatcherMetrics, MeteredLauncher
from kriten_dispatcher.ports import JobLauncher
from kriten_dispatcher.scheduler import Scheduler
from kriten_dispatcher.settings import DispatcherSettings


def make_launcher(settings: DispatcherSettings) -> JobLauncher:
    """The executor's adapter; the Kubernetes client is imported only when used."""
    if settings.executor == "kubernetes":
        from kriten_common.kube import KubernetesSettings
        from kriten_dispatcher.kube_launcher import KubernetesJobLauncher

        return KubernetesJobLauncher(settings=KubernetesSettings(), concurrency=settings.prefetch)
    from kriten_dispatcher.local_executor import LocalJobLauncher

    return LocalJobLauncher(
        jobs_dir=settings.jobs_dir,
        retention=timedelta(hours=settings.job_dir_retention_hours),
        checkout_refresh_seconds=settings.checkout_refresh_seconds,
    )


def create_app(settings: DispatcherSettings) -> web.Application:
    app = create_service_app(registry=CollectorRegistry())
    app[SETTINGS] = settings
    app[METRICS] = DispatcherMetrics(app[METRICS_REGISTRY])
    # No ping before each use: every database write here is retried by its consumer or
    # loop, so a connection that died with a database restart costs one retry.
    app.cleanup_ctx.append(database_context(settings, SESSIONS, pre_ping=False))
    app.cleanup_ctx.append(broker_context(settings, CONNECTION, PUBLISHER))
    app.cleanup_ctx.append(_consumers)
    app.cleanup_ctx.append(_scheduler)
    return app


async def _consumers(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    launcher = MeteredLauncher(make_launcher(settings), app[METRICS], executor=settings.executor)
    dispatcher = Dispatcher(
        launcher=launcher,
        publisher=app[PUBLISHER],
        sessions=app[SESSIONS],
        box=SecretBox(settings.encryption_keys.get_secret_value()),
        executor=settings.executor,
        key_settle_seconds=settings.concurrency_settle_seconds,
    )
    topology = Topology(settings.amqp_prefix)
    metrics = ConsumerMetrics.of(app[METRICS_REGISTRY])
    consumers = [
        Consumer(
            connection=app[CONNECTION],
            topology=topology,
            consumer=queue,
            handler=dispatcher.handle,
            prefetch=settings.prefetch,
            on_dead_letter=dispatcher.on_dead_letter,
            metrics=metrics,
        )
        for queue in (DISPATCHER_JOBS, DISPATCHER_CONTROL)
    ]
    await launcher.start()
    for consumer in consumers:
        await consumer.start()
    yield
    for consumer in consumers:
        await consumer.stop(settings.shutdown_grace_seconds)
    await launcher.close()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    """Every replica runs one: firings are idempotent by job id (see the scheduler)."""
    scheduler = Scheduler(sessions=app[SESSIONS], publisher=app[PUBLISHER])
    running = asyncio.create_task(scheduler.run(), name="dispatcher-scheduler")
    yield
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
