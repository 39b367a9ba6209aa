"""The seed scenario (issue 2), written once and driven against any deployment:
separate processes on PostgreSQL, or the one-process development mode on SQLite."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from kriten_common.webhook_signing import sign_netbox, sign_standard
from tests.system.harness import COUNT_RUNS, KritenClient

SECRET = "supersecret"
UNIX_DATE = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}$")


def infrahub_headers(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    """Headers as Infrahub sends them: a new webhook-id and timestamp on every send."""
    webhook_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if at is None else at
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secret, webhook_id, timestamp, body),
    }


def netbox_headers(body: bytes, *, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hook-Signature": sign_netbox(secret, body)}


def infrahub_body(event_id: str | None = None, **data: Any) -> bytes:
    return json.dumps(
        {
            "data": {"kind": "DcimDevice", "action": "updated", **data},
            "id": event_id or str(uuid.uuid4()),
            "branch": "main",
            "event": "infrahub.node.updated",
        },
        separators=(",", ":"),
    ).encode()


def netbox_body(name: str) -> bytes:
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return json.dumps(
        {
            "event": "updated",
            "timestamp": now,
            "object_type": "dcim.device",
            "username": "admin",
            "data": {"id": 7, "name": name},
            "snapshots": {"prechange": {"name": "old"}, "postchange": {"name": name}},
        }
    ).encode()


async def set_up(client: KritenClient, repo_url: str) -> dict[str, Any]:
    """Steps 2 to 4 of the scenario: login, runner, tasks, webhook. Returns the webhook."""
    await client.login()
    await client.create(
        "/api/v1/runners", {"name": "python", "image": "python:3.11-slim", "gitURL": repo_url}
    )
    await client.create(
        "/api/v1/tasks",
        {
            "name": "hello-kriten",
            "runner": "python",
            "command": "python examples/hello-kriten/hello-kriten.py",
            "synchronous": False,
        },
    )
    status, task = await client.call("GET", "/api/v1/tasks/hello-kriten")
    assert status == 200
    assert task["command"] == "python examples/hello-kriten/hello-kriten.py"
    webhook = await client.create(
        "/api/v1/webhooks",
        {"description": "Webhook for Hello Kriten task", "task": "hello-kriten", "secret": SECRET},
    )
    for field in (
        "id",
        "owner",
        "secret",
        "description",
        "task",
        "created_at",
        "updated_at",
        "url",
    ):
        assert field in webhook
    return webhook


async def deliver(
    client: KritenClient, run_url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    return await client.call("POST", run_url, data=body, headers=headers)


def assert_ran_with(job: dict[str, Any], body: bytes) -> None:
    assert job["owner"] == "root"
    assert (job["failed"], job["completed"], job["status"]) == (0, 1, "succeeded"), job
    assert UNIX_DATE.match(job["start_time"]), job["start_time"]
    assert UNIX_DATE.match(job["completion_time"]), job["completion_time"]
    assert "Hello from Kriten!" in job["stdout"]
    assert job["json_data"]["extra_vars"] == json.loads(body)


async def webhook_runs_the_task(client: KritenClient, run_url: str, sender: str) -> None:
    body = infrahub_body(name="sw-1") if sender == "infrahub" else netbox_body("sw-2")
    headers = infrahub_headers(body) if sender == "infrahub" else netbox_headers(body)
    status, answer = await deliver(client, run_url, body, headers)
    assert status == 202, answer
    assert answer["msg"] == "job created successfully"
    assert answer["status"] == "accepted"
    assert re.fullmatch(r"hello-kriten-[a-z0-9]+", answer["id"])
    job = await client.wait_job(answer["id"])
    assert_ran_with(job, body)
    assert job["source"] == "webhook"
    status, text = await client.call("GET", f"/api/v1/jobs/{answer['id']}/log")
    assert status == 200
    assert "Hello from Kriten!" in text
    status, jobs = await client.call("GET", "/api/v1/jobs")
    assert status == 200
    assert answer["id"] in [j["id"] for j in jobs]
    assert all("stdout" not in j for j in jobs)


async def rest_client_runs_the_task(client: KritenClient) -> None:
    body = b'{"device": "sw-3", "note": "say \\"hi\\""}'
    status, answer = await client.call("POST", "/api/v1/jobs/hello-kriten", data=body)
    assert status == 200, answer
    assert answer["msg"] == "job created successfully"
    job = await client.wait_job(answer["id"])
    assert_ran_with(job, body)
    assert job["source"] == "api"


async def bad_deliveries_are_refused(client: KritenClient, run_url: str, webhook_base: str) -> None:
    body = infrahub_body()
    stale = infrahub_headers(body, at=int(time.time()) - 3600)
    assert (await deliver(client, run_url, body, stale))[0] == 401
    wrong = infrahub_headers(body, secret="not-the-secret")
    status, answer = await deliver(client, run_url, body, wrong)
    assert (status, answer) == (401, {"error": "webhook authentication failed."})
    assert (await deliver(client, run_url, body, {"Content-Type": "application/json"}))[0] == 401
    tampered = netbox_headers(body)
    assert (await deliver(client, run_url, body + b" ", tampered))[0] == 401
    huge = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert (await deliver(client, run_url, huge, netbox_headers(huge)))[0] == 413
    unknown = f"{webhook_base}{uuid.uuid4()}"
    assert (await deliver(client, unknown, body, netbox_headers(body)))[0] == 404


async def duplicate_delivery_runs_once(client: KritenClient, run_url: str, tmp_path: Path) -> None:
    await client.create(
        "/api/v1/tasks", {"name": "count-runs", "runner": "python", "command": COUNT_RUNS}
    )
    hook = await client.create("/api/v1/webhooks", {"task": "count-runs", "secret": SECRET})
    counter = tmp_path / f"runs-{uuid.uuid4().hex}.txt"
    event_id = str(uuid.uuid4())
    body = json.dumps({"id": event_id, "file": str(counter)}).encode()
    url = run_url.rsplit("/", 1)[0] + "/" + hook["id"]
    # Infrahub's retry: same event id in the body, new webhook-id and timestamp.
    first = await deliver(client, url, body, infrahub_headers(body))
    again = await deliver(client, url, body, infrahub_headers(body))
    assert first[0] == again[0] == 202
    assert first[1]["id"] == again[1]["id"]
    job = await client.wait_job(first[1]["id"])
    assert job["status"] == "succeeded", job
    assert counter.read_text() == "run\n"


async def failing_command_is_recorded_failed(client: KritenClient) -> None:
    await client.create(
        "/api/v1/tasks", {"name": "fails", "runner": "python", "command": "echo broken; exit 3"}
    )
    status, answer = await client.call("POST", "/api/v1/jobs/fails", data=b"")
    assert status == 200, answer
    job = await client.wait_job(answer["id"])
    assert (job["failed"], job["completed"], job["status"]) == (1, 0, "failed")
    assert job["exit_code"] == 3
    assert "broken" in job["stdout"]
    assert job["json_data"] is None


async def running_job_can_be_cancelled(client: KritenClient) -> None:
    await client.create(
        "/api/v1/tasks",
        {"name": "sleeps", "runner": "python", "command": "echo started; sleep 120"},
    )
    status, answer = await client.call("POST", "/api/v1/jobs/sleeps", data=b"")
    assert status == 200, answer
    job_id = answer["id"]
    for _ in range(300):
        status, job = await client.call("GET", f"/api/v1/jobs/{job_id}")
        if status == 200 and job["status"] == "running":
            break
        await asyncio.sleep(0.1)
    status, answer = await client.call("DELETE", f"/api/v1/jobs/{job_id}")
    assert status == 200, answer
    job = await client.wait_job(job_id, timeout=30)
    assert (job["status"], job["failed"], job["completed"]) == ("cancelled", 0, 0)
    status, answer = await client.call("DELETE", f"/api/v1/jobs/{job_id}")
    assert status == 409


async def synchronous_task_answers_the_finished_job(client: KritenClient) -> None:
    await client.create(
        "/api/v1/tasks",
        {
            "name": "hello-sync",
            "runner": "python",
            "command": "python examples/hello-kriten/hello-kriten.py",
            "synchronous": True,
        },
    )
    body = b'{"wait": true}'
    status, job = await client.call("POST", "/api/v1/jobs/hello-sync", data=body)
    assert status == 200, job
    # The whole job, finished, in the answer itself.
    assert_ran_with(job, body)


async def log_follow_streams_while_the_job_runs(client: KritenClient) -> None:
    command = "echo first-line; sleep 3; echo last-line"
    await client.create(
        "/api/v1/tasks", {"name": "slow-output", "runner": "python", "command": command}
    )
    status, answer = await client.call("POST", "/api/v1/jobs/slow-output", data=b"")
    assert status == 200, answer
    job_id = answer["id"]
    for _ in range(300):
        if (await client.call("GET", f"/api/v1/jobs/{job_id}"))[0] == 200:
            break
        await asyncio.sleep(0.1)
    url = f"{client.base_url}/api/v1/jobs/{job_id}/log?follow=true"
    async with client.session.get(url) as response:
        assert response.status == 200
        early = await asyncio.wait_for(response.content.readuntil(b"first-line\n"), 30)
        # The first line arrived while the job still runs: it was streamed, not batched.
        _, job = await client.call("GET", f"/api/v1/jobs/{job_id}")
        assert job["status"] == "running", job
        rest = await asyncio.wait_for(response.content.read(), 30)
    assert b"first-line" in early
    assert b"last-line" in rest
    assert (await client.wait_job(job_id))["status"] == "succeeded"
