"""Clients written against Go Kriten work unchanged: the requests of the kriten-netbox
plugin (PyPI 0.1.4), as it sends them, and the other places where a gin client would
see a difference (docs/api.md, "Compatibility with Kriten clients")."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from sqlmodel import select

from kriten_api.keys import SESSIONS
from kriten_api.trailing_slash import trailing_slash_middleware
from kriten_common.amqp import Topology
from kriten_common.db.models import Job, User
from kriten_common.paths import RUN_PREFIX
from kriten_common.webhook_signing import sign_standard
from kriten_ingress.app import create_app as create_ingress_app
from kriten_ingress.settings import IngressSettings
from tests.api.conftest import ApiClient, create, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"


async def api_token(api: ApiClient) -> str:
    """A new API token of root's: the plugin authenticates with a `Token` header."""
    created = await create(api, await login(api), "api_tokens", description="netbox")
    api.session.cookie_jar.clear()
    key: str = created["key"]
    return key


# The plugin's own format for Go's time.UnixDate.
UNIX_DATE = "%a %b %d %H:%M:%S %Z %Y"
STARTED = datetime(2025, 6, 1, 9, 5, 0, tzinfo=UTC)
ENDED = datetime(2025, 6, 1, 9, 5, 7, tzinfo=UTC)


async def store_job(api: ApiClient, job_id: str, task: str, *, finished: bool = True) -> None:
    """Stores the job as the executors and the collector would: queued, or finished."""
    async with api.app[SESSIONS]() as session:
        root = (await session.exec(select(User).where(User.username == "root"))).one()
        job = Job(id=job_id, task=task, owner="root", owner_id=root.id)
        if finished:
            job.status, job.exit_code, job.stdout = "succeeded", 0, "done\n"
            job.start_time, job.completion_time = STARTED, ENDED
        session.add(job)
        await session.commit()


