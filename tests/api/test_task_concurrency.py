"""A task's concurrency key in the api: validated when saved (like webhook filters,
cost-bounded), read back with the task, computed at admission for REST jobs (cron and
webhook jobs share `admit`) and shown on the job."""

from __future__ import annotations

from typing import Any

import pytest

from kriten_api.keys import SESSIONS
from kriten_common.db.models import Job
from kriten_common.messages import JobRequested
from tests.api.conftest import ApiClient, login
from tests.api_fixtures import RecordingPublisher

pytestmark = pytest.mark.integration

RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
KEY = "join(':', [model, to_string(data.id)])"


async def create_task(api: ApiClient, headers: dict[str, str], **fields: Any) -> Any:
    if (await api.get("/api/v1/runners/python", headers=headers)).status == 404:
        assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 200
    body = {"name": "sync", "runner": "python", "command": "true", **fields}
    return await api.post("/api/v1/tasks", json=body, headers=headers)


async def test_key_and_policy_are_saved_and_read_back(api: ApiClient) -> None:
    headers = await login(api)
    response = await create_task(api, headers, concurrency_key=KEY, concurrency_policy="replace")
    assert response.status == 200, await response.text()
    read = await (await api.get("/api/v1/tasks/sync", headers=headers)).json()
    assert (read["concurrency_key"], read["concurrency_policy"]) == (KEY, "replace")
    # Sending the task back as read changes nothing; null clears the key.
    assert (await api.put("/api/v1/tasks/sync", json=read, headers=headers)).status == 200
    cleared = await api.put(
        "/api/v1/tasks/sync",
        json={"concurrency_key": None, "concurrency_policy": None},
        headers=headers,
    )
    assert cleared.status == 200
    answer = await cleared.json()
    assert (answer["concurrency_key"], answer["concurrency_policy"]) == (None, "queue")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"concurrency_key": "data.["}, "concurrency_key is not a valid JMESPath expression"),
        ({"concurrency_key": "sort(data)"}, "concurrency_key uses sort()"),
        ({"concurrency_key": " || ".join(["a"] * 101)}, "concurrency_key is too complex"),
        ({"concurrency_key": ["data.id"]}, "concurrency_key must be a string"),
        ({"concurrency_policy": "latest"}, "concurrency_policy must be one of queue, replace"),
    ],
)
async def test_bad_keys_and_policies_are_refused(
    api: ApiClient, fields: dict[str, Any], problem: str
) -> None:
    headers = await login(api)
    response = await create_task(api, headers, **fields)
    assert response.status == 400
    assert problem in (await response.json())["error"]


async def test_rest_jobs_carry_the_key_value(api: ApiClient, published: RecordingPublisher) -> None:
    headers = await login(api)
    assert (await create_task(api, headers, concurrency_key=KEY)).status == 200
    body = {"model": "device", "data": {"id": 7}}
    response = await api.post("/api/v1/jobs/sync", json=body, headers=headers)
    assert response.status == 200, await response.text()
    job_id = (await response.json())["id"]
    (event,) = [e for e in published.published if isinstance(e, JobRequested)]
    assert (event.job_id, event.concurrency_key, event.concurrency_policy) == (
        job_id,
        "device:7",
        "queue",
    )
    # An input the key cannot be computed on is refused, not run unordered.
    refused = await api.post("/api/v1/jobs/sync", data=b"not json", headers=headers)
    assert refused.status == 400
    assert "the task has a concurrency key" in (await refused.json())["error"]
    # The collector stores the value on the job; the api shows it.
    async with api.app[SESSIONS]() as session:
        session.add(
            Job(id=job_id, task="sync", owner="root", owner_id="x", concurrency_key="device:7")
        )
        await session.commit()
    job = await (await api.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
    assert job["concurrency_key"] == "device:7"
