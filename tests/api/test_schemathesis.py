"""Schemathesis against the served OpenAPI document: every operation, as Admin (root) and
as a user with no roles, must answer without a 5xx and as the document says.

The api runs on a real loopback port (aiohttp is not ASGI), in a thread with its own
event loop, for the whole module: one database and one broker topology for every case,
so the cases also meet what earlier cases created. The run is bounded (few examples per
operation, derandomized) to keep CI fast; `KRITEN_TEST_FUZZ_EXAMPLES=200` digs deeper,
`KRITEN_TEST_FUZZ_PATH=/api/v1/roles` on one path.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from kriten_api.app import create_app
from kriten_api.settings import ApiSettings
from kriten_common.amqp import Topology, delete_topology

pytestmark = pytest.mark.integration

DOCUMENT = "/api/v1/openapi.json"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
USERNAME = "schemathesis-user"
PASSWORD = "a-password-for-the-fuzzer"


class Server:
    """The app served on 127.0.0.1, from a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(app)
        self.url = ""

    def __enter__(self) -> Server:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=60)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def __exit__(self, *_exc: object) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def _delete_topology(amqp_url: str, topology: Topology) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await delete_topology(await connection.channel(), topology)


@pytest.fixture(scope="module")
def server(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp("schemathesis")
    topology = Topology(f"kriten-test-{uuid.uuid4().hex[:12]}")
    api_settings = ApiSettings(
        database_url=SecretStr(f"sqlite+aiosqlite:///{directory / 'kriten.db'}"),
        amqp_url=SecretStr(amqp_url),
        amqp_prefix=topology.prefix,
        jobs_dir=directory / "jobs",
        sync_timeout=1.0,
    )
    with Server(create_app(api_settings)) as running:
        try:
            yield running
        finally:
            running.run(_delete_topology(amqp_url, topology))


def _api_token(base: str, username: str, password: str) -> dict[str, str]:
    """An API token's header: unlike a JWT, a fuzzed `POST /logout` cannot revoke it."""
    login = requests.post(
        f"{base}/api/v1/login", json={"username": username, "password": password}, timeout=30
    )
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['token']}"}
    created = requests.post(f"{base}/api/v1/apitokens", json={}, headers=bearer, timeout=30)
    assert created.status_code == 200, created.text
    return {"Token": created.json()["key"]}


@pytest.fixture(scope="module")
def admin_headers(server: Server) -> dict[str, str]:
    return _api_token(server.url, "root", "root")


@pytest.fixture(scope="module")
def user_headers(server: Server, admin_headers: dict[str, str]) -> dict[str, str]:
    created = requests.post(
        f"{server.url}/api/v1/users",
        json={"username": USERNAME, "password": PASSWORD},
        headers=admin_headers,
        timeout=30,
    )
    assert created.status_code == 200, created.text
    return _api_token(server.url, USERNAME, PASSWORD)


def _created(server: Server, headers: dict[str, str], path: str, body: Any) -> Any:
    response = requests.post(f"{server.url}/api/v1/{path}", json=body, headers=headers, timeout=30)
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture(scope="module")
def known_ids(
    server: Server, admin_headers: dict[str, str], user_headers: dict[str, str]
) -> dict[str, str]:
    """One item of each kind, whose ids replace some generated path parameters: random
    ids only ever reach the 404 branch of a handler."""
    admin = admin_headers
    _created(server, admin, "runners", {"name": "fuzz-runner", "gitURL": "https://e.org/r.git"})
    _created(server, admin, "tasks", {"name": "fuzz-task", "runner": "fuzz-runner", "command": "x"})
    schedule = {"name": "fuzz-cron", "task": "fuzz-task", "schedule": "* * * * *"}
    _created(server, admin, "cronjobs", schedule)
    group = _created(server, admin, "groups", {"name": "fuzz-group"})["id"]
    role = {"name": "fuzz-role", "resource": "tasks", "resource_ids": ["x"], "access": "read"}
    binding = {"name": "fuzz-binding", "role_name": "fuzz-role", "subject_name": "fuzz-group"}
    users = requests.get(f"{server.url}/api/v1/users", headers=admin, timeout=30).json()
    audit = requests.get(f"{server.url}/api/v1/audit_logs", headers=admin, timeout=30).json()
    job = _created(server, admin, "jobs/fuzz-task", {})["id"]
    return {
        "runners": "fuzz-runner",
        "tasks": "fuzz-task",
        "cronjobs": "fuzz-cron",
        "webhooks": _created(server, admin, "webhooks", {"task": "fuzz-task"})["id"],
        "groups": group,
        "roles": _created(server, admin, "roles", role)["id"],
        "role_bindings": _created(server, admin, "role_bindings", binding)["id"],
        "users": next(u["id"] for u in users if u["username"] == USERNAME),
        # Not the token the fuzzer authenticates with, which a PATCH could disable.
        "apitokens": _created(server, admin, "apitokens", {})["id"],
        "api_tokens": _created(server, admin, "api_tokens", {})["id"],
        "audit_logs": audit[0]["id"],
        "jobs": job,
        "jobs/task": "fuzz-task",
    }


