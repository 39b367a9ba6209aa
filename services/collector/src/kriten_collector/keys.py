"""Typed keys for what the collector app holds."""

from __future__ import annotations

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from kriten_collector.metrics import CollectorMetrics
from kriten_collector.settings import CollectorSettings
from kriten_common.amqp import Publisher
from kriten_common.db.engine import SessionFactory

SETTINGS = web.AppKey("settings", CollectorSettings)
SESSIONS = web.AppKey("sessions", SessionFactory)
CONNECTION = web.AppKey("connection", AbstractRobustConnection)
PUBLISHER = web.AppKey("publisher", Publisher)
METRICS = web.AppKey("metrics", CollectorMetrics)
