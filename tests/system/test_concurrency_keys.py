"""Concurrency keys end to end: the services as processes, two dispatcher replicas, real
RabbitMQ and PostgreSQL, the local executor. Jobs of one key run one after another in
acceptance order (each starts after the previous one's end, as the jobs table records
them), other keys beside them; `replace` and `skip` end the jobs they should; and a
dispatcher killed (SIGKILL) while a keyed job runs does not let the next one start early."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import col, select

from kriten_common.amqp import Topology
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import FINAL_JOB_STATUSES, Job
from tests.system import scenario
from tests.system.harness import GIT_IDENTITY, KritenClient, ServiceProcess, free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.system]

# Sleeps for the input's `seconds`, so that a test sees jobs overlap or not.
WORK_SCRIPT = "import json, os, time\ntime.sleep(json.loads(os.environ['EXTRA_VARS'])['seconds'])\n"


@dataclass
class Deployment:
    client: KritenClient
    ingress_url: str
    database_url: str
    dispatchers: list[ServiceProcess]
    others: list[ServiceProcess]


def make_repo(root: Path) -> str:
    repo = root / "work-repo"
    repo.mkdir()
    (repo / "work.py").write_text(WORK_SCRIPT)
    env = {**os.environ, **GIT_IDENTITY}
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "."],
        ["git", "commit", "-q", "-m", "work"],
    ):
        subprocess.run(command, cwd=repo, env=env, check=True)
    return f"file://{repo}"


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
        # The checkout cache is shared by the replicas on one jobs directory but locked
        # within a process only: one fetch per replica, never two at once (below).
        "KRITEN_CHECKOUT_REFRESH_SECONDS": "3600",
    }

    def service(name: str, module: str) -> ServiceProcess:
        return ServiceProcess(name, module, free_port(), env, tmp_path / f"{name}.log")

    dispatchers = [service(f"dispatcher-{n}", "kriten_dispatcher") for n in (1, 2)]
    others = [service(name, f"kriten_{name}") for name in ("api", "ingress", "collector")]
    async with running([*others, *dispatchers]):
        client = KritenClient(others[0].url)
        await client.login()
        await client.create(
            "/api/v1/runners",
            {"name": "python", "image": "python:3.11-slim", "gitURL": make_repo(tmp_path)},
        )
        yield Deployment(client, others[1].url, postgres_url, dispatchers, others)
        await client.close()


async def keyed_task(deployment: Deployment, name: str, policy: str) -> str:
    """A task keyed on the device (as a NetBox webhook sends it), and its webhook's URL."""
    await deployment.client.create(
        "/api/v1/tasks",
        {
            "name": name,
            "runner": "python",
            "command": "python work.py",
            "concurrency_key": "join(':', [model, to_string(data.id)])",
            "concurrency_policy": policy,
        },
    )
    webhook = await deployment.client.create(
        "/api/v1/webhooks", {"task": name, "secret": scenario.SECRET, "scheme": "netbox"}
    )
    return f"{deployment.ingress_url}/api/v1/webhooks/run/{webhook['id']}"


async def deliver(deployment: Deployment, url: str, device: int, seconds: float) -> str:
    """One NetBox delivery for `device` (each a different change); the job's id."""
    body = json.dumps(
        {
            "event": "updated",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "model": "device",
            "request_id": str(uuid.uuid4()),
            "data": {"id": device, "name": f"sw-{device}"},
            "seconds": seconds,
        }
    ).encode()
    status, answer = await scenario.deliver(
        deployment.client, url, body, scenario.netbox_headers(body)
    )
    assert status == 202, answer
    job_id: str = answer["id"]
    return job_id


async def final_jobs(deployment: Deployment, job_ids: list[str], timeout: float = 90) -> list[Job]:
    """The jobs, in `job_ids` order, once all are final (read from the jobs table: its
    times are exact, an answer's are to the second)."""
    engine = create_engine(deployment.database_url)
    sessions = session_factory(engine)
    deadline = time.monotonic() + timeout
    try:
        while True:
            async with sessions() as session:
                rows = (await session.exec(select(Job).where(col(Job.id).in_(job_ids)))).all()
            by_id = {job.id: job for job in rows}
            if len(by_id) == len(job_ids) and all(
                job.status in FINAL_JOB_STATUSES for job in by_id.values()
            ):
                return [by_id[job_id] for job_id in job_ids]
            if time.monotonic() > deadline:
                raise AssertionError(f"not final in {timeout}s: {[(j.id, j.status) for j in rows]}")
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def wait_running(deployment: Deployment, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = await deployment.client.call("GET", f"/api/v1/jobs/{job_id}")
        if status == 200 and job["status"] == "running":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} not running in {timeout}s")


