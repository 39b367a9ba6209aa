"""The authorization matrix: every api route, for every kind of caller, answers the
expected status, and list routes answer exactly the items the caller may read.

The matrix itself is data, in `tests/api/matrix_data.py`; a route the app serves without
an entry there (or an entry for a route that is gone) fails
`test_every_route_has_a_matrix_entry`. Each principal walks every route in an app of its
own, on a world built through the API (the jobs and the delivery, which the collector
writes, go straight into the database).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from sqlmodel import col, select

from kriten_api.app import create_app
from kriten_api.keys import SESSIONS
from kriten_api.settings import ApiSettings
from kriten_common.db.models import AuditLog, Job, User, WebhookDelivery
from tests.api.conftest import ApiClient, login
from tests.api.matrix_data import (
    ADMIN,
    ALL,
    ALL_ITEMS,
    ANONYMOUS,
    BASE,
    DEFAULT_RESOURCE,
    MATRIX,
    NAMED,
    NO_ROLES,
    OWNER,
    PRINCIPALS,
    READ_ONE,
    REQUIRED_PRINCIPALS,
    WRITE_ONE,
    Case,
    Listed,
)

pytestmark = pytest.mark.integration

NOT_IN_MATRIX = ("/healthz", "/readyz", "/metrics")
RUNNER = {"image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
LIMITED = (READ_ONE, WRITE_ONE, OWNER)


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    # Test deliveries go to an ingress that is not there (answered 503 once allowed).
    return api_settings.model_copy(update={"ingress_url": "http://127.0.0.1:9"})


@dataclass
class World:
    """World keys (see matrix_data) → values, and each principal's headers by resource."""

    keys: dict[str, str] = field(default_factory=dict)
    headers: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        """`"@key"` strings in a body become the world's value for `key`."""
        if isinstance(value, str) and value.startswith("@"):
            return self.keys[value[1:]]
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def path(self, template: str, params: dict[str, str]) -> str:
        return template.format(**{name: self.keys[key] for name, key in params.items()})

    def auth(self, principal: str, resource: str | None) -> dict[str, str]:
        if principal == ANONYMOUS:
            return {}
        if principal in (READ_ONE, WRITE_ONE, ALL_ITEMS):
            return self.headers[(principal, resource or DEFAULT_RESOURCE)]
        return self.headers[(principal, "")]


async def ok(response: Any) -> Any:
    assert 200 <= response.status < 300, f"{response.url}: {await response.text()}"
    return await response.json()


async def post(api: ApiClient, path: str, headers: dict[str, str], body: Any) -> Any:
    answer = await ok(await api.post(BASE + path, json=body, headers=headers))
    api.session.cookie_jar.clear()
    return answer


async def session_of(api: ApiClient, username: str, password: str) -> dict[str, str]:
    headers = await login(api, username, password)
    api.session.cookie_jar.clear()  # every request must carry only its own credentials
    return headers


async def new_user(api: ApiClient, root: dict[str, str], name: str) -> str:
    created = await post(api, "/users", root, {"username": name, "password": f"pw-{name}"})
    return str(created["id"])


async def grant(
    api: ApiClient, root: dict[str, str], name: str, resource: str, ids: list[str], access: str
) -> None:
    role = {"name": name, "resource": resource, "resource_ids": ids, "access": access}
    await post(api, "/roles", root, role)
    binding = {"name": name, "role_name": name, "subject_kind": "users", "subject_name": name}
    await post(api, "/role_bindings", root, binding)


