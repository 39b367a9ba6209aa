"""The collector service's aiohttp app: watches executions and consumes job events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web
from prometheus_client import CollectorRegistry

from kriten_collector.callback_sender import new_session
from kriten_collector.collecting import Collector
from kriten_collector.completion_callbacks import CALLBACK_EVENT_CONCURRENCY, CompletionCallbacks
from kriten_collector.delivery_store import DeliveryStore
from kriten_collector.job_store import JobStore
from kriten_collector.keys import CONNECTION, METRICS, PUBLISHER, SESSIONS, SETTINGS
from kriten_collector.metrics import CollectorMetrics
from kriten_collector.ports import JobObserver
from kriten_collector.reconcile import Reconciler, ReconcileSettings
from kriten_collector.retention import add_retention
from kriten_collector.settings import CollectorSettings
from kriten_common.amqp import (
    COLLECTOR_CALLBACKS,
    COLLECTOR_EVENTS,
    BroadcastSubscription,
    Consumer,
    Topology,
)
from kriten_common.consumer_metrics import ConsumerMetrics
from kriten_common.http import METRICS_REGISTRY, create_service_app
from kriten_common.messages import ConfigChanged
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
    app[METRICS] = CollectorMetrics(app[METRICS_REGISTRY])
    # No ping before each use: every database write here is retried by its consumer or
    # loop, so a connection that died with a database restart costs one retry.
    app.cleanup_ctx.append(database_context(settings, SESSIONS, pre_ping=False))
    app.cleanup_ctx.append(broker_context(settings, CONNECTION, PUBLISHER))
    app.cleanup_ctx.append(_collecting)
    app.cleanup_ctx.append(_calling_back)
    add_retention(app)  # the purge loop (stopped first)
    return app


async def _collecting(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    observer = make_observer(settings)
    metrics = app[METRICS]
    store = JobStore(app[SESSIONS], metrics=metrics)
    collector = Collector(
        store=store,
        publisher=app[PUBLISHER],
        observer=observer,
        deliveries=DeliveryStore(
            app[SESSIONS], batch_sizes=metrics.batch_sizes("deliveries").observe
        ),
    )
    consumer = Consumer(
        connection=app[CONNECTION],
        topology=Topology(settings.amqp_prefix),
        consumer=COLLECTOR_EVENTS,
        handler=collector.handle,
        metrics=ConsumerMetrics.of(app[METRICS_REGISTRY]),
    )
    await consumer.start()
    watching = asyncio.create_task(collector.observe(), name="collector-observe")
    reconciler = Reconciler(
        sessions=app[SESSIONS],
        store=store,
        observer=observer,
        announce=collector.announce,
        settings=ReconcileSettings(
            interval_seconds=settings.reconcile_interval_seconds,
            running_grace=timedelta(seconds=settings.reconcile_running_grace_seconds),
            queued_grace=timedelta(seconds=settings.reconcile_queued_grace_seconds),
        ),
    )
    reconciling = asyncio.create_task(reconciler.run(), name="collector-reconcile")
    yield
    await consumer.stop(settings.shutdown_grace_seconds)
    for task in (reconciling, watching):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await observer.close()


async def _calling_back(app: web.Application) -> AsyncIterator[None]:
    """The completion callbacks' consumer: off every request path, on its own queue, so
    a slow receiver holds back neither job events nor other callbacks' retries."""
    settings = app[SETTINGS]
    http = new_session(settings.callback_allowed_networks)
    callbacks = CompletionCallbacks(
        sessions=app[SESSIONS], http=http, settings=settings, metrics=app[METRICS]
    )
    consumer = Consumer(
        connection=app[CONNECTION],
        topology=Topology(settings.amqp_prefix),
        consumer=COLLECTOR_CALLBACKS,
        handler=callbacks.handle,
        # The handler decides when a callback is given up on (the delivery log counts
        # its attempts); one more so that the consumer never dead-letters first.
        max_attempts=settings.callback_max_attempts + 1,
        metrics=ConsumerMetrics.of(app[METRICS_REGISTRY]),
        # A message holds the jobs a batch ended, up to hundreds: a receiver that does
        # not answer holds one slot for its timeout, not every other task's callbacks.
        event_concurrency=CALLBACK_EVENT_CONCURRENCY,
    )
    # Changes of tasks (their callbacks) are heard before the first job is handled.
    changes = BroadcastSubscription(
        connection=app[CONNECTION],
        topology=Topology(settings.amqp_prefix),
        name="collector-tasks",
        routing_keys=(ConfigChanged.routing_key,),
        handler=callbacks.tasks.on_event,
        on_restored=callbacks.tasks.invalidate,
        metrics=ConsumerMetrics.of(app[METRICS_REGISTRY]),
    )
    await changes.start()
    await consumer.start()
    yield
    await consumer.stop(settings.shutdown_grace_seconds)
    await changes.stop()
    await http.close()
