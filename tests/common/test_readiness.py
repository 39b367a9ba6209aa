"""`/readyz`: 200 when every dependency answers, else 503 naming what is missing, in time
for a probe whatever the dependencies do."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from kriten_common import http
from kriten_common.http import READINESS_CHECKS, create_service_app


async def ready() -> bool:
    return True


async def not_ready() -> bool:
    return False


async def broken() -> bool:
    raise ConnectionRefusedError("connection refused")


async def hanging() -> bool:
    await asyncio.sleep(3600)
    return True


async def answer(checks: dict[str, object]) -> tuple[int, dict[str, object]]:
    app = create_service_app(registry=CollectorRegistry())
    app[READINESS_CHECKS].update(checks)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        return response.status, await response.json()


async def test_ready_when_every_dependency_answers() -> None:
    status, body = await answer({"database": ready, "broker": ready})
    assert status == 200
    assert body == {"status": "ok", "checks": {"database": True, "broker": True}}


async def test_not_ready_names_what_is_missing() -> None:
    status, body = await answer({"database": broken, "broker": not_ready, "other": ready})
    assert status == 503
    assert body == {
        "status": "unavailable",
        "missing": ["database", "broker"],
        "checks": {"database": False, "broker": False, "other": True},
    }


async def test_a_dependency_that_does_not_answer_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http, "READINESS_CHECK_TIMEOUT_SECONDS", 0.05)
    status, body = await answer({"database": hanging, "broker": hanging, "x": ready})
    assert status == 503
    assert body["missing"] == ["database", "broker"]


async def test_the_checks_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check answers only once the other has started: one after the other, the
    first would time out waiting."""
    monkeypatch.setattr(http, "READINESS_CHECK_TIMEOUT_SECONDS", 1.0)
    both = asyncio.Barrier(2)

    async def meets() -> bool:
        await both.wait()
        return True

    status, body = await answer({"database": meets, "broker": meets})
    assert (status, body["checks"]) == (200, {"database": True, "broker": True})
