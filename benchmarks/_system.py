"""Shared helpers for benchmarks that run Kriten services as processes: a throw-away
PostgreSQL database, a task repository, a prepared webhook, the services themselves
(started, checked for readiness, measured from /proc and stopped) and the broker's
clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import select

from kriten_api.bootstrap import ensure_builtins
from kriten_api.migrate import upgrade_database
from kriten_common.amqp import Topology, delete_topology
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import Runner, Task, User, Webhook
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY

AMQP_URL = os.environ.get("KRITEN_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN_URL = os.environ.get(
    "KRITEN_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
GIT_IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@kriten.invalid"]
_CLOCK_TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_prefix() -> str:
    """A `KRITEN_AMQP_PREFIX` of its own, so a benchmark shares the broker with nobody."""
    return f"kriten-bench-{uuid.uuid4().hex[:8]}"


def make_one_file_repo(root: Path) -> Path:
    """A git repository at `root/repo` holding one file, on branch main."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    (repo / "README").write_text("kriten benchmark\n")
    for command in (
        ["init", "-q", "-b", "main"],
        ["add", "."],
        [*GIT_IDENTITY, "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *command], cwd=repo, check=True)
    return repo


@contextlib.asynccontextmanager
async def postgres_database(prefix: str = "kriten_bench_") -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database, dropped (even if still in use) at the end."""
    admin_url = make_url(POSTGRES_ADMIN_URL)
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    # CREATE/DROP DATABASE cannot run inside a transaction.
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        try:
            async with admin.connect() as connection:
                await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except Exception as exc:
            where = admin_url.render_as_string(hide_password=True)
            raise RuntimeError(
                f"cannot create a database on {where} (set KRITEN_BENCH_POSTGRES_URL): {exc}"
            ) from exc
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


async def prepare_webhook(
    url: str, *, git_url: str, command: str, secret: str, task: str = "bench"
) -> str:
    """Migrates the database at `url`, creates the built-ins, a runner on `git_url`
    (branch main), a task running `command` and a webhook signed with `secret`, owned by
    root; returns the webhook's id."""
    await upgrade_database(url)
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        await ensure_builtins(sessions, root_password="root")
        box = SecretBox(DEVELOPMENT_ENCRYPTION_KEY)
        async with sessions() as session:
            root = (await session.exec(select(User).where(User.username == "root"))).one()
            session.add(Runner(name=f"{task}-runner", git_url=git_url, branch="main"))
            await session.commit()
            session.add(Task(name=task, runner=f"{task}-runner", command=command))
            await session.commit()
            hook = Webhook(owner_id=root.id, task=task, secret_encrypted=box.encrypt(secret))
            session.add(hook)
            await session.commit()
            return hook.id
    finally:
        await engine.dispose()


async def delete_broker_objects(prefix: str) -> None:
    """Removes the exchange and every queue named by `prefix`."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        await delete_topology(await connection.channel(), Topology(prefix))


@dataclass(frozen=True)
class ProcessSample:
    """A process's own CPU time (user + system), the CPU time of its children it has
    reaped, and its resident memory."""

    cpu_seconds: float
    rss_bytes: int
    children_cpu_seconds: float = 0.0


def sample_process(pid: int) -> ProcessSample:
    with open(f"/proc/{pid}/stat") as file:
        # The command name (field 2) may hold spaces: count fields after its ')'.
        fields = file.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    cutime, cstime = int(fields[13]), int(fields[14])  # 16 and 17: reaped children
    rss = 0
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    return ProcessSample(
        (utime + stime) * _CLOCK_TICK_SECONDS, rss, (cutime + cstime) * _CLOCK_TICK_SECONDS
    )


def cpu_seconds_of_programs(names: tuple[str, ...]) -> float:
    """CPU time (user + system) of every live process whose command name is in `names`
    (`beam.smp` for RabbitMQ, `postgres` for PostgreSQL's server and backends). A lower
    bound across an interval: a process that exits within it takes its share along."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as file:
                head, _, tail = file.read().rpartition(")")
        except OSError:
            continue  # gone meanwhile
        if head.partition("(")[2] in names:
            fields = tail.split()
            total += int(fields[11]) + int(fields[12])
    return total * _CLOCK_TICK_SECONDS


@dataclass
class Service:
    """One Kriten service as a child process (`python -m <module>`), its output in a file."""

    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.port = self.port or free_port()
        env = {**os.environ, **self.env, "KRITEN_PORT": str(self.port), "KRITEN_HOST": "127.0.0.1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; its log "
                f"({self.log_path}):\n{self.log_tail()}"
            )

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout:.0f} s:\n{self.log_tail()}")

    def sample(self) -> ProcessSample:
        return sample_process(self.pid)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (unless sent already), then SIGKILL after `timeout` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.asynccontextmanager
async def running_services(
    env: dict[str, str], logs: Path, names: tuple[str, ...], per_service: dict[str, dict[str, str]]
) -> AsyncIterator[dict[str, Service]]:
    """Starts `kriten_<name>` for each name, each with `env` plus its own `per_service`
    variables, waits until every one is ready, and stops them all at the end (SIGTERM,
    then SIGKILL after 30 s), whatever happened."""
    services = {
        name: Service(
            name, f"kriten_{name}", {**env, **per_service.get(name, {})}, logs / f"{name}.log"
        )
        for name in names
    }
    try:
        for service in services.values():
            service.start()
        for service in services.values():
            await service.wait_ready()
        yield services
    finally:
        for service in services.values():
            service.terminate()
        for service in services.values():
            service.stop()
