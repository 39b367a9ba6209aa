"""The completion callbacks' handler alone (no broker): what each answer of a receiver
makes of the attempt, and the guard on resolved addresses."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import SecretStr
from sqlmodel import select

from kriten_collector.callback_sender import GuardedResolver, RefusedAddress, call, new_session
from kriten_collector.completion_callbacks import CompletionCallbacks
from kriten_collector.settings import CollectorSettings
from kriten_common.callbacks import new_secret
from kriten_common.client_address import parse_networks
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import CallbackDelivery, Job, Runner, Task
from kriten_common.messages import JobFinished
from kriten_common.outcomes import RetryableError
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from tests.callback_receiver import Receiver, ServeReceiver

LOCAL = parse_networks(["127.0.0.0/8", "::1/128"])
FINISHED = JobFinished(job_id="hello-1", task="hello", status="failed", exit_code=1)


class FixedResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": a, "port": port, "family": 0, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_a_name_with_any_private_address_is_refused() -> None:
    # A public address beside a private one (DNS rebinding, or a split answer).
    guard = GuardedResolver((), FixedResolver("93.184.216.34", "10.0.0.5"))
    with pytest.raises(RefusedAddress):
        await guard.resolve("receiver.example", 443)
    allowed = GuardedResolver(parse_networks(["10.0.0.0/8"]), FixedResolver("10.0.0.5"))
    assert [r["host"] for r in await allowed.resolve("receiver.example", 443)] == ["10.0.0.5"]
    public = GuardedResolver((), FixedResolver("93.184.216.34"))
    assert len(await public.resolve("receiver.example", 443)) == 1


async def _handler(
    db_sessions: SessionFactory, url: str, secret: str
) -> tuple[CompletionCallbacks, aiohttp.ClientSession]:
    async with db_sessions() as session:
        session.add(Runner(name="python", git_url="https://example.org/r.git"))
        await session.commit()
        session.add(
            Task(
                name="hello",
                runner="python",
                command="false",
                callbacks=[{"url": url, "events": ["failed"]}],
                callback_secret_encrypted=SecretBox(DEVELOPMENT_ENCRYPTION_KEY).encrypt(secret),
            )
        )
        session.add(Job(id="hello-1", task="hello", owner="root", owner_id="u", status="failed"))
        await session.commit()
    settings = CollectorSettings(
        database_url=SecretStr("sqlite+aiosqlite://"),
        callback_allowed_networks=LOCAL,
        callback_first_retry_seconds=7,
        callback_max_attempts=2,
    )
    http = new_session(LOCAL)
    return CompletionCallbacks(sessions=db_sessions, http=http, settings=settings), http


async def _log(db_sessions: SessionFactory) -> list[tuple[int, int | None, bool, bool]]:
    async with db_sessions() as session:
        rows = (await session.exec(select(CallbackDelivery))).all()
    return sorted((r.attempt, r.status_code, r.delivered, r.gave_up) for r in rows)


async def test_failures_are_retried_until_the_last_attempt(
    db_sessions: SessionFactory, serve_receiver: ServeReceiver
) -> None:
    secret = new_secret()
    receiver = Receiver(secret, statuses=(503, 503))
    handler, http = await _handler(db_sessions, await serve_receiver(receiver), secret)
    try:
        with pytest.raises(RetryableError) as raised:
            await handler.handle(FINISHED)
        assert raised.value.delay == 7
        # The last attempt (of 2): given up, no retry asked for.
        await handler.handle(FINISHED)
        # Nothing owed any more: no call.
        await handler.handle(FINISHED)
    finally:
        await http.close()
    assert await _log(db_sessions) == [(1, 503, False, False), (2, 503, False, True)]
    assert len(receiver.calls) == 2


async def test_gone_ends_the_retries(
    db_sessions: SessionFactory, serve_receiver: ServeReceiver
) -> None:
    secret = new_secret()
    receiver = Receiver(secret, statuses=(410,))
    handler, http = await _handler(db_sessions, await serve_receiver(receiver), secret)
    try:
        await handler.handle(FINISHED)
        await handler.handle(FINISHED)
    finally:
        await http.close()
    assert await _log(db_sessions) == [(1, 410, False, True)]
    assert len(receiver.calls) == 1


async def test_a_success_is_not_called_back_by_a_failures_only_callback(
    db_sessions: SessionFactory, serve_receiver: ServeReceiver
) -> None:
    secret = new_secret()
    receiver = Receiver(secret)
    handler, http = await _handler(db_sessions, await serve_receiver(receiver), secret)
    try:
        await handler.handle(FINISHED.model_copy(update={"status": "succeeded"}))
    finally:
        await http.close()
    assert await _log(db_sessions) == []
    assert receiver.calls == []


async def test_a_malformed_answer_is_reported_without_the_url_query() -> None:
    # The query may hold the receiver's token: the error is stored and logged.
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"not http at all\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = new_session(LOCAL)
    try:
        outcome = await call(
            http,
            url=f"http://127.0.0.1:{port}/hook?token=s3cret",
            headers={},
            body=b"{}",
            timeout_seconds=5,
            allowed=LOCAL,
        )
    finally:
        await http.close()
        server.close()
        await server.wait_closed()
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("ClientResponseError: ")
    assert "s3cret" not in outcome.error
