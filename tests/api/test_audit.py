"""The audit log: what the middleware records (on PostgreSQL), and `/audit_logs`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlmodel import col, select

from kriten_api.audit_events import AuditedRoute, classify
from kriten_api.keys import AUDITED, SESSIONS
from kriten_api.settings import ApiSettings
from kriten_common.db.models import AuditLog
from tests.api.conftest import ApiClient, login

BASE = "/api/v1"
RUNNER = {"name": "py", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}


@pytest.mark.parametrize(
    ("method", "template", "expected"),
    [
        ("POST", "/api/v1/login", AuditedRoute("login", "login", None)),
        ("GET", "/api/v1/login", None),
        ("POST", "/api/v1/logout", None),
        ("GET", "/api/v1/refresh", None),
        ("GET", "/api/v1/runners", None),
        ("GET", "/api/v1/runners/{name}", None),
        ("POST", "/api/v1/runners", AuditedRoute("create", "runners", None)),
        ("PUT", "/api/v1/runners", AuditedRoute("create", "runners", None)),
        ("PATCH", "/api/v1/runners/{name}", AuditedRoute("update", "runners", "{name}")),
        ("PUT", "/api/v1/runners/{name}", AuditedRoute("update", "runners", "{name}")),
        ("DELETE", "/api/v1/runners/{name}", AuditedRoute("delete", "runners", "{name}")),
        ("POST", "/api/v1/runners/{name}/secret", AuditedRoute("update", "runners", "{name}")),
        ("DELETE", "/api/v1/tasks/{name}/schema", AuditedRoute("update", "tasks", "{name}")),
        ("POST", "/api/v1/groups/{id}/users", AuditedRoute("update", "groups", "{id}")),
        ("POST", "/api/v1/jobs/{task}", AuditedRoute("create", "jobs", "{task}")),
        ("DELETE", "/api/v1/jobs/{id}", AuditedRoute("delete", "jobs", "{id}")),
        ("POST", "/api/v1/webhooks/{id}/rotate", AuditedRoute("update", "webhooks", "{id}")),
        ("POST", "/api/v1/api_tokens", AuditedRoute("create", "apitokens", None)),
        ("POST", "/healthz", None),
        ("POST", "/api/v2/runners", None),
        ("POST", "/api/v1/", None),
    ],
)
def test_routes_are_classified_from_their_templates(
    method: str, template: str, expected: AuditedRoute | None
) -> None:
    assert classify(method, template) == expected


def test_the_target_is_the_value_of_the_templates_parameter() -> None:
    assert AuditedRoute("update", "runners", "{name}").target_in({"name": "py"}) == "py"
    assert AuditedRoute("update", "webhooks", "all").target_in({}) == "all"
    assert AuditedRoute("create", "runners", None).target_in({"name": "py"}) is None


async def test_every_change_route_of_the_api_is_audited(api: ApiClient) -> None:
    audited = api.app[AUDITED]
    for route in api.app.router.routes():
        template = route.resource.canonical if route.resource else ""
        is_change = route.method in ("POST", "PUT", "PATCH", "DELETE")
        expected = is_change and template.startswith(BASE + "/")
        expected = expected and not template.endswith(("/logout", "/refresh"))
        assert ((route.method, template) in audited) == expected, (route.method, template)


@pytest.fixture
def api_settings(api_settings: ApiSettings, migrated_postgres_url: str) -> ApiSettings:
    return api_settings.model_copy(update={"database_url": SecretStr(migrated_postgres_url)})


async def rows(api: ApiClient) -> list[AuditLog]:
    """Every audit row, oldest first, straight from the database."""
    async with api.app[SESSIONS]() as session:
        query = select(AuditLog).order_by(col(AuditLog.created_at))
        return list((await session.exec(query)).all())


def summary(row: AuditLog) -> tuple[str, str, str, str | None, str]:
    return (row.username, row.event_type, row.category, row.target, row.status)


@pytest.mark.integration
async def test_logins_are_recorded_without_the_password(api: ApiClient) -> None:
    await login(api)
    for body in (
        {"username": "root", "password": "Sesame-Wrong-1", "provider": "local"},
        {"username": "nobody", "password": "Sesame-Wrong-2"},
        {"password": "Sesame-Wrong-3"},
    ):
        assert (await api.post(f"{BASE}/login", json=body)).status in (400, 401)
    recorded = await rows(api)
    assert [summary(r) for r in recorded] == [
        ("root", "login", "login", None, "success"),
        ("root", "login", "login", None, "failure"),
        ("nobody", "login", "login", None, "failure"),
        ("anonymous", "login", "login", None, "failure"),
    ]
    assert [r.provider for r in recorded[:3]] == ["local"] * 3
    dumped = json.dumps([r.model_dump(mode="json") for r in recorded])
    assert "nobody" in dumped  # the check below reads the rows' text
    assert "Sesame" not in dumped


@pytest.mark.integration
async def test_changes_are_recorded_with_who_what_and_outcome(api: ApiClient) -> None:
    headers = await login(api)
    root_id = (await (await api.get(f"{BASE}/users", headers=headers)).json())[0]["id"]
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=headers)).status == 200
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=headers)).status == 409
    patch = {"branch": "dev"}
    assert (await api.patch(f"{BASE}/runners/py", json=patch, headers=headers)).status == 200
    user = {"username": "vera", "password": "Secret-Of-Vera"}
    created = await (await api.post(f"{BASE}/users", json=user, headers=headers)).json()
    assert (await api.delete(f"{BASE}/runners/py", headers=headers)).status == 200
    assert (await api.get(f"{BASE}/runners", headers=headers)).status == 200
    changes = [r for r in await rows(api) if r.event_type != "login"]
    assert [summary(r) for r in changes] == [
        ("root", "create", "runners", "py", "success"),
        ("root", "create", "runners", None, "failure"),
        ("root", "update", "runners", "py", "success"),
        ("root", "create", "users", created["id"], "success"),
        ("root", "delete", "runners", "py", "success"),
    ]
    assert {(r.user_id, r.provider) for r in changes} == {(root_id, "local")}
    assert changes[1].detail == "POST /api/v1/runners 409"
    assert "Secret-Of-Vera" not in json.dumps([r.model_dump(mode="json") for r in changes])


@pytest.mark.integration
async def test_refused_and_anonymous_attempts_are_recorded(api: ApiClient) -> None:
    root = await login(api)
    user = {"username": "walt", "password": "pw-walt"}
    assert (await api.post(f"{BASE}/users", json=user, headers=root)).status == 200
    walt = await login(api, "walt", "pw-walt")
    api.session.cookie_jar.clear()
    assert (await api.post(f"{BASE}/runners", json=RUNNER)).status == 401
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=walt)).status == 403
    bad_json = {"Content-Type": "application/json", **walt}
    assert (await api.patch(f"{BASE}/roles/x", data=b"{", headers=bad_json)).status == 400
    # No route, no record: unmatched paths cannot be used to fill the log.
    assert (await api.post(f"{BASE}/no-such-thing", json={}, headers=walt)).status == 404
    attempts = [r for r in await rows(api) if r.event_type != "login"][1:]
    assert [summary(r) for r in attempts] == [
        ("anonymous", "create", "runners", None, "failure"),
        ("walt", "create", "runners", None, "failure"),
        ("walt", "update", "roles", "x", "failure"),
    ]
    assert attempts[0].user_id is None


@pytest.mark.integration
async def test_job_creation_is_recorded_as_a_create(api: ApiClient) -> None:
    headers = await login(api)
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=headers)).status == 200
    task = {"name": "hello", "runner": "py", "command": "echo hi"}
    assert (await api.post(f"{BASE}/tasks", json=task, headers=headers)).status == 200
    started = await api.post(f"{BASE}/jobs/hello", data=b"{}", headers=headers)
    assert started.status == 200
    refused = await api.post(f"{BASE}/jobs/ghost", data=b"", headers=headers)
    assert refused.status == 404
    jobs = [summary(r) for r in await rows(api) if r.category == "jobs"]
    assert jobs == [
        ("root", "create", "jobs", "hello", "success"),
        ("root", "create", "jobs", "ghost", "failure"),
    ]


@pytest.mark.integration
async def test_reading_the_log_newest_first(api: ApiClient) -> None:
    headers = await login(api)
    for name in ("a", "b", "c"):
        body = {**RUNNER, "name": name}
        assert (await api.post(f"{BASE}/runners", json=body, headers=headers)).status == 200
    listed = await api.get(f"{BASE}/audit_logs", headers=headers)
    assert listed.status == 200
    assert listed.headers["Content-Range"] == "4"
    items = await listed.json()
    assert [i["event_target"] for i in items] == ["c", "b", "a", None]
    assert set(items[0]) == {
        "id",
        "user_id",
        "username",
        "provider",
        "event_type",
        "event_category",
        "event_target",
        "status",
        "detail",
        "created_at",
    }
    assert items[0]["event_category"] == "runners"
    assert items[0]["created_at"].endswith("+00:00")
    newest = await api.get(f"{BASE}/audit_logs?max=2", headers=headers)
    assert newest.headers["Content-Range"] == "4"
    assert [i["event_target"] for i in await newest.json()] == ["c", "b"]
    skipped = await (await api.get(f"{BASE}/audit_logs?max=1&offset=1", headers=headers)).json()
    assert [i["event_target"] for i in skipped] == ["b"]
    one = await api.get(f"{BASE}/audit_logs/{items[1]['id']}", headers=headers)
    assert await one.json() == items[1]
    assert (await api.get(f"{BASE}/audit_logs/nope", headers=headers)).status == 404
    assert (await api.get(f"{BASE}/audit_logs?max=x", headers=headers)).status == 400
    # Reading the log is not itself recorded.
    assert (await api.get(f"{BASE}/audit_logs", headers=headers)).headers["Content-Range"] == "4"


@pytest.mark.integration
async def test_reading_the_log_needs_audit_read(api: ApiClient) -> None:
    root = await login(api)
    for name in ("xena", "yuri"):
        body = {"username": name, "password": f"pw-{name}"}
        assert (await api.post(f"{BASE}/users", json=body, headers=root)).status == 200
    role = {"name": "auditor", "resource": "audit", "resource_ids": ["*"], "access": "read"}
    assert (await api.post(f"{BASE}/roles", json=role, headers=root)).status == 200
    binding = {
        "name": "xena-audits",
        "role_name": "auditor",
        "subject_kind": "users",
        "subject_name": "xena",
    }
    assert (await api.post(f"{BASE}/role_bindings", json=binding, headers=root)).status == 200
    xena = await login(api, "xena", "pw-xena")
    yuri = await login(api, "yuri", "pw-yuri")
    api.session.cookie_jar.clear()
    some: list[dict[str, Any]] = await (await api.get(f"{BASE}/audit_logs", headers=xena)).json()
    assert len(some) == 7
    nothing = await api.get(f"{BASE}/audit_logs", headers=yuri)
    assert await nothing.json() == []
    assert nothing.headers["Content-Range"] == "0"
    assert (await api.get(f"{BASE}/audit_logs/{some[0]['id']}", headers=yuri)).status == 403
    assert (await api.get(f"{BASE}/audit_logs/{some[0]['id']}", headers=xena)).status == 200
    assert (await api.get(f"{BASE}/audit_logs")).status == 401


async def rename(api: ApiClient, table: str, to: str) -> None:
    async with api.app[SESSIONS]() as session:
        connection = await session.connection()
        await connection.execute(text(f"ALTER TABLE {table} RENAME TO {to}"))
        await session.commit()


@pytest.mark.integration
async def test_a_failing_audit_write_does_not_fail_the_request(api: ApiClient) -> None:
    headers = await login(api)
    await rename(api, "audit_logs", "audit_logs_away")
    response = await api.post(f"{BASE}/runners", json=RUNNER, headers=headers)
    assert response.status == 200
    assert (await response.json())["name"] == "py"
    assert (await api.get(f"{BASE}/runners/py", headers=headers)).status == 200
    refused = await api.post(f"{BASE}/runners", json=RUNNER, headers=headers)
    assert refused.status == 409
    await rename(api, "audit_logs_away", "audit_logs")
    assert [summary(r) for r in await rows(api)] == [("root", "login", "login", None, "success")]
