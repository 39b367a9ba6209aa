"""Runs Kriten services as real processes and drives them over HTTP, as a user would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HELLO_KRITEN = PROJECT_ROOT / "examples" / "hello-kriten" / "hello-kriten.py"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Kriten Tests",
    "GIT_AUTHOR_EMAIL": "tests@kriten.invalid",
    "GIT_COMMITTER_NAME": "Kriten Tests",
    "GIT_COMMITTER_EMAIL": "tests@kriten.invalid",
}
# A task that records each run in a file named by its input, to prove it ran once.
COUNT_RUNS = (
    'python -c "import json, os; '
    "open(json.loads(os.environ['EXTRA_VARS'])['file'], 'a').write('run\\n')\""
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_task_repo(root: Path) -> str:
    """A git repository (branch main) holding the quick start's example; its file:// URL."""
    repo = root / "tasks-repo"
    (repo / "examples" / "hello-kriten").mkdir(parents=True)
    shutil.copy(HELLO_KRITEN, repo / "examples" / "hello-kriten" / "hello-kriten.py")
    env = {**os.environ, **GIT_IDENTITY}
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "."],
        ["git", "commit", "-q", "-m", "tasks"],
    ):
        subprocess.run(command, cwd=repo, env=env, check=True)
    return f"file://{repo}"


@dataclass
class ServiceProcess:
    """One service as a child process, with its output kept in a file."""

    name: str
    module: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, **self.env, "KRITEN_PORT": str(self.port), "KRITEN_HOST": "127.0.0.1"}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited early:\n{self.logs()}")
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.logs()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-20_000:]

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines so far."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a library's plain-text line, or the launcher's own output
            if isinstance(entry, dict):
                found.append(entry)
        return found

    def logged(self, event: str, job_id: str) -> bool:
        """Whether this process logged `event` about the job."""
        return any(e.get("event") == event and e.get("job_id") == job_id for e in self.events())

    def problems(self) -> list[dict[str, Any]]:
        """The JSON log lines at level error or above, or naming a failed publish (which
        is logged as a warning, but on a healthy run means a message was unroutable)."""
        return [
            entry
            for entry in self.events()
            if entry.get("level") in ("error", "critical")
            or entry.get("event") in ("publish_failed", "broadcast_failed")
        ]


@contextlib.asynccontextmanager
async def running(services: list[ServiceProcess]) -> AsyncIterator[list[ServiceProcess]]:
    """Starts the services (the first one, the api, alone: it migrates the database),
    waits until each is ready, and stops them all at the end."""
    first, *others = services
    try:
        first.start()
        await first.wait_ready()
        for service in others:
            service.start()
        for service in others:
            await service.wait_ready()
        yield services
    finally:
        for service in services:
            service.stop()


def services_of(env: dict[str, str], logs: Path, *names: str) -> list[ServiceProcess]:
    """One `ServiceProcess` per service name (api first), each on a free port."""
    return [
        ServiceProcess(name, f"kriten_{name}", free_port(), env, logs / f"{name}.log")
        for name in names
    ]


@dataclass
class KritenClient:
    """A user of the REST API with a logged-in cookie session."""

    base_url: str
    # unsafe=True: keep cookies from an IP address host (127.0.0.1), as curl does.
    session: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    )

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        async with self.session.request(method, url, **kwargs) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text

    async def login(self, username: str = "root", password: str = "root") -> None:
        status, body = await self.call(
            "POST",
            "/api/v1/login",
            json={"username": username, "password": password, "provider": "local"},
        )
        assert status == 200, body
        assert "token" in {cookie.key for cookie in self.session.cookie_jar}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = await self.call("POST", path, json=body)
        assert status in (200, 201), (status, answer)
        assert isinstance(answer, dict)
        return answer

    async def wait_job(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """The job once it is final (succeeded, failed or cancelled)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            status, last = await self.call("GET", f"/api/v1/jobs/{job_id}")
            if status == 200 and last["status"] in ("succeeded", "failed", "cancelled"):
                assert isinstance(last, dict)
                return last
            await asyncio.sleep(0.2)
        raise AssertionError(f"job {job_id} not final in {timeout}s: {last}")
