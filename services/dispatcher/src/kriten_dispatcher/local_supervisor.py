"""The detached process that runs one local job: `python -m kriten_dispatcher.local_supervisor
<jobdir>`.

It is the local executor's equivalent of a Kubernetes pod: it clones the runner's
repository (the init container), runs the task's command with `sh -c` in the clone with
Kriten's environment contract, enforces the deadline, and records the outcome in the job
directory (layout and formats in `kriten_common.local_jobs`) for the collector to read.

Secret values come on stdin, read before anything else. They exist on disk only in the
job's private directory (outside the job directory), made once this supervisor holds the
job, and removed before the result is written, so nothing that outlives the job (the job
directory, a later job) can read them.

It detaches from whoever started it (a second fork, in a session of its own) so that a
dispatcher restart neither kills the job nor leaves a zombie behind. SIGTERM means cancel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Literal
from urllib.parse import urlsplit

from kriten_common.local_jobs import (
    OUTPUT_CLONE_HEADING,
    OUTPUT_TASK_HEADING,
    FinalState,
    JobPaths,
    JobResult,
    JobSecrets,
    JobStatus,
    LocalJobSpec,
    decode_secrets,
    read_record,
    try_lock,
    utcnow,
    write_atomic,
    write_record,
)

# How long a child may take to exit after SIGTERM before it gets SIGKILL.
KILL_GRACE_SECONDS = 2.0
# A probe of supervisor_alive() holds the lock for microseconds; a duplicate supervisor
# (a launcher retrying after a crash) holds it for the whole job and must lose.
LOCK_WAIT_SECONDS = 3.0
_POLL_SECONDS = 0.05
_ERROR_MAX_CHARS = 500
# The environment a task may see from the host: enough to run a shell, nothing more.
_SAFE_ENV_KEYS = ("PATH", "HOME", "LANG")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# GitHub, GitLab and Gitea accept any user name with a token as the password; a user name
# in the runner's URL wins (git then asks only for the password), e.g. for Bitbucket.
_GIT_USERNAME = "x-access-token"
_ASKPASS_SCRIPT = b"""#!/bin/sh
# Kriten local executor: answers git's credential prompts from a 0600 file.
case "$1" in
  Username*) printf '%s\\n' "$KRITEN_GIT_USERNAME" ;;
  *) cat "$KRITEN_GIT_TOKEN_FILE" ;;
esac
"""


class _Cancelled:
    """Set by SIGTERM; read by the wait loop (a signal handler must not block)."""

    requested = False


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    _Cancelled.requested = True


@dataclass(frozen=True)
class _Stop:
    """Why a child was stopped before it exited on its own."""

    reason: Literal["cancelled", "deadline"]


def _cancel_requested(paths: JobPaths) -> bool:
    return _Cancelled.requested or paths.cancel_requested.exists()


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited, without reaping it: until it is reaped its pid still
    names its process group, so a signal to the group cannot reach a reused pid."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _wait_exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _exited(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child leads its own session, so its pid is its process group: this reaches the
    # grandchildren a task may have started too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _run_child(
    argv: list[str],
    *,
    paths: JobPaths,
    cwd: Path,
    env: dict[str, str],
    out_fd: int,
    deadline: float | None,
) -> tuple[int, _Stop | None]:
    """Run `argv` to completion, or stop it on cancel or deadline."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out_fd,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    write_atomic(paths.task_pid, str(proc.pid).encode())
    stop: _Stop | None = None
    while not _wait_exited(proc, _POLL_SECONDS):
        if _cancel_requested(paths):
            stop = _Stop("cancelled")
        elif deadline is not None and time.monotonic() >= deadline:
            stop = _Stop("deadline")
        if stop is not None:
            # Kubernetes' way: SIGTERM, a grace period, then SIGKILL.
            _signal_group(proc, signal.SIGTERM)
            _wait_exited(proc, KILL_GRACE_SECONDS)
            break
    # Whatever is left of the group goes too, as a pod's processes end with its main one.
    _signal_group(proc, signal.SIGKILL)
    return proc.wait(), stop


def _base_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in _SAFE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


def task_env(spec: LocalJobSpec, paths: JobPaths, secrets: dict[str, str]) -> dict[str, str]:
    """The task's environment: Kriten's contract over the runner's secrets, so a secret can
    never shadow EXTRA_VARS or the job id."""
    env = _base_env()
    env.update(secrets)
    env["EXTRA_VARS"] = spec.extra_vars
    env["KRITEN_SECRETS_DIR"] = str(paths.secret_dir)
    env["KRITEN_JOB_ID"] = spec.job_id
    return env


