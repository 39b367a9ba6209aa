"""Fixtures for the local executor: a real git repository with a task script, a smart-HTTP
git server that demands a token, and a jobs directory that leaves no process behind."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kriten_common.local_jobs import JobPaths, JobStatus, read_record

# Reads everything Kriten promises a task and reports it, in a ^JSON block and in files
# (the files let a test compare EXTRA_VARS byte for byte).
TASK_SCRIPT = r"""
import json, os, pathlib, sys

raw = os.environb.get(b"EXTRA_VARS", b"")
pathlib.Path("extra_vars.bin").write_bytes(raw)
secrets_dir = pathlib.Path(os.environ["KRITEN_SECRETS_DIR"])
secret_files = {p.name: p.read_text() for p in sorted(secrets_dir.iterdir())}
print("hello from the task")
print("to stderr", file=sys.stderr, flush=True)
print("^JSON")
print(json.dumps({
    "extra_vars": raw.decode("utf-8"),
    "secret_files": secret_files,
    "secret_env": {k: os.environ.get(k) for k in secret_files},
    "job_id": os.environ.get("KRITEN_JOB_ID"),
    "env_keys": sorted(os.environ),
    "cwd": os.getcwd(),
    "secrets_dir": str(secrets_dir),
}, indent=2))
print("^JSON")
print("after the block")
"""

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Kriten Test",
    "GIT_AUTHOR_EMAIL": "test@kriten.invalid",
    "GIT_COMMITTER_NAME": "Kriten Test",
    "GIT_COMMITTER_EMAIL": "test@kriten.invalid",
}


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={**os.environ, **GIT_IDENTITY},
    )


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A repository with task.py on branch `main` (and `other` without it)."""
    repo = tmp_path / "src-repo"
    repo.mkdir()
    _git("init", "--quiet", "--initial-branch=main", cwd=repo)
    (repo / "task.py").write_text(TASK_SCRIPT)
    _git("add", "task.py", cwd=repo)
    _git("commit", "--quiet", "-m", "task", cwd=repo)
    return repo


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # A zombie is dead; it only waits for a parent (maybe a non-reaping init) to reap it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def alive() -> Callable[[int], bool]:
    """Whether a pid is a live (not zombie) process."""
    return _alive


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Iterator[Path]:
    """A jobs directory; at teardown every job still running is killed (its wrapper leads
    the job's process group)."""
    path = tmp_path / "jobs"
    yield path
    if not path.is_dir():
        return
    for root in path.iterdir():
        paths = JobPaths(root)
        with contextlib.suppress(Exception):
            status = read_record(paths.status, JobStatus)
            if status is not None and status.pid > 0:
                os.killpg(status.pid, signal.SIGKILL)


@dataclass
class GitHttpServer:
    url: str
    token: str
    authorizations: list[str | None] = field(default_factory=list)
    # Processes seen, while git talked to the server, with the token in argv or environ.
    leaks: list[str] = field(default_factory=list)


def _processes_showing(secret: bytes) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                if secret in (proc / part).read_bytes():
                    found.append(f"{proc.name}/{part}")
    return found


@pytest.fixture
def git_http_server(git_repo: Path, tmp_path: Path) -> Iterator[GitHttpServer]:
    """`git http-backend` behind HTTP basic auth that accepts only the expected token."""
    served = tmp_path / "served"
    served.mkdir()
    _git("clone", "--quiet", "--bare", str(git_repo), str(served / "repo.git"), cwd=tmp_path)
    token = "ghp_Tok3nThatMustNeverLeak"
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    state = GitHttpServer(url="", token=token)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            auth = self.headers.get("Authorization")
            state.authorizations.append(auth)
            state.leaks.extend(_processes_showing(token.encode()))
            if auth != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="kriten-test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(served),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "REMOTE_USER": "x-access-token",
                "REMOTE_ADDR": "127.0.0.1",
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            ).stdout
            sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
            head, _, payload = out.partition(sep)
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode().splitlines():
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers.append((key, value.strip()))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/repo.git"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
