"""Task schemas through the api: no fetches for references, no backtracking for patterns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from kriten_api.keys import SESSIONS
from kriten_common.db.models import Task
from tests.api.conftest import ApiClient, create, login

pytestmark = pytest.mark.integration

RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
TASK = {"name": "typed", "runner": "python", "command": "true"}
JOB = "/api/v1/jobs/typed"
CATASTROPHIC = "^(a+)+$"


class Target:
    """A local HTTP server that would hand out a schema, and counts who asked."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.requests: list[str] = []

    def url(self, path: str = "/x") -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def target(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Target:
    requests: list[str] = []

    async def schema(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response({"type": "integer", "description": "FETCHED-CONTENT"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", schema)
    found = Target(await aiohttp_server(app))
    found.requests = requests
    return found


async def error_of(response: Any, status: int = 400) -> str:
    assert response.status == status, await response.text()
    message: str = (await response.json())["error"]
    return message


async def setup(api: ApiClient, **task: Any) -> dict[str, str]:
    headers = await login(api)
    await create(api, headers, "runners", **RUNNER)
    await create(api, headers, "tasks", **TASK, **task)
    return headers


async def store_schema_directly(api: ApiClient, schema: dict[str, Any]) -> None:
    """As a schema saved before the checks, or written to the database by hand."""
    async with api.app[SESSIONS]() as session:
        task = await session.get(Task, "typed")
        assert task is not None
        task.schema_ = schema
        session.add(task)
        await session.commit()


async def test_remote_refs_are_refused_on_every_save_path_without_a_request(
    api: ApiClient, target: Target
) -> None:
    headers = await setup(api)
    url = target.url()
    schema = {"type": "object", "properties": {"a": {"$ref": url}}}
    saves = [
        ("POST", "/api/v1/tasks", {**TASK, "name": "other", "schema": schema}),
        ("PUT", "/api/v1/tasks", {**TASK, "name": "other", "schema": schema}),
        ("PUT", "/api/v1/tasks/typed", {"schema": schema}),
        ("PATCH", "/api/v1/tasks/typed", {"schema": schema}),
        ("POST", "/api/v1/tasks/typed/schema", schema),
        ("PUT", "/api/v1/tasks/typed/schema", schema),
    ]
    for method, path, body in saves:
        response = await api.request(method, path, json=body, headers=headers)
        message = await error_of(response)
        assert f"$ref {url!r} at 'properties/a' is not allowed" in message, (method, path)
    assert target.requests == []
    task = await (await api.get("/api/v1/tasks/typed", headers=headers)).json()
    assert task["schema"] is None
    # The control: the target does answer, and counts.
    async with ClientSession() as session, session.get(url) as answer:
        assert answer.status == 200
    assert target.requests == ["/x"]


async def test_a_file_ref_is_refused_without_the_file_in_the_message(api: ApiClient) -> None:
    headers = await setup(api)
    schema = {"properties": {"a": {"$ref": "file:///etc/passwd"}}}
    response = await api.post("/api/v1/tasks/typed/schema", json=schema, headers=headers)
    message = await error_of(response)
    assert "'file:///etc/passwd'" in message
    assert "root:" not in message


@pytest.mark.parametrize("kind", ["http", "file"])
async def test_a_stored_remote_ref_makes_the_job_request_a_400_without_a_fetch(
    api: ApiClient, target: Target, kind: str
) -> None:
    headers = await setup(api)
    ref = target.url() if kind == "http" else "file:///etc/passwd"
    await store_schema_directly(api, {"properties": {"a": {"$ref": ref}}})
    message = await error_of(await api.post(JOB, json={"a": "x"}, headers=headers))
    assert message.startswith("task schema cannot be used: ")
    assert repr(ref) in message
    assert "FETCHED-CONTENT" not in message
    assert "root:" not in message
    assert target.requests == []


async def test_a_stored_schema_that_cannot_be_used_is_a_400_not_a_500(api: ApiClient) -> None:
    headers = await setup(api)
    for schema in (
        {"properties": {"a": {"$ref": "#/$defs/missing"}}},
        {"properties": {"a": {"pattern": "(?=a)"}}},
        {"properties": {"a": {"type": "no-such-type"}}},
    ):
        await store_schema_directly(api, schema)
        message = await error_of(await api.post(JOB, json={"a": "x"}, headers=headers))
        assert message.startswith("task schema cannot be used: ")


async def test_local_refs_keep_working(api: ApiClient) -> None:
    schema = {
        "$id": "https://example.org/typed.schema.json",
        "$defs": {"site": {"type": "string", "minLength": 2}},
        "type": "object",
        "required": ["site"],
        "properties": {"site": {"$ref": "#/$defs/site"}},
    }
    headers = await setup(api, schema=schema)
    message = await error_of(await api.post(JOB, json={"site": "x"}, headers=headers))
    assert message == "input does not match the task schema at 'site': 'x' is too short"
    assert (await api.post(JOB, json={"site": "ab"}, headers=headers)).status == 200


async def test_patterns_re2_cannot_run_are_refused_naming_the_field(api: ApiClient) -> None:
    headers = await setup(api)
    schema = {"properties": {"name": {"pattern": r"^(\w)\1$"}}}
    message = await error_of(
        await api.put("/api/v1/tasks/typed/schema", json=schema, headers=headers)
    )
    assert "at 'properties/name/pattern'" in message
    assert "RE2" in message


async def test_a_catastrophic_pattern_answers_promptly(api: ApiClient) -> None:
    """With Python's `re` the first request below would take 2^40 steps (hours)."""
    schema = {"type": "object", "properties": {"name": {"pattern": CATASTROPHIC}}}
    headers = await setup(api, schema=schema)
    message = await error_of(await api.post(JOB, json={"name": "a" * 40 + "!"}, headers=headers))
    assert "does not match" in message
    assert (await api.post(JOB, json={"name": "a" * 40}, headers=headers)).status == 200
