"""Hostile input is a 400 with a message, never a 500: JSON too deep or with a huge
integer, control characters in the URL (on PostgreSQL, which refuses NUL in text), and
numbers or dates out of the range the database and `datetime` can hold."""

from __future__ import annotations

import pytest
from aiohttp import ClientResponse
from pydantic import SecretStr

from kriten_api.settings import ApiSettings
from kriten_common.http import MAX_JSON_DEPTH
from tests.api.conftest import ApiClient, BuildApi, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"
RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
HUGE = "1" * 5000
JSON = {"Content-Type": "application/json"}


async def assert_400(response: ClientResponse) -> str:
    assert response.status == 400, await response.text()
    message = (await response.json())["error"]
    assert isinstance(message, str)
    assert message
    return message


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
        f'{{"username": {HUGE}, "password": "x"}}',
        '{"username": "root", "password": "root", "n": NaN}',
        '{"username": "root", "password": "root", "n": 1e999}',
    ],
    ids=["deep", "one-too-deep", "huge-int", "nan", "infinite"],
)
async def test_login_refuses_hostile_json(api: ApiClient, body: str) -> None:
    await assert_400(await api.post(f"{BASE}/login", data=body, headers=JSON))


async def test_authenticated_bodies_refuse_hostile_json(api: ApiClient) -> None:
    root = await login(api)
    for body in ("[" * 100_000, f'{{"name": "r", "image": {HUGE}}}'):
        response = await api.post(f"{BASE}/runners", data=body, headers={**root, **JSON})
        await assert_400(response)


async def test_json_as_deep_as_allowed_is_read(api: ApiClient) -> None:
    # Deep enough for any real body: refused for what it says, not for its depth.
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    message = await assert_400(await api.post(f"{BASE}/login", data=nested, headers=JSON))
    assert "deep" not in message


async def test_a_job_input_too_deep_for_the_tasks_schema_is_refused(api: ApiClient) -> None:
    root = await login(api)
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=root)).status == 200
    task = {"name": "t", "runner": "python", "command": "true", "schema": {"type": "object"}}
    assert (await api.post(f"{BASE}/tasks", json=task, headers=root)).status == 200
    for body in ("[" * 100_000, f'{{"n": {HUGE}}}'):
        await assert_400(await api.post(f"{BASE}/jobs/t", data=body, headers={**root, **JSON}))


async def test_a_timeout_beyond_the_database_integer_is_refused(api: ApiClient) -> None:
    root = await login(api)
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=root)).status == 200
    task = {"name": "t", "runner": "python", "command": "true", "timeout_seconds": 10**30}
    await assert_400(await api.post(f"{BASE}/tasks", json=task, headers=root))
    task["timeout_seconds"] = 2**31 - 1
    assert (await api.post(f"{BASE}/tasks", json=task, headers=root)).status == 200


@pytest.mark.parametrize("expires", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+01:00"])
async def test_an_api_token_expiry_out_of_datetime_range_is_refused(
    api: ApiClient, expires: str
) -> None:
    root = await login(api)
    response = await api.post(f"{BASE}/apitokens", json={"expires": expires}, headers=root)
    await assert_400(response)


@pytest.fixture
async def postgres_api(
    api_settings: ApiSettings,
    migrated_postgres_url: str,
    build_api: BuildApi,
) -> ApiClient:
    settings = api_settings.model_copy(update={"database_url": SecretStr(migrated_postgres_url)})
    return await build_api(settings)


@pytest.mark.parametrize(
    "path",
    [
        "/jobs?task=%00",
        "/jobs?owner=a%00b",
        "/users?limit=1&x%00=1",
        "/tasks/a%00b",
        "/jobs/a%01b",
        "/audit_logs?max=%0a5",
    ],
)
async def test_control_characters_in_the_url_are_refused_on_postgresql(
    postgres_api: ApiClient, path: str
) -> None:
    root = await login(postgres_api)
    await assert_400(await postgres_api.get(f"{BASE}{path}", headers=root))


async def test_a_nul_in_a_json_string_is_refused_on_postgresql(postgres_api: ApiClient) -> None:
    # The body this time: a NUL in a JSON string would reach the username query.
    body = {"username": "ro\u0000ot", "password": "root"}
    await assert_400(await postgres_api.post(f"{BASE}/login", json=body))
    root = await login(postgres_api)
    runner = {**RUNNER, "branch": "ma\u0000in"}
    await assert_400(await postgres_api.post(f"{BASE}/runners", json=runner, headers=root))


async def test_a_nul_byte_in_a_job_input_is_refused_on_postgresql(postgres_api: ApiClient) -> None:
    root = await login(postgres_api)
    assert (await postgres_api.post(f"{BASE}/runners", json=RUNNER, headers=root)).status == 200
    task = {"name": "t", "runner": "python", "command": "true"}
    assert (await postgres_api.post(f"{BASE}/tasks", json=task, headers=root)).status == 200
    response = await postgres_api.post(f"{BASE}/jobs/t", data=b"a\x00b", headers=root)
    await assert_400(response)
