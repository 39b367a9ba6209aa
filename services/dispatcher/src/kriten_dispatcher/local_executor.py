"""The local executor: `JobLauncher` that runs each job as a detached local process.

The embedded default for development and single machines. Each job gets a directory under
`jobs_dir` (layout in `kriten_common.local_jobs`), a copy of its runner's checkout from
the checkout cache (`kriten_dispatcher.checkout_cache`: fetched once per commit, not
cloned per job) and one `sh` wrapper process that runs the task's command in it
(`kriten_dispatcher.local_processes`), outside the dispatcher, so a dispatcher restart
does not stop it. No container isolation and no image: trusted tasks only.

`mkdir` of the job directory is what makes launching idempotent: a redelivered request
finds the directory and does nothing, unless the first attempt died before the job
started, in which case it finishes that attempt.

Runner secrets reach the task in its environment and as files in the job's private
directory (outside the job directory, which is kept after the job), removed when the task
ends. Before starting a job the launcher removes the private directories of jobs that
died without removing their own, so a job never starts while a dead job's secrets are
still on disk. It also prunes job directories once they have been collected for longer
than the retention (`KRITEN_JOB_DIR_RETENTION_HOURS`): the dispatcher made them and their
existence is its launch idempotency, as a Kubernetes Job's TTL is set by the dispatcher.
The jobs table keeps a pruned job from running again (see `Dispatcher.launch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from datetime import timedelta
from pathlib import Path

from kriten_common.clock import utcnow
from kriten_common.local_jobs import (
    OUTPUT_CLONE_HEADING,
    PRIVATE_DIR_NAME,
    JobPaths,
    JobResult,
    JobStatus,
    StopReason,
    has_ended,
    is_valid_job_id,
    is_valid_secret_name,
    lock_held,
    read_record,
    stopped_result,
    supervisor_alive,
    touch,
    try_lock,
    write_atomic,
    write_record,
)
from kriten_common.outcomes import PermanentError, RetryableError
from kriten_dispatcher.checkout_cache import Checkout, CheckoutCache, CheckoutFailed
from kriten_dispatcher.local_processes import JobProcesses, adopted_status, stop_group
from kriten_dispatcher.ports import JobSpec

# Another launcher of the same job (a concurrent redelivery) holds the launch lock while
# it fetches the checkout, which a slow remote can make long.
LAUNCH_LOCK_TIMEOUT_SECONDS = 60.0
CANCEL_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.02
# Pruning scans every job directory, so it runs at most this often (on a launch).
PRUNE_INTERVAL_SECONDS = 600.0
# A directory being pruned is first renamed to this prefix (not a job id): a redelivery
# then never finds a half-deleted directory and takes it for a half-done launch.
_PRUNING_PREFIX = ".pruning-"
# What older versions left in job directories; removed from finished ones.
_LEGACY_SECRET_FILES = ("secret", "git-token", "git-askpass")
# The environment a task may see from the host: enough to run a shell, nothing more.
_SAFE_ENV_KEYS = ("PATH", "HOME", "LANG")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def validate(spec: JobSpec) -> None:
    """Raise PermanentError for a spec that could never run, whatever the retries."""
    if not is_valid_job_id(spec.job_id):
        raise PermanentError("invalid job id for the local executor")
    for name in spec.secrets:
        if not is_valid_secret_name(name):
            raise PermanentError(f"invalid runner secret name {name!r}")
    # Environment variables and argv entries are C strings.
    checks = {
        "command": spec.command,
        "input": spec.extra_vars,
        "git URL": spec.git_url,
        "branch": spec.branch,
        **{f"secret {name}": value for name, value in spec.secrets.items()},
    }
    for what, value in checks.items():
        if "\0" in value:
            raise PermanentError(f"{what} contains a NUL character")
    if not spec.git_url.strip():
        raise PermanentError("the runner has no git URL")
    if not spec.branch or spec.branch.startswith("-"):
        raise PermanentError("invalid git branch")
    if spec.git_token is not None and ("\0" in spec.git_token or "\n" in spec.git_token):
        raise PermanentError("invalid git token")
    if spec.timeout_seconds is not None and spec.timeout_seconds <= 0:
        raise PermanentError("timeout_seconds must be positive")


def _taken_charge(paths: JobPaths) -> bool:
    return paths.status.exists() or paths.result.exists()


def _acquire(path: Path, timeout: float) -> int:
    """The launch lock: a flock on the job's directory (no file to create)."""
    deadline = time.monotonic() + timeout
    while True:
        fd = try_lock(path, directory=True)
        if fd is not None:
            return fd
        if time.monotonic() >= deadline:
            raise RetryableError("the job is being launched by another dispatcher")
        time.sleep(_POLL_SECONDS)


