"""The dispatcher's consumer handlers: launch requested jobs, cancel on request."""

from __future__ import annotations

from kriten_common.amqp import Publisher
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory, read_session
from kriten_common.db.models import FINAL_JOB_STATUSES, failed_before_launch
from kriten_common.logging import get_logger
from kriten_common.messages import (
    Event,
    JobCancelRequested,
    JobDispatched,
    JobDispatchFailed,
    JobRequested,
)
from kriten_common.outcomes import RetryableError, Waiting
from kriten_dispatcher.job_specs import build_spec, load_records
from kriten_dispatcher.key_gate import KeyGate
from kriten_dispatcher.ports import JobLauncher, JobSpec

log = get_logger(__name__)


class Dispatcher:
    def __init__(
        self,
        *,
        launcher: JobLauncher,
        publisher: Publisher,
        sessions: SessionFactory,
        box: SecretBox,
        executor: str,
        key_settle_seconds: float = 1.0,
    ) -> None:
        self._launcher = launcher
        self._publisher = publisher
        self._sessions = sessions
        self._box = box
        self._executor = executor
        self._gate = KeyGate(sessions, settle_seconds=key_settle_seconds)

    async def handle(self, event: Event) -> None:
        if isinstance(event, JobRequested):
            await self.launch(event)
        elif isinstance(event, JobCancelRequested):
            await self.cancel(event)

    async def _spec_to_launch(self, event: JobRequested) -> JobSpec | None:
        """The job's spec, None when the job already ran."""
        async with read_session(self._sessions) as session:
            records = await load_records(event, session=session)
        job = records.job
        # A job that failed before launch is the replay of its dead letter: it may run.
        if job is not None and job.status in FINAL_JOB_STATUSES and not failed_before_launch(job):
            return None
        return build_spec(event, records, box=self._box)

    async def cancel(self, event: JobCancelRequested) -> None:
        """Stops the job; one waiting for its concurrency key ends at once (announced
        here; its request, when it comes back, finds it ended); one not launched yet
        otherwise (its request still queued or retrying) is tried again later, so the
        cancellation lands once the launch has."""
        if await self._launcher.cancel(event.job_id):
            log.info("job_cancelled", job_id=event.job_id, requested_by=event.requested_by)
            return
        if not await self._gate.cancel_waiting(event.job_id):
            raise RetryableError(f"job {event.job_id} is not running yet", delay=1)
        log.info("job_cancelled", job_id=event.job_id, requested_by=event.requested_by)
        await self._publisher.publish(
            JobDispatchFailed(
                job_id=event.job_id,
                error="cancelled",
                status="cancelled",
                correlation_id=event.correlation_id,
            )
        )

    async def launch(self, event: JobRequested) -> None:
        """Launches once (idempotent by job id). A `PermanentError` (task or runner gone,
        a spec that can never run) ends the request: the consumer dead-letters it and
        `on_dead_letter` records the job failed."""
        spec = await self._spec_to_launch(event)
        if spec is None:
            # A sender's retry after the job ran and its execution was cleaned up (a
            # Kubernetes Job past its TTL, a pruned local job directory): the same job id
            # must not run twice.
            log.info("job_already_finished", job_id=event.job_id)
            return
        if event.concurrency_key is not None and not await self._admitted_by_key(event):
            return
        await self._launcher.launch(spec)
        log.info("job_dispatched", job_id=event.job_id, task=event.task)
        await self._publisher.publish(
            JobDispatched(
                job_id=event.job_id, executor=self._executor, correlation_id=event.correlation_id
            )
        )

    async def _admitted_by_key(self, event: JobRequested) -> bool:
        """Whether the job may launch now (before the launcher: both executors obey it).

        A job that must wait raises `Waiting`: its request comes back through a delay
        queue and asks again, without using an attempt. A job the gate ends (replaced,
        skipped) is announced here, by its own request, so a redelivery announces it
        again rather than never."""
        verdict = await self._gate.decide(event)
        if verdict.action == "wait":
            raise Waiting(verdict.reason, delay=verdict.retry_in)
        if verdict.action == "end":
            log.info("job_ended_by_key", job_id=event.job_id, status=verdict.status)
            await self._publisher.publish(
                JobDispatchFailed(
                    job_id=event.job_id,
                    error=verdict.reason,
                    status=verdict.status,
                    correlation_id=event.correlation_id,
                )
            )
            return False
        return True

    async def on_dead_letter(self, event: Event, reason: str) -> None:
        """The consumer gave up on `event` (a permanent failure or its attempts spent).

        The one path by which a request that will never launch is recorded on its job:
        `JobDispatchFailed` lets the collector mark the job failed with the reason, so
        no job stays `queued` with nothing behind it. A failed publish raises, and the
        consumer requeues the message to come back here.
        """
        if not isinstance(event, JobRequested):
            return  # a cancellation given up on leaves its job as it is
        log.warning("job_dispatch_failed", job_id=event.job_id, error=reason)
        await self._publisher.publish(
            JobDispatchFailed(
                job_id=event.job_id, error=reason, correlation_id=event.correlation_id
            )
        )
