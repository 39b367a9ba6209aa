"""The collector's two inputs: job events from the broker, and the executor's observer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from kriten_collector.delivery_store import DeliveryStore
from kriten_collector.job_store import FinishedJob, JobStore
from kriten_collector.ports import ExecutionUpdate, JobObserver
from kriten_collector.update_pipeline import UpdatePipeline
from kriten_common.amqp import Publisher
from kriten_common.logging import bound_ids, get_logger
from kriten_common.messages import (
    Event,
    FinalStatus,
    JobDispatched,
    JobDispatchFailed,
    JobFinished,
    JobRequested,
    WebhookDelivered,
)

log = get_logger(__name__)
RETRY_SECONDS = (0.5, 1, 2, 5, 10)
FINAL_STATUSES: dict[str, FinalStatus] = {
    "succeeded": "succeeded",
    "cancelled": "cancelled",
    "skipped": "skipped",
}


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
        """Consumer handler for `collector.events`. Each write returns once its batch is
        committed, so the consumer acks only what is stored; a failed batch raises here
        and the consumer retries or backs off as for any failure."""
        if isinstance(event, JobRequested):
            await self._store.record_requested(event)
        elif isinstance(event, JobDispatched):
            self._observer.launched(event.job_id)
        elif isinstance(event, JobDispatchFailed):
            job = await self._store.record_dispatch_failed(event)
            if job is not None:
                await self._announce([job])
        elif isinstance(event, WebhookDelivered) and self._deliveries is not None:
            # Without a store (a collector built for job events only) the log is dropped.
            await self._deliveries.record(event)

    async def observe(self) -> None:
        """Runs the observation loop for ever; a failing observer is restarted. Updates
        go through a pipeline that stores them in order while the next are observed."""
        pipeline = UpdatePipeline(self._store, self._stored)
        storing = asyncio.create_task(pipeline.run(), name="collector-store-updates")
        try:
            await self._watch(pipeline)
        finally:
            storing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await storing

    async def _watch(self, pipeline: UpdatePipeline) -> None:
        attempt = 0
        while True:
            try:
                async for update in self._observer.updates():
                    await pipeline.put(update)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.exception("observer_failed", retry_in=delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _stored(
        self, updates: Sequence[ExecutionUpdate], finished: Sequence[FinishedJob | None]
    ) -> None:
        """After a group of updates is durable: announce the jobs it ended, then let the
        observer forget every final update of it (not before: it would not report them
        again)."""
        ended = [job for job in finished if job is not None]
        for job in ended:
            with bound_ids(correlation_id=job.delivery_id, job_id=job.id):
                log.info("job_finished", status=job.status, exit_code=job.exit_code)
        try:
            await self._announce(ended)
        except asyncio.CancelledError:
            raise
        except Exception as problem:
            # The jobs are stored, which is what counts; a waiting api request then ends
            # on its own timeout. Retrying here would hold back every later update.
            log.warning("job_finished_not_announced", count=len(ended), error=str(problem))
        # Once per job, concurrently: each may be an API call of its own.
        final = dict.fromkeys(u.job_id for u in updates if u.state != "running")
        await asyncio.gather(*(self._forget(job_id) for job_id in final))

    async def _forget(self, job_id: str) -> None:
        try:
            await self._observer.forget(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as problem:
            # Harmless: the observer reports the update again later, which changes
            # nothing stored, and is asked to forget it again then.
            log.warning("job_not_forgotten", job_id=job_id, error=str(problem))

    async def announce(self, jobs: Sequence[FinishedJob]) -> None:
        """Publishes the `JobFinished` of `jobs` made final elsewhere (reconciliation)."""
        await self._announce(jobs)

    async def _announce(self, jobs: Sequence[FinishedJob]) -> None:
        """Publishes the `JobFinished` of `jobs` in one message."""
        if not jobs:
            return
        events = [
            JobFinished(
                job_id=job.id,
                task=job.task,
                status=FINAL_STATUSES.get(job.status, "failed"),
                exit_code=job.exit_code,
                correlation_id=job.delivery_id,
            )
            for job in jobs
        ]
        # Not mandatory: besides the completion callbacks' queue (always declared), its
        # listeners are the api replicas' per-instance queues, and with no api running a
        # finished job has no one to wake, which is not an error.
        await self._publisher.publish(*events, mandatory=False)
