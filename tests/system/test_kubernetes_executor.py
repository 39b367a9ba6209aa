"""The seed scenario with `KRITEN_EXECUTOR=kubernetes`: the four services as processes on
real RabbitMQ and PostgreSQL, talking through the real `kubernetes` client to the fake
API server, whose pods an emulated kubelet runs locally."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kriten_common.amqp import Topology
from kriten_common.kube import job_name
from tests.fake_kube import FakeKube
from tests.system import scenario
from tests.system.emulated_kubelet import EmulatedKubelet
from tests.system.harness import KritenClient, make_task_repo, running, services_of

pytestmark = [pytest.mark.integration, pytest.mark.system]


@dataclass
class Deployment:
    client: KritenClient
    ingress_url: str
    repo_url: str
    fake: FakeKube


@pytest.fixture
async def deployment(
    postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Deployment]:
    fake = FakeKube(bookmark_interval=0.2)
    await fake.start()
    repo_url = make_task_repo(tmp_path)
    kubelet = EmulatedKubelet(fake, repo_url=repo_url, work=tmp_path / "kubelet")
    kubelet.start()
    env = {
        "KRITEN_DATABASE_URL": postgres_url,
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_EXECUTOR": "kubernetes",
        "KRITEN_KUBECONFIG": str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
        "KRITEN_NAMESPACE": "kriten",
        "KRITEN_BACKOFF_INITIAL_SECONDS": "0.05",
        "KRITEN_BACKOFF_MAX_SECONDS": "0.5",
        "KRITEN_LOG_FORMAT": "json",
    }
    names = ("api", "ingress", "dispatcher", "collector")
    try:
        async with running(services_of(env, tmp_path, *names)) as services:
            client = KritenClient(services[0].url)
            yield Deployment(client, services[1].url, repo_url, fake)
            await client.close()
    finally:
        await kubelet.stop()
        await fake.stop()


async def test_seed_scenario_on_kubernetes(deployment: Deployment, tmp_path: Path) -> None:
    client = deployment.client
    webhook = await scenario.set_up(client, deployment.repo_url)
    url = f"{deployment.ingress_url}/api/v1/webhooks/run/{webhook['id']}"
    await scenario.webhook_runs_the_task(client, url, "infrahub")
    await scenario.webhook_runs_the_task(client, url, "netbox")
    await scenario.rest_client_runs_the_task(client)
    await scenario.duplicate_delivery_runs_once(client, url, tmp_path)
    await scenario.failing_command_is_recorded_failed(client)
    await scenario.running_job_can_be_cancelled(client)
    await job_deleted_by_someone_else_is_failed(client, deployment.fake)
    # Every Job the dispatcher created is a valid batch/v1 Job carrying Kriten's labels.
    assert deployment.fake.jobs
    for job in deployment.fake.jobs.values():
        labels = job["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kriten"
        assert job["spec"]["backoffLimit"] == 0


async def job_deleted_by_someone_else_is_failed(client: KritenClient, fake: FakeKube) -> None:
    """`kubectl delete job` while it runs: nobody cancelled it, so it failed, and says why
    (the cancel just before, through the api, stayed `cancelled`)."""
    status, answer = await client.call("POST", "/api/v1/jobs/sleeps", data=b"")
    assert status == 200, answer
    job_id = answer["id"]
    for _ in range(300):
        status, job = await client.call("GET", f"/api/v1/jobs/{job_id}")
        if status == 200 and job["status"] == "running":
            break
        await asyncio.sleep(0.1)
    fake.delete_job(job_name(job_id))
    job = await client.wait_job(job_id, timeout=30)
    assert job["status"] == "failed", job
    assert job["error"].startswith("execution vanished: "), job
