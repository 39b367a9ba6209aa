"""The api's `/metrics` after requests: latency by method, route template and status, with
labels a client cannot choose; on the real broker, the consumer and publisher metrics."""

from __future__ import annotations

import asyncio

import pytest

from kriten_api.keys import PUBLISHER
from kriten_common.messages import JobFinished
from tests.api.conftest import ApiClient, create, login

DURATION = "kriten_api_request_duration_seconds"


def series(text: str, name: str) -> dict[str, float]:
    """`name{labels}` → value, for the lines of one metric."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            found[labels] = float(value)
    return found


async def test_latency_is_labelled_by_route_template_never_the_path(api: ApiClient) -> None:
    secret_looking = "job-0123456789abcdef"
    assert (await api.get(f"/api/v1/jobs/{secret_looking}")).status == 401
    assert (await api.get("/api/v1/no-such-route-a1b2c3")).status == 404
    assert (await api.request("PATCH", "/api/v1/jobs")).status == 405
    text = await (await api.get("/metrics")).text()
    counts = series(text, DURATION + "_count")
    assert counts[f'{DURATION}_count{{method="GET",route="/api/v1/jobs/{{id}}",status="401"}}'] == 1
    assert counts[f'{DURATION}_count{{method="",route="unmatched",status="404"}}'] == 1
    assert counts[f'{DURATION}_count{{method="",route="unmatched",status="405"}}'] == 1
    for chosen in (secret_looking, "no-such-route"):
        assert chosen not in text
    buckets = series(text, DURATION + "_bucket")
    assert any('route="/api/v1/jobs/{id}"' in labels for labels in buckets)


async def test_answers_of_every_status_are_timed(api: ApiClient) -> None:
    headers = await login(api)
    await create(
        api,
        headers,
        "runners",
        name="r1",
        image="python:3.11-slim",
        gitURL="https://example.org/r.git",
    )
    text = await (await api.get("/metrics")).text()
    counts = series(text, DURATION + "_count")
    assert counts[f'{DURATION}_count{{method="POST",route="/api/v1/login",status="200"}}'] == 1
    assert counts[f'{DURATION}_count{{method="POST",route="/api/v1/runners",status="200"}}'] == 1


@pytest.mark.broker
async def test_the_job_finished_subscription_and_the_publisher_are_counted(
    api: ApiClient,
) -> None:
    headers = await login(api)
    # Creating and changing a task announce `config.changed` (publisher); a
    # `job.finished` reaches this replica's subscription (consumer).
    await create(
        api,
        headers,
        "runners",
        name="r2",
        image="python:3.11-slim",
        gitURL="https://example.org/r.git",
    )
    await create(api, headers, "tasks", name="t2", runner="r2", command="true")
    schema = {"type": "object"}
    assert (await api.put("/api/v1/tasks/t2/schema", json=schema, headers=headers)).status == 200
    publisher = api.app[PUBLISHER]
    await publisher.publish(
        JobFinished(job_id="t-1", task="t", status="succeeded"), mandatory=False
    )
    wanted = 'kriten_consumer_messages_total{outcome="ack",queue="broadcast.api-jobs"} 1.0'
    for _ in range(200):
        text = await (await api.get("/metrics")).text()
        if wanted in text.splitlines():
            break
        await asyncio.sleep(0.05)
    lines = text.splitlines()
    assert wanted in lines
    assert (
        'kriten_publisher_messages_total{outcome="confirmed",routing_key="config.changed"} 2.0'
        in lines
    )
    assert (
        'kriten_publisher_events_total{outcome="confirmed",routing_key="job.finished"} 1.0' in lines
    )
