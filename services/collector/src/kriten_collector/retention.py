"""The retention of what the collector owns: final jobs, their output, and the webhook
delivery log, purged by a loop of the collector (`retention_context`) a little after
start and then every `KRITEN_RETENTION_INTERVAL_SECONDS`, in batches of
`KRITEN_RETENTION_BATCH_SIZE` rows (`kriten_common.retention`).

- `jobs`: final jobs (succeeded, failed, cancelled) created and finished more than
  `KRITEN_JOB_RETENTION_DAYS` ago are deleted. Queued and running jobs are never touched,
  however old.
- `job_output`: the stdout and JSON data of final jobs created and finished more than
  `KRITEN_JOB_OUTPUT_RETENTION_DAYS` ago are cleared; the job itself (status, times,
  exit code, error) is kept.
- `webhook_deliveries`: deliveries received more than `KRITEN_DELIVERY_RETENTION_HOURS`
  ago are deleted.
- `callback_deliveries`: completion callback attempts made more than
  `KRITEN_CALLBACK_RETENTION_HOURS` ago are deleted.

0 keeps the rows forever. The audit log is the api's table, and the api purges it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import and_, delete, func, null, or_, update
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel import col, select

from kriten_collector.keys import SESSIONS, SETTINGS
from kriten_collector.settings import CollectorSettings
from kriten_common.db.models import (
    FINAL_JOB_STATUSES,
    CallbackDelivery,
    Job,
    KeyedJob,
    WebhookDelivery,
)
from kriten_common.http import METRICS_REGISTRY
from kriten_common.retention import COLLECTOR_LOCK_KEY, Purger, RetentionMetrics, RetentionRule

# The first run waits this long after start (at most the interval), so a replica that
# restarts in a loop, or many starting at once, does not purge before it serves.
FIRST_RUN_DELAY_SECONDS = 60.0


def _final_before(cutoff: datetime) -> Any:
    """Final jobs created and finished before `cutoff` (a job that ran for longer than
    the retention is kept until it has been finished for that long)."""
    return and_(
        col(Job.status).in_(sorted(FINAL_JOB_STATUSES)),
        col(Job.created_at) < cutoff,
        func.coalesce(col(Job.completion_time), col(Job.updated_at)) < cutoff,
    )


def delete_jobs(cutoff: datetime, batch_size: int) -> UpdateBase:
    batch = select(Job.id).where(_final_before(cutoff)).limit(batch_size)
    return (
        delete(Job)
        .where(col(Job.id).in_(batch.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def clear_job_output(cutoff: datetime, batch_size: int) -> UpdateBase:
    # SQL NULL, not JSON's null: a row cleared once no longer matches.
    with_output = or_(col(Job.stdout).is_not(None), col(Job.json_data).is_not(None))
    batch = select(Job.id).where(_final_before(cutoff), with_output).limit(batch_size)
    return (
        update(Job)
        .where(col(Job.id).in_(batch.scalar_subquery()))
        .values(stdout=None, json_data=null())
        .execution_options(synchronize_session=False)
    )


def delete_deliveries(cutoff: datetime, batch_size: int) -> UpdateBase:
    batch = (
        select(WebhookDelivery.id)
        .where(col(WebhookDelivery.received_at) < cutoff)
        .limit(batch_size)
    )
    return (
        delete(WebhookDelivery)
        .where(col(WebhookDelivery.id).in_(batch.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def delete_callback_deliveries(cutoff: datetime, batch_size: int) -> UpdateBase:
    batch = (
        select(CallbackDelivery.id)
        .where(col(CallbackDelivery.attempted_at) < cutoff)
        .limit(batch_size)
    )
    return (
        delete(CallbackDelivery)
        .where(col(CallbackDelivery.id).in_(batch.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


# A keyed job's place whose job was never stored, after this long, is not waiting for
# anything: its request is gone.
ORPHAN_PLACE_AGE = timedelta(days=1)


def delete_spent_places(cutoff: datetime, batch_size: int) -> UpdateBase:
    """Places in a key's line (`keyed_jobs`, the dispatcher's gate) that no longer count:
    their job is final, or gone (purged, or never stored) since before `cutoff`. The gate
    forgets the final ones of a key only when that key is next decided, so without this
    the last job of every key would keep its row, and a job purged by the retention above
    would leave its key busy for ever."""
    job_status = select(Job.status).where(col(Job.id) == col(KeyedJob.job_id)).scalar_subquery()
    spent = or_(
        job_status.in_(sorted(FINAL_JOB_STATUSES)),
        and_(job_status.is_(None), col(KeyedJob.accepted_at) < cutoff),
    )
    batch = select(KeyedJob.job_id).where(spent).limit(batch_size)
    return (
        delete(KeyedJob)
        .where(col(KeyedJob.job_id).in_(batch.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def _kept(days: float) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None


def retention_rules(settings: CollectorSettings) -> list[RetentionRule]:
    """The rules, in the order they run: deleting jobs first leaves fewer to clear."""
    return [
        RetentionRule("jobs", _kept(settings.job_retention_days), delete_jobs),
        RetentionRule("job_output", _kept(settings.job_output_retention_days), clear_job_output),
        RetentionRule(
            "webhook_deliveries", _kept(settings.delivery_retention_hours / 24), delete_deliveries
        ),
        RetentionRule(
            "callback_deliveries",
            _kept(settings.callback_retention_hours / 24),
            delete_callback_deliveries,
        ),
        # Not a setting: these rows are bookkeeping, never history.
        RetentionRule("keyed_jobs", ORPHAN_PLACE_AGE, delete_spent_places),
    ]


def add_retention(app: web.Application) -> None:
    """Registers the metrics now and runs the purge loop while the app runs; added after
    the database's cleanup context, so the loop stops before the database closes."""
    RetentionMetrics.of(app[METRICS_REGISTRY])
    app.cleanup_ctx.append(retention_context)


async def retention_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    purger = Purger(
        app[SESSIONS],
        retention_rules(settings),
        RetentionMetrics.of(app[METRICS_REGISTRY]),
        lock_key=COLLECTOR_LOCK_KEY,
        batch_size=settings.retention_batch_size,
    )
    interval = settings.retention_interval_seconds
    task = asyncio.create_task(
        purger.run_forever(
            interval_seconds=interval,
            first_delay_seconds=min(FIRST_RUN_DELAY_SECONDS, interval),
        ),
        name="collector-retention",
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