async def build_world(api: ApiClient, principal: str) -> World:
    world = World()
    keys = world.keys
    root = await session_of(api, "root", "root")
    for runner in ("python", "base"):
        await post(api, "/runners", root, {"name": runner, **RUNNER})
    for task in ("solo", "hello-kriten", "other-task", "hook-task"):
        await post(api, "/tasks", root, {"name": task, "runner": "base", "command": "true"})
    keys.update(runner="python", runner_other="base", task="solo", task_other="hello-kriten")
    keys["nobody"] = await new_user(api, root, "nobody")
    olive = await new_user(api, root, "olive")
    keys.update(user=await new_user(api, root, "target"), user_name="target")
    await post(api, "/groups", root, {"name": "team", "users": [keys["user"]]})
    await post(api, "/groups", root, {"name": "crew"})
    keys.update(group="team", group_other="crew")
    for name, resource, ids in (
        ("m-role", "roles", ["m-role"]),
        ("m-bind-role", "role_bindings", ["m-binding"]),
    ):
        body = {"name": name, "resource": resource, "resource_ids": ids, "access": "read"}
        await post(api, "/roles", root, body)
    binding = {"name": "m-binding", "role_name": "m-bind-role", "subject_name": "crew"}
    await post(api, "/role_bindings", root, binding)
    keys.update(role="m-role", role_other="Admin", binding="m-binding")
    keys["binding_other"] = "RootAdminAccess"
    # The owner runs hook-task (so that its webhook's deliveries can run), nothing else.
    await grant(api, root, "olive", "jobs", ["hook-task"], "write")
    as_olive = await session_of(api, "olive", "pw-olive")
    keys["token"] = (await post(api, "/apitokens", as_olive, {"description": "t1"}))["id"]
    keys["token_alias"] = (await post(api, "/apitokens", as_olive, {"description": "t2"}))["id"]
    keys["token_other"] = (await post(api, "/apitokens", root, {"description": "root"}))["id"]
    keys["webhook"] = (await post(api, "/webhooks", as_olive, {"task": "hook-task"}))["id"]
    keys["webhook_other"] = (await post(api, "/webhooks", root, {"task": "hello-kriten"}))["id"]
    cron = {"schedule": "0 3 * * *"}
    await post(api, "/cronjobs", as_olive, {"name": "nightly", "task": "hook-task", **cron})
    await post(api, "/cronjobs", root, {"name": "weekly", "task": "hello-kriten", **cron})
    keys.update(cronjob="nightly", cronjob_other="weekly", job_task="hello-kriten")
    await _collector_rows(api, keys, olive)
    await _principals(api, root, world, principal)
    return world


async def _collector_rows(api: ApiClient, keys: dict[str, str], olive: str) -> None:
    """What the collector would have written: two running jobs and one delivery."""
    keys.update(job="hello-kriten-olive1", job_other="other-task-root1", delivery="d-1")
    async with api.app[SESSIONS]() as session:
        root = (await session.exec(select(User).where(User.username == "root"))).one()
        keys["root"] = root.id
        for job_id, task, owner, owner_id in (
            (keys["job"], "hello-kriten", "olive", olive),
            (keys["job_other"], "other-task", "root", root.id),
        ):
            job = Job(id=job_id, task=task, owner=owner, owner_id=owner_id, status="running")
            session.add(job)
        session.add(
            WebhookDelivery(
                id=keys["delivery"],
                webhook_id=keys["webhook"],
                received_at=datetime.now(UTC),
                scheme="standard",
                outcome="accepted",
                body='{"hello": "kriten"}',
                size=19,
            )
        )
        await session.commit()
        audit = (await session.exec(select(AuditLog.id).order_by(col(AuditLog.id)))).all()
    keys.update(audit=audit[0], audit2=audit[1])


async def _principals(api: ApiClient, root: dict[str, str], world: World, principal: str) -> None:
    """The users (and their roles) who act as `principal`, logged in."""
    if principal == NO_ROLES:
        world.headers[(principal, "")] = await session_of(api, "nobody", "pw-nobody")
    elif principal == OWNER:
        world.headers[(principal, "")] = await session_of(api, "olive", "pw-olive")
    elif principal == ADMIN:
        await new_user(api, root, "boss")
        await post(api, "/groups/Admin/users", root, [{"name": "boss", "provider": "local"}])
        world.headers[(principal, "")] = await session_of(api, "boss", "pw-boss")
    elif principal != ANONYMOUS:
        access = "read" if principal == READ_ONE else "write"
        for resource, named in NAMED.items():
            name = f"{principal}-{resource}"
            await new_user(api, root, name)
            ids = ["*"] if principal == ALL_ITEMS else [world.keys[k] for k in named]
            await grant(api, root, name, resource, ids, access)
            world.headers[(principal, resource)] = await session_of(api, name, f"pw-{name}")


