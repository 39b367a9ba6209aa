"""`/cronjobs` on PostgreSQL: validation (name, task, 5-field schedule, extra_vars against
the task's schema), ownership, and the rule that whoever changes what a cronjob runs must
be allowed to run its task."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from kriten_api.keys import SESSIONS
from kriten_api.settings import ApiSettings
from kriten_common.db.models import CronJob
from tests.api.conftest import ApiClient, login
from tests.api.test_api_tokens_routes import add_user

pytestmark = pytest.mark.integration

RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
SCHEMA = {"type": "object", "properties": {"site": {"type": "string"}}, "required": ["site"]}
CRONJOB = {
    "name": "nightly-report",
    "task": "report",
    "schedule": "30 2 * * *",
    "extra_vars": {"site": "lon1", "verbose": True},
}
FIELDS = {"name", "owner", "task", "schedule", "disable", "extra_vars", "created_at", "updated_at"}


@pytest.fixture
def api_settings(api_settings: ApiSettings, migrated_postgres_url: str) -> ApiSettings:
    return api_settings.model_copy(update={"database_url": SecretStr(migrated_postgres_url)})


async def setup_tasks(api: ApiClient, headers: dict[str, str]) -> None:
    assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 200
    for name, schema in (("report", SCHEMA), ("other", None)):
        task = {"name": name, "runner": "python", "command": "true", "schema": schema}
        assert (await api.post("/api/v1/tasks", json=task, headers=headers)).status == 200


async def create(api: ApiClient, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/cronjobs", json={**CRONJOB, **changes}, headers=headers)
    assert response.status == 200, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def test_create_read_list_update_delete(api: ApiClient) -> None:
    root = await login(api)
    await setup_tasks(api, root)
    created = await create(api, root)
    assert set(created) == FIELDS
    assert {k: created[k] for k in CRONJOB} == CRONJOB
    assert created["owner"] == "root"
    assert created["disable"] is False
    url = "/api/v1/cronjobs/nightly-report"
    assert await (await api.get(url, headers=root)).json() == created
    listed = await api.get("/api/v1/cronjobs", headers=root)
    assert listed.headers["Content-Range"] == "1"
    assert [c["name"] for c in await listed.json()] == ["nightly-report"]
    changes = {"schedule": "*/5  *  * * 1-5", "disable": True, "extra_vars": {"site": "par1"}}
    updated = await (await api.patch(url, json=changes, headers=root)).json()
    assert updated["schedule"] == "*/5 * * * 1-5"
    assert updated["disable"] is True
    assert updated["extra_vars"] == {"site": "par1"}
    assert updated["updated_at"] > created["updated_at"]
    put = await api.put(url, json={**updated, "task": "other", "extra_vars": None}, headers=root)
    assert (await put.json())["task"] == "other"
    assert (await put.json())["extra_vars"] == {}
    assert (await api.get(f"{url}/schema", headers=root)).status == 200
    deleted = await api.delete(url, headers=root)
    assert await deleted.json() == {"msg": "cronjob deleted successfully", "id": "nightly-report"}
    assert (await api.get(url, headers=root)).status == 404
    assert await (await api.get("/api/v1/cronjobs", headers=root)).json() == []


async def test_the_schema_route_shows_the_tasks_schema(api: ApiClient) -> None:
    root = await login(api)
    await setup_tasks(api, root)
    await create(api, root)
    response = await api.get("/api/v1/cronjobs/nightly-report/schema", headers=root)
    assert await response.json() == SCHEMA


INVALID_CREATES: list[tuple[dict[str, Any], str]] = [
    ({"name": "Nightly_Report"}, "DNS-1123"),
    ({"name": None}, "DNS-1123"),
    ({"task": None}, "task is required"),
    ({"task": "ghost"}, "task 'ghost' does not exist"),
    ({"schedule": None}, "5-field cron"),
    ({"schedule": "* * * *"}, "5-field cron"),
    ({"schedule": "0 * * * * *"}, "5-field cron"),
    ({"schedule": "@daily"}, "5-field cron"),
    ({"schedule": "61 * * * *"}, "bad minute"),
    ({"schedule": "0 25 * * *"}, "bad hour"),
    ({"schedule": "0 0 * 13 *"}, "bad month"),
    ({"schedule": "*/0 * * * *"}, "bad minute"),
    ({"schedule": "0 0 30 2 *"}, "bad day-of-month"),
    ({"schedule": 5}, "5-field cron"),
    ({"extra_vars": ["site"]}, "extra_vars must be a JSON object"),
    ({"extra_vars": "site=lon1"}, "extra_vars must be a JSON object"),
    ({"extra_vars": {"verbose": True}}, "extra_vars: input does not match the task schema"),
    ({"extra_vars": {"site": 5}}, "extra_vars: input does not match the task schema"),
    ({"disable": "no"}, "disable must be a boolean"),
]


async def test_invalid_cronjobs_are_400(api: ApiClient) -> None:
    root = await login(api)
    await setup_tasks(api, root)
    for changes, message in INVALID_CREATES:
        response = await api.post("/api/v1/cronjobs", json={**CRONJOB, **changes}, headers=root)
        assert response.status == 400, changes
        assert message in (await response.json())["error"], changes
    async with api.app[SESSIONS]() as session:
        assert await session.get(CronJob, "nightly-report") is None


async def test_invalid_updates_are_400_and_change_nothing(api: ApiClient) -> None:
    root = await login(api)
    await setup_tasks(api, root)
    created = await create(api, root)
    url = "/api/v1/cronjobs/nightly-report"
    bodies: list[dict[str, Any]] = [
        {"schedule": "every night"},
        {"name": "renamed"},
        {"owner": "someone-else"},
        {"task": "ghost"},
        {"extra_vars": {}},  # the task's schema requires `site`
    ]
    for body in bodies:
        response = await api.patch(url, json=body, headers=root)
        assert response.status == 400, body
    assert await (await api.get(url, headers=root)).json() == created


async def test_duplicate_names_are_409(api: ApiClient) -> None:
    root = await login(api)
    await setup_tasks(api, root)
    await create(api, root)
    response = await api.post("/api/v1/cronjobs", json=CRONJOB, headers=root)
    assert response.status == 409
    assert "already exists" in (await response.json())["error"]


async def test_creating_needs_jobs_write_on_the_task(api: ApiClient) -> None:
    root = await login(api)
    await setup_tasks(api, root)
    nobody = await add_user(api, "nobody")
    reader = await add_user(api, "reader", ("jobs", ["report"], "read"))
    other = await add_user(api, "other", ("jobs", ["other"], "write"))
    runner = await add_user(api, "runner", ("jobs", ["report"], "write"))
    for headers in (nobody, reader, other):
        response = await api.post("/api/v1/cronjobs", json=CRONJOB, headers=headers)
        assert response.status == 403
    created = await create(api, runner)
    assert created["owner"] == "runner"


async def test_owners_manage_their_own_cronjobs_and_others_need_roles(api: ApiClient) -> None:
    root = await login(api)
    await setup_tasks(api, root)
    alice = await add_user(api, "alice", ("jobs", ["report"], "write"))
    await create(api, alice)
    await create(api, root, name="roots-own")
    nobody = await add_user(api, "nobody")
    reader = await add_user(api, "reader", ("cronjobs", ["nightly-report"], "read"))
    url = "/api/v1/cronjobs/nightly-report"
    # Alice, with no cronjobs role at all, sees and changes her own, and only hers.
    listed = await api.get("/api/v1/cronjobs", headers=alice)
    assert [c["name"] for c in await listed.json()] == ["nightly-report"]
    assert listed.headers["Content-Range"] == "1"
    assert (await api.get(url, headers=alice)).status == 200
    assert (await api.patch(url, json={"schedule": "0 3 * * *"}, headers=alice)).status == 200
    assert (await api.get("/api/v1/cronjobs/roots-own", headers=alice)).status == 403
    # Others need a role.
    assert await (await api.get("/api/v1/cronjobs", headers=nobody)).json() == []
    assert (await api.get(url, headers=nobody)).status == 403
    assert (await api.get(url, headers=reader)).status == 200
    assert [
        c["name"] for c in await (await api.get("/api/v1/cronjobs", headers=reader)).json()
    ] == ["nightly-report"]
    for method in ("PATCH", "DELETE"):
        denied = await api.request(method, url, json={"disable": True}, headers=reader)
        assert denied.status == 403
    assert len(await (await api.get("/api/v1/cronjobs", headers=root)).json()) == 2
    assert (await api.delete(url, headers=alice)).status == 200


async def test_a_missing_cronjob_is_403_to_whoever_could_not_read_it(api: ApiClient) -> None:
    root = await login(api)
    nobody = await add_user(api, "nobody")
    url = "/api/v1/cronjobs/never-created"
    assert (await api.get(url, headers=nobody)).status == 403
    assert (await api.get(url, headers=root)).status == 404
    assert (await api.delete(url, headers=root)).status == 404


async def test_cronjobs_write_alone_may_disable_but_not_redirect_a_cronjob(api: ApiClient) -> None:
    """Bob may manage Alice's cronjob but not run her task: whatever he changes would run as
    Alice, so he may only stop it."""
    root = await login(api)
    await setup_tasks(api, root)
    alice = await add_user(api, "alice", ("jobs", ["report", "other"], "write"))
    await create(api, alice)
    bob = await add_user(api, "bob", ("cronjobs", ["nightly-report"], "write"))
    url = "/api/v1/cronjobs/nightly-report"
    for body in (
        {"extra_vars": {"site": "attacker"}},
        {"task": "other"},
        {"schedule": "* * * * *"},
    ):
        response = await api.patch(url, json=body, headers=bob)
        assert response.status == 403, body
    assert (await api.patch(url, json={"disable": True}, headers=bob)).status == 200
    # Enabling it again would make it run as Alice: that needs jobs:write too.
    assert (await api.patch(url, json={"disable": False}, headers=bob)).status == 403
    assert (await api.patch(url, json={"disable": False}, headers=alice)).status == 200
    got = await (await api.get(url, headers=alice)).json()
    assert {k: got[k] for k in CRONJOB} == CRONJOB
    assert got["owner"] == "alice"
    assert (await api.delete(url, headers=bob)).status == 200


async def test_anonymous_callers_are_401(api: ApiClient) -> None:
    assert (await api.get("/api/v1/cronjobs")).status == 401
    assert (await api.post("/api/v1/cronjobs", json=CRONJOB)).status == 401
    assert (await api.get("/api/v1/cronjobs/x")).status == 401
