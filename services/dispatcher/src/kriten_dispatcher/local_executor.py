"""The local executor: `JobLauncher` that runs each job as a detached local process.

The embedded default for development and single machines. Each job gets a directory under
`jobs_dir` (layout in `kriten_common.local_jobs`) and a supervisor process
(`kriten_dispatcher.local_supervisor`) that clones the runner's repository and runs the
task's command in it, outside the dispatcher, so a dispatcher restart does not stop it.
No container isolation and no image: trusted tasks only.

`mkdir` of the job directory is what makes launching idempotent: a redelivered request
finds the directory and does nothing, unless the first attempt died before its supervisor
took charge of the job, in which case it finishes that attempt.

Runner secrets and the git token go to the supervisor on its stdin, never into the job
directory, which is kept after the job (see `kriten_common.local_jobs`). Before starting a
supervisor the launcher removes the private directories of supervisors that died without
removing their own, so a job never starts while a dead job's secrets are still on disk.
It also prunes job directories once they have been collected for longer than the
retention (`KRITEN_LOCAL_JOB_RETENTION_HOURS`): the dispatcher made them and their
existence is its launch idempotency, as a Kubernetes Job's TTL is set by the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from kriten_common.local_jobs import (
    PRIVATE_DIR_NAME,
    JobPaths,
    JobResult,
    JobSecrets,
    JobStatus,
    LocalJobSpec,
    encode_secrets,
    is_valid_job_id,
    is_valid_secret_name,
    read_record,
    supervisor_alive,
    touch,
    try_lock,
    utcnow,
    write_record,
)
from kriten_common.outcomes import PermanentError, RetryableError
from kriten_dispatcher.ports import JobSpec

# From spawning the supervisor to its status record: a Python start-up and a lock.
START_TIMEOUT_SECONDS = 15.0
# Another launcher of the same job (a concurrent redelivery) holds the launch lock at
# most for START_TIMEOUT_SECONDS.
LAUNCH_LOCK_TIMEOUT_SECONDS = START_TIMEOUT_SECONDS + 5.0
# The supervisor itself gives its child KILL_GRACE_SECONDS after SIGTERM.
CANCEL_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.02
# Pruning scans every job directory, so it runs at most this often (on a launch).
PRUNE_INTERVAL_SECONDS = 600.0
# A directory being pruned is first renamed to this prefix (not a job id): a redelivery
# then never finds a half-deleted directory and takes it for a half-done launch.
_PRUNING_PREFIX = ".pruning-"
# What older versions left in job directories; removed from finished ones.
_LEGACY_SECRET_FILES = ("secret", "git-token", "git-askpass")


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


def _write_spec(paths: JobPaths, spec: JobSpec) -> None:
    record = LocalJobSpec(
        job_id=spec.job_id,
        command=spec.command,
        git_url=spec.git_url,
        branch=spec.branch,
        extra_vars=spec.extra_vars,
        timeout_seconds=spec.timeout_seconds,
        secret_names=sorted(spec.secrets),
        has_git_token=bool(spec.git_token),
    )
    write_record(paths.spec, record)


def _taken_charge(paths: JobPaths) -> bool:
    return paths.status.exists() or paths.result.exists()


def _start_supervisor(paths: JobPaths, spec: JobSpec) -> None:
    log_fd = os.open(paths.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kriten_dispatcher.local_supervisor", str(paths.root)],
            cwd=paths.root,
            # The secrets, through a pipe: no file to remove, and not in the environment
            # or argv, which other processes of the same user can read in /proc.
            stdin=subprocess.PIPE,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    payload = encode_secrets(JobSecrets(secrets=dict(spec.secrets), git_token=spec.git_token))
    # The supervisor reads its stdin, forks and its parent exits at once, so this wait is
    # short and leaves no zombie; the job itself runs on as an orphan.
    try:
        proc.communicate(payload, timeout=START_TIMEOUT_SECONDS)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RetryableError("the job supervisor did not start in time") from None
    if code != 0:
        raise RetryableError(f"the job supervisor exited with code {code}")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _taken_charge(paths):
        if time.monotonic() >= deadline:
            raise RetryableError("the job supervisor did not take charge of the job in time")
        time.sleep(_POLL_SECONDS)


def _acquire(path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        fd = try_lock(path)
        if fd is not None:
            return fd
        if time.monotonic() >= deadline:
            raise RetryableError("the job is being launched by another dispatcher")
        time.sleep(_POLL_SECONDS)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sweep_private(jobs_dir: Path) -> list[str]:
    """Remove the private directories (secrets) of supervisors that are gone; the job ids.

    A supervisor makes its private directory only once it holds its lock, and removes it
    before it exits, so a directory whose lock is free was left by one killed outright.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(jobs_dir / PRIVATE_DIR_NAME))
    except FileNotFoundError:
        return removed
    for entry in entries:
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
        if not (paths.result.exists() or paths.collected.exists()) or supervisor_alive(paths):
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


