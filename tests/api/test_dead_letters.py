"""`/api/v1/dead_letters`: admins list, inspect and replay what the consumers gave up on,
on the api's own broker topology; the `kriten_dead_letters` gauge shows the depth."""

from __future__ import annotations

import pytest

from kriten_api.routes.dead_letters import refresh_gauge
from kriten_common.amqp import Topology
from tests.api.conftest import ApiClient, create, login
from tests.common.test_dead_letters import depth, drain, put_dead_letters

# Every test here reads the dead-letter queue, on the real broker.
pytestmark = [pytest.mark.integration, pytest.mark.broker]

BASE = "/api/v1/dead_letters"


async def test_admin_lists_inspects_and_replays_dead_letters(
    api: ApiClient, amqp_url: str, topology: Topology
) -> None:
    put = await put_dead_letters(amqp_url, topology)
    root = await login(api)

    listed = await api.get(BASE, headers=root)
    assert listed.status == 200, await listed.text()
    assert listed.headers["Content-Range"] == "4"
    items = await listed.json()
    assert len(items) == 4
    first = items[0]
    assert first["id"] == put.event.message_id
    assert first["job_id"] == "t-dead"
    assert first["queue"] == topology.queue("dispatcher.job-requested")
    assert first["replayable"] is True
    assert "events" not in first
    assert [i["replayable"] for i in items] == [True, True, True, False]
    # Looking removed nothing.
    again = await (await api.get(BASE, headers=root)).json()
    assert [i["id"] for i in again] == [i["id"] for i in items]
    one = await api.get(f"{BASE}?limit=1&offset=1", headers=root)
    assert [i["id"] for i in await one.json()] == [items[1]["id"]]
    assert one.headers["Content-Range"] == "4"

    detail = await api.get(f"{BASE}/{put.event.message_id}", headers=root)
    assert detail.status == 200
    shown = await detail.json()
    assert shown["events"][0]["job_id"] == "t-dead"
    assert shown["headers"]["x-kriten-reason"] == "runner not found"
    raw = await (await api.get(f"{BASE}/{items[2]['id']}", headers=root)).json()
    assert raw["events"] is None
    assert raw["body"]
    assert raw["decode_error"]

    replayed = await api.post(f"{BASE}/{put.event.message_id}/replay", headers=root)
    assert replayed.status == 200, await replayed.text()
    assert (await replayed.json())["id"] == put.event.message_id
    # Exactly once in its work queue, gone from the dead letters, the others left alone.
    arrived = await drain(amqp_url, topology.queue("dispatcher.job-requested"))
    assert [m.message_id for m in arrived] == [put.event.message_id]
    left = await (await api.get(BASE, headers=root)).json()
    assert [i["id"] for i in left] == [i["id"] for i in items[1:]]

    again_replayed = await api.post(f"{BASE}/{put.event.message_id}/replay", headers=root)
    assert again_replayed.status == 404
    assert (await api.post(f"{BASE}/no-such-id/replay", headers=root)).status == 404
    assert (await api.get(f"{BASE}/no-such-id", headers=root)).status == 404
    orphan = await api.post(f"{BASE}/{items[3]['id']}/replay", headers=root)
    assert orphan.status == 409
    assert await depth(amqp_url, topology.dead_letter_queue) == 3


async def test_only_admins_reach_dead_letters(
    api: ApiClient, amqp_url: str, topology: Topology
) -> None:
    put = await put_dead_letters(amqp_url, topology)
    root = await login(api)
    await create(api, root, "users", username="operator", password="pw-operator")
    # Everything on tasks is not everything: dead letters are for admins alone.
    role = {"name": "ops", "resource": "tasks", "resource_ids": ["*"], "access": "write"}
    await create(api, root, "roles", **role)
    binding = {"name": "ops", "role_name": "ops", "subject_kind": "users"}
    await create(api, root, "role_bindings", **binding, subject_name="operator")
    api.session.cookie_jar.clear()
    operator = await login(api, "operator", "pw-operator")
    item = f"{BASE}/{put.event.message_id}"
    for method, path in (("GET", BASE), ("GET", item), ("POST", f"{item}/replay")):
        answer = await api.request(method, path, headers=operator)
        assert answer.status == 403, f"{method} {path}: {answer.status}"
    api.session.cookie_jar.clear()  # login's cookie: anonymous from here
    assert (await api.get(BASE)).status == 401
    assert await depth(amqp_url, topology.dead_letter_queue) == 4


async def test_the_gauge_shows_the_depth(api: ApiClient, amqp_url: str, topology: Topology) -> None:
    await put_dead_letters(amqp_url, topology)
    await refresh_gauge(api.app)
    metrics = await (await api.get("/metrics")).text()
    assert "kriten_dead_letters 4.0" in metrics.splitlines()


async def test_a_bad_limit_is_refused(api: ApiClient) -> None:
    root = await login(api)
    assert (await api.get(f"{BASE}?limit=many", headers=root)).status == 400
    assert (await api.get(f"{BASE}?limit=100000", headers=root)).status == 200