def clone_url(git_url: str) -> str:
    """The URL to give git: an absolute local path becomes file:// so that --depth works
    (git ignores it, with a warning, for plain local paths)."""
    if git_url.startswith("/"):
        return "file://" + git_url
    return git_url


def _make_private(paths: JobPaths, secrets: JobSecrets) -> None:
    """The job's private directory with the secret files (0700 dirs, 0600 files)."""
    paths.private.parent.mkdir(mode=0o700, exist_ok=True)
    # Left by a supervisor of this job killed before it could start the task: its lock
    # is ours now, so nothing else uses it.
    shutil.rmtree(paths.private, ignore_errors=True)
    os.mkdir(paths.private, 0o700)
    os.mkdir(paths.secret_dir, 0o700)
    for name, value in secrets.secrets.items():
        write_atomic(paths.secret_dir / name, value.encode())
    if secrets.git_token:
        write_atomic(paths.git_token, secrets.git_token.encode())


def remove_private(paths: JobPaths) -> None:
    shutil.rmtree(paths.private, ignore_errors=True)


def _git_env(paths: JobPaths, spec: LocalJobSpec) -> dict[str, str]:
    env = _base_env()
    # Without a terminal git would fail anyway; this makes it fail at once, never wait.
    env["GIT_TERMINAL_PROMPT"] = "0"
    if "SSH_AUTH_SOCK" in os.environ:
        env["SSH_AUTH_SOCK"] = os.environ["SSH_AUTH_SOCK"]
    if spec.has_git_token:
        env["GIT_ASKPASS"] = str(paths.git_askpass)
        env["KRITEN_GIT_TOKEN_FILE"] = str(paths.git_token)
        env["KRITEN_GIT_USERNAME"] = _GIT_USERNAME
    return env


def _git_argv(spec: LocalJobSpec, paths: JobPaths) -> list[str]:
    argv = ["git"]
    if spec.has_git_token:
        # An empty helper resets the user's helpers, which would otherwise answer first
        # with other credentials and the runner's token would never be used.
        argv += ["-c", "credential.helper="]
    return [
        *argv,
        "clone",
        "--depth",
        "1",
        f"--branch={spec.branch}",
        "--",
        clone_url(spec.git_url),
        str(paths.repo),
    ]


def _secrets_to_hide(spec: LocalJobSpec, token: str | None) -> list[str]:
    hidden = [token] if token else []
    with contextlib.suppress(ValueError):
        password = urlsplit(spec.git_url).password
        if password:
            hidden.append(password)
    return hidden


def scrub(text: str, hidden: list[str]) -> str:
    for value in hidden:
        text = text.replace(value, "***")
    return text


def git_error(output: str) -> str:
    """What git said about why the clone failed: its fatal and error lines (the first is
    usually the cause, the last the consequence), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output from git"
    reasons = [
        line.split(":", 1)[1].strip() for line in lines if line.startswith(("fatal:", "error:"))
    ]
    message = "; ".join(reasons) if reasons else lines[-1]
    return message[:_ERROR_MAX_CHARS]


def _exit_error(code: int) -> tuple[int, str | None]:
    """(exit code as Kubernetes reports it, error) for a child's return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return 128 - code, f"killed by signal {name}"
    return code, (f"exit code {code}" if code else None)


