"""The jobs table, written only here. Transitions are monotonic: queued → running →
final, and a final job never changes again, whatever order events arrive in, with one
exception: a job recorded failed before it was ever launched (its request was
dead-lettered) takes the reports of an execution that started after all, which is what
an operator's replay of that dead letter makes.

Events about one job come from two sources (the broker and the executor's observer) and
can arrive in either order, so every write is an upsert that fills in what it knows.

Writes are group-committed (`WriteBatcher`): a batch reads all its jobs in one select,
applies each write's change in memory in arrival order (several writes of one job see
each other), then inserts and updates what changed in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_collector.json_data import extract_json_data
from kriten_collector.metrics import NEW, CollectorMetrics, Transition, transition
from kriten_collector.ports import ExecutionUpdate
from kriten_collector.write_batcher import DEFAULT_MAX_BATCH, WriteBatcher
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.in_lists import padded
from kriten_common.db.models import FINAL_JOB_STATUSES, Job, failed_before_launch
from kriten_common.messages import JobDispatchFailed, JobRequested

# Changes the job in place and says whether it did; returns False before changing
# anything, since an unchanged job may still be written by another write of the batch.
Change = Callable[[Job], bool]
# Another replica creating a job between a batch's read and its insert is retried with a
# fresh read; this many times in a row means something else is wrong.
INSERT_ATTEMPTS = 3


@dataclass(frozen=True)
class FinishedJob:
    """A job as a write made it final: what its `JobFinished` announces."""

    id: str
    task: str
    status: str
    exit_code: int | None
    # A webhook delivery's id is the correlation id of everything logged about its job.
    delivery_id: str | None = None


@dataclass(frozen=True)
class StaleJob:
    """A non-final job as the reconciliation read it (`kriten_collector.reconcile`)."""

    id: str
    status: str
    updated_at: datetime


@dataclass(frozen=True)
class JobWrite:
    job_id: str
    change: Change
    # Whether the write reports the job it made final (a request only fills fields in).
    reports_final: bool


class JobStore:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        metrics: CollectorMetrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._batcher: WriteBatcher[JobWrite, FinishedJob | None] = WriteBatcher(
            self._commit,
            max_batch=max_batch,
            batch_sizes=None if metrics is None else metrics.batch_sizes("jobs").observe,
        )

    async def record_requested(self, event: JobRequested) -> None:
        await self._batcher.write(JobWrite(event.job_id, requested_change(event), False))

    async def record_dispatch_failed(self, event: JobDispatchFailed) -> FinishedJob | None:
        """Stores the failure; returns the job when this made it final."""
        return await self._batcher.write(
            JobWrite(event.job_id, dispatch_failed_change(event), True)
        )

    async def record_update(self, update: ExecutionUpdate) -> FinishedJob | None:
        """Stores what the executor reported; returns the job when this made it final."""
        (finished,) = await self.record_updates([update])
        return finished

    async def record_vanished(
        self, jobs: Sequence[tuple[StaleJob, str]], *, completion_time: datetime
    ) -> list[FinishedJob | None]:
        """Records each job failed with its reason, if it is still as it was read; for
        each, the job when this made it final."""
        return await self._batcher.write_all(
            [
                JobWrite(job.id, vanished_change(job, reason, completion_time), True)
                for job, reason in jobs
            ]
        )

    async def record_updates(self, updates: Sequence[ExecutionUpdate]) -> list[FinishedJob | None]:
        """Stores `updates` in order and all in one transaction (all or none stored);
        for each, the job when that update made it final."""
        return await self._batcher.write_all(
            [JobWrite(update.job_id, update_change(update), True) for update in updates]
        )

    async def _commit(self, writes: Sequence[JobWrite]) -> list[FinishedJob | None]:
        conflict: IntegrityError | None = None
        for _attempt in range(INSERT_ATTEMPTS):
            try:
                return await self._commit_once(writes)
            except IntegrityError as problem:
                conflict = problem  # a job created concurrently by another replica: read again
        raise RuntimeError(f"could not record a batch of {len(writes)} job writes") from conflict

    async def _commit_once(self, writes: Sequence[JobWrite]) -> list[FinishedJob | None]:
        async with self._sessions() as session:
            jobs = await _load(session, {write.job_id for write in writes})
            results: list[FinishedJob | None] = []
            changed = False
            # Jobs made in memory for this batch and not written yet: no row before.
            unwritten: set[str] = set()
            transitions: list[Transition] = []
            for write in writes:
                job = jobs.get(write.job_id)
                if job is None:
                    job = jobs[write.job_id] = Job(id=write.job_id, task="", owner="", owner_id="")
                    unwritten.add(write.job_id)
                before = job.status
                if not write.change(job):
                    results.append(None)
                    continue
                if write.job_id in unwritten:
                    unwritten.discard(write.job_id)
                    before = NEW
                if self._metrics is not None and job.status != before:
                    transitions.append(
                        transition(
                            before,
                            job.status,
                            task=job.task,
                            start_time=job.start_time,
                            completion_time=job.completion_time,
                        )
                    )
                changed = True
                job.updated_at = utcnow()
                session.add(job)  # a new row joins the session only once it has content
                final = write.reports_final and job.status in FINAL_JOB_STATUSES
                # A copy: a later write of the batch may still change the job.
                results.append(_finished(job) if final else None)
            if changed:
                await session.commit()
            if self._metrics is not None and transitions:
                self._metrics.transitioned(transitions)
            return results


async def _load(session: AsyncSession, job_ids: set[str]) -> dict[str, Job]:
    """The stored jobs among `job_ids`, in one select."""
    found = await session.exec(select(Job).where(col(Job.id).in_(padded(job_ids))))
    return {job.id: job for job in found.all()}


def _finished(job: Job) -> FinishedJob:
    return FinishedJob(
        id=job.id,
        task=job.task,
        status=job.status,
        exit_code=job.exit_code,
        delivery_id=job.delivery_id,
    )


def requested_change(event: JobRequested) -> Change:
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
        job.concurrency_key = event.concurrency_key
        job.created_at = event.occurred_at
        return True

    return change


def dispatch_failed_change(event: JobDispatchFailed) -> Change:
    def change(job: Job) -> bool:
        if job.status in FINAL_JOB_STATUSES:
            return False
        # `cancelled` or `skipped` when the job's concurrency key ended it.
        job.status = event.status
        job.error = event.error
        job.completion_time = event.occurred_at
        return True

    return change


def vanished_change(seen: StaleJob, reason: str, completion_time: datetime) -> Change:
    """Fails a job whose execution is gone, unless it changed since it was `seen` (an
    update of its execution, or its end, arrived meanwhile)."""

    def change(job: Job) -> bool:
        if job.status != seen.status or job.updated_at != seen.updated_at:
            return False
        job.status = "failed"
        job.error = reason
        job.completion_time = completion_time
        return True

    return change


def update_change(update: ExecutionUpdate) -> Change:
    def change(job: Job) -> bool:
        if job.status in FINAL_JOB_STATUSES and not _launched_after_failing(job, update):
            return False
        if update.state == "running":
            # Output so far, for `log?follow=true`; json_data waits for the end.
            new_output = update.output is not None and update.output != job.stdout
            if job.status == "running" and not new_output:
                return False
            job.start_time = job.start_time or update.start_time
            job.status = "running"
            if new_output:
                job.stdout = update.output
            return True
        job.start_time = job.start_time or update.start_time
        job.status = update.state
        job.completion_time = update.completion_time or utcnow()
        job.exit_code = update.exit_code
        job.error = update.error
        job.stdout = update.output or ""
        job.json_data = extract_json_data(job.stdout)
        return True

    return change


def _launched_after_failing(job: Job, update: ExecutionUpdate) -> bool:
    """Whether `update` reports an execution that started for a job that had failed
    before launch: the dispatch failure is then history, and the execution the truth."""
    return failed_before_launch(job) and update.start_time is not None
