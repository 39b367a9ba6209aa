"""Announcing configuration changes (`config.changed`) to the services that cache it.

Call `publish_config_changed` after committing any change to a webhook, task, runner,
user, group membership, role or role binding: the ingress drops its cached copy at once,
so a rotated or deleted secret, a removed permission or a changed task takes effect
everywhere within a second instead of after the caches' TTL.

The change is already committed when this runs, so a broker that is down does not fail
the request: it is logged, and the caches' TTL catches up.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web

from kriten_api.keys import CONNECTION, SETTINGS
from kriten_common import errors
from kriten_common.amqp import Topology, publish_broadcast
from kriten_common.consumer_metrics import PublisherMetrics
from kriten_common.http import METRICS_REGISTRY
from kriten_common.logging import get_logger
from kriten_common.messages import ConfigChanged

log = get_logger(__name__)
# A robust connection that is reconnecting can hold a new channel back indefinitely; the
# change is committed, so waiting longer than this only delays the user's answer.
ANNOUNCE_TIMEOUT_SECONDS = 5.0

ConfigKind = Literal["webhook", "task", "runner", "user", "rbac"]


async def publish_config_changed(app: web.Application, kind: ConfigKind, name: str) -> None:
    """Tells every subscribed instance that `kind` `name` changed (webhook: its id; task,
    runner: the name; user: the user id; rbac: a role, binding or group name)."""
    if CONNECTION not in app:
        return  # the broker context is not running (an app built for a unit test)
    event = ConfigChanged(kind=kind, name=name)
    try:
        async with asyncio.timeout(ANNOUNCE_TIMEOUT_SECONDS):
            await publish_broadcast(
                app[CONNECTION],
                Topology(app[SETTINGS].amqp_prefix),
                event,
                metrics=PublisherMetrics.of(app[METRICS_REGISTRY]),
            )
    except (errors.Unavailable, TimeoutError):
        log.warning("config_change_not_announced", kind=kind, name=name)
