"""The ingress service's aiohttp apps.

`create_run_app` is the run endpoint alone, with routes relative to `RUN_PREFIX`, so the
development launcher can mount it into the api app; `create_app` is the whole service.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from kriten_common.amqp import BroadcastSubscription, Topology
from kriten_common.consumer_metrics import ConsumerMetrics
from kriten_common.crypto import SecretBox
from kriten_common.http import (
    METRICS_REGISTRY,
    READINESS_CHECKS,
    ReadinessCheck,
    create_service_app,
    error_middleware,
)
from kriten_common.messages import ConfigChanged, IngressHeartbeat
from kriten_common.paths import RUN_PREFIX
from kriten_common.service import CleanupContext, broker_context, database_context
from kriten_ingress.dedupe import RecentJobs
from kriten_ingress.delivery_log import DeliveryLog
from kriten_ingress.keys import (
    CONFIGS,
    CONNECTION,
    INTAKE,
    METRICS,
    PEERS,
    PUBLISHER,
    SESSIONS,
    SETTINGS,
)
from kriten_ingress.metrics import IngressMetrics
from kriten_ingress.peers import PeerAnnouncer, Peers
from kriten_ingress.run_endpoint import Intake, run_webhook
from kriten_ingress.settings import IngressSettings
from kriten_ingress.webhook_config import WebhookConfigs


def create_run_app(
    settings: IngressSettings,
    registry: CollectorRegistry,
    readiness_checks: dict[str, ReadinessCheck],
) -> web.Application:
    """The run endpoint; its readiness checks join those of the app it is mounted in."""
    app = web.Application(middlewares=[error_middleware])
    app[READINESS_CHECKS] = readiness_checks
    _install(app, settings, registry, "")
    return app


def _install(
    app: web.Application, settings: IngressSettings, registry: CollectorRegistry, prefix: str
) -> None:
    """The run endpoint's state, cleanup contexts and route, at `prefix` in `app`."""
    app[SETTINGS] = settings
    # Also where the publisher and the subscriptions count, when mounted in another app.
    app[METRICS_REGISTRY] = registry
    app[METRICS] = IngressMetrics(registry)
    app.cleanup_ctx.append(_database_context(settings))
    app.cleanup_ctx.append(broker_context(settings, CONNECTION, PUBLISHER))
    app.cleanup_ctx.append(_configs)
    app.cleanup_ctx.append(_peers)
    app.cleanup_ctx.append(_intake)
    app.router.add_post(prefix + "/{webhook_id}", run_webhook)
    # Senders do not follow redirects (the api redirects other slashed paths, as Kriten's
    # router does): the slashed form is answered as it is.
    app.router.add_post(prefix + "/{webhook_id}/", run_webhook)


def _database_context(settings: IngressSettings) -> CleanupContext:
    """The database, without a say in readiness.

    The ingress answers from cached configuration while the database is unreachable
    (stale-if-error), so an unreachable database must not take the replica out of its
    Service: that would turn a degraded intake into none. In the development mode the
    api's own `database` check (the same database) is left as it was.
    """
    inner = database_context(settings, SESSIONS)

    async def context(app: web.Application) -> AsyncIterator[None]:
        checks = app[READINESS_CHECKS]
        before = checks.get("database")
        steps = inner(app)
        await anext(steps)
        if before is None:
            checks.pop("database", None)
        else:
            checks["database"] = before
        yield
        with contextlib.suppress(StopAsyncIteration):
            await anext(steps)

    return context


async def _configs(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    box = SecretBox(settings.encryption_keys.get_secret_value())
    configs = WebhookConfigs(
        app[SESSIONS],
        box,
        settings.config_cache_seconds,
        stale_seconds=settings.config_stale_if_error_seconds,
        metrics=app[METRICS],
    )
    app[CONFIGS] = configs
    subscription = BroadcastSubscription(
        connection=app[CONNECTION],
        topology=Topology(settings.amqp_prefix),
        name="ingress",
        routing_keys=(ConfigChanged.routing_key,),
        handler=configs.on_event,
        on_restored=configs.invalidate,
        metrics=ConsumerMetrics.of(app[METRICS_REGISTRY]),
    )
    await subscription.start()
    configs.subscribed = lambda: subscription.active
    yield
    configs.subscribed = lambda: False
    await subscription.stop()
    await configs.close()


async def _peers(app: web.Application) -> AsyncIterator[None]:
    """The count of live replicas that share each webhook's rate limit (peers.py)."""
    settings = app[SETTINGS]
    topology = Topology(settings.amqp_prefix)
    peers = Peers(interval_seconds=settings.ingress_heartbeat_seconds)
    app[PEERS] = peers
    subscription = BroadcastSubscription(
        connection=app[CONNECTION],
        topology=topology,
        name="ingress-peers",
        routing_keys=(IngressHeartbeat.routing_key,),
        handler=peers.on_event,
        on_restored=peers.restored,
        metrics=ConsumerMetrics.of(app[METRICS_REGISTRY]),
    )
    app[METRICS].peers.set_function(peers.count)
    # Listening first, so the answers to the first heartbeat are heard.
    await subscription.start()
    peers.subscribed = lambda: subscription.active
    announcer = PeerAnnouncer(connection=app[CONNECTION], topology=topology, peers=peers)
    await announcer.start()
    yield
    await announcer.stop()
    peers.subscribed = lambda: False
    await subscription.stop()


async def _intake(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    delivery_log = DeliveryLog(
        app[PUBLISHER],
        app[METRICS],
        max_in_flight=settings.delivery_log_in_flight,
        rejected_per_second=settings.rejected_log_per_second,
        rejected_burst=settings.rejected_log_burst,
    )
    app[INTAKE] = Intake(
        settings=settings,
        metrics=app[METRICS],
        configs=app[CONFIGS],
        publisher=app[PUBLISHER],
        sessions=app[SESSIONS],
        delivery_log=delivery_log,
        recent=RecentJobs(settings.recent_keys),
        trusted_proxies=settings.trusted_proxies,
        replicas=app[PEERS].count,
    )
    yield
    # Before the publisher closes (cleanup contexts unwind in reverse).
    await delivery_log.close()


def create_app(settings: IngressSettings) -> web.Application:
    """The service: the run route sits in the service app itself, not in a mounted
    `create_run_app`, since resolving a sub-application and running its middleware
    again cost every delivery several percent of the ingress's time."""
    registry = CollectorRegistry()
    app = create_service_app(registry=registry)
    _install(app, settings, registry, RUN_PREFIX)
    return app
