"""The local executor's `JobObserver`: polls the job directories the supervisors write.

The job-directory contract is in `kriten_common.local_jobs`. Each poll scans `jobs_dir`
in a worker thread. Per job and per observer, updates come in order: `running` once (made
up from the result's start time when the job ran between two polls, so a consumer always
sees a start), then the final update with the capped output. Jobs whose directory carries
the `collected` marker are skipped; that marker, written by `forget`, is the durable
state, so memory holds only jobs that are running or finished-and-not-yet-forgotten, and
a new observer reports every finished job that was never forgotten (reconciliation).

A job whose supervisor is gone (its lock released) without a result is reported failed
with "executor process died". Pruning old collected directories is not done here but by
the dispatcher, after `KRITEN_LOCAL_JOB_RETENTION_HOURS`: the directory is also what keeps
a redelivered request from running a job twice, which is the dispatcher's concern; the
`collected` marker written here is what allows it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import structlog

from kriten_collector.output import cap_ends, cap_output
from kriten_collector.ports import ExecutionUpdate
from kriten_common.local_jobs import (
    JobPaths,
    JobResult,
    JobStatus,
    is_valid_job_id,
    read_record,
    supervisor_alive,
    touch,
    utcnow,
)

log = structlog.get_logger(__name__)

DIED_ERROR = "executor process died"


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
    ) -> None:
        self._jobs_dir = jobs_dir
        self._poll_interval = poll_interval
        self._output_cap_bytes = output_cap_bytes
        self._progress_interval = progress_interval
        # Jobs whose `running` went out in this session, until their final update does,
        # with the output size last reported and when (for `log?follow=true`).
        self._running: dict[str, tuple[int, float]] = {}
        # Jobs whose final update went out, until `forget` marks them collected.
        self._finished: set[str] = set()
        self._closed = asyncio.Event()

    async def updates(self) -> AsyncGenerator[ExecutionUpdate, None]:
        while not self._closed.is_set():
            for update in await asyncio.to_thread(self._scan):
                yield update
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self._poll_interval)

    async def forget(self, job_id: str) -> None:
        await asyncio.to_thread(self._mark_collected, job_id)
        self._finished.discard(job_id)
        self._running.pop(job_id, None)

    async def close(self) -> None:
        self._closed.set()

    def _mark_collected(self, job_id: str) -> None:
        if not is_valid_job_id(job_id):
            return
        with contextlib.suppress(FileNotFoundError):
            touch(JobPaths.of(self._jobs_dir, job_id).collected)

    def _scan(self) -> list[ExecutionUpdate]:
        updates: list[ExecutionUpdate] = []
        try:
            entries = sorted(os.scandir(self._jobs_dir), key=lambda entry: entry.name)
        except FileNotFoundError:
            return updates
        present: set[str] = set()
        for entry in entries:
            job_id = entry.name
            if not is_valid_job_id(job_id) or not entry.is_dir(follow_symlinks=False):
                continue
            present.add(job_id)
            if job_id in self._finished:
                continue
            try:
                updates.extend(self._check(JobPaths(Path(entry.path))))
            except (OSError, ValueError) as exc:
                # One unreadable job must not stop the others being observed.
                log.warning("local_job_unreadable", job_id=job_id, error=str(exc))
        # Directories removed by hand must not pin memory.
        self._running = {job: seen for job, seen in self._running.items() if job in present}
        self._finished &= present
        return updates

    def _check(self, paths: JobPaths) -> list[ExecutionUpdate]:
        job_id = paths.job_id
        if paths.collected.exists():
            self._running.pop(job_id, None)
            return []
        result = read_record(paths.result, JobResult)
        if result is None:
            status = read_record(paths.status, JobStatus)
            if status is None:
                # Launched, supervisor not yet in charge: nothing to say.
                return []
            updates: list[ExecutionUpdate] = []
            if job_id not in self._running:
                self._running[job_id] = (0, time.monotonic())
                updates.append(
                    ExecutionUpdate(job_id=job_id, state="running", start_time=status.start_time)
                )
            if supervisor_alive(paths):
                return [*updates, *self._progress(paths, status)]
            # The supervisor writes its result before it exits: read again to be sure.
            result = read_record(paths.result, JobResult)
            if result is None:
                result = JobResult(
                    state="failed",
                    start_time=status.start_time,
                    completion_time=utcnow(),
                    error=DIED_ERROR,
                )
            return [*updates, *self._final(paths, result)]
        return self._final(paths, result)

    def _progress(self, paths: JobPaths, status: JobStatus) -> list[ExecutionUpdate]:
        """The output so far, when it grew, at most once per `progress_interval`."""
        job_id = paths.job_id
        reported_size, reported_at = self._running[job_id]
        if time.monotonic() - reported_at < self._progress_interval:
            return []
        try:
            size = paths.output.stat().st_size
        except FileNotFoundError:
            return []
        if size == reported_size:
            return []
        self._running[job_id] = (size, time.monotonic())
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
