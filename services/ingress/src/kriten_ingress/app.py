"""The ingress service's aiohttp apps.

`create_run_app` is the run endpoint alone, with routes relative to `RUN_PREFIX`, so the
development launcher can mount it into the api app; `create_app` is the whole service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from kriten_common.crypto import SecretBox
from kriten_common.http import (
    READINESS_CHECKS,
    ReadinessCheck,
    create_service_app,
    error_middleware,
)
from kriten_common.service import broker_context, database_context
from kriten_ingress.keys import CONFIGS, CONNECTION, METRICS, PUBLISHER, SESSIONS, SETTINGS
from kriten_ingress.metrics import IngressMetrics
from kriten_ingress.run_endpoint import run_webhook
from kriten_ingress.settings import IngressSettings
from kriten_ingress.webhook_config import WebhookConfigs

RUN_PREFIX = "/api/v1/webhooks/run"


def create_run_app(
    settings: IngressSettings,
    registry: CollectorRegistry,
    readiness_checks: dict[str, ReadinessCheck],
) -> web.Application:
    """The run endpoint; its readiness checks join those of the app it is mounted in."""
    app = web.Application(middlewares=[error_middleware])
    app[READINESS_CHECKS] = readiness_checks
    app[SETTINGS] = settings
    app[METRICS] = IngressMetrics(registry)
    app.cleanup_ctx.append(database_context(settings, SESSIONS))
    app.cleanup_ctx.append(broker_context(settings, CONNECTION, PUBLISHER))
    app.cleanup_ctx.append(_configs)
    app.router.add_post("/{webhook_id}", run_webhook)
    return app


async def _configs(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    box = SecretBox(settings.encryption_keys.get_secret_value())
    app[CONFIGS] = WebhookConfigs(app[SESSIONS], box, settings.config_cache_seconds)
    yield


def create_app(settings: IngressSettings) -> web.Application:
    registry = CollectorRegistry()
    app = create_service_app(registry=registry)
    run_app = create_run_app(settings, registry, app[READINESS_CHECKS])
    app.add_subapp(RUN_PREFIX, run_app)
    return app
