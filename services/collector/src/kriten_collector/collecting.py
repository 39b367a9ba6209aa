"""The collector's two inputs: job events from the broker, and the executor's observer."""

from __future__ import annotations

import asyncio

from kriten_collector.delivery_store import DeliveryStore
from kriten_collector.job_store import JobStore
from kriten_collector.ports import ExecutionUpdate, JobObserver
from kriten_common.amqp import Publisher
from kriten_common.db.models import Job
from kriten_common.logging import get_logger
from kriten_common.messages import (
    Event,
    FinalStatus,
    JobDispatchFailed,
    JobFinished,
    JobRequested,
    WebhookDelivered,
)

log = get_logger(__name__)
RETRY_SECONDS = (0.5, 1, 2, 5, 10)
FINAL_STATUSES: dict[str, FinalStatus] = {"succeeded": "succeeded", "cancelled": "cancelled"}


class Collector:
    def __init__(
        self,
        *,
        store: JobStore,
        publisher: Publisher,
        observer: JobObserver,
        deliveries: DeliveryStore | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._observer = observer
        self._deliveries = deliveries

    async def handle(self, event: Event) -> None:
        """Consumer handler for `collector.events`."""
        if isinstance(event, JobRequested):
            await self._store.record_requested(event)
        elif isinstance(event, JobDispatchFailed):
            job = await self._store.record_dispatch_failed(event)
            if job is not None:
                await self._finished(job)
        elif isinstance(event, WebhookDelivered) and self._deliveries is not None:
            # Without a store (a collector built for job events only) the log is dropped.
            await self._deliveries.record(event)

    async def observe(self) -> None:
        """Runs the observation loop for ever; a failing observer is restarted."""
        attempt = 0
        while True:
            try:
                await self._observe_once()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.exception("observer_failed", retry_in=delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _observe_once(self) -> None:
        """Stores every update the observer reports, retrying each until it is stored:
        an update is forgotten by the observer only after it is durable here."""
        async for update in self._observer.updates():
            attempt = 0
            while True:
                try:
                    await self._apply(update)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                    log.exception("job_update_failed", job_id=update.job_id, retry_in=delay)
                    attempt += 1
                    await asyncio.sleep(delay)

    async def _apply(self, update: ExecutionUpdate) -> None:
        job = await self._store.record_update(update)
        if job is not None:
            log.info("job_finished", job_id=job.id, status=job.status, exit_code=job.exit_code)
            await self._finished(job)
        if update.state != "running":
            await self._observer.forget(update.job_id)

    async def _finished(self, job: Job) -> None:
        status = FINAL_STATUSES.get(job.status, "failed")
        # Not mandatory: its only listeners are the api replicas' per-instance queues, and
        # with no api running a finished job has no one to wake, which is not an error.
        await self._publisher.publish(
            JobFinished(job_id=job.id, task=job.task, status=status, exit_code=job.exit_code),
            mandatory=False,
        )