class _Job:
    def __init__(self, paths: JobPaths, start_time: datetime, secrets: JobSecrets) -> None:
        self.paths = paths
        self.start_time = start_time
        self.secrets = secrets

    def finish(
        self, state: FinalState, *, exit_code: int | None = None, error: str | None = None
    ) -> None:
        # Before the result: whoever sees the job final (the collector, a test, a later
        # job's launcher) sees its secrets gone.
        remove_private(self.paths)
        write_record(
            self.paths.result,
            JobResult(
                state=state,
                start_time=self.start_time,
                completion_time=utcnow(),
                exit_code=exit_code,
                error=error,
            ),
        )

    def finish_stopped(self, stop: _Stop) -> None:
        if stop.reason == "cancelled":
            self.finish("cancelled", error="cancelled")
        else:
            self.finish("failed", error="deadline exceeded")

    def run(self) -> None:
        paths = self.paths
        if _cancel_requested(paths):
            self.finish("cancelled", error="cancelled")
            return
        spec = read_record(paths.spec, LocalJobSpec)
        if spec is None:
            self.finish("failed", error="job spec missing")
            return
        deadline = (
            time.monotonic() + spec.timeout_seconds if spec.timeout_seconds is not None else None
        )
        secrets, token = self.secrets.secrets, self.secrets.git_token
        if sorted(secrets) != sorted(spec.secret_names) or bool(token) != spec.has_git_token:
            # Started without the launcher's stdin: running without the runner's secrets
            # would fail later and more obscurely.
            self.finish("failed", error="executor error: the job's secrets did not arrive")
            return
        _make_private(paths, self.secrets)
        hidden = _secrets_to_hide(spec, token)
        out_fd = os.open(paths.output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(out_fd, OUTPUT_CLONE_HEADING.encode())
            clone_ok = self._clone(spec, hidden, out_fd, deadline)
            if not clone_ok:
                return
            os.write(out_fd, OUTPUT_TASK_HEADING.encode())
            if _cancel_requested(paths):
                self.finish("cancelled", error="cancelled")
                return
            code, stop = _run_child(
                ["sh", "-c", spec.command],
                paths=paths,
                cwd=paths.repo,
                env=task_env(spec, paths, secrets),
                out_fd=out_fd,
                deadline=deadline,
            )
        finally:
            os.close(out_fd)
        if stop is not None:
            self.finish_stopped(stop)
            return
        exit_code, error = _exit_error(code)
        self.finish("succeeded" if exit_code == 0 else "failed", exit_code=exit_code, error=error)

    def _clone(
        self, spec: LocalJobSpec, hidden: list[str], out_fd: int, deadline: float | None
    ) -> bool:
        """Clone into repo/; on failure record the result and return False."""
        paths = self.paths
        if spec.has_git_token:
            write_atomic(paths.git_askpass, _ASKPASS_SCRIPT, mode=0o700)
        # git's output goes through a file, not straight into output.log, so that it can
        # be scrubbed of anything secret before the collector may read it.
        clone_log = paths.root / "clone.log"
        log_fd = os.open(clone_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            code, stop = _run_child(
                _git_argv(spec, paths),
                paths=paths,
                cwd=paths.root,
                env=_git_env(paths, spec),
                out_fd=log_fd,
                deadline=deadline,
            )
        finally:
            os.close(log_fd)
            # The token has done its job; the task (trusted, but still) never needs it.
            for path in (paths.git_token, paths.git_askpass):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        git_output = scrub(clone_log.read_bytes().decode("utf-8", "replace"), hidden)
        clone_log.unlink()
        if git_output and not git_output.endswith("\n"):
            git_output += "\n"
        os.write(out_fd, git_output.encode())
        if stop is not None:
            self.finish_stopped(stop)
            return False
        if code != 0:
            self.finish("failed", error=f"git clone failed: {git_error(git_output)}")
            return False
        return True


def _detach() -> None:
    """Fork once more and let the parent exit: the launcher reaps that parent at once, and
    the job runs on as an orphan of init, whose restart the dispatcher cannot affect."""
    if os.fork() > 0:
        os._exit(0)


def _acquire_lock(paths: JobPaths) -> int | None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        fd = try_lock(paths.supervisor_lock)
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(_POLL_SECONDS)


def supervise(paths: JobPaths, secrets: JobSecrets | None = None) -> int:
    """Run the job in `paths` unless another supervisor has taken it; the exit code."""
    lock_fd = _acquire_lock(paths)
    if lock_fd is None:
        return 0
    # Only one supervisor ever runs a job: one that finds a status is a late duplicate.
    if paths.status.exists() or paths.result.exists():
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    start_time = utcnow()
    write_record(paths.status, JobStatus(start_time=start_time, pid=os.getpid()))
    job = _Job(paths, start_time, secrets or JobSecrets())
    try:
        job.run()
    except Exception as exc:
        # Whatever went wrong, the job must end with a result rather than hang as running.
        print(f"supervisor error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not paths.result.exists():
            job.finish("failed", error=f"executor error: {type(exc).__name__}")
        return 1
    finally:
        remove_private(paths)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kriten_dispatcher.local_supervisor <jobdir>", file=sys.stderr)
        return 2
    paths = JobPaths(Path(args[0]).resolve())
    # Before detaching: the launcher waits for the first process to exit, so by then it
    # has written everything, and the secrets are only in this process's memory.
    try:
        secrets = decode_secrets(sys.stdin.buffer.read())
    except ValueError as exc:
        print(f"supervisor error: {exc}", file=sys.stderr)
        return 2
    _detach()
    return supervise(paths, secrets)


if __name__ == "__main__":
    sys.exit(main())
