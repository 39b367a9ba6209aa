"""The collector's retention purge on each database: final jobs past the retention
deleted (queued and running ones never), output cleared with the job kept, deliveries
purged by age; in batches of bounded size, one replica at a time, with metrics; 0 keeps
everything; a database outage is a warning and the next run retries; and the app runs
the loop and stops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel import select

from kriten_collector import retention
from kriten_collector.keys import SESSIONS, SETTINGS
from kriten_collector.retention import add_retention, retention_context, retention_rules
from kriten_collector.settings import CollectorSettings
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import CallbackDelivery, Job, KeyedJob, WebhookDelivery
from kriten_common.http import METRICS_REGISTRY
from kriten_common.retention import (
    API_LOCK_KEY,
    COLLECTOR_LOCK_KEY,
    BatchStatement,
    Purger,
    RetentionMetrics,
    RetentionRule,
)
from tests.collector.test_write_batching import Statements, _engine

NOW = utcnow()
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=1)


def job(
    job_id: str,
    status: str,
    *,
    created: datetime = OLD,
    finished: datetime | None = OLD,
    stdout: str | None = "hello\n",
    json_data: Any = None,
) -> Job:
    return Job(
        id=job_id,
        task="hello",
        owner="root",
        owner_id="u",
        status=status,
        start_time=created,
        completion_time=finished,
        exit_code=0 if status == "succeeded" else None,
        stdout=stdout,
        json_data=json_data,
        error="boom" if status == "failed" else None,
        created_at=created,
        updated_at=finished or created,
    )


def delivery(delivery_id: str, received: datetime) -> WebhookDelivery:
    return WebhookDelivery(
        id=delivery_id,
        webhook_id="hook-1",
        received_at=received,
        outcome="accepted",
        headers={},
        body="{}",
    )


async def store(sessions: SessionFactory, *rows: Any) -> None:
    async with sessions() as session:
        session.add_all(rows)
        await session.commit()


async def stored_jobs(sessions: SessionFactory) -> dict[str, Job]:
    async with sessions() as session:
        return {row.id: row for row in (await session.exec(select(Job))).all()}


async def stored_deliveries(sessions: SessionFactory) -> list[str]:
    async with sessions() as session:
        return sorted((await session.exec(select(WebhookDelivery.id))).all())


def settings(**values: Any) -> CollectorSettings:
    defaults: dict[str, Any] = {
        "job_retention_days": 0,
        "job_output_retention_days": 0,
        "delivery_retention_hours": 0,
        "callback_retention_hours": 0,
    }
    return CollectorSettings(**{**defaults, **values})


def purger(
    sessions: SessionFactory, registry: CollectorRegistry | None = None, **values: Any
) -> Purger:
    """The purge of the rules the settings govern (the `keyed_jobs` bookkeeping, which
    always runs, has a test of its own)."""
    batch_size = values.pop("batch_size", 1000)
    rules = [rule for rule in retention_rules(settings(**values)) if rule.name != "keyed_jobs"]
    return Purger(
        sessions,
        rules,
        RetentionMetrics.of(registry or CollectorRegistry()),
        lock_key=COLLECTOR_LOCK_KEY,
        batch_size=batch_size,
    )


async def test_old_final_jobs_are_deleted_and_unfinished_ones_kept(
    db_sessions: SessionFactory,
) -> None:
    await store(
        db_sessions,
        job("old-succeeded", "succeeded"),
        job("old-failed", "failed", stdout=None),
        job("old-cancelled", "cancelled", finished=None),  # cancelled before it ran
        job("old-running", "running", finished=None),
        job("old-queued", "queued", finished=None),
        job("recent", "succeeded", created=RECENT, finished=RECENT),
        job("ran-long", "succeeded", finished=RECENT),  # created long ago, finished lately
    )
    counts = await purger(db_sessions, job_retention_days=30).run_once()
    assert counts == {"jobs": 3}
    assert sorted(await stored_jobs(db_sessions)) == [
        "old-queued",
        "old-running",
        "ran-long",
        "recent",
    ]


async def test_output_is_cleared_and_the_job_kept(db_sessions: SessionFactory) -> None:
    await store(
        db_sessions,
        job("old", "succeeded", json_data={"answer": 42}),
        job("old-failed", "failed", stdout=None, json_data=[1, 2]),
        job("old-running", "running", finished=None),
        job("recent", "succeeded", created=RECENT, finished=RECENT, json_data={"a": 1}),
    )
    purge = purger(db_sessions, job_output_retention_days=7)
    assert await purge.run_once() == {"job_output": 2}
    jobs = await stored_jobs(db_sessions)
    assert len(jobs) == 4
    old = jobs["old"]
    assert (old.stdout, old.json_data) == (None, None)
    assert (old.status, old.exit_code, old.completion_time) == ("succeeded", 0, OLD)
    assert (jobs["old-failed"].stdout, jobs["old-failed"].json_data) == (None, None)
    assert jobs["old-failed"].error == "boom"  # the reason it failed stays
    assert jobs["old-running"].stdout == "hello\n"
    assert (jobs["recent"].stdout, jobs["recent"].json_data) == ("hello\n", {"a": 1})
    # Cleared rows are not cleared again.
    assert await purge.run_once() == {"job_output": 0}


async def test_deliveries_are_purged_by_age(db_sessions: SessionFactory) -> None:
    await store(
        db_sessions,
        delivery("old-1", NOW - timedelta(hours=3)),
        delivery("old-2", NOW - timedelta(days=30)),
        delivery("new", NOW - timedelta(minutes=30)),
    )
    counts = await purger(db_sessions, delivery_retention_hours=2).run_once()
    assert counts == {"webhook_deliveries": 2}
    assert await stored_deliveries(db_sessions) == ["new"]


async def test_zero_keeps_everything_forever(db_sessions: SessionFactory) -> None:
    await store(
        db_sessions,
        job("ancient", "succeeded", created=NOW - timedelta(days=3650)),
        delivery("ancient", NOW - timedelta(days=3650)),
    )
    purge = purger(db_sessions)  # every retention 0
    assert not purge.active
    assert await purge.run_once() == {}
    await asyncio.wait_for(purge.run_forever(interval_seconds=0, first_delay_seconds=0), 1)
    assert list(await stored_jobs(db_sessions)) == ["ancient"]
    assert (await stored_jobs(db_sessions))["ancient"].stdout == "hello\n"
    assert await stored_deliveries(db_sessions) == ["ancient"]


async def test_old_callback_deliveries_are_deleted(db_sessions: SessionFactory) -> None:
    def attempt(name: str, at: datetime) -> CallbackDelivery:
        return CallbackDelivery(
            id=name,
            task="t",
            job_id="t-1",
            url="https://a.example/",
            event="succeeded",
            webhook_id="msg_1",
            attempt=1,
            attempted_at=at,
        )

    await store(db_sessions, attempt("old", OLD), attempt("recent", RECENT))
    counts = await purger(db_sessions, callback_retention_hours=48).run_once()
    assert counts == {"callback_deliveries": 1}
    async with db_sessions() as session:
        kept = (await session.exec(select(CallbackDelivery.id))).all()
    assert list(kept) == ["recent"]


def test_the_defaults_keep_jobs_and_purge_deliveries_after_a_week() -> None:
    rules = {rule.name: rule.retention for rule in retention_rules(CollectorSettings())}
    assert rules == {
        "jobs": None,
        "job_output": None,
        "webhook_deliveries": timedelta(days=7),
        "callback_deliveries": timedelta(days=7),
        "keyed_jobs": timedelta(days=1),
    }


async def test_batches_are_bounded_and_metrics_move(db_sessions: SessionFactory) -> None:
    await store(
        db_sessions,
        *(job(f"job-{n}", "succeeded") for n in range(5)),
        *(delivery(f"d-{n}", OLD) for n in range(4)),
    )
    registry = CollectorRegistry()
    purge = purger(
        db_sessions, registry, batch_size=2, job_retention_days=30, delivery_retention_hours=24
    )
    statements = Statements(_engine(db_sessions))
    before = datetime.now().timestamp()
    assert await purge.run_once() == {"jobs": 5, "webhook_deliveries": 4}
    deletes = [s for s in statements.sql if s.startswith("DELETE")]
    # 2 + 2 + 1 jobs; 2 + 2 + 0 deliveries (a full batch may not have been the last).
    assert len(deletes) == 6
    assert all("LIMIT" in s for s in deletes)
    assert statements.commits == 6  # a transaction per batch
    assert await stored_jobs(db_sessions) == {}
    assert await stored_deliveries(db_sessions) == []

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("kriten_retention_purged_rows_total", table="jobs") == 5
    assert sample("kriten_retention_purged_rows_total", table="webhook_deliveries") == 4
    assert sample("kriten_retention_run_duration_seconds_count") == 1
    last_run = sample("kriten_retention_last_run_timestamp_seconds")
    assert last_run is not None
    assert last_run >= before


async def test_one_info_line_per_run_with_the_counts(db_sessions: SessionFactory) -> None:
    await store(db_sessions, *(job(f"job-{n}", "succeeded") for n in range(3)))
    purge = purger(db_sessions, batch_size=1, job_retention_days=30)
    with structlog.testing.capture_logs() as logged:
        await purge.run_once()
    (line,) = [entry for entry in logged if entry["log_level"] == "info"]
    assert (line["event"], line["jobs"]) == ("retention_purged", 3)


# The advisory lock is PostgreSQL's; SQLite has a single writer, so only PostgreSQL.
@pytest.mark.integration
@pytest.mark.parametrize("database_backend", ["postgres"])
async def test_a_replica_purging_already_stops_another(db_sessions: SessionFactory) -> None:
    await store(db_sessions, job("old-1", "succeeded"), job("old-2", "succeeded"))
    purge = purger(db_sessions, batch_size=1, job_retention_days=30)

    async def run_while_held(key: int) -> dict[str, int]:
        async with _engine(db_sessions).connect() as other:
            await other.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                return await purge.run_once()
            finally:
                await other.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    # Another collector replica purging: this one leaves it the work.
    assert await run_while_held(COLLECTOR_LOCK_KEY) == {"jobs": 0}
    assert len(await stored_jobs(db_sessions)) == 2
    # The api purging its audit log is no reason to wait.
    assert await run_while_held(API_LOCK_KEY) == {"jobs": 2}


def failing_first(times: int) -> BatchStatement:
    """The jobs rule's statement, but the database is away for the first `times` runs."""
    calls = 0

    def statement(cutoff: datetime, batch_size: int) -> UpdateBase:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise OperationalError("DELETE", {}, ConnectionRefusedError("database is down"))
        return retention.delete_jobs(cutoff, batch_size)

    return statement


