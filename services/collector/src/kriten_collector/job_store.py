"""The jobs table, written only here. Transitions are monotonic: queued → running →
final, and a final job never changes again, whatever order events arrive in, with one
exception: a job recorded failed before it was ever launched (its request was
dead-lettered) takes the reports of an execution that started after all, which is what
an operator's replay of that dead letter makes.

Events about one job come from two sources (the broker and the executor's observer) and
can arrive in either order, so every write is an upsert that fills in what it knows.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from kriten_collector.json_data import extract_json_data
from kriten_collector.ports import ExecutionUpdate
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import FINAL_JOB_STATUSES, Job, failed_before_launch, utcnow
from kriten_common.messages import JobDispatchFailed, JobRequested

Change = Callable[[Job], bool]


class JobStore:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def _upsert(self, job_id: str, change: Change) -> Job | None:
        """Applies `change` to the job (a new row if none); returns the job if it changed."""
        for _attempt in range(3):
            async with self._sessions() as session:
                job = await session.get(Job, job_id)
                if job is None:
                    job = Job(id=job_id, task="", owner="", owner_id="")
                if not change(job):
                    return None
                job.updated_at = utcnow()
                session.add(job)
                try:
                    await session.commit()
                except IntegrityError:
                    continue  # created concurrently by the other source: apply again
                return job
        raise RuntimeError(f"could not record job {job_id}")

    async def record_requested(self, event: JobRequested) -> None:
        def change(job: Job) -> bool:
            if job.task:
                return False  # a redelivery
            job.task = event.task
            job.owner = event.owner
            job.owner_id = event.owner_id
            job.source = event.source
            job.input = event.input
            job.webhook_id = event.webhook_id
            job.delivery_id = event.delivery_id
            job.created_at = event.occurred_at
            return True

        await self._upsert(event.job_id, change)

    async def record_dispatch_failed(self, event: JobDispatchFailed) -> Job | None:
        def change(job: Job) -> bool:
            if job.status in FINAL_JOB_STATUSES:
                return False
            job.status = "failed"
            job.error = event.error
            job.completion_time = event.occurred_at
            return True

        return await self._upsert(event.job_id, change)

    async def record_update(self, update: ExecutionUpdate) -> Job | None:
        """Stores what the executor reported; returns the job when this made it final."""

        def change(job: Job) -> bool:
            if job.status in FINAL_JOB_STATUSES and not _launched_after_failing(job, update):
                return False
            job.start_time = job.start_time or update.start_time
            if update.state == "running":
                changed = job.status != "running"
                job.status = "running"
                # Output so far, for `log?follow=true`; json_data waits for the end.
                if update.output is not None and update.output != job.stdout:
                    job.stdout = update.output
                    changed = True
                return changed
            job.status = update.state
            job.completion_time = update.completion_time or utcnow()
            job.exit_code = update.exit_code
            job.error = update.error
            job.stdout = update.output or ""
            job.json_data = extract_json_data(job.stdout)
            return True

        job = await self._upsert(update.job_id, change)
        return job if job is not None and job.status in FINAL_JOB_STATUSES else None


def _launched_after_failing(job: Job, update: ExecutionUpdate) -> bool:
    """Whether `update` reports an execution that started for a job that had failed
    before launch: the dispatch failure is then history, and the execution the truth."""
    return failed_before_launch(job) and update.start_time is not None