def plugin_headers(token: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Token": token}


async def send(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One request with `requests`, as the plugin makes it (redirects followed)."""
    return await asyncio.to_thread(requests.request, method, url, timeout=10, **kwargs)


async def test_the_netbox_plugin_creates_updates_and_runs_as_against_kriten(
    api: ApiClient,
) -> None:
    token = await api_token(api)
    headers = plugin_headers(token)
    runners_url = str(api.make_url(f"{BASE}/runners/"))
    # KritenRunner.save: GET <url>/runners/<name> (404), then POST <url>/runners/ with
    # lowercase `giturl` and `data=json.dumps(...)`.
    runner = {
        "name": "netbox-runner",
        "branch": "main",
        "image": "python:3.11-slim",
        "giturl": "https://example.org/repo.git",
        "token": None,
        "secret": {},
    }
    assert (await send("GET", runners_url + "netbox-runner", headers=headers)).status_code == 404
    created = await send("POST", runners_url, headers=headers, data=json.dumps(runner))
    assert created.status_code == 200, created.text
    assert [hop.status_code for hop in created.history] == [307]
    assert created.json()["gitURL"] == "https://example.org/repo.git"

    # Saved again in NetBox: GET (200) then PATCH <url>/runners/<name> with the same body.
    runner["giturl"] = "https://example.org/moved.git"
    patched = await send(
        "PATCH", runners_url + "netbox-runner", headers=headers, data=json.dumps(runner)
    )
    assert patched.status_code == 200, patched.text
    stored = await send("GET", runners_url + "netbox-runner", headers=headers)
    assert stored.json()["gitURL"] == "https://example.org/moved.git"

    tasks_url = str(api.make_url(f"{BASE}/tasks/"))
    task = {"name": "netbox-task", "runner": "netbox-runner", "command": "true", "schema": {}}
    created_task = await send("POST", tasks_url, headers=headers, data=json.dumps(task))
    assert created_task.status_code == 200, created_task.text
    assert created_task.json()["runner"] == "netbox-runner"

    # KritenJob.launch_job, then KritenJobView.get reading Kriten 0.4's field names.
    launch_url = str(api.make_url(f"{BASE}/jobs/netbox-task"))
    launched = await send("POST", launch_url, headers=headers, data=json.dumps({}))
    assert launched.status_code == 200, launched.text
    job_id = launched.json()["id"]
    await store_job(api, job_id, "netbox-task")
    job = await send("GET", str(api.make_url(f"{BASE}/jobs/{job_id}")), headers=headers)
    details = job.json()
    assert datetime.strptime(details["startTime"], UNIX_DATE) == STARTED.replace(tzinfo=None)
    assert datetime.strptime(details["completionTime"], UNIX_DATE) == ENDED.replace(tzinfo=None)
    assert (details["failed"], details["completed"], details["stdout"]) == (0, 1, "done\n")


async def test_job_answers_carry_both_kriten_names_for_their_times(api: ApiClient) -> None:
    headers = await login(api)
    await create(api, headers, "runners", name="r", gitURL="https://example.org/r.git")
    await create(api, headers, "tasks", name="t", runner="r", command="true")
    job_id = (await create(api, headers, "jobs/t"))["id"]
    await store_job(api, job_id, "t")
    answer = await (await api.get(f"{BASE}/jobs/{job_id}", headers=headers)).json()
    listed = await (await api.get(f"{BASE}/jobs", headers=headers)).json()
    for job in (answer, listed[0]):
        assert job["startTime"] == job["start_time"]
        assert job["completionTime"] == job["completion_time"]
        # What the plugin does with them (Go's time.UnixDate).
        assert job["startTime"] == "Sun Jun  1 09:05:00 UTC 2025"
        assert job["completionTime"] == "Sun Jun  1 09:05:07 UTC 2025"


async def test_a_queued_job_has_neither_name_for_a_time_it_does_not_have(
    api: ApiClient,
) -> None:
    headers = await login(api)
    await create(api, headers, "runners", name="r", gitURL="https://example.org/r.git")
    await create(api, headers, "tasks", name="t", runner="r", command="true")
    job_id = (await create(api, headers, "jobs/t"))["id"]
    await store_job(api, job_id, "t", finished=False)
    job = await (await api.get(f"{BASE}/jobs/{job_id}", headers=headers)).json()
    assert not {"start_time", "startTime", "completion_time", "completionTime"} & set(job)


def _document_job_fields(document: dict[str, Any], schema: str) -> set[str]:
    return set(document["components"]["schemas"][schema]["properties"])


async def test_the_openapi_document_lists_both_names(api: ApiClient) -> None:
    document = await (await api.get(f"{BASE}/openapi.json")).json()
    for schema in ("JobPublic", "JobSummaryPublic"):
        fields = _document_job_fields(document, schema)
        assert {"start_time", "startTime", "completion_time", "completionTime"} <= fields


async def test_the_openapi_document_says_which_request_fields_are_taken(api: ApiClient) -> None:
    document = await (await api.get(f"{BASE}/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for body in ("RunnerCreate", "RunnerUpdate"):
        assert schemas[body]["additionalProperties"] is False
        assert schemas[body]["properties"]["created_at"]["readOnly"] is True
        assert "readOnly" not in schemas[body]["properties"]["gitURL"]
    assert "name" in schemas["UserCreate"]["properties"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/runners/", 301),
        ("POST", "/runners/", 307),
        ("PUT", "/runners/", 307),
        ("GET", "/runners/missing/", 301),
        ("PATCH", "/runners/missing/", 307),
        ("DELETE", "/runners/missing/", 307),
    ],
)
async def test_a_trailing_slash_is_redirected_like_gin_does(
    api: ApiClient, method: str, path: str, status: int
) -> None:
    response = await api.request(
        method, f"{BASE}{path}?page=2", allow_redirects=False, headers={"Token": "x"}
    )
    assert response.status == status
    assert response.headers["Location"] == f"{BASE}{path.rstrip('/')}?page=2"


async def test_no_redirect_to_what_is_no_route(api: ApiClient) -> None:
    for path in ("/nothing/", "/runners/a/b/", "//example.org/", "/login/"):
        response = await api.get(f"{BASE}{path}", allow_redirects=False)
        assert response.status in (404, 405), path
        assert "Location" not in response.headers
    # The login route is POST only: its slashed form is redirected for POST alone.
    response = await api.post(f"{BASE}/login/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (307, f"{BASE}/login")


async def test_the_run_endpoint_answers_both_forms_directly(
    api: ApiClient,
    api_settings: Any,
    amqp_url: str,
    topology: Topology,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    headers = await login(api)
    await create(api, headers, "runners", name="r", gitURL="https://example.org/r.git")
    await create(api, headers, "tasks", name="t", runner="r", command="true")
    hook = await create(api, headers, "webhooks", task="t", description="d", scheme="standard")
    ingress = await aiohttp_client(
        create_ingress_app(
            IngressSettings(
                database_url=api_settings.database_url,
                amqp_url=SecretStr(amqp_url),
                amqp_prefix=topology.prefix,
            )
        )
    )
    for index, path in enumerate((f"/{hook['id']}", f"/{hook['id']}/")):
        body = json.dumps({"event": "updated", "n": index}).encode()
        stamp = int(time.time())
        signed = {
            "webhook-id": f"msg-{index}",
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign_standard(hook["secret"], f"msg-{index}", stamp, body),
        }
        response = await ingress.post(RUN_PREFIX + path, data=body, headers=signed)
        assert response.status == 202, await response.text()


async def test_the_redirects_never_touch_the_run_path(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    """Even where only one form of a run route exists, a sender gets its answer (here a
    404), never a redirect it would not follow; other paths are redirected."""

    async def answer(_request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[trailing_slash_middleware])
    app.router.add_post(RUN_PREFIX + "/{webhook_id}", answer)
    app.router.add_post(f"{BASE}/runners", answer)
    client = await aiohttp_client(app)
    run = await client.post(f"{RUN_PREFIX}/abc/", allow_redirects=False)
    other = await client.post(f"{BASE}/runners/", allow_redirects=False)
    assert (run.status, other.status) == (404, 307)


@pytest.mark.parametrize("key", ["giturl", "GITURL", "GitUrl", "gitURL"])
async def test_request_fields_match_in_any_case(api: ApiClient, key: str) -> None:
    headers = await login(api)
    body = {"NAME": "r", key: "https://example.org/r.git", "Branch": "dev"}
    runner = await create(api, headers, "runners", **body)
    assert (runner["name"], runner["gitURL"], runner["branch"]) == (
        "r",
        "https://example.org/r.git",
        "dev",
    )
    response = await api.patch(
        f"{BASE}/runners/r", json={key: "https://x.org/y.git"}, headers=headers
    )
    assert (await response.json())["gitURL"] == "https://x.org/y.git"


async def test_every_resource_takes_any_case(api: ApiClient) -> None:
    headers = await login(api)
    await create(api, headers, "runners", Name="r", GitURL="https://example.org/r.git")
    task = await create(
        api, headers, "tasks", Name="t", Runner="r", Command="true", Synchronous=True
    )
    assert task["synchronous"] is True
    user = await create(api, headers, "users", UserName="ann", PassWord="pw-ann-123")
    assert user["username"] == "ann"
    role = await create(
        api, headers, "roles", Name="ro", Resource="tasks", Resource_IDs=["t"], Access="read"
    )
    assert role["resource_ids"] == ["t"]
    binding = await create(
        api,
        headers,
        "role_bindings",
        NAME="b",
        ROLE_NAME="ro",
        SUBJECT_KIND="users",
        SUBJECT_NAME="ann",
    )
    assert binding["subject_id"] == user["id"]
    cronjob = await create(api, headers, "cronjobs", Name="c", Task="t", Schedule="0 * * * *")
    assert cronjob["schedule"] == "0 * * * *"
    response = await api.post(f"{BASE}/login", json={"UserName": "ann", "Password": "pw-ann-123"})
    assert response.status == 200, await response.text()


async def test_unknown_fields_are_refused_by_name(api: ApiClient) -> None:
    headers = await login(api)
    await create(api, headers, "runners", name="r", gitURL="https://example.org/r.git")
    before = await (await api.get(f"{BASE}/runners/r", headers=headers)).json()
    for method in ("PATCH", "PUT"):
        response = await api.request(
            method, f"{BASE}/runners/r", json={"imgae": "typo:1", "branch": "x"}, headers=headers
        )
        assert response.status == 400
        assert "'imgae'" in (await response.json())["error"]
    # Nothing of the refused update was kept, not even its valid field.
    assert await (await api.get(f"{BASE}/runners/r", headers=headers)).json() == before
    response = await api.post(
        f"{BASE}/tasks", json={"name": "t", "runner": "r", "comand": "true"}, headers=headers
    )
    assert response.status == 400
    assert "'comand'" in (await response.json())["error"]


async def test_one_field_under_two_spellings_is_refused(api: ApiClient) -> None:
    headers = await login(api)
    body = {"name": "r", "gitURL": "https://a.org/r.git", "giturl": "https://b.org/r.git"}
    response = await api.post(f"{BASE}/runners", json=body, headers=headers)
    assert response.status == 400
    assert "gitURL is given twice" in (await response.json())["error"]


async def test_what_a_client_read_can_be_sent_back(api: ApiClient) -> None:
    headers = await login(api)
    runner = await create(api, headers, "runners", name="r", gitURL="https://example.org/r.git")
    task = await create(api, headers, "tasks", name="t", runner="r", command="true")
    for kind, answer in (("runners", runner), ("tasks", task)):
        response = await api.put(f"{BASE}/{kind}/{answer['name']}", json=answer, headers=headers)
        assert response.status == 200, await response.text()


async def test_a_body_without_content_type_is_read_as_json(api: ApiClient) -> None:
    token = await api_token(api)
    url = str(api.make_url(f"{BASE}/runners"))
    body = json.dumps({"name": "r", "giturl": "https://example.org/r.git"})
    response = await send("POST", url, headers={"Token": token}, data=body)
    assert response.status_code == 200, response.text
    assert "Content-Type" not in response.request.headers


async def test_gin_shapes_of_errors_and_lists(api: ApiClient) -> None:
    headers = await login(api)
    response = await api.get(f"{BASE}/cronjobs", headers=headers)
    assert (await response.json(), response.headers["Content-Range"]) == ([], "0")
    response = await api.get(f"{BASE}/runners/missing", headers=headers)
    assert response.status == 404
    assert set(await response.json()) == {"error"}
    created = await api.post(
        f"{BASE}/runners", json={"name": "r", "gitURL": "https://e.org/r.git"}, headers=headers
    )
    assert created.status == 200
