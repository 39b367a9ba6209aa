"""The api on a real database and broker: login, runners, tasks, webhooks, jobs."""

from __future__ import annotations

import json
import re

import aio_pika
import pytest

from kriten_common.amqp import Topology
from kriten_common.messages import JobRequested, decode
from tests.api.conftest import ApiClient, login

pytestmark = pytest.mark.integration

RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
TASK = {
    "name": "hello-kriten",
    "runner": "python",
    "command": "python examples/hello-kriten/hello-kriten.py",
    "synchronous": False,
}


async def setup_task(api: ApiClient, headers: dict[str, str], **task: object) -> None:
    assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 200
    body = {**TASK, **task}
    response = await api.post("/api/v1/tasks", json=body, headers=headers)
    assert response.status == 200, await response.text()


async def test_login_sets_an_http_only_cookie_that_authenticates(api: ApiClient) -> None:
    response = await api.post(
        "/api/v1/login", json={"username": "root", "password": "root", "provider": "local"}
    )
    assert response.status == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("token=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    # The test client keeps the cookie: the next call is authenticated by it alone.
    assert (await api.get("/api/v1/runners")).status == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "root", "password": "wrong", "provider": "local"}, 401),
        ({"username": "nobody", "password": "root", "provider": "local"}, 401),
        ({"username": "root"}, 400),
        ({"username": "root", "password": "root", "provider": "active_directory"}, 400),
    ],
)
async def test_bad_logins(api: ApiClient, body: dict[str, str], status: int) -> None:
    response = await api.post("/api/v1/login", json=body)
    assert response.status == status
    if status == 401:
        assert await response.json() == {"error": "invalid credentials."}


async def test_malformed_login_body_is_400_not_500(api: ApiClient) -> None:
    response = await api.post(
        "/api/v1/login", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert "malformed JSON" in (await response.json())["error"]
    response = await api.post("/api/v1/login", data=b"x", headers={"Content-Type": "text/html"})
    assert response.status == 415


async def test_anonymous_and_forged_tokens_are_401(api: ApiClient) -> None:
    assert (await api.get("/api/v1/tasks")).status == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJ1c2VybmFtZSI6InJvb3QifQ."}
    assert (await api.get("/api/v1/tasks", headers=forged)).status == 401
    assert (await api.get("/api/v1/tasks", headers={"Token": "kri_nope"})).status == 401


async def test_logout_revokes_the_token(api: ApiClient) -> None:
    headers = await login(api)
    assert (await api.get("/api/v1/refresh", headers=headers)).status == 200
    assert (await api.post("/api/v1/logout", headers=headers)).status == 200
    assert (await api.get("/api/v1/tasks", headers=headers)).status == 401


async def test_runner_secrets_are_masked_and_merged(api: ApiClient) -> None:
    headers = await login(api)
    body = {**RUNNER, "token": "ghp_secret", "secret": {"user": "u", "pass": "p"}}
    created = await (await api.post("/api/v1/runners", json=body, headers=headers)).json()
    assert created["token"] == "************"
    assert created["secret"] == {"pass": "************", "user": "************"}
    assert "ghp_secret" not in json.dumps(created)
    update = {"secret": {"user": "", "pass": "************", "new": "n"}}
    response = await api.patch("/api/v1/runners/python", json=update, headers=headers)
    assert (await response.json())["secret"] == {"new": "************", "pass": "************"}
    listed = await api.get("/api/v1/runners", headers=headers)
    assert listed.headers["Content-Range"] == "1"
    assert [r["name"] for r in await listed.json()] == ["python"]


async def test_runner_and_task_validation(api: ApiClient) -> None:
    headers = await login(api)
    bad_name = await api.post(
        "/api/v1/runners", json={**RUNNER, "name": "Bad_Name"}, headers=headers
    )
    assert bad_name.status == 400
    assert "DNS-1123" in (await bad_name.json())["error"]
    assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 200
    assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 409
    no_runner = await api.post("/api/v1/tasks", json={**TASK, "runner": "ghost"}, headers=headers)
    assert no_runner.status == 400
    bad_schema = await api.post(
        "/api/v1/tasks", json={**TASK, "schema": {"type": 5}}, headers=headers
    )
    assert bad_schema.status == 400
    assert (await api.post("/api/v1/tasks", json=TASK, headers=headers)).status == 200
    got = await (await api.get("/api/v1/tasks/hello-kriten", headers=headers)).json()
    assert {k: got[k] for k in TASK} == TASK
    renamed = await api.patch("/api/v1/tasks/hello-kriten", json={"name": "other"}, headers=headers)
    assert renamed.status == 400
    assert (await api.get("/api/v1/tasks/missing", headers=headers)).status == 404
    in_use = await api.delete("/api/v1/runners/python", headers=headers)
    assert in_use.status == 409
    assert "hello-kriten" in (await in_use.json())["error"]


async def test_webhook_secret_shown_once_then_masked(api: ApiClient) -> None:
    headers = await login(api)
    await setup_task(api, headers)
    body = {
        "description": "Webhook for Hello Kriten task",
        "task": "hello-kriten",
        "secret": "supersecret",
    }
    response = await api.post("/api/v1/webhooks", json=body, headers=headers)
    assert response.status == 200
    created = await response.json()
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
        assert field in created
    assert created["secret"] == "supersecret"
    assert created["warnings"] == ["secret is shorter than 16 characters"]
    assert re.fullmatch(r"http://.+/api/v1/webhooks/run/[0-9a-f-]{36}", created["url"])
    got = await (await api.get(f"/api/v1/webhooks/{created['id']}", headers=headers)).json()
    assert got["secret"] == "************"
    listed = await (await api.get("/api/v1/webhooks", headers=headers)).json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert all(w["secret"] == "************" for w in listed)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"task": "hello-kriten", "secret": ""}, "at least 8"),
        ({"task": "hello-kriten", "secret": "short"}, "at least 8"),
        ({"task": "missing"}, "does not exist"),
        ({"task": "hello-kriten", "scheme": "carrier-pigeon"}, "scheme must be one of"),
    ],
)
async def test_webhook_validation(api: ApiClient, body: dict[str, str], message: str) -> None:
    headers = await login(api)
    await setup_task(api, headers)
    response = await api.post("/api/v1/webhooks", json=body, headers=headers)
    assert response.status == 400
    assert message in (await response.json())["error"]


