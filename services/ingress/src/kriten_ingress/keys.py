"""Typed keys for what the ingress app holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from kriten_common.amqp import Publisher
from kriten_common.db.engine import SessionFactory
from kriten_ingress.metrics import IngressMetrics
from kriten_ingress.peers import Peers
from kriten_ingress.settings import IngressSettings
from kriten_ingress.webhook_config import WebhookConfigs

if TYPE_CHECKING:
    # Named for the type checker only: run_endpoint reads its key from here.
    from kriten_ingress.run_endpoint import Intake

SETTINGS = web.AppKey("settings", IngressSettings)
SESSIONS = web.AppKey("sessions", SessionFactory)
CONNECTION = web.AppKey("connection", AbstractRobustConnection)
PUBLISHER = web.AppKey("publisher", Publisher)
CONFIGS = web.AppKey("configs", WebhookConfigs)
METRICS = web.AppKey("metrics", IngressMetrics)
PEERS = web.AppKey("peers", Peers)
INTAKE: web.AppKey[Intake] = web.AppKey("intake")