def _launch(jobs_dir: Path, spec: JobSpec) -> None:
    paths = JobPaths.of(jobs_dir, spec.job_id)
    try:
        jobs_dir.mkdir(parents=True, exist_ok=True)
        # Before any job starts: no job may find another's secrets left on disk.
        sweep_private(jobs_dir)
        try:
            os.mkdir(paths.root, 0o700)
        except FileExistsError:
            # A redelivery: done already, unless the first attempt died half-way.
            if _taken_charge(paths):
                return
        lock_fd = _acquire(paths.launch_lock, LAUNCH_LOCK_TIMEOUT_SECONDS)
        try:
            # Decided under the lock: a concurrent launcher may have finished meanwhile.
            if _taken_charge(paths) or supervisor_alive(paths):
                return
            _write_spec(paths, spec)
            _start_supervisor(paths, spec)
        finally:
            os.close(lock_fd)
    except OSError as exc:
        raise RetryableError(f"local executor: {type(exc).__name__}: {exc.strerror}") from None


def _signal_group(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _wait_for(predicate_path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate_path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _cancel(jobs_dir: Path, job_id: str) -> bool:
    if not is_valid_job_id(job_id):
        return False
    paths = JobPaths.of(jobs_dir, job_id)
    if not paths.root.is_dir():
        return False
    if paths.result.exists():
        return True
    # The marker reaches a supervisor that is starting and not yet signalable; a running
    # one also polls it.
    touch(paths.cancel_requested)
    status = read_record(paths.status, JobStatus)
    if status is not None and supervisor_alive(paths):
        # Checked alive just above, so the pid is still the supervisor's, not a reuse.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(status.pid, signal.SIGTERM)
        if _wait_for(paths.result, CANCEL_TIMEOUT_SECONDS):
            return True
        # The supervisor does not answer: end it and its child ourselves.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(status.pid, signal.SIGKILL)
        _signal_group(paths.task_pid)
        # It can no longer remove its secrets itself.
        _remove_tree(paths.private)
    elif (
        status is None
        and supervisor_alive(paths)
        # A supervisor is starting; it will see the marker and record the cancel itself.
        and _wait_for(paths.result, CANCEL_TIMEOUT_SECONDS)
    ):
        return True
    # Wait for the kernel to release the dead supervisor's lock, so no one else writes.
    deadline = time.monotonic() + CANCEL_TIMEOUT_SECONDS
    while supervisor_alive(paths) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    if not paths.result.exists():
        write_record(
            paths.result,
            JobResult(
                state="cancelled",
                start_time=status.start_time if status else None,
                completion_time=utcnow(),
                error="cancelled",
            ),
        )
    return True


class LocalJobLauncher:
    """Runs jobs as detached local processes, one directory per job under `jobs_dir`.

    Stateless: everything it knows is in `jobs_dir`, so several launchers (or a restarted
    one) may share it.
    """

    def __init__(self, *, jobs_dir: Path, retention: timedelta = timedelta(hours=24)) -> None:
        # The supervisor runs in the job directory, so a relative path would mean
        # something else to it.
        self._jobs_dir = jobs_dir.absolute()
        self._retention = retention
        self._next_prune = 0.0

    async def launch(self, spec: JobSpec) -> None:
        validate(spec)
        await asyncio.to_thread(_launch, self._jobs_dir, spec)
        if time.monotonic() >= self._next_prune:
            # On launches, not on a timer of its own: directories only accumulate through
            # launches, and a launcher has no lifecycle hook to run a timer from.
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
            # Housekeeping: the launch itself succeeded, and the next prune retries.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(prune, self._jobs_dir, retention=self._retention)

    async def cancel(self, job_id: str) -> bool:
        try:
            return await asyncio.to_thread(_cancel, self._jobs_dir, job_id)
        except OSError as exc:
            raise RetryableError(f"local executor: {type(exc).__name__}: {exc.strerror}") from None

    async def close(self) -> None:
        # Jobs outlive the launcher by design; there is nothing to release.
        return None