async def test_generated_webhook_secret_is_strong(api: ApiClient) -> None:
    headers = await login(api)
    await setup_task(api, headers)
    created = await (
        await api.post("/api/v1/webhooks", json={"task": "hello-kriten"}, headers=headers)
    ).json()
    assert len(created["secret"]) >= 43
    assert "warnings" not in created


async def test_post_job_publishes_the_request_durably(
    api: ApiClient, amqp_url: str, topology: Topology
) -> None:
    headers = await login(api)
    await setup_task(api, headers)
    raw = b'{"greeting": "hi \\"there\\""}'
    response = await api.post("/api/v1/jobs/hello-kriten", data=raw, headers=headers)
    assert response.status == 200
    answer = await response.json()
    assert answer["msg"] == "job created successfully"
    assert answer["id"].startswith("hello-kriten-")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.queue("dispatcher.job-requested"))
        message = await queue.get(no_ack=True)
    assert message is not None
    (event,) = decode(message.type or "", message.body)
    assert isinstance(event, JobRequested)
    assert (event.job_id, event.owner, event.input) == (answer["id"], "root", raw.decode())


async def test_job_input_against_schema(api: ApiClient) -> None:
    headers = await login(api)
    schema = {"type": "object", "required": ["site"], "properties": {"site": {"type": "string"}}}
    await setup_task(api, headers, schema=schema)
    bad = await api.post("/api/v1/jobs/hello-kriten", json={"x": 1}, headers=headers)
    assert bad.status == 400
    assert "'site' is a required property" in (await bad.json())["error"]
    good = await api.post("/api/v1/jobs/hello-kriten", json={"site": "a"}, headers=headers)
    assert good.status == 200


async def test_job_for_unknown_task_is_404_and_reads_of_unknown_jobs_too(api: ApiClient) -> None:
    headers = await login(api)
    assert (await api.post("/api/v1/jobs/ghost", data=b"", headers=headers)).status == 404
    assert (await api.get("/api/v1/jobs/ghost-abc", headers=headers)).status == 404
    listed = await api.get("/api/v1/jobs", headers=headers)
    assert await listed.json() == []
    assert listed.headers["Content-Range"] == "0"
    assert (await api.get("/api/v1/jobs?status=bogus", headers=headers)).status == 400
    assert (await api.get("/api/v1/jobs?limit=-1", headers=headers)).status == 400


@pytest.mark.broker
async def test_broker_down_answers_503_with_retry_after(api: ApiClient) -> None:
    headers = await login(api)
    await setup_task(api, headers)
    from kriten_api.keys import CONNECTION

    await api.app[CONNECTION].close()
    response = await api.post("/api/v1/jobs/hello-kriten", data=b"{}", headers=headers)
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert await response.json() == {"error": "message broker unavailable"}


@pytest.mark.broker
async def test_health_readiness_and_metrics(api: ApiClient) -> None:
    assert (await api.get("/healthz")).status == 200
    ready = await api.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": True, "broker": True}
    assert (await api.get("/metrics")).status == 200


async def test_deleting_a_task_still_used_names_its_users(api: ApiClient) -> None:
    headers = await login(api)
    await setup_task(api, headers)
    hook = await (
        await api.post("/api/v1/webhooks", json={"task": "hello-kriten"}, headers=headers)
    ).json()
    cron = {"name": "nightly", "task": "hello-kriten", "schedule": "0 3 * * *", "extra_vars": {}}
    assert (await api.post("/api/v1/cronjobs", json=cron, headers=headers)).status in (200, 201)
    response = await api.delete("/api/v1/tasks/hello-kriten", headers=headers)
    assert response.status == 409
    message = (await response.json())["error"]
    assert f"webhooks: {hook['id']}" in message
    assert "cronjobs: nightly" in message
