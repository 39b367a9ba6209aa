"""The local executor's `JobObserver`: reads the job directories the launcher writes.

The job-directory contract is in `kriten_common.local_jobs`. The observer does not rescan
every directory: it lists `jobs_dir` once at start (reconciliation: every job not yet
collected, finished while nobody watched or still running) and then watches only the jobs
it knows are unfinished, learning of new ones from `launched` (the collector calls it for
each `job.dispatched`, the dispatcher's own message that it started the job). A listing
of `jobs_dir` when it changed, at most every `discovery_interval`, is the safety net for
a job whose message this observer never saw.

Per job and per observer, updates come in order: `running` once (made up from the
result's start time when the job ran between two looks, so a consumer always sees a
start), then the final update with the capped output. A job whose lock is free has ended:
its result is `result.json`, else its wrapper's `exit-code`, else (a job that died with
its wrapper, say a kill -9 of its process group while no dispatcher watched it) failed
with "execution vanished: the executor process died", or cancelled when a cancel was
asked for. The `collected` marker, written by `forget`, is the durable state, so memory holds
only jobs that are running or finished-and-not-yet-forgotten.

`missing` tells the collector's reconciliation which jobs have no directory at all (pruned
by hand, or never made): those are failed, since nothing here will ever report them.

Pruning old collected directories is not done here but by the dispatcher, after
`KRITEN_JOB_DIR_RETENTION_HOURS`: the directory is also what keeps a redelivered request
from running a job twice, which is the dispatcher's concern.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from kriten_collector.output import cap_ends, cap_output
from kriten_collector.ports import ExecutionUpdate
from kriten_common.local_jobs import (
    JobPaths,
    JobResult,
    JobStatus,
    ended_unwatched,
    is_valid_job_id,
    lock_held,
    read_record,
    supervisor_alive,
    touch,
)

log = structlog.get_logger(__name__)
NO_DIRECTORY_ERROR = "execution vanished: the job has no job directory (removed, or never made)"


def read_output(path: Path, cap_bytes: int) -> str:
    """The output file's text capped to `cap_bytes`, reading at most about twice that,
    however large the file grew."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= 2 * cap_bytes:
                return cap_output(handle.read().decode("utf-8", "replace"), cap_bytes)
            head = handle.read(cap_bytes)
            handle.seek(size - cap_bytes)
            tail = handle.read(cap_bytes)
    except FileNotFoundError:
        return ""
    # A final=False decode leaves a character cut at the end of the head pending.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    head_text = decoder.decode(head, final=False)
    head_used = len(head) - len(decoder.getstate()[0])
    skip = 0
    while skip < min(3, len(tail)) and tail[skip] & 0xC0 == 0x80:
        skip += 1
    tail_text = tail[skip:].decode("utf-8", "replace")
    middle = size - head_used - (len(tail) - skip)
    return cap_ends(head_text, tail_text, middle_omitted=middle, cap_bytes=cap_bytes)


