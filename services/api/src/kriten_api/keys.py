"""Typed keys for everything the api app holds.

The types of the modules that themselves read these keys are named for the type checker
only, so that no module imports another's just to name its key.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from prometheus_client import Gauge

from kriten_api.job_events import JobEvents
from kriten_api.settings import ApiSettings
from kriten_common.amqp import Publisher
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory

if TYPE_CHECKING:
    from kriten_api.audit import AnonymousSampler
    from kriten_api.audit_events import AuditedRoute
    from kriten_api.ldap_auth import LdapConfig
    from kriten_api.login_limits import LoginLimiter
    from kriten_api.openapi import Operation

SETTINGS = web.AppKey("settings", ApiSettings)
SESSIONS = web.AppKey("sessions", SessionFactory)
CONNECTION = web.AppKey("connection", AbstractRobustConnection)
PUBLISHER = web.AppKey("publisher", Publisher)
SECRET_BOX = web.AppKey("secret_box", SecretBox)
JOB_EVENTS = web.AppKey("job_events", JobEvents)

# Routes: what the OpenAPI document lists, and what the audit log records of each route.
OPERATIONS: web.AppKey[list[Operation]] = web.AppKey("openapi_operations")
AUDITED: web.AppKey[dict[tuple[str, str], AuditedRoute]] = web.AppKey("audited_routes")

# Login: the attempt limiter, and the directory when one is configured.
LOGIN_LIMITER: web.AppKey[LoginLimiter] = web.AppKey("login_limiter")
LDAP_CONFIG: web.AppKey[LdapConfig] = web.AppKey("ldap_config")

# Audit log: the sampler of unidentified callers' rows.
SAMPLER: web.AppKey[AnonymousSampler] = web.AppKey("audit_anonymous_sampler")

# Dead letters: the queue-depth gauge, and the lock by which browses in one replica take
# turns: messages one browse holds are invisible to another (see
# kriten_common.dead_letters), so a list would miss what a replay holds, and a replay
# would not find what a list holds. Across replicas a retry settles it.
GAUGE = web.AppKey("dead_letters_gauge", Gauge)
BROWSING = web.AppKey("dead_letters_browsing", asyncio.Lock)
