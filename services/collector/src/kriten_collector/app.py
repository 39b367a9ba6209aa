"""The collector service's aiohttp app: watches executions and consumes job events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web
from prometheus_client import CollectorRegistry

from kriten_collector.collecting import Collector
from kriten_collector.delivery_store import DeliveryStore
from kriten_collector.job_store import JobStore
from kriten_collector.keys import CONNECTION, PUBLISHER, SESSIONS, SETTINGS
from kriten_collector.ports import JobObserver
from kriten_collector.settings import CollectorSettings
from kriten_common.amqp import COLLECTOR_EVENTS, Consumer, Topology
from kriten_common.consumer_metrics import ConsumerMetrics
from kriten_common.http import METRICS_REGISTRY, create_service_app
from kriten_common.service import broker_context, database_context


def make_observer(settings: CollectorSettings) -> JobObserver:
    """The executor's adapter; the Kubernetes client is imported only when used."""
    if settings.executor == "kubernetes":
        from kriten_collector.kube_observer import KubernetesJobObserver
        from kriten_common.kube import KubernetesSettings

        return KubernetesJobObserver(
            settings=KubernetesSettings(), output_cap_bytes=settings.output_cap_bytes
        )
    from kriten_collector.local_observer import LocalJobObserver

    return LocalJobObserver(jobs_dir=settings.jobs_dir, output_cap_bytes=settings.output_cap_bytes)


def create_app(settings: CollectorSettings) -> web.Application:
    app = create_service_app(registry=CollectorRegistry())
    app[SETTINGS] = settings
    # No ping before each use: every database write here is retried by its consumer or
    # loop, so a connection that died with a database restart costs one retry.
    app.cleanup_ctx.append(database_context(settings, SESSIONS, pre_ping=False))
    app.cleanup_ctx.append(broker_context(settings, CONNECTION, PUBLISHER))
    app.cleanup_ctx.append(_collecting)
    return app


async def _collecting(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    observer = make_observer(settings)
    collector = Collector(
        store=JobStore(app[SESSIONS]),
        publisher=app[PUBLISHER],
        observer=observer,
        deliveries=DeliveryStore(
            app[SESSIONS], retention=timedelta(hours=settings.delivery_retention_hours)
        ),
    )
    consumer = Consumer(
        connection=app[CONNECTION],
        topology=Topology(settings.amqp_prefix),
        consumer=COLLECTOR_EVENTS,
        handler=collector.handle,
        metrics=ConsumerMetrics(app[METRICS_REGISTRY]),
    )
    await consumer.start()
    watching = asyncio.create_task(collector.observe(), name="collector-observe")
    yield
    await consumer.stop(settings.shutdown_grace_seconds)
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    await observer.close()