def times(job: Job) -> tuple[datetime, datetime]:
    assert job.start_time is not None, job
    assert job.completion_time is not None, job
    return job.start_time, job.completion_time


def assert_one_after_another(jobs: list[Job]) -> None:
    for job in jobs:
        assert job.status == "succeeded", (job.id, job.status, job.error)
    for previous, following in itertools.pairwise(jobs):
        assert times(following)[0] >= times(previous)[1], (previous.id, following.id)


async def test_queue_runs_one_device_in_order_and_others_beside_it(deployment: Deployment) -> None:
    url = await keyed_task(deployment, "sync-device", "queue")
    same = [await deliver(deployment, url, 1, 1.5) for _ in range(3)]
    # Once the first has its checkout: two replicas' first fetches must not overlap.
    await wait_running(deployment, same[0])
    other = await deliver(deployment, url, 2, 1.5)
    jobs = await final_jobs(deployment, [*same, other])
    assert_one_after_another(jobs[:3])
    assert [job.concurrency_key for job in jobs] == ["device:1"] * 3 + ["device:2"]
    # The other device's job ran while the first device's line did.
    assert times(jobs[3])[0] < times(jobs[2])[0]
    assert jobs[3].status == "succeeded", (jobs[3].error, jobs[3].stdout)
    status, answer = await deployment.client.call("GET", f"/api/v1/jobs/{same[0]}")
    assert (status, answer["concurrency_key"]) == (200, "device:1")


async def test_replace_runs_the_first_and_the_last(deployment: Deployment) -> None:
    url = await keyed_task(deployment, "sync-replace", "replace")
    first = await deliver(deployment, url, 7, 2)
    await wait_running(deployment, first)
    middle = await deliver(deployment, url, 7, 0)
    last = await deliver(deployment, url, 7, 0)
    ran_first, replaced, ran_last = await final_jobs(deployment, [first, middle, last])
    assert replaced.status == "cancelled"
    assert replaced.error == f"replaced by {last}"
    assert replaced.start_time is None
    assert_one_after_another([ran_first, ran_last])


async def test_skip_ends_a_job_whose_key_is_busy(deployment: Deployment) -> None:
    url = await keyed_task(deployment, "sync-skip", "skip")
    first = await deliver(deployment, url, 3, 2)
    await wait_running(deployment, first)
    skipped_id = await deliver(deployment, url, 3, 0)
    (skipped,) = await final_jobs(deployment, [skipped_id], timeout=10)
    assert skipped.status == "skipped"
    assert skipped.error == f"skipped: key busy with {first}"
    (ran,) = await final_jobs(deployment, [first])
    assert ran.status == "succeeded"
    # Free again: the next one runs.
    (after,) = await final_jobs(deployment, [await deliver(deployment, url, 3, 0)])
    assert after.status == "succeeded"


async def test_a_killed_dispatcher_does_not_free_the_key(deployment: Deployment) -> None:
    url = await keyed_task(deployment, "sync-kill", "queue")
    first = await deliver(deployment, url, 9, 4)
    await wait_running(deployment, first)
    second = await deliver(deployment, url, 9, 0.5)
    # The second request is waiting (told to come back later by one replica's gate).
    deadline = time.monotonic() + 30
    while not any(d.logged("event_retry_scheduled", second) for d in deployment.dispatchers):
        assert time.monotonic() < deadline, "the second job was never told to wait"
        await asyncio.sleep(0.1)
    launcher = next(d for d in deployment.dispatchers if d.logged("job_dispatched", first))
    assert launcher.process is not None
    launcher.process.send_signal(signal.SIGKILL)
    launcher.process.wait()
    third = await deliver(deployment, url, 9, 0.5)
    jobs = await final_jobs(deployment, [first, second, third])
    assert_one_after_another(jobs)
