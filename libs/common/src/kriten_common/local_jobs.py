"""The on-disk contract of the local executor, shared by the dispatcher and the collector.

Services never import each other, so the layout of a job directory and the schema of its
files live here. The dispatcher's launcher creates the directory and its spec, starts the
job's wrapper process (one `sh`, see `kriten_dispatcher.local_processes`) and watches it
from its event loop; the collector's observer reads the records. One directory per job,
named by the job id:

    <jobs_dir>/<job_id>/            0700, created with mkdir: its existence means "launched";
                                    a launcher holds a flock on it while it starts the job
        supervisor.lock             flock held while the job is supervised: by the
                                    wrapper (its stdin) and by the dispatcher watching it
        status.json                 JobStatus: the job started (state running); its pid
                                    is the wrapper's, which leads the job's process group;
                                    its deadline and the commit it runs
        repo/                       the job's copy of the checkout; its working directory
        output.log                  "--- git clone ---" section, then "--- task ---" and
                                    the task's stdout and stderr interleaved
        exit-code                   written by the wrapper when the task ended on its own:
                                    its exit status, or "checkout <status>"
        cancel-requested            a cancel was asked for
        deadline-exceeded           a dispatcher that did not start the job stopped it at
                                    its deadline (one that did records it in result.json)
        result.json                 JobResult: the final state when the task did not end
                                    on its own (stopped, died, or never started),
                                    written by the dispatcher once the wrapper is gone
        collected                   the collector stored the final state durably

When the lock is free the job is over. Its outcome is result.json if there is one, else
the exit-code file, else the job died with its wrapper. (Every file costs: on some
filesystems a create is half a millisecond of CPU, so a job's launch makes four: its
directory, the lock, output.log and status.json.)

Secret values never enter the job directory, which outlives the job (the collector reads
it later, and it is kept until pruned). The task gets them in its environment, and as
files in a private directory outside the job directory that exists only while it runs:

    <jobs_dir>/.private/            0700; not a job id, so observers skip it
        <job_id>/secret/<name>      0600 each: runner secrets, the task's KRITEN_SECRETS_DIR
                                    (mirrors /etc/secret in Kubernetes)

The wrapper removes it when the task ends; one left by a wrapper killed outright is
removed by the launcher before it starts another job.

    <jobs_dir>/.checkouts/          the runners' repositories and a checkout per commit
                                    (`kriten_dispatcher.checkout_cache`)

Liveness is a lock, not a pid: a pid can be reused and a dead child can linger as a
zombie, but the kernel drops a flock the moment its last holder dies, whatever the cause.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import re
import signal
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from kriten_common.clock import utcnow

FinalState = Literal["succeeded", "failed", "cancelled"]

# A job id becomes a directory name: one path component, nothing a shell or `..` trick
# could turn into another place.
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
# Kubernetes secret keys; they also become file names and environment variable names.
_SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,253}$")

# Start with a dot: never a valid job id, so they cannot clash with a job directory.
PRIVATE_DIR_NAME = ".private"
CHECKOUTS_DIR_NAME = ".checkouts"

OUTPUT_CLONE_HEADING = "--- git clone ---\n"
OUTPUT_TASK_HEADING = "--- task ---\n"
# The outcome of a job whose supervision ended without a word about how it ended.
DIED_ERROR = "execution vanished: the executor process died"


def is_valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID_RE.fullmatch(job_id))


def is_valid_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME_RE.fullmatch(name)) and name not in {".", ".."}


# The records are plain dataclasses, not Pydantic models: the supervisor is a new
# process per job and imports this module first thing, and Pydantic's import alone was
# most of a job's start-up time.


@dataclass(frozen=True)
class JobStatus:
    """Written once by the launcher when it started the job's wrapper."""

    start_time: datetime
    pid: int
    state: Literal["running"] = "running"
    timeout_seconds: int | None = None
    # The commit the job's checkout is of.
    commit: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        _expect(self, datetime, "start_time")
        _expect(self, int, "pid")
        _expect(self, int | None, "timeout_seconds")
        _expect(self, str | None, "commit")
        if self.state != "running":
            raise ValueError("a status record's state is running")


@dataclass(frozen=True)
class JobResult:
    """The final record. Its presence means the job is over."""

    state: FinalState
    completion_time: datetime
    start_time: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        if self.state not in ("succeeded", "failed", "cancelled"):
            raise ValueError(f"unknown final state {self.state!r}")
        _expect(self, datetime, "completion_time")
        _expect(self, datetime | None, "start_time")
        _expect(self, int | None, "exit_code")
        _expect(self, str | None, "error")


Record = JobStatus | JobResult
_TIME_FIELDS = frozenset({"start_time", "completion_time"})


def _expect(record: object, kind: Any, *names: str) -> Any:
    value = None
    for name in names:
        value = getattr(record, name)
        # bool is an int in Python; a record's integers are never booleans.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"{name} has the wrong type")
    return value


def _to_json(value: Any) -> Any:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value