def walk_order() -> list[tuple[str, str]]:
    """The list routes first; the rest (deletes and /logout last) as the matrix orders them."""
    keys = list(MATRIX)
    lists = [k for k in keys if k[0] == "GET" and "{" not in k[1]]
    return lists + [k for k in keys if k not in lists]


async def expected_items(api: ApiClient, world: World, listed: Listed, principal: str) -> set[str]:
    wanted = listed.items[principal]
    if wanted == ALL:
        assert listed.model is not None
        async with api.app[SESSIONS]() as session:
            column = getattr(listed.model, listed.column)
            return {str(v) for v in (await session.exec(select(column))).all()}
    return {world.keys[key] for key in wanted}


async def check(
    api: ApiClient,
    world: World,
    principal: str,
    route: tuple[str, str],
    case: Case,
    params: dict[str, str],
    expected: int,
) -> list[str]:
    """One request; the problems found, if any."""
    method, template = route
    path = world.path(template, params)
    url = f"{path}?{case.query}" if case.query else path
    body = world.resolve(case.body)
    headers = world.auth(principal, case.resource)
    response = await api.request(method, url, json=body, headers=headers)
    text = await response.text()
    api.session.cookie_jar.clear()
    where = f"{principal}: {method} {template} ({path})"
    if response.status != expected:
        return [f"{where}: expected {expected}, got {response.status} {text[:200]}"]
    if case.listed is None or response.status != 200 or params != dict(case.params):
        return []
    if principal not in case.listed.items:
        return [f"{where}: the matrix lists no items for this principal"]
    got = sorted(str(item[case.listed.field]) for item in json.loads(text))
    want = sorted(await expected_items(api, world, case.listed, principal))
    problems = []
    if got != want:
        problems.append(f"{where}: listed {got}, expected exactly {want}")
    if response.headers.get("Content-Range") != str(len(want)):
        problems.append(f"{where}: Content-Range {response.headers.get('Content-Range')}")
    return problems


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.broker  # the matrix covers the dead-letter routes, which read the broker
async def test_authorization_matrix(api: ApiClient, principal: str) -> None:
    world = await build_world(api, principal)
    problems: list[str] = []
    walked = 0
    for route in walk_order():
        case = MATRIX[route]
        expected = case.expect.get(principal)
        if expected is None:
            continue
        walked += 1
        params = dict(case.params)
        problems += await check(api, world, principal, route, case, params, expected)
        # Another item of the resource is out of reach for the limited principals.
        if principal in LIMITED and case.other is not None and route[0] == "GET":
            other = dict(case.other)
            problems += await check(api, world, principal, route, case, other, 403)
    assert walked > 0
    assert not problems, "\n".join(problems)


def served_routes() -> set[tuple[str, str]]:
    app = create_app(ApiSettings(database_url=SecretStr("sqlite+aiosqlite:///unused.db")))
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path in NOT_IN_MATRIX:
            continue
        if "openapi" in path or path.startswith(f"{BASE}/docs"):
            continue  # the OpenAPI document and its UI
        if path.startswith("/ui/"):
            continue  # the web console: it reads through the routes here (tests/ui)
        routes.add((route.method, path))
    return routes


def test_every_route_has_a_matrix_entry() -> None:
    served = served_routes()
    missing = sorted(served - MATRIX.keys())
    stale = sorted(MATRIX.keys() - served)
    assert not missing, f"routes without a matrix entry: {missing}"
    assert not stale, f"matrix entries without a route: {stale}"


def test_every_matrix_entry_covers_every_principal() -> None:
    incomplete = {
        route: sorted(REQUIRED_PRINCIPALS - case.expect.keys())
        for route, case in MATRIX.items()
        if not case.expect.keys() >= REQUIRED_PRINCIPALS
    }
    assert not incomplete, f"matrix entries missing principals: {incomplete}"
    for route, case in MATRIX.items():
        if case.listed is not None:
            allowed = {p for p, status in case.expect.items() if status == 200}
            assert allowed <= case.listed.items.keys(), f"{route}: list items missing"
