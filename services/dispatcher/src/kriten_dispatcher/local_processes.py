"""The local executor's running jobs: one `sh` wrapper process per job, supervised from the
dispatcher's event loop (no interpreter started per job).

The wrapper (`WRAPPER`) copies the checkout template into the job's `repo/`, runs the
task's command there with `sh -c`, records the exit status in `exit-code`, removes the
job's private directory and kills what is left of its process group. It leads a session
of its own, so a dispatcher restart does not touch it, and it holds the job's supervisor
lock on its stdin, so the lock is free exactly when it is gone.

The dispatcher keeps its own copy of the lock while it watches the wrapper (a pidfd in
the event loop; a short poll where the platform has none) and, when the wrapper is gone,
writes `result.json` before letting the lock go: whoever sees the lock free sees the
result. A dispatcher that is gone leaves the `exit-code` file as the record, which the
collector's observer reads instead. Deadlines and cancellations stop the job as
Kubernetes stops a pod: SIGTERM to the whole group, a grace period, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime

from kriten_common.clock import utcnow
from kriten_common.local_jobs import (
    OUTPUT_TASK_HEADING,
    JobPaths,
    JobResult,
    JobStatus,
    StopReason,
    has_ended,
    read_record,
    result_from_exit_code,
    stopped_result,
    supervisor_alive,
    write_record,
)
from kriten_common.logging import get_logger, without_ids
from kriten_dispatcher.checkout_cache import Checkout

log = get_logger(__name__)

# $1 job directory, $2 template, $3 private directory ("" for none), $4 command, $5 task
# heading. The task gets /dev/null as stdin, so it never holds the lock (the wrapper's
# stdin).
WRAPPER = """\
cd -- "$1" || exit 1
shift
root=$PWD
if cp -a -- "$1" repo </dev/null; then
  printf '%s' "$4"
  cd repo && sh -c "$3" </dev/null
  code=$?
else
  code="checkout $?"
fi
[ -z "$2" ] || rm -rf -- "$2"
printf '%s\\n' "$code" >"$root/exit-code"
kill -KILL 0
"""
# How long a task may take to exit after SIGTERM before it gets SIGKILL.
KILL_GRACE_SECONDS = 2.0
# A wrapper that outlives SIGKILL (uninterruptible I/O) is waited for this long at most.
_KILL_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.05


@dataclass
class _Running:
    paths: JobPaths
    # The wrapper's, which is also its process group's and its session's.
    pid: int
    lock_fd: int
    start_time: datetime
    has_private: bool
    done: asyncio.Future[None]
    stop: StopReason | None = None
    pidfd: int | None = None
    deadline: asyncio.TimerHandle | None = None
    stopping: asyncio.Task[None] | None = field(default=None, repr=False)


@functools.cache
def _shell() -> str:
    found = shutil.which("sh")
    if found is None:
        raise FileNotFoundError("no sh on PATH")
    return found


def _reaped(pid: int) -> bool:
    """Whether the wrapper has exited, reaping it (it is this process's child)."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped already
    return done != 0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop_group(pgid: int) -> None:
    """SIGTERM to the job's process group, SIGKILL after the grace period; returns when
    the group is gone (or after a bounded wait). The wrapper, a zombie until it is reaped,
    counts as in the group: whoever watches it reaps it meanwhile."""
    signal_group(pgid, signal.SIGTERM)
    for sig, wait in ((signal.SIGKILL, KILL_GRACE_SECONDS), (None, _KILL_WAIT_SECONDS)):
        deadline = time.monotonic() + wait
        # A poll: the kernel tells nobody when the last process of a group is gone.
        while group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_POLL_SECONDS)
        if sig is not None:
            signal_group(pgid, sig)


def final_result(
    paths: JobPaths, start_time: datetime | None, stop: StopReason | None
) -> JobResult:
    """How a job ended, once its wrapper is gone: its own exit status wins over a stop
    that came too late to matter."""
    return result_from_exit_code(paths, start_time) or stopped_result(stop or "died", start_time)