def _with_known_ids(case: Any, known: dict[str, str]) -> Any:
    resource = case.operation.path.removeprefix("/api/v1/").split("/")[0]
    parameters = dict(case.path_parameters or {})
    for name in parameters:
        key = f"{resource}/{name}" if name != "id" and name != "name" else resource
        if key in known:
            parameters[name] = known[key]
    case.path_parameters = parameters
    return case


FUZZ = settings(
    max_examples=int(os.environ.get("KRITEN_TEST_FUZZ_EXAMPLES", "10")),
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    phases=[Phase.explicit, Phase.generate],
)


def _call(case: Any, server: Server, headers: dict[str, str]) -> None:
    # The role's own credentials replace any the case carries; the rest is as generated.
    merged = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = {**merged, **headers}
    case.cookies = {}
    case.call_and_validate(base_url=server.url, checks=CHECKS)


def _summary(failure: BaseException) -> str:
    """The failure's own lines, up to the curl line that reproduces it; for a group (a
    flaky example is one), those of each exception in it."""
    lines = f"{type(failure).__name__}: {failure}".splitlines()
    text = "\n".join(lines[: next((i + 2 for i, x in enumerate(lines) if "curl" in x), 40)])
    if isinstance(failure, BaseExceptionGroup):
        text += "".join(f"\n  - {_summary(inner)}" for inner in failure.exceptions)
    return text


def _fuzz(server: Server, headers: dict[str, str], known: dict[str, str]) -> list[str]:
    """Runs every operation of the served document; one line per failing operation."""
    schema = schemathesis.openapi.from_url(f"{server.url}{DOCUMENT}").exclude(
        # Served by the ingress; on the api the path would only reach another route.
        path="/api/v1/webhooks/run/{id}"
    )
    only = os.environ.get("KRITEN_TEST_FUZZ_PATH")
    if only:
        schema = schema.include(path=only)
    failures = []
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the document has invalid operations"
    assert only or len(operations) > 100, "the document lost its operations"
    for operation in operations:
        # Negative cases (wrong types, missing fields) are where a handler's checks can
        # let a bad value through to a 500.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cases = operation.as_strategy(generation_mode=mode)
            # Deleting the known items would leave the later operations only 404s; and a
            # negative case must stay negative, which a known id could undo.
            known_path = "{" in operation.path and operation.method.upper() != "DELETE"
            if known_path and mode == GenerationMode.POSITIVE:
                cases = cases | cases.map(lambda case: _with_known_ids(case, known))

            @FUZZ
            @given(case=cases)
            def run(case: Any) -> None:
                _call(case, server, headers)

            try:
                run()
            except Exception as failure:
                failures.append(f"{operation.label} ({mode.value}): {_summary(failure)}")
    return failures


@pytest.mark.parametrize("role", ["admin_headers", "user_headers"])
def test_every_operation_answers_as_documented_without_5xx(
    role: str, server: Server, known_ids: dict[str, str], request: pytest.FixtureRequest
) -> None:
    failures = _fuzz(server, request.getfixturevalue(role), known_ids)
    assert not failures, "\n\n".join(failures)
