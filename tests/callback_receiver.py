"""A completion callback receiver for tests: it verifies each call's Standard Webhooks
signature the way any receiver would (the standard library, not Kriten's code), and
answers the statuses it is told to, then 200. `serve_receiver` starts one on 127.0.0.1
and gives its URL under the name `localhost`, so the collector resolves the name and
checks the addresses it gets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

# webhook-id, parsed body, the status answered.
Call = tuple[str, dict[str, Any], int]


class Receiver:
    def __init__(self, secret: str = "", statuses: tuple[int, ...] = ()) -> None:
        # The secret may come later: the api shows it once the callbacks exist.
        self.secret = secret
        self.statuses = list(statuses)
        self.calls: list[Call] = []
        self.unverified = 0

    def verified(self, request: web.Request, body: bytes) -> bool:
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}."
        mac = hmac.new(key, signed.encode() + body, hashlib.sha256).digest()
        expected = base64.b64encode(mac).decode()
        given = [s.partition(",")[2] for s in request.headers["webhook-signature"].split(" ")]
        fresh = abs(time.time() - int(request.headers["webhook-timestamp"])) < 300
        return fresh and any(hmac.compare_digest(expected, g) for g in given)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.verified(request, body):
            self.unverified += 1
            return web.Response(status=401)
        status = self.statuses.pop(0) if self.statuses else 200
        self.calls.append((request.headers["webhook-id"], json.loads(body), status))
        return web.Response(status=status)

    @property
    def delivered(self) -> list[Call]:
        return [call for call in self.calls if call[2] == 200]


ServeReceiver = Callable[[Receiver], Awaitable[str]]


@pytest.fixture
async def serve_receiver() -> AsyncIterator[ServeReceiver]:
    servers: list[TestServer] = []

    async def start(receiver: Receiver) -> str:
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return f"http://localhost:{server.port}/hook"

    yield start
    for server in servers:
        await server.close()