def task_env(spec: JobSpec, paths: JobPaths) -> dict[str, str]:
    """The task's environment: Kriten's contract over the runner's secrets, so a secret can
    never shadow EXTRA_VARS or the job id."""
    env = {key: os.environ[key] for key in _SAFE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(spec.secrets)
    env["EXTRA_VARS"] = spec.extra_vars
    env["KRITEN_SECRETS_DIR"] = str(paths.secret_dir)
    env["KRITEN_JOB_ID"] = spec.job_id
    return env


def _make_private(paths: JobPaths, values: dict[str, str]) -> None:
    """The job's private directory with the secret files (0700 dirs, 0600 files)."""
    paths.private.parent.mkdir(mode=0o700, exist_ok=True)
    # Left by an attempt of this job that died before the job started: the launch lock
    # is ours now, so nothing else uses it.
    shutil.rmtree(paths.private, ignore_errors=True)
    os.mkdir(paths.private, 0o700)
    os.mkdir(paths.secret_dir, 0o700)
    for name, value in values.items():
        write_atomic(paths.secret_dir / name, value.encode(), durable=False)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sweep_private(jobs_dir: Path, running: JobProcesses | None = None) -> list[str]:
    """Remove the private directories (secrets) of jobs that are gone; the job ids.

    A launcher makes a job's private directory only while it holds the job's supervisor
    lock, which then passes to the wrapper, which removes the directory before it exits;
    so a directory whose lock is free was left by a job killed outright. The jobs in
    `running` are known alive, without a probe.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(jobs_dir / PRIVATE_DIR_NAME))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if running is not None and entry.name in running:
            continue
        if is_valid_job_id(entry.name) and supervisor_alive(JobPaths.of(jobs_dir, entry.name)):
            continue
        _remove_tree(Path(entry.path))
        removed.append(entry.name)
    return removed


def prune(jobs_dir: Path, *, retention: timedelta, now: float | None = None) -> list[str]:
    """Remove the job directories collected more than `retention` ago; the job ids.

    Only a job collected by the collector (its marker: the final state is stored) and
    without a live supervisor goes; the age is the marker's. Removing a
    directory ends the launch idempotency of its id, as a Kubernetes Job's TTL does.
    """
    now = time.time() if now is None else now
    pruned: list[str] = []
    try:
        entries = list(os.scandir(jobs_dir))
    except FileNotFoundError:
        return pruned
    for entry in entries:
        if entry.name.startswith(_PRUNING_PREFIX):
            # A prune interrupted half-way.
            _remove_tree(Path(entry.path))
            continue
        if not is_valid_job_id(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        paths = JobPaths(Path(entry.path))
        # A job whose supervisor died has no result.json, but the collector stored it as
        # failed and marked it collected: final all the same.
        if not (has_ended(paths) or paths.collected.exists()) or supervisor_alive(paths):
            continue
        for legacy in _LEGACY_SECRET_FILES:
            # An older version left the runner's secrets in finished jobs' directories.
            legacy_path = paths.root / legacy
            if legacy_path.is_dir():
                _remove_tree(legacy_path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    legacy_path.unlink()
        try:
            collected_at = paths.collected.stat().st_mtime
        except FileNotFoundError:
            continue
        if now - collected_at < retention.total_seconds():
            continue
        doomed = jobs_dir / f"{_PRUNING_PREFIX}{secrets.token_hex(4)}-{entry.name}"
        try:
            os.rename(paths.root, doomed)
        except FileNotFoundError:
            continue
        _remove_tree(doomed)
        pruned.append(entry.name)
    return pruned


def _claim(jobs_dir: Path, paths: JobPaths) -> int | None:
    """The launch lock of a job to start, or None when it started already (a redelivery).
    Blocks only while another launcher of the same job holds the lock."""
    jobs_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(paths.root, 0o700)
    except FileExistsError:
        # A redelivery: done already, unless the first attempt died half-way.
        if _taken_charge(paths):
            return None
    lock_fd = _acquire(paths.root, LAUNCH_LOCK_TIMEOUT_SECONDS)
    # Decided under the lock: a concurrent launcher may have finished meanwhile.
    if _taken_charge(paths) or supervisor_alive(paths):
        os.close(lock_fd)
        return None
    return lock_fd


def _record_checkout_failure(paths: JobPaths, spec: JobSpec, failure: CheckoutFailed) -> None:
    """A job whose branch cannot be checked out is over before it starts: failed, with
    git's output (scrubbed) as its output, as a pod whose init container failed."""
    output = (
        failure.output
        if failure.output.endswith("\n") or not failure.output
        else failure.output + "\n"
    )
    write_atomic(paths.output, (OUTPUT_CLONE_HEADING + output).encode(), durable=False)
    now = utcnow()
    write_record(paths.status, JobStatus(start_time=now, pid=0), durable=False)
    write_record(
        paths.result,
        JobResult(
            state="failed",
            start_time=now,
            completion_time=utcnow(),
            error=f"git clone failed: {failure.message}",
        ),
    )


def _cancel_marked(paths: JobPaths) -> bool:
    return paths.cancel_requested.exists()


class LocalJobLauncher:
    """Runs jobs as detached local processes, one directory per job under `jobs_dir`.

    Everything durable it knows is in `jobs_dir`, so several launchers (or a restarted
    one) may share it; what it holds in memory is the watch of the jobs it started.
    """

    def __init__(
        self,
        *,
        jobs_dir: Path,
        retention: timedelta = timedelta(hours=24),
        checkout_refresh_seconds: float = 2.0,
    ) -> None:
        # Job paths are given to processes that run elsewhere than the dispatcher's cwd.
        self._jobs_dir = jobs_dir.absolute()
        self._retention = retention
        self._next_prune = 0.0
        self._checkouts = CheckoutCache(self._jobs_dir, refresh_seconds=checkout_refresh_seconds)
        self._processes = JobProcesses()
        self._adopted: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Takes charge of the deadlines of jobs an earlier dispatcher started that still
        run; removes what dead jobs left behind."""
        adopted = await asyncio.to_thread(self._scan_running)
        for paths, status, timeout in adopted:
            if timeout is None:
                continue
            remaining = status.start_time.timestamp() + timeout - time.time()
            task = asyncio.create_task(self._deadline_of_adopted(paths, status.pid, remaining))
            self._adopted.add(task)
            task.add_done_callback(self._adopted.discard)

    def _scan_running(self) -> list[tuple[JobPaths, JobStatus, int | None]]:
        found: list[tuple[JobPaths, JobStatus, int | None]] = []
        sweep_private(self._jobs_dir)
        try:
            entries = list(os.scandir(self._jobs_dir))
        except FileNotFoundError:
            return found
        for entry in entries:
            if not is_valid_job_id(entry.name):
                continue
            paths = JobPaths(Path(entry.path))
            with contextlib.suppress(OSError, ValueError):
                status = adopted_status(paths)
                if status is not None and status.pid > 0:
                    found.append((paths, status, status.timeout_seconds))
        return found

    async def _deadline_of_adopted(self, paths: JobPaths, pgid: int, remaining: float) -> None:
        await asyncio.sleep(max(remaining, 0.0))
        if supervisor_alive(paths) and not has_ended(paths):
            # Before the stop: an observer that sees the job gone must know why.
            touch(paths.deadline_exceeded)
            await stop_group(pgid)
            await asyncio.to_thread(self._record_stopped, paths, "deadline")

    async def launch(self, spec: JobSpec) -> None:
        validate(spec)
        paths = JobPaths.of(self._jobs_dir, spec.job_id)
        try:
            lock_fd = await asyncio.to_thread(_claim, self._jobs_dir, paths)
        except RetryableError:
            raise
        except OSError as exc:
            raise RetryableError(f"local executor: {type(exc).__name__}: {exc.strerror}") from None
        if lock_fd is None:
            return
        try:
            await self._start(paths, spec)
        except OSError as exc:
            raise RetryableError(f"local executor: {type(exc).__name__}: {exc.strerror}") from None
        finally:
            os.close(lock_fd)
        await self._housekeeping()

    async def _start(self, paths: JobPaths, spec: JobSpec) -> None:
        try:
            checkout: Checkout = await self._checkouts.checkout(
                spec.git_url, spec.branch, spec.git_token
            )
        except CheckoutFailed as failure:
            _record_checkout_failure(paths, spec, failure)
            return
        supervisor_lock = try_lock(paths.supervisor_lock)
        if supervisor_lock is None:
            return  # started by an earlier attempt that is still alive
        try:
            if _cancel_marked(paths):
                # Cancelled before it could start: it never will.
                self._record_stopped(paths, "cancelled")
                os.close(supervisor_lock)
                return
            # Before any job starts: no job may find another's secrets left on disk.
            sweep_private(self._jobs_dir, running=self._processes)
            if spec.secrets:
                _make_private(paths, spec.secrets)
            self._processes.start(
                paths,
                lock_fd=supervisor_lock,
                checkout=checkout,
                heading=f"{OUTPUT_CLONE_HEADING}{spec.branch} at {checkout.commit}\n",
                command=spec.command,
                env=task_env(spec, paths),
                timeout_seconds=spec.timeout_seconds,
            )
        except BaseException:
            os.close(supervisor_lock)
            _remove_tree(paths.private)
            raise

    async def _housekeeping(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        # On launches, not on a timer of its own: directories only accumulate through
        # launches.
        self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
        # Housekeeping: the launch itself succeeded, and the next prune retries.
        with contextlib.suppress(OSError):
            await asyncio.to_thread(prune, self._jobs_dir, retention=self._retention)
            await asyncio.to_thread(
                self._checkouts.prune_templates,
                older_than_seconds=max(self._retention.total_seconds(), 3600.0),
            )

    def _record_stopped(self, paths: JobPaths, reason: StopReason) -> None:
        """The result of a job stopped by this launcher without watching its wrapper."""
        if has_ended(paths):
            return
        status = read_record(paths.status, JobStatus)
        write_record(paths.result, stopped_result(reason, status.start_time if status else None))

    async def cancel(self, job_id: str) -> bool:
        if not is_valid_job_id(job_id):
            return False
        paths = JobPaths.of(self._jobs_dir, job_id)
        try:
            if not paths.root.is_dir():
                return False
            if has_ended(paths):
                return True
            # Reaches a launch still fetching its checkout, and tells the observer why a
            # job whose wrapper is gone without a result ended.
            touch(paths.cancel_requested)
            stopping = self._processes.request_stop(job_id, "cancelled")
            if stopping is not None:
                await asyncio.wait_for(asyncio.shield(stopping), CANCEL_TIMEOUT_SECONDS)
                return True
            status = read_record(paths.status, JobStatus)
            if status is not None and status.pid > 0 and supervisor_alive(paths):
                # Started by an earlier dispatcher: its wrapper leads the job's group.
                await stop_group(status.pid)
            elif status is None and (await asyncio.to_thread(_launching, paths)):
                # Being launched right now by another launcher: it sees the marker.
                return True
            await asyncio.to_thread(self._record_stopped, paths, "cancelled")
            return True
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"local executor: could not cancel: {exc}") from None

    async def close(self) -> None:
        for task in list(self._adopted):
            task.cancel()
        await self._processes.close()


def _launching(paths: JobPaths) -> bool:
    """Whether another launcher holds the job's launch lock now."""
    return lock_held(paths.root, shared=False, directory=True)