class JobProcesses:
    """The wrappers this dispatcher started, watched until they are gone."""

    def __init__(self) -> None:
        self._running: dict[str, _Running] = {}
        self._poller: asyncio.Task[None] | None = None

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._running

    def start(
        self,
        paths: JobPaths,
        *,
        lock_fd: int,
        checkout: Checkout,
        heading: str,
        command: str,
        env: dict[str, str],
        timeout_seconds: int | None,
    ) -> None:
        """Starts the wrapper (the caller holds `lock_fd`, the supervisor lock, and gives
        it to the job) and watches it. `heading` opens the job's output."""
        has_private = paths.private.exists()
        out_fd = os.open(paths.output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(out_fd, heading.encode())
            # posix_spawn, not Popen: half the parent's CPU per job (no fork of the
            # dispatcher's memory map, no exec-error pipe). The fds not named here are
            # close-on-exec, as Python opens every fd.
            pid = os.posix_spawn(
                _shell(),
                [
                    "sh",
                    "-c",
                    WRAPPER,
                    "kriten-job",
                    str(paths.root),
                    str(checkout.template),
                    str(paths.private) if has_private else "",
                    command,
                    OUTPUT_TASK_HEADING,
                ],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, lock_fd, 0),
                    (os.POSIX_SPAWN_DUP2, out_fd, 1),
                    (os.POSIX_SPAWN_DUP2, out_fd, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(out_fd)
        start_time = utcnow()
        # Not fsynced: a power cut ends the job anyway, and then the observer finds the
        # lock free and no exit code: the job died, which is the truth.
        write_record(
            paths.status,
            JobStatus(
                start_time=start_time,
                pid=pid,
                timeout_seconds=timeout_seconds,
                commit=checkout.commit,
            ),
            durable=False,
        )
        loop = asyncio.get_running_loop()
        running = _Running(
            paths=paths,
            pid=pid,
            lock_fd=lock_fd,
            start_time=start_time,
            has_private=has_private,
            done=loop.create_future(),
        )
        self._running[paths.job_id] = running
        try:
            running.pidfd = os.pidfd_open(pid)
            loop.add_reader(running.pidfd, self._exited, paths.job_id)
        except (AttributeError, OSError):
            # No pidfd (not Linux, or an old kernel): one poll for every job.
            running.pidfd = None
            if self._poller is None or self._poller.done():
                # It watches every job: its lines carry none of this one's ids.
                self._poller = asyncio.create_task(
                    self._poll(), name="local-jobs-poll", context=without_ids()
                )
        if timeout_seconds is not None:
            running.deadline = loop.call_later(
                timeout_seconds, self.request_stop, paths.job_id, "deadline"
            )

    def request_stop(self, job_id: str, reason: StopReason) -> asyncio.Future[None] | None:
        """Stops a job this dispatcher watches; the future is done when it is final."""
        running = self._running.get(job_id)
        if running is None:
            return None
        if running.stop is None:
            running.stop = reason
            running.stopping = asyncio.create_task(stop_group(running.pid), name=f"stop-{job_id}")
        return running.done

    async def _poll(self) -> None:
        while any(r.pidfd is None for r in self._running.values()):
            for job_id, running in list(self._running.items()):
                if running.pidfd is None and _reaped(running.pid):
                    self._exited(job_id)
            await asyncio.sleep(_POLL_SECONDS)

    def _exited(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is None or not _reaped(running.pid):
            return
        if running.pidfd is not None:
            asyncio.get_running_loop().remove_reader(running.pidfd)
            os.close(running.pidfd)
            running.pidfd = None
        if running.deadline is not None:
            running.deadline.cancel()
        if running.stop is not None:
            # The group may still be in its grace period: finish once it is gone.
            if running.stopping is not None and not running.stopping.done():
                running.stopping.add_done_callback(lambda _: self._finish(job_id))
                return
        elif not running.paths.exit_code.exists():
            # The wrapper was killed from outside while its task may run on: a job whose
            # supervision is gone ends, as a pod's processes end with its main one.
            signal_group(running.pid, signal.SIGKILL)
        self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        running = self._running.pop(job_id, None)
        if running is None:
            return
        try:
            if running.has_private:
                # The wrapper removes it, unless it was killed first.
                shutil.rmtree(running.paths.private, ignore_errors=True)
            result = final_result(running.paths, running.start_time, running.stop)
            # A task that ended on its own left its exit-code file: that is its record
            # (one file fewer per job). Any other end needs saying.
            if not has_ended(running.paths):
                write_record(running.paths.result, result, durable=False)
        except OSError as exc:
            # The observer derives the outcome itself once the lock is free.
            log.warning("local_job_result_unwritten", job_id=job_id, error=str(exc))
        finally:
            os.close(running.lock_fd)
            if not running.done.done():
                running.done.set_result(None)

    async def close(self) -> None:
        """Stops watching (jobs run on: their wrappers record their exit themselves)."""
        loop = asyncio.get_running_loop()
        for running in self._running.values():
            if running.pidfd is not None:
                loop.remove_reader(running.pidfd)
                os.close(running.pidfd)
            if running.deadline is not None:
                running.deadline.cancel()
            os.close(running.lock_fd)
        self._running.clear()
        if self._poller is not None:
            self._poller.cancel()


def adopted_status(paths: JobPaths) -> JobStatus | None:
    """The status of a job started by an earlier dispatcher that still runs, else None."""
    if has_ended(paths) or not supervisor_alive(paths):
        return None
    return read_record(paths.status, JobStatus)