async def test_an_outage_is_a_warning_and_the_next_run_retries(
    db_sessions: SessionFactory,
) -> None:
    await store(db_sessions, job("old", "succeeded"))
    registry = CollectorRegistry()
    purge = Purger(
        db_sessions,
        [RetentionRule("jobs", timedelta(days=30), failing_first(1))],
        RetentionMetrics.of(registry),
        lock_key=COLLECTOR_LOCK_KEY,
    )
    with structlog.testing.capture_logs() as logged:
        loop = asyncio.create_task(purge.run_forever(interval_seconds=0.01, first_delay_seconds=0))
        try:
            for _ in range(500):
                if not await stored_jobs(db_sessions):
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.cancel()
    assert not loop.done() or loop.cancelled()  # it never ended on its own
    assert await stored_jobs(db_sessions) == {}
    failures = [entry for entry in logged if entry["event"] == "retention_purge_failed"]
    assert [entry["log_level"] for entry in failures] == ["warning"]
    assert registry.get_sample_value("kriten_retention_failures_total") == 1
    assert registry.get_sample_value("kriten_retention_purged_rows_total", {"table": "jobs"}) == 1


async def test_the_collector_runs_the_purge_until_it_stops(
    db_sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "FIRST_RUN_DELAY_SECONDS", 0.0)
    await store(db_sessions, job("old", "succeeded"), delivery("old", OLD))
    app = web.Application()
    app[METRICS_REGISTRY] = CollectorRegistry()
    app[SETTINGS] = settings(job_retention_days=30, retention_interval_seconds=0.05)
    app[SESSIONS] = db_sessions
    add_retention(app)
    # Registered with the app, so /metrics lists them before the first run.
    registry = app[METRICS_REGISTRY]
    assert registry.get_sample_value("kriten_retention_last_run_timestamp_seconds") == 0
    assert list(app.cleanup_ctx) == [retention_context]
    context: AsyncIterator[None] = retention_context(app)
    await anext(context)
    try:
        for _ in range(200):
            if not await stored_jobs(db_sessions):
                break
            await asyncio.sleep(0.01)
        assert await stored_jobs(db_sessions) == {}
        assert await stored_deliveries(db_sessions) == ["old"]  # kept forever (0)
    finally:
        with pytest.raises(StopAsyncIteration):
            await anext(context)
    assert registry.get_sample_value("kriten_retention_purged_rows_total", {"table": "jobs"}) == 1
    # Stopped: no run after the stop.
    runs = registry.get_sample_value("kriten_retention_run_duration_seconds_count")
    await asyncio.sleep(0.1)
    assert registry.get_sample_value("kriten_retention_run_duration_seconds_count") == runs


async def test_places_in_a_keys_line_that_no_longer_count_are_removed(
    db_sessions: SessionFactory,
) -> None:
    # Every retention setting at 0 (keep for ever): the places are bookkeeping, not history.
    await store(
        db_sessions,
        job("finished", "succeeded"),
        job("running", "running", finished=None),
        KeyedJob(job_id="finished", key="device-1", accepted_at=OLD, launched=True),
        KeyedJob(job_id="running", key="device-1", accepted_at=OLD, launched=True),
        # Never stored as a job: gone after a day, kept before (it may just be late).
        KeyedJob(job_id="lost", key="device-2", accepted_at=OLD),
        KeyedJob(job_id="arriving", key="device-2", accepted_at=NOW),
    )
    purge = Purger(
        db_sessions,
        retention_rules(settings()),
        RetentionMetrics.of(CollectorRegistry()),
        lock_key=COLLECTOR_LOCK_KEY,
    )
    assert await purge.run_once() == {"keyed_jobs": 2}
    async with db_sessions() as session:
        kept = sorted((await session.exec(select(KeyedJob.job_id))).all())
    assert kept == ["arriving", "running"]
