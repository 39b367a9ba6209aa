"""Typed keys for what the dispatcher app holds."""

from __future__ import annotations

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from kriten_common.amqp import Publisher
from kriten_common.db.engine import SessionFactory
from kriten_dispatcher.metrics import DispatcherMetrics
from kriten_dispatcher.settings import DispatcherSettings

SETTINGS = web.AppKey("settings", DispatcherSettings)
SESSIONS = web.AppKey("sessions", SessionFactory)
CONNECTION = web.AppKey("connection", AbstractRobustConnection)
PUBLISHER = web.AppKey("publisher", Publisher)
METRICS = web.AppKey("metrics", DispatcherMetrics)
