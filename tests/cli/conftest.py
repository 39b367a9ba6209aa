"""Kriten's development mode (`python -m kriten_launcher`: the four services in one
process, on SQLite and the local executor) as a real server for kritenctl, and a way to
run kritenctl's commands against it.

Each test gets its own server, database, jobs directory, RabbitMQ names and config
directory. The tests are synchronous: kritenctl is a blocking client, as in a terminal.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import pytest
from typer.testing import CliRunner, Result

from kriten_common.amqp import Topology, delete_topology
from kritenctl.app import app
from tests.system.harness import ServiceProcess, free_port

READY_SECONDS = 60


def _wait_ready(process: ServiceProcess) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        assert process.process is not None
        if process.process.poll() is not None:
            raise AssertionError(f"kriten exited early:\n{process.logs()}")
        try:
            if httpx.get(f"{process.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"kriten not ready in {READY_SECONDS}s:\n{process.logs()}")


async def _delete_topology(amqp_url: str, prefix: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await delete_topology(await connection.channel(), Topology(prefix))


@pytest.fixture
def kriten(amqp_url: str, amqp_prefix: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {
        "KRITEN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'kriten.db'}",
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": amqp_prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
    }
    process = ServiceProcess("kriten", "kriten_launcher", free_port(), env, tmp_path / "kriten.log")
    process.start()
    try:
        _wait_ready(process)
        yield process
    finally:
        process.stop()
        asyncio.run(_delete_topology(amqp_url, amqp_prefix))


@dataclass
class Kritenctl:
    """kritenctl as a user runs it, with a config directory of the test's own and none
    of the caller's KRITENCTL_* variables."""

    config_home: Path
    env: dict[str, str | None]

    def __call__(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        runner = CliRunner()
        return runner.invoke(
            app, list(args), input=input, env={**self.env, **env}, catch_exceptions=False
        )

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.exit_code, result.output)
        return result

    def config_file(self) -> Path:
        return self.config_home / "kritenctl" / "config.yaml"


@pytest.fixture
def kritenctl(tmp_path: Path) -> Kritenctl:
    config_home = tmp_path / "config"
    cleared: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("KRITENCTL_")
    }
    return Kritenctl(config_home, {**cleared, "XDG_CONFIG_HOME": str(config_home)})


def log_in(kritenctl: Kritenctl, url: str, extra: Sequence[str] = ()) -> Result:
    return kritenctl.ok(
        "login", "--url", url, "--username", "root", "--password-stdin", *extra, input="root\n"
    )
