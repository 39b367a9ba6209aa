"""The audit log cannot be filled by anyone: rows of unidentified callers are sampled,
and rows past the retention are purged by the api."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, func, select

from kriten_api.audit import AnonymousSampler
from kriten_api.keys import SESSIONS
from kriten_api.migrate import upgrade_database
from kriten_api.settings import ApiSettings
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import AuditLog
from kriten_common.http import METRICS_REGISTRY
from tests.api.conftest import ApiClient, BuildApi, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"
PER_MINUTE = 10


async def _rows(api: ApiClient, *conditions: object) -> int:
    async with api.app[SESSIONS]() as session:
        query = select(func.count()).select_from(AuditLog).where(*conditions)  # type: ignore[arg-type]
        return int((await session.exec(query)).one())


@pytest.fixture
def sampled_settings(api_settings: ApiSettings) -> ApiSettings:
    return api_settings.model_copy(update={"audit_anonymous_per_minute": float(PER_MINUTE)})


async def test_a_thousand_unauthenticated_requests_write_a_bounded_number_of_rows(
    sampled_settings: ApiSettings, build_api: BuildApi
) -> None:
    api = await build_api(sampled_settings)
    # Before the failed logins below, which lock this address out of logging in.
    root = await login(api)
    api.session.cookie_jar.clear()
    started = time.monotonic()
    for _ in range(20):
        answers = await asyncio.gather(
            *(api.post(f"{BASE}/runners", json={"name": "x"}) for _ in range(50))
        )
        assert {a.status for a in answers} == {401}
    minutes = (time.monotonic() - started) / 60
    # The burst, and what the bucket refilled while the requests were sent.
    bound = PER_MINUTE + int(minutes * PER_MINUTE) + 1
    anonymous = await _rows(api, col(AuditLog.username) == "anonymous")
    assert 1 <= anonymous <= bound
    # Failed logins are unidentified callers too.
    for _ in range(3):
        await asyncio.gather(
            *(
                api.post(f"{BASE}/login", json={"username": f"u{i}", "password": "x"})
                for i in range(40)
            )
        )
    failed = await _rows(api, AuditLog.event_type == "login", AuditLog.status == "failure")
    assert failed <= bound
    # An authenticated caller is always recorded, whatever the flood before.
    assert (await api.post(f"{BASE}/runners", json={"name": "x"}, headers=root)).status != 401
    assert await _rows(api, col(AuditLog.username) == "root", AuditLog.category == "runners") == 1


def test_the_sampler_refills_and_counts_what_it_left_out() -> None:
    now = [0.0]
    sampler = AnonymousSampler(per_minute=2, clock=lambda: now[0])
    assert [sampler.admit("runners") for _ in range(4)] == [0, 0, None, None]
    assert sampler.admit("tasks") == 0  # each category has its own bucket
    now[0] += 30  # one row's worth
    assert sampler.admit("runners") == 2
    assert sampler.admit("runners") is None


async def test_rows_past_the_retention_are_purged_by_the_api(
    api_settings: ApiSettings,
    sqlite_url: str,
    build_api: BuildApi,
) -> None:
    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    now = datetime.now(UTC)

    def row(age: timedelta, target: str) -> AuditLog:
        return AuditLog(
            created_at=now - age,
            username="root",
            provider="local",
            event_type="create",
            category="runners",
            target=target,
            status="success",
        )

    try:
        async with session_factory(engine)() as session:
            session.add(row(timedelta(days=91), "old"))
            session.add(row(timedelta(days=89), "recent"))
            await session.commit()
    finally:
        await engine.dispose()
    settings = api_settings.model_copy(update={"audit_retention_days": 90})
    api = await build_api(settings)
    deadline = time.monotonic() + 10
    while await _rows(api, AuditLog.target == "old") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await _rows(api, AuditLog.target == "old") == 0
    assert await _rows(api, AuditLog.target == "recent") == 1
    purged = api.app[METRICS_REGISTRY].get_sample_value(
        "kriten_retention_purged_rows_total", {"table": "audit_logs"}
    )
    assert purged == 1


async def test_a_retention_of_0_keeps_the_audit_log_forever(
    api_settings: ApiSettings,
    sqlite_url: str,
    build_api: BuildApi,
) -> None:
    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        async with session_factory(engine)() as session:
            session.add(
                AuditLog(
                    created_at=datetime.now(UTC) - timedelta(days=3650),
                    username="root",
                    provider="local",
                    event_type="create",
                    category="runners",
                    target="ancient",
                    status="success",
                )
            )
            await session.commit()
    finally:
        await engine.dispose()
    api = await build_api(api_settings.model_copy(update={"audit_retention_days": 0}))
    registry = api.app[METRICS_REGISTRY]
    deadline = time.monotonic() + 10
    while (
        not registry.get_sample_value("kriten_retention_last_run_timestamp_seconds")
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    assert registry.get_sample_value("kriten_retention_last_run_timestamp_seconds")
    assert await _rows(api, AuditLog.target == "ancient") == 1
