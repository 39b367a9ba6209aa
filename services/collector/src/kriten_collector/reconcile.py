"""Reconciliation of the jobs table with the executor: no job stays `queued` or `running`
without an execution behind it.

The observer reports what happens to the executions it sees; a job whose execution it
will never see again (a local job directory pruned or never made, a pod deleted while no
collector watched and its Job gone with its TTL, a pod never created) would otherwise
stay `running` or `queued` for ever. At start and then every `interval`, one query reads
the non-final jobs unchanged for longer than a grace (`running_grace` for a running job,
the longer `queued_grace` for a queued one: its request may still be waiting out a
dispatcher's backoff; a job waiting for its concurrency key is never stale), the
observer says which of them have no execution at all, and
those are recorded `failed` with the reason, and announced (`job.finished`).

Racing the rest of the collector is harmless: the write applies only if the job is
unchanged since the query (same status, same `updated_at`), so an update that arrived
meanwhile wins; and a job failed here while still queued has no start time, so an
execution that starts after all (a request that was only late) is still recorded, as
for a dead-lettered request (`kriten_common.db.models.failed_before_launch`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_
from sqlmodel import col, select

from kriten_collector.job_store import FinishedJob, JobStore, StaleJob
from kriten_collector.ports import JobObserver
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Job
from kriten_common.logging import get_logger

log = get_logger(__name__)

# Jobs read and checked at once (a page of the pass; the oldest first).
DEFAULT_BATCH = 200


@dataclass(frozen=True)
class ReconcileSettings:
    interval_seconds: float
    running_grace: timedelta
    queued_grace: timedelta
    batch: int = DEFAULT_BATCH


class Reconciler:
    def __init__(
        self,
        *,
        sessions: SessionFactory,
        store: JobStore,
        observer: JobObserver,
        announce: Callable[[Sequence[FinishedJob]], Awaitable[None]],
        settings: ReconcileSettings,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._observer = observer
        self._announce = announce
        self._settings = settings

    async def run(self) -> None:
        """Reconciles now, then every `interval_seconds`, until cancelled. A pass that
        fails (database or executor unreachable) is logged and tried again next time."""
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as problem:
                log.warning("reconcile_failed", error=f"{type(problem).__name__}: {problem}")
            await asyncio.sleep(self._settings.interval_seconds)

    async def reconcile(self, now: datetime | None = None) -> list[FinishedJob]:
        """One pass over every stale job, a page of `batch` at a time; returns the jobs
        it failed."""
        now = now or utcnow()
        failed: list[FinishedJob] = []
        after: StaleJob | None = None
        while True:
            stale = await self._stale(now, after)
            if stale:
                failed.extend(await self._fail_vanished(stale, now))
            if len(stale) < self._settings.batch:
                return failed
            after = stale[-1]

    async def _fail_vanished(self, stale: list[StaleJob], now: datetime) -> list[FinishedJob]:
        absent = await self._observer.missing([job.id for job in stale])
        vanished = [(job, absent[job.id]) for job in stale if job.id in absent]
        if not vanished:
            return []
        results = await self._store.record_vanished(vanished, completion_time=now)
        failed = [job for job in results if job is not None]
        reasons = {job.id: reason for job, reason in vanished}
        for job in failed:
            log.warning("job_execution_vanished", job_id=job.id, error=reasons[job.id])
        try:
            await self._announce(failed)
        except asyncio.CancelledError:
            raise
        except Exception as problem:
            # Stored is what counts; a waiting api request ends on its own timeout.
            log.warning("job_finished_not_announced", count=len(failed), error=str(problem))
        return failed

    async def _stale(self, now: datetime, after: StaleJob | None) -> list[StaleJob]:
        """A page of the non-final jobs unchanged past their grace, oldest first, after
        `after`: one query (the status is indexed)."""
        running_before = now - self._settings.running_grace
        queued_before = now - self._settings.queued_grace
        query = select(Job.id, Job.status, Job.updated_at).where(
            or_(
                and_(col(Job.status) == "running", col(Job.updated_at) < running_before),
                # A job with a concurrency key may wait its turn for as long as the
                # jobs before it run: queued is where it should be (its request waits
                # in the dispatcher's delay queues, and a dead letter fails it).
                and_(
                    col(Job.status) == "queued",
                    col(Job.updated_at) < queued_before,
                    col(Job.concurrency_key).is_(None),
                ),
            )
        )
        if after is not None:
            query = query.where(
                or_(
                    col(Job.updated_at) > after.updated_at,
                    and_(col(Job.updated_at) == after.updated_at, col(Job.id) > after.id),
                )
            )
        query = query.order_by(col(Job.updated_at), col(Job.id)).limit(self._settings.batch)
        async with self._sessions() as session:
            rows = (await session.exec(query)).all()
        return [StaleJob(id=row[0], status=row[1], updated_at=row[2]) for row in rows]
