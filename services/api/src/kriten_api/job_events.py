"""Waking requests that wait for a job to finish (`job.finished`), instead of polling.

A synchronous `POST /jobs/{task}` and a `GET /jobs/{id}/log?follow=true` both wait for a
job to become final. The collector publishes `JobFinished` once the final row is
committed; each api replica receives every one on its own exclusive, auto-delete queue
(a `BroadcastSubscription`, started by the app's `_job_events` context) and wakes the
requests watching that job, which then re-read the row once.

An event can be missed (the broker reconnecting, an api started after the job finished,
a request that registers just after the event passed), so a waiter never relies on it
alone: it reads the row once right after registering, and re-reads at least every
`FINISH_RECHECK_SECONDS` while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from kriten_common.messages import Event, JobFinished

# The safety net for a lost event: how stale a waiter's view of the job may get.
FINISH_RECHECK_SECONDS = 5.0


class JobEvents:
    """The requests waiting for each job, keyed by job id; fed by `job.finished`."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when `job_id` finishes (or when events may have been lost).

        Register before reading the job: an event that arrives between the read and the
        wait is then not missed.
        """
        finished = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(finished)
        try:
            yield finished
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(finished)
                if not waiters:
                    del self._waiters[job_id]

    def watched(self, job_id: str) -> bool:
        """Whether a request is waiting for `job_id` now."""
        return job_id in self._waiters

    async def on_event(self, event: Event) -> None:
        if isinstance(event, JobFinished):
            for finished in self._waiters.get(event.job_id, ()):
                finished.set()

    def wake_all(self) -> None:
        """Every waiter re-reads its job: after a reconnect, events may have been lost."""
        for waiters in self._waiters.values():
            for finished in waiters:
                finished.set()


async def wait_woken(finished: asyncio.Event, seconds: float) -> None:
    """Until `finished` is set or `seconds` pass, whichever comes first; then clears it,
    so a caller that finds its job not final yet waits for the next wake-up."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await finished.wait()
    finished.clear()