def _from_json(name: str, value: Any) -> Any:
    if name in _TIME_FIELDS and isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class JobPaths:
    """The files of one job directory (see the module docstring)."""

    root: Path

    @classmethod
    def of(cls, jobs_dir: Path, job_id: str) -> JobPaths:
        if not is_valid_job_id(job_id):
            raise ValueError("invalid job id")
        return cls(jobs_dir / job_id)

    @property
    def job_id(self) -> str:
        return self.root.name

    @property
    def private(self) -> Path:
        """The job's private directory: outside the job directory, gone when the job is."""
        return self.root.parent / PRIVATE_DIR_NAME / self.root.name

    @property
    def secret_dir(self) -> Path:
        return self.private / "secret"

    @property
    def supervisor_lock(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def output(self) -> Path:
        return self.root / "output.log"

    @property
    def exit_code(self) -> Path:
        return self.root / "exit-code"

    @property
    def deadline_exceeded(self) -> Path:
        return self.root / "deadline-exceeded"

    @property
    def cancel_requested(self) -> Path:
        return self.root / "cancel-requested"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def collected(self) -> Path:
        return self.root / "collected"


_temporary_names = itertools.count()


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never
    a part; the file is created with `mode` and never exists with looser permissions.
    `durable` also waits for the disk (what a power cut must not lose)."""
    # Unique per process and call, without mkstemp's random names and retries (a launch
    # writes several files); O_EXCL still refuses a name that is somehow taken.
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}-{next(_temporary_names)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            # The creation mode is filtered by the umask; this is exact.
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                # A result must survive a power cut once the collector may have seen it.
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_record(path: Path, record: Record, *, durable: bool = True) -> None:
    data = {f.name: _to_json(getattr(record, f.name)) for f in fields(record)}
    write_atomic(path, json.dumps(data).encode(), durable=durable)


_R = TypeVar("_R", JobStatus, JobResult)


def read_record(path: Path, cls: type[_R]) -> _R | None:
    """The record at `path`, or None when it does not exist (yet).

    Raises ValueError when the file exists but is not a valid record: writes are atomic,
    so that is corruption or a foreign file, not a race.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        loaded = json.loads(data)
        if not isinstance(loaded, dict):
            raise ValueError("not an object")
        # Unknown fields are ignored: the reader may be older or newer than the writer.
        known = {f.name for f in fields(cls)}
        return cls(**{k: _from_json(k, v) for k, v in loaded.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid {path.name}: {exc}") from None


def exit_error(code: int) -> str | None:
    """The error for a task's exit status as a shell reports it: 128+n is signal n (as
    Kubernetes reports a container's exit code too)."""
    if code > 128:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(code - 128).name}"
    return f"exit code {code}" if code else None


def result_from_exit_code(paths: JobPaths, start_time: datetime | None) -> JobResult | None:
    """The result recorded by the wrapper's exit-code file, None when there is none (or a
    partial one: the wrapper died while writing it)."""
    try:
        text = paths.exit_code.read_text()
        completed = datetime.fromtimestamp(paths.exit_code.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None
    words = text.split()
    if len(words) == 2 and words[0] == "checkout" and words[1].isdigit():
        return JobResult(
            state="failed",
            start_time=start_time,
            completion_time=completed,
            error=f"checkout failed: the copy of the repository exited with {words[1]}",
        )
    if len(words) != 1 or not words[0].isdigit():
        return None
    code = int(words[0])
    return JobResult(
        state="succeeded" if code == 0 else "failed",
        start_time=start_time,
        completion_time=completed,
        exit_code=code,
        error=exit_error(code),
    )


def has_ended(paths: JobPaths) -> bool:
    """Whether the job's end is recorded: its result, or its wrapper's exit code."""
    return paths.result.exists() or paths.exit_code.exists()


def touch(path: Path) -> None:
    """Create an empty marker file (no-op when it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def try_lock(path: Path, *, shared: bool = False, directory: bool = False) -> int | None:
    """Take a non-blocking flock on `path` (a file, created if needed, or an existing
    `directory`); the fd holds it, None when another process holds a conflicting lock.
    Close the fd to release it."""
    if directory:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def lock_held(path: Path, *, shared: bool = True, directory: bool = False) -> bool:
    """Whether another process holds a lock on `path` (which must exist). A *shared*
    probe never makes a starter that wants the lock exclusively believe it is taken."""
    fd = try_lock(path, shared=shared, directory=directory)
    if fd is None:
        return True
    os.close(fd)
    return False


def supervisor_alive(paths: JobPaths) -> bool:
    """Whether the job is supervised: its lock is held (by its wrapper, or by the
    dispatcher watching it)."""
    try:
        return paths.supervisor_lock.exists() and lock_held(paths.supervisor_lock)
    except FileNotFoundError:
        return False


StopReason = Literal["cancelled", "deadline", "died"]


def stopped_result(reason: StopReason, start_time: datetime | None) -> JobResult:
    """The result of a job that did not end on its own."""
    if reason == "cancelled":
        state: FinalState = "cancelled"
        error = "cancelled"
    else:
        state, error = "failed", ("deadline exceeded" if reason == "deadline" else DIED_ERROR)
    return JobResult(state=state, start_time=start_time, completion_time=utcnow(), error=error)


def ended_unwatched(paths: JobPaths, start_time: datetime | None) -> JobResult:
    """The outcome of a job whose wrapper is gone with no result written: its exit code,
    else why it was stopped (by a dispatcher that did not start it, which is about to
    write the same), else it died."""
    recorded = result_from_exit_code(paths, start_time)
    if recorded is not None:
        return recorded
    if paths.cancel_requested.exists():
        return stopped_result("cancelled", start_time)
    if paths.deadline_exceeded.exists():
        return stopped_result("deadline", start_time)
    return stopped_result("died", start_time)
