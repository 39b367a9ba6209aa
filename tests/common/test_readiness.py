"""`/readyz`: 200 when every dependency answers, else 503 naming what is missing, in time
for a probe whatever the dependencies do."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from kriten_common.http import (
    READINESS_CHECK_TIMEOUT_SECONDS,
    READINESS_CHECKS,
    create_service_app,
)


async def ready() -> bool:
    return True


async def not_ready() -> bool:
    return False


async def broken() -> bool:
    raise ConnectionRefusedError("connection refused")


async def hanging() -> bool:
    await asyncio.sleep(3600)
    return True


async def answer(checks: dict[str, object]) -> tuple[int, dict[str, object], float]:
    app = create_service_app(registry=CollectorRegistry())
    app[READINESS_CHECKS].update(checks)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        started = time.monotonic()
        response = await client.get("/readyz")
        return response.status, await response.json(), time.monotonic() - started


async def test_ready_when_every_dependency_answers() -> None:
    status, body, _ = await answer({"database": ready, "broker": ready})
    assert status == 200
    assert body == {"status": "ok", "checks": {"database": True, "broker": True}}


async def test_not_ready_names_what_is_missing() -> None:
    status, body, _ = await answer({"database": broken, "broker": not_ready, "other": ready})
    assert status == 503
    assert body == {
        "status": "unavailable",
        "missing": ["database", "broker"],
        "checks": {"database": False, "broker": False, "other": True},
    }


async def test_a_dependency_that_does_not_answer_is_missing_in_time() -> None:
    """Two hanging checks: bounded, and run at once, so the answer takes one timeout."""
    status, body, took = await answer({"database": hanging, "broker": hanging, "x": ready})
    assert status == 503
    assert body["missing"] == ["database", "broker"]
    assert took < READINESS_CHECK_TIMEOUT_SECONDS * 1.9
