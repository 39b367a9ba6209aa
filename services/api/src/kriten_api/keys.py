"""Typed keys for what the api app holds (settings, database, publisher, crypto, job waiters)."""

from __future__ import annotations

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from kriten_api.job_events import JobEvents
from kriten_api.settings import ApiSettings
from kriten_common.amqp import Publisher
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory

SETTINGS = web.AppKey("settings", ApiSettings)
SESSIONS = web.AppKey("sessions", SessionFactory)
CONNECTION = web.AppKey("connection", AbstractRobustConnection)
PUBLISHER = web.AppKey("publisher", Publisher)
SECRET_BOX = web.AppKey("secret_box", SecretBox)
JOB_EVENTS = web.AppKey("job_events", JobEvents)
