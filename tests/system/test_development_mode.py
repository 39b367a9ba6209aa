"""`make run`'s process (`python -m kriten_launcher`): all four services on one port, on
SQLite and the local executor, driven through the seed scenario."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kriten_common.amqp import Topology
from tests.system import scenario
from tests.system.harness import KritenClient, ServiceProcess, free_port, make_task_repo

pytestmark = [pytest.mark.integration, pytest.mark.system]


@pytest.fixture
async def kriten(
    amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[ServiceProcess]:
    env = {
        "KRITEN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'kriten.db'}",
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
    }
    process = ServiceProcess("kriten", "kriten_launcher", free_port(), env, tmp_path / "kriten.log")
    process.start()
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()


async def test_one_url_serves_api_and_webhooks(kriten: ServiceProcess, tmp_path: Path) -> None:
    client = KritenClient(kriten.url)
    try:
        webhook = await scenario.set_up(client, make_task_repo(tmp_path))
        assert webhook["url"] == f"{kriten.url}/api/v1/webhooks/run/{webhook['id']}"
        await scenario.webhook_runs_the_task(client, webhook["url"], "infrahub")
        await scenario.webhook_runs_the_task(client, webhook["url"], "netbox")
        await scenario.rest_client_runs_the_task(client)
        await scenario.duplicate_delivery_runs_once(client, webhook["url"], tmp_path)
        await scenario.synchronous_task_answers_the_finished_job(client)
        await scenario.running_job_can_be_cancelled(client)
        await scenario.log_follow_streams_while_the_job_runs(client)
        # The web console is on the same port too (make run's http://127.0.0.1:8080/ui/).
        status, page = await client.call("GET", "/ui/")
        assert status == 200
        assert "hello-kriten" in page
    finally:
        await client.close()
    assert "development_root_password" in kriten.logs()
    # Every job of the scenario was healthy: none may have logged an error (such as the
    # unroutable `job.finished` each finished job once did).
    assert kriten.problems() == []


async def test_ctrl_c_stops_it_cleanly_and_says_so(kriten: ServiceProcess) -> None:
    assert kriten.stop(signal.SIGINT) == 0
    lines = kriten.log_path.read_text().splitlines()
    assert "Traceback" not in "\n".join(lines)
    events = [json.loads(line)["event"] for line in lines]  # every line is one JSON event
    assert events[-2:] == ["service_stopping", "service_stopped"]


async def test_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        "KRITEN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'kriten.db'}",
        "KRITEN_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
    }
    process = ServiceProcess("kriten", "kriten_launcher", free_port(), env, tmp_path / "k.log")
    process.start()
    assert process.process is not None
    assert process.process.wait(timeout=60) == 2
    last_line = process.logs().strip().splitlines()[-1]
    assert last_line.startswith(
        "kriten-kriten: cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/"
    )
    assert "KRITEN_AMQP_URL" in last_line


async def test_production_refuses_development_secrets(tmp_path: Path) -> None:
    env = {
        "KRITEN_ENV": "production",
        "KRITEN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'k.db'}",
    }
    process = ServiceProcess("api", "kriten_api", free_port(), env, tmp_path / "api.log")
    process.start()
    assert process.process is not None
    assert process.process.wait(timeout=60) == 2
    logs = process.logs()
    for variable in ("KRITEN_JWT_KEY", "KRITEN_ROOT_PASSWORD", "KRITEN_ENCRYPTION_KEYS"):
        assert variable in logs