class LocalJobObserver:
    """Observes the local executor's job directories under `jobs_dir`."""

    def __init__(
        self,
        *,
        jobs_dir: Path,
        poll_interval: float = 0.1,
        output_cap_bytes: int = 1_048_576,
        progress_interval: float = 1.0,
        discovery_interval: float = 5.0,
    ) -> None:
        self._jobs_dir = jobs_dir
        self._poll_interval = poll_interval
        self._output_cap_bytes = output_cap_bytes
        self._progress_interval = progress_interval
        self._discovery_interval = discovery_interval
        # Jobs known and not yet final: the only directories looked at on each tick.
        self._watching: set[str] = set()
        # From `launched`, taken in on the next tick.
        self._hinted: set[str] = set()
        self._listed_at = 0.0
        self._listed_mtime: int | None = None
        # Jobs whose `running` went out in this session, until their final update does,
        # with the output size last reported and when (for `log?follow=true`).
        self._running: dict[str, _Running] = {}
        # Jobs whose final update went out, until `forget` marks them collected.
        self._finished: set[str] = set()
        self._closed = asyncio.Event()

    async def updates(self) -> AsyncGenerator[ExecutionUpdate, None]:
        full = True
        while not self._closed.is_set():
            for update in await asyncio.to_thread(self._tick, full):
                yield update
            full = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self._poll_interval)

    def launched(self, job_id: str) -> None:
        if is_valid_job_id(job_id):
            self._hinted.add(job_id)

    async def forget(self, job_id: str) -> None:
        await asyncio.to_thread(self._mark_collected, job_id)
        self._finished.discard(job_id)
        self._running.pop(job_id, None)
        self._watching.discard(job_id)

    async def missing(self, job_ids: Sequence[str]) -> dict[str, str]:
        return await asyncio.to_thread(self._missing, list(job_ids))

    async def close(self) -> None:
        self._closed.set()

    def _missing(self, job_ids: list[str]) -> dict[str, str]:
        if not self._jobs_dir.is_dir():
            # Not mounted, or not made yet: that says nothing about any job.
            return {}
        return {
            job_id: NO_DIRECTORY_ERROR
            for job_id in job_ids
            if is_valid_job_id(job_id) and not (self._jobs_dir / job_id).is_dir()
        }

    def _mark_collected(self, job_id: str) -> None:
        if not is_valid_job_id(job_id):
            return
        with contextlib.suppress(FileNotFoundError):
            touch(JobPaths.of(self._jobs_dir, job_id).collected)

    def _tick(self, full: bool) -> list[ExecutionUpdate]:
        hinted, self._hinted = self._hinted, set()
        self._watching |= hinted
        if full or self._listing_due():
            self._watching |= self._list()
        updates: list[ExecutionUpdate] = []
        for job_id in sorted(self._watching):
            if job_id in self._finished:
                continue
            paths = JobPaths.of(self._jobs_dir, job_id)
            try:
                updates.extend(self._check(paths))
            except FileNotFoundError:
                # Removed by hand (or pruned): nothing more will be said about it.
                self._forget_in_memory(job_id)
            except (OSError, ValueError) as exc:
                # One unreadable job must not stop the others being observed.
                log.warning("local_job_unreadable", job_id=job_id, error=str(exc))
        return updates

    def _listing_due(self) -> bool:
        """Whether the safety-net listing is due: `jobs_dir` changed since the last one and
        `discovery_interval` passed."""
        if time.monotonic() - self._listed_at < self._discovery_interval:
            return False
        try:
            mtime = os.stat(self._jobs_dir).st_mtime_ns
        except FileNotFoundError:
            return False
        return mtime != self._listed_mtime

    def _list(self) -> set[str]:
        """The jobs in `jobs_dir` not yet collected."""
        self._listed_at = time.monotonic()
        found: set[str] = set()
        try:
            self._listed_mtime = os.stat(self._jobs_dir).st_mtime_ns
            # Streamed, not listed first: the directory holds every job of the retention
            # (a day's), and a list of them all made the collector's memory grow with it.
            with os.scandir(self._jobs_dir) as entries:
                for entry in entries:
                    if not is_valid_job_id(entry.name) or not entry.is_dir(follow_symlinks=False):
                        continue
                    if not os.path.exists(os.path.join(entry.path, "collected")):
                        found.add(entry.name)
        except FileNotFoundError:
            pass
        return found

    def _forget_in_memory(self, job_id: str) -> None:
        self._watching.discard(job_id)
        self._running.pop(job_id, None)
        self._finished.discard(job_id)

    def _check(self, paths: JobPaths) -> list[ExecutionUpdate]:
        job_id = paths.job_id
        running = self._running.get(job_id)
        if running is not None:
            # Known running: one probe of its lock per look (a look at every running job
            # every poll, so its system calls are what the observer costs).
            if lock_held(paths.supervisor_lock):
                return self._progress(paths, running)
            ended = read_record(paths.result, JobResult) or ended_unwatched(
                paths, running.status.start_time
            )
            return self._final(paths, ended)
        if not paths.root.is_dir():
            raise FileNotFoundError(job_id)
        if paths.collected.exists():
            self._forget_in_memory(job_id)
            return []
        result = read_record(paths.result, JobResult)
        if result is None:
            status = read_record(paths.status, JobStatus)
            if status is None:
                # Launched, supervisor not yet in charge: nothing to say.
                return []
            running = self._running[job_id] = _Running(status, 0, time.monotonic())
            updates = [
                ExecutionUpdate(job_id=job_id, state="running", start_time=status.start_time)
            ]
            if supervisor_alive(paths):
                return [*updates, *self._progress(paths, running)]
            # The lock is free: whoever held it wrote what it knew before letting it go.
            result = read_record(paths.result, JobResult) or ended_unwatched(
                paths, status.start_time
            )
            return [*updates, *self._final(paths, result)]
        return self._final(paths, result)

    def _progress(self, paths: JobPaths, running: _Running) -> list[ExecutionUpdate]:
        """The output so far, when it grew, at most once per `progress_interval`."""
        job_id = paths.job_id
        status = running.status
        if time.monotonic() - running.reported_at < self._progress_interval:
            return []
        try:
            size = paths.output.stat().st_size
        except FileNotFoundError:
            return []
        running.reported_at = time.monotonic()
        if size == running.reported_size:
            return []
        running.reported_size = size
        output = read_output(paths.output, self._output_cap_bytes)
        return [
            ExecutionUpdate(
                job_id=job_id, state="running", start_time=status.start_time, output=output
            )
        ]

    def _final(self, paths: JobPaths, result: JobResult) -> list[ExecutionUpdate]:
        job_id = paths.job_id
        updates: list[ExecutionUpdate] = []
        if job_id not in self._running and result.start_time is not None:
            updates.append(
                ExecutionUpdate(job_id=job_id, state="running", start_time=result.start_time)
            )
        updates.append(
            ExecutionUpdate(
                job_id=job_id,
                state=result.state,
                start_time=result.start_time,
                completion_time=result.completion_time,
                exit_code=result.exit_code,
                output=read_output(paths.output, self._output_cap_bytes),
                error=result.error,
            )
        )
        self._running.pop(job_id, None)
        self._finished.add(job_id)
        return updates


@dataclass
class _Running:
    """A job whose `running` went out, until its final update does."""

    status: JobStatus
    # The output size last reported, and when it was looked at (for `log?follow=true`).
    reported_size: int
    reported_at: float
