"""The seed scenario against the four services as separate processes, on real
RabbitMQ and PostgreSQL, with the local executor."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kriten_common.amqp import Topology
from tests.system import scenario
from tests.system.harness import (
    KritenClient,
    ServiceProcess,
    make_task_repo,
    running,
    services_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.system]


@dataclass
class Deployment:
    client: KritenClient
    ingress_url: str
    repo_url: str
    services: dict[str, ServiceProcess]


@pytest.fixture
async def deployment(
    postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Deployment]:
    env = {
        "KRITEN_DATABASE_URL": postgres_url,
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
    }
    names = ("api", "ingress", "dispatcher", "collector")
    async with running(services_of(env, tmp_path, *names)) as started:
        services = dict(zip(names, started, strict=True))
        client = KritenClient(services["api"].url)
        yield Deployment(client, services["ingress"].url, make_task_repo(tmp_path), services)
        await client.close()


def run_url(deployment: Deployment, webhook: dict[str, str]) -> str:
    return f"{deployment.ingress_url}/api/v1/webhooks/run/{webhook['id']}"


async def test_seed_scenario_on_separate_processes(deployment: Deployment, tmp_path: Path) -> None:
    client = deployment.client
    webhook = await scenario.set_up(client, deployment.repo_url)
    url = run_url(deployment, webhook)
    await scenario.webhook_runs_the_task(client, url, "infrahub")
    await scenario.webhook_runs_the_task(client, url, "netbox")
    await scenario.rest_client_runs_the_task(client)
    await scenario.bad_deliveries_are_refused(
        client, url, f"{deployment.ingress_url}/api/v1/webhooks/run/"
    )
    await scenario.duplicate_delivery_runs_once(client, url, tmp_path)
    await scenario.failing_command_is_recorded_failed(client)
    await scenario.running_job_can_be_cancelled(client)
    # A failed or cancelled job is an outcome, not a fault: no service logged an error
    # (nor, for instance, an unroutable `job.finished` for every finished job).
    for name, service in deployment.services.items():
        assert service.problems() == [], name


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
async def test_services_stop_cleanly(deployment: Deployment, stop_signal: signal.Signals) -> None:
    for name, service in deployment.services.items():
        assert service.stop(stop_signal) == 0, f"{name}:\n{service.logs()}"
        # Every line is JSON (no traceback of its own), and the stop is logged, its
        # beginning and its end, as the last two events.
        events = [json.loads(line)["event"] for line in service.logs().splitlines()]
        assert events[-2:] == ["service_stopping", "service_stopped"], name
        assert service.problems() == [], name
