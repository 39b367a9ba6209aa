"""The on-disk contract of the local executor, shared by the dispatcher and the collector.

Services never import each other, so the layout of a job directory and the schema of its
files live here. The dispatcher's launcher creates the directory and its spec, a detached
supervisor process runs the job and records what happened, and the collector's observer
reads the records. One directory per job, named by the job id:

    <jobs_dir>/<job_id>/            0700, created with mkdir: its existence means "launched"
        launch.lock                 flock held by a launcher while it starts the supervisor
        spec.json                   0600, LocalJobSpec: everything but secret values
        supervisor.lock             flock held (exclusive) by the supervisor while it lives
        supervisor.log              the supervisor's own stdout/stderr (tracebacks)
        status.json                 JobStatus: the supervisor started (state running)
        task.pid                    pid (= process group) of the supervisor's current child
        repo/                       the clone; the task's working directory
        output.log                  "--- git clone ---" section, then "--- task ---" and
                                    the task's stdout and stderr interleaved
        cancel-requested            a cancel was asked for (survives a supervisor not yet up)
        result.json                 JobResult: the final state, written last and atomically
        collected                   the collector stored the final state durably

Secret values never enter the job directory, which outlives the job (the collector reads
it later, and it is kept until pruned). The launcher hands them to the supervisor on its
stdin (`encode_secrets`); the supervisor keeps them in memory and, for the task's file
contract, writes them to a private directory outside the job directory that exists only
while the job runs:

    <jobs_dir>/.private/            0700; not a job id, so observers skip it
        <job_id>/                   0700, made by the supervisor once it holds its lock,
                                    removed before it writes result.json
            secret/<name>           0600 each: runner secrets, the task's KRITEN_SECRETS_DIR
                                    (mirrors /etc/secret in Kubernetes)
            git-token               0600, the runner's git token; deleted after the clone
            git-askpass             0700, GIT_ASKPASS helper that reads git-token

A supervisor killed outright cannot remove its private directory; the launcher removes
every one whose supervisor no longer holds its lock before it starts another job.

Liveness is a lock, not a pid: a pid can be reused and a dead child can linger as a
zombie, but the kernel drops a flock the moment its holder dies, whatever the cause.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

FinalState = Literal["succeeded", "failed", "cancelled"]

# A job id becomes a directory name: one path component, nothing a shell or `..` trick
# could turn into another place.
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
# Kubernetes secret keys; they also become file names and environment variable names.
_SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,253}$")

# Starts with a dot: never a valid job id, so it cannot clash with a job directory.
PRIVATE_DIR_NAME = ".private"

OUTPUT_CLONE_HEADING = "--- git clone ---\n"
OUTPUT_TASK_HEADING = "--- task ---\n"


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID_RE.fullmatch(job_id))


def is_valid_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME_RE.fullmatch(name)) and name not in {".", ".."}


# The records are plain dataclasses, not Pydantic models: the supervisor is a new
# process per job and imports this module first thing, and Pydantic's import alone was
# most of a job's start-up time.


@dataclass(frozen=True)
class LocalJobSpec:
    """What the supervisor needs to run the job. Secret values are not in here: they sit
    in their own 0600 files so that this file never has to be treated as a secret."""

    job_id: str
    command: str
    git_url: str
    branch: str
    extra_vars: str
    timeout_seconds: int | None = None
    secret_names: list[str] = field(default_factory=list)
    has_git_token: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        _expect(self, str, "job_id", "command", "git_url", "branch", "extra_vars")
        _expect(self, int | None, "timeout_seconds")
        _expect(self, bool, "has_git_token")
        if not all(isinstance(name, str) for name in _expect(self, list, "secret_names")):
            raise ValueError("secret_names must be strings")


@dataclass(frozen=True)
class JobStatus:
    """Written once by the supervisor when it takes charge of the job."""

    start_time: datetime
    pid: int
    state: Literal["running"] = "running"
    version: int = 1

    def __post_init__(self) -> None:
        _expect(self, datetime, "start_time")
        _expect(self, int, "pid")
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


Record = LocalJobSpec | JobStatus | JobResult
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
    def launch_lock(self) -> Path:
        return self.root / "launch.lock"

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def private(self) -> Path:
        """The job's private directory: outside the job directory, gone when the job is."""
        return self.root.parent / PRIVATE_DIR_NAME / self.root.name

    @property
    def secret_dir(self) -> Path:
        return self.private / "secret"

    @property
    def git_token(self) -> Path:
        return self.private / "git-token"

    @property
    def git_askpass(self) -> Path:
        return self.private / "git-askpass"

    @property
    def supervisor_lock(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def task_pid(self) -> Path:
        return self.root / "task.pid"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def output(self) -> Path:
        return self.root / "output.log"

    @property
    def cancel_requested(self) -> Path:
        return self.root / "cancel-requested"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def collected(self) -> Path:
        return self.root / "collected"


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never
    a part; the file is created with `mode` and never exists with looser permissions."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            # A result must survive a power cut once the collector may have seen it.
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_record(path: Path, record: Record) -> None:
    data = {f.name: _to_json(getattr(record, f.name)) for f in fields(record)}
    write_atomic(path, json.dumps(data).encode())


_R = TypeVar("_R", LocalJobSpec, JobStatus, JobResult)


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


@dataclass(frozen=True)
class JobSecrets:
    """What the launcher hands the supervisor on its stdin, never through a file."""

    secrets: dict[str, str] = field(default_factory=dict)
    git_token: str | None = None

    def __repr__(self) -> str:
        # Tracebacks and logs print reprs; the values must not end up there.
        token = "***" if self.git_token else None
        return f"JobSecrets(secrets={sorted(self.secrets)}, git_token={token})"


def encode_secrets(secrets: JobSecrets) -> bytes:
    return json.dumps({"secrets": secrets.secrets, "git_token": secrets.git_token}).encode()


def decode_secrets(data: bytes) -> JobSecrets:
    """Raises ValueError for anything but what `encode_secrets` writes."""
    if not data.strip():
        return JobSecrets()
    try:
        loaded = json.loads(data)
    except ValueError:
        raise ValueError("secrets are not JSON") from None
    if not isinstance(loaded, dict):
        raise ValueError("secrets are not an object")
    values, token = loaded.get("secrets", {}), loaded.get("git_token")
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise ValueError("secrets must map names to strings")
    if token is not None and not isinstance(token, str):
        raise ValueError("git_token must be a string")
    return JobSecrets(secrets=values, git_token=token)


def touch(path: Path) -> None:
    """Create an empty marker file (no-op when it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def try_lock(path: Path, *, shared: bool = False) -> int | None:
    """Take a non-blocking flock on `path` (created if needed); the fd holds it, None when
    another process holds a conflicting lock. Close the fd to release it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def supervisor_alive(paths: JobPaths) -> bool:
    """Whether a supervisor holds this job's lock.

    The probe takes a *shared* lock so that it never makes a starting supervisor (which
    wants the exclusive lock, and retries for a while) believe that another one runs.
    """
    if not paths.supervisor_lock.exists():
        return False
    try:
        fd = try_lock(paths.supervisor_lock, shared=True)
    except FileNotFoundError:
        return False
    if fd is None:
        return True
    os.close(fd)
    return False
