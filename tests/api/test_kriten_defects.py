"""One test per Kriten defect that API.md's contract fixes ("Kriten defects this contract
fixes"); each one fails on Kriten's behaviour."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlmodel import select

from kriten_api import jwt_tokens
from kriten_api.bootstrap import ensure_builtins
from kriten_api.keys import SESSIONS
from kriten_api.migrate import upgrade_database
from kriten_api.settings import DEVELOPMENT_JWT_KEY, ApiSettings
from kriten_collector.json_data import extract_json_data
from kriten_common.amqp import Topology
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import Job, Runner, Task, User, Webhook
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY, ConfigurationError
from kriten_common.webhook_signing import sign_standard
from kriten_ingress.app import create_app as create_ingress_app
from kriten_ingress.settings import IngressSettings
from kriten_ingress.signatures import VerificationFailed, verify
from tests.api.conftest import ApiClient, BuildApi, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"
RUN_PATH = "/api/v1/webhooks/run/"
RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
TASK = {"name": "hello-kriten", "runner": "python", "command": "true"}
SECRET = "a-webhook-secret-of-some-length"


async def ok(response: Any) -> Any:
    assert 200 <= response.status < 300, await response.text()
    return await response.json()


async def setup_task(api: ApiClient, root: dict[str, str]) -> None:
    await ok(await api.post(f"{BASE}/runners", json=RUNNER, headers=root))
    await ok(await api.post(f"{BASE}/tasks", json=TASK, headers=root))


async def user_with_role(
    api: ApiClient, root: dict[str, str], name: str, resource: str, ids: list[str], access: str
) -> tuple[str, dict[str, str]]:
    """A new user bound to a role of their own; their id and session."""
    created = await ok(
        await api.post(
            f"{BASE}/users", json={"username": name, "password": f"pw-{name}"}, headers=root
        )
    )
    role = {"name": name, "resource": resource, "resource_ids": ids, "access": access}
    await ok(await api.post(f"{BASE}/roles", json=role, headers=root))
    binding = {"name": name, "role_name": name, "subject_kind": "users", "subject_name": name}
    await ok(await api.post(f"{BASE}/role_bindings", json=binding, headers=root))
    headers = await login(api, name, f"pw-{name}")
    api.session.cookie_jar.clear()
    return created["id"], headers


async def test_updates_use_the_url_name_not_the_body_name(api: ApiClient) -> None:
    root = await login(api)
    for name in ("first", "second"):
        role = {"name": name, "resource": "tasks", "resource_ids": [name], "access": "read"}
        await ok(await api.post(f"{BASE}/roles", json=role, headers=root))
    body = {"name": "second", "resource": "runners", "resource_ids": ["*"], "access": "write"}
    response = await api.patch(f"{BASE}/roles/first", json=body, headers=root)
    assert response.status == 400
    second = await ok(await api.get(f"{BASE}/roles/second", headers=root))
    assert (second["resource"], second["resource_ids"], second["access"]) == (
        "tasks",
        ["second"],
        "read",
    )
    await setup_task(api, root)
    renamed = await api.patch(
        f"{BASE}/tasks/hello-kriten", json={"name": "other", "command": "x"}, headers=root
    )
    assert renamed.status == 400
    assert (await api.get(f"{BASE}/tasks/other", headers=root)).status == 404


async def test_patch_on_roles_and_bindings_answers_200_with_the_updated_item(
    api: ApiClient,
) -> None:
    root = await login(api)
    role = {"name": "readers", "resource": "tasks", "resource_ids": ["a"], "access": "read"}
    await ok(await api.post(f"{BASE}/roles", json=role, headers=root))
    await ok(await api.post(f"{BASE}/groups", json={"name": "ops"}, headers=root))
    await ok(await api.post(f"{BASE}/groups", json={"name": "dev"}, headers=root))
    binding = {"name": "ops-readers", "role_name": "readers", "subject_name": "ops"}
    await ok(await api.post(f"{BASE}/role_bindings", json=binding, headers=root))

    patched = await api.patch(f"{BASE}/roles/readers", json={"resource_ids": ["b"]}, headers=root)
    assert patched.status == 200
    assert (await patched.json())["resource_ids"] == ["b"]
    moved = await api.patch(
        f"{BASE}/role_bindings/ops-readers", json={"subject_name": "dev"}, headers=root
    )
    assert moved.status == 200
    assert (await moved.json())["subject_name"] == "dev"


async def test_user_reads_never_contain_password_hashes(api: ApiClient) -> None:
    root = await login(api)
    await ok(await api.post(f"{BASE}/groups", json={"name": "ops"}, headers=root))
    create = {"username": "steve", "password": "correct horse", "groups": ["ops"]}
    created = await api.post(f"{BASE}/users", json=create, headers=root)
    steve = (await ok(created))["id"]
    answers = [
        created,
        await api.get(f"{BASE}/users", headers=root),
        await api.get(f"{BASE}/users/{steve}", headers=root),
        await api.get(f"{BASE}/users/{steve}/groups", headers=root),
        await api.patch(f"{BASE}/users/{steve}", json={"password": "battery"}, headers=root),
        await api.put(f"{BASE}/users/{steve}", json={"password": "staple"}, headers=root),
        await api.put(
            f"{BASE}/users", json={"username": "sue", "password": "pw-sue"}, headers=root
        ),
        await api.get(f"{BASE}/groups/ops", headers=root),
        await api.get(f"{BASE}/groups/ops/users", headers=root),
    ]
    for response in answers:
        assert response.status == 200
        body = (await response.text()).lower()
        for leak in ("hash", "$argon2", "password"):
            assert leak not in body, f"{response.url}: {body}"


async def test_webhook_secrets_are_not_stored_in_plaintext_and_reads_are_masked(
    api: ApiClient,
) -> None:
    root = await login(api)
    await setup_task(api, root)
    body = {"task": "hello-kriten", "secret": SECRET}
    created = await ok(await api.post(f"{BASE}/webhooks", json=body, headers=root))
    assert created["secret"] == SECRET  # shown once
    async with api.app[SESSIONS]() as session:
        connection = await session.connection()
        rows = (await connection.execute(text("SELECT * FROM webhooks"))).all()
    assert len(rows) == 1
    assert not any(SECRET in str(value) for value in rows[0])
    reads = [
        await ok(await api.get(f"{BASE}/webhooks/{created['id']}", headers=root)),
        *await ok(await api.get(f"{BASE}/webhooks", headers=root)),
        *await ok(await api.get(f"{BASE}/webhooks/all", headers=root)),
        await ok(await api.patch(f"{BASE}/webhooks/{created['id']}", json={}, headers=root)),
    ]
    for read in reads:
        assert read["secret"] == "************"
        assert SECRET not in json.dumps(read)


async def test_empty_webhook_secrets_are_refused(api: ApiClient) -> None:
    root = await login(api)
    await setup_task(api, root)
    empty = await api.post(
        f"{BASE}/webhooks", json={"task": "hello-kriten", "secret": ""}, headers=root
    )
    assert empty.status == 400
    assert "secret" in (await empty.json())["error"]
    hook = await ok(await api.post(f"{BASE}/webhooks", json={"task": "hello-kriten"}, headers=root))
    rotate = await api.post(
        f"{BASE}/webhooks/{hook['id']}/rotate", json={"secret": ""}, headers=root
    )
    assert rotate.status == 400


async def test_webhook_rbac_is_checked_on_the_task_not_the_webhook_id(api: ApiClient) -> None:
    root = await login(api)
    await setup_task(api, root)
    await ok(await api.post(f"{BASE}/tasks", json={**TASK, "name": "other"}, headers=root))
    _, hooks_admin = await user_with_role(api, root, "hooky", "webhooks", ["*"], "write")
    _, runner = await user_with_role(api, root, "runner", "jobs", ["hello-kriten"], "write")
    body = {"task": "hello-kriten"}
    # webhooks:write on every webhook, but no jobs:write on the task: refused.
    assert (await api.post(f"{BASE}/webhooks", json=body, headers=hooks_admin)).status == 403
    # jobs:write on the task and no webhook role at all: allowed.
    created = await ok(await api.post(f"{BASE}/webhooks", json=body, headers=runner))
    # Moving it to a task they may not run is refused, even for their own webhook.
    moved = await api.patch(
        f"{BASE}/webhooks/{created['id']}", json={"task": "other"}, headers=runner
    )
    assert moved.status == 403


async def test_job_reads_are_not_limited_to_the_creator(api: ApiClient) -> None:
    root = await login(api)
    await setup_task(api, root)
    alice, _ = await user_with_role(api, root, "alice", "jobs", ["hello-kriten"], "write")
    _, reader = await user_with_role(api, root, "reader", "jobs", ["hello-kriten"], "read")
    _, stranger = await user_with_role(api, root, "stranger", "jobs", ["other"], "read")
    async with api.app[SESSIONS]() as session:
        job = Job(id="hello-kriten-abc12", task="hello-kriten", owner="alice", owner_id=alice)
        session.add(job)
        await session.commit()
    for headers in (root, reader):
        assert (await api.get(f"{BASE}/jobs/hello-kriten-abc12", headers=headers)).status == 200
        listed = await ok(await api.get(f"{BASE}/jobs", headers=headers))
        assert [j["id"] for j in listed] == ["hello-kriten-abc12"]
    assert (await api.get(f"{BASE}/jobs/hello-kriten-abc12", headers=stranger)).status == 403


async def test_logout_exists_and_revokes_the_token(api: ApiClient) -> None:
    session = await login(api)
    other = await login(api)
    api.session.cookie_jar.clear()
    response = await api.post(f"{BASE}/logout", headers=session)
    assert response.status == 200
    cookie = response.headers.get("Set-Cookie", "")
    assert cookie.startswith('token=""') or cookie.startswith("token=;")
    api.session.cookie_jar.clear()
    assert (await api.get(f"{BASE}/tasks", headers=session)).status == 401
    assert (await api.get(f"{BASE}/refresh", headers=session)).status == 401
    assert (await api.get(f"{BASE}/tasks", headers=other)).status == 200


def test_production_refuses_the_default_jwt_key() -> None:
    settings = ApiSettings(
        env="production",
        token_key=SecretStr("a-real-token-key"),
        root_password=SecretStr("a-real-root-password"),
        encryption_keys=SecretStr("cmVhbC1rZXktcmVhbC1rZXktcmVhbC1rZXktcmVhbC0="),
    )
    with pytest.raises(ConfigurationError, match="KRITEN_JWT_KEY"):
        settings.check_production()
    settings.model_copy(update={"jwt_key": SecretStr("a-real-jwt-key")}).check_production()


async def test_a_token_signed_with_the_development_key_is_refused(
    api_settings: ApiSettings, build_api: BuildApi
) -> None:
    settings = api_settings.model_copy(
        update={"jwt_key": SecretStr("the-deployment-own-jwt-key-of-32-bytes-or-more")}
    )
    api = await build_api(settings)
    async with api.app[SESSIONS]() as session:
        root = (await session.exec(select(User).where(User.username == "root"))).one()
    forged, _ = jwt_tokens.issue_token(
        key=DEVELOPMENT_JWT_KEY,
        user_id=root.id,
        username="root",
        provider="local",
        ttl_seconds=3600,
        now=time.time(),
    )
    response = await api.get(f"{BASE}/tasks", headers={"Authorization": f"Bearer {forged}"})
    assert response.status == 401
    assert (await api.get(f"{BASE}/tasks", headers=await login(api))).status == 200


MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "application/json"),
    (b"[1, 2", "application/json"),
    (b"null", "application/json"),
    (b'"a string"', "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b"<xml/>", "application/xml"),
]
# Well-formed JSON of the wrong shapes: some routes ignore the fields, none may crash.
ODD = b'{"name": {"nested": [1, 2]}, "task": 5, "password": 7, "users": "x", "groups": 1}'


async def test_bad_input_is_answered_4xx_never_5xx(api: ApiClient) -> None:
    root = await login(api)
    await setup_task(api, root)
    hook = await ok(await api.post(f"{BASE}/webhooks", json={"task": "hello-kriten"}, headers=root))
    routes = [
        ("POST", "/login"),
        ("POST", "/runners"),
        ("PATCH", "/runners/python"),
        ("POST", "/runners/python/secret"),
        ("POST", "/tasks"),
        ("POST", "/tasks/hello-kriten/schema"),
        ("POST", "/users"),
        ("POST", "/groups"),
        ("POST", "/groups/Admin/users"),
        ("POST", "/roles"),
        ("PATCH", "/roles/Admin"),
        ("POST", "/role_bindings"),
        ("POST", "/webhooks"),
        ("PATCH", f"/webhooks/{hook['id']}"),
        ("POST", f"/webhooks/{hook['id']}/rotate"),
        ("POST", "/cronjobs"),
        ("POST", "/apitokens"),
    ]
    wrong = []
    for method, path in routes:
        for raw, content_type in MALFORMED:
            headers = {**root, "Content-Type": content_type}
            response = await api.request(method, BASE + path, data=raw, headers=headers)
            if response.status not in (400, 403, 415):
                wrong.append(f"{method} {path} {raw!r}: {response.status}")
        headers = {**root, "Content-Type": "application/json"}
        response = await api.request(method, BASE + path, data=ODD, headers=headers)
        if response.status >= 500:
            wrong.append(f"{method} {path} {ODD!r}: {response.status}")
    huge = "99999999999999999999999"
    for path in ("/jobs", "/audit_logs", f"/webhooks/{hook['id']}/deliveries", "/tasks"):
        for query in ("limit=abc", "offset=-1", f"limit={huge}", f"offset={huge}"):
            response = await api.get(f"{BASE}{path}?{query}", headers=root)
            if response.status >= 500:
                wrong.append(f"GET {path}?{query}: {response.status}")
    for query in ("max=abc", f"max={huge}"):
        response = await api.get(f"{BASE}/audit_logs?{query}", headers=root)
        if response.status >= 500:
            wrong.append(f"GET /audit_logs?{query}: {response.status}")
    response = await api.get(f"{BASE}/jobs?status=nope", headers=root)
    if response.status != 400:
        wrong.append(f"GET /jobs?status=nope: {response.status}")
    assert not wrong, "\n".join(wrong)


def test_json_data_parsing_survives_short_output_and_keeps_escaped_quotes() -> None:
    for short in ("", "^", "^JSON", "^JSON\n", "x\n^JSON"):
        assert extract_json_data(short) is None
    assert extract_json_data("^JSON\n^JSON") == {"error": "failed to parse JSON"}
    output = 'before\n^JSON\n{"msg": "say \\"hi\\"", "path": "C:\\\\x"}\n^JSON\nafter\n'
    assert extract_json_data(output) == {"msg": 'say "hi"', "path": "C:\\x"}


def _standard_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secret, "msg_1", timestamp, body),
    }


def test_replay_protection_refuses_old_standard_webhooks_timestamps() -> None:
    body = b'{"event": "x"}'
    now = time.time()

    def check(timestamp: int) -> None:
        verify(
            configured_scheme="standard",
            headers=_standard_headers(SECRET, body, timestamp),
            body=body,
            secrets=[(SECRET, "current")],
            now=now,
        )

    check(int(now))  # a fresh, correctly signed delivery verifies
    with pytest.raises(VerificationFailed):
        check(int(now) - 3600)


async def test_webhook_bodies_over_the_size_limit_are_refused(
    sqlite_url: str,
    amqp_url: str,
    topology: Topology,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    await upgrade_database(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        sessions = session_factory(engine)
        await ensure_builtins(sessions, root_password="root")
        async with sessions() as session:
            root = (await session.exec(select(User).where(User.username == "root"))).one()
            session.add(Runner(name="python", git_url="https://example.org/r.git"))
            await session.commit()
            session.add(Task(name="hello", runner="python", command="true"))
            await session.commit()
            box = SecretBox(DEVELOPMENT_ENCRYPTION_KEY)
            hook = Webhook(owner_id=root.id, task="hello", secret_encrypted=box.encrypt(SECRET))
            session.add(hook)
            await session.commit()
            hook_id = hook.id
    finally:
        await engine.dispose()
    settings = IngressSettings(
        database_url=SecretStr(sqlite_url),
        amqp_url=SecretStr(amqp_url),
        amqp_prefix=topology.prefix,
        max_body_bytes=1024,
    )
    ingress = await aiohttp_client(create_ingress_app(settings))
    stamp = int(time.time())
    big = b'{"pad": "' + b"x" * 2048 + b'"}'
    headers = _standard_headers(SECRET, big, stamp)
    assert (await ingress.post(RUN_PATH + hook_id, data=big, headers=headers)).status == 413
    small = b'{"pad": "x"}'
    wrong_signature = _standard_headers("not-the-secret", small, stamp)
    response = await ingress.post(RUN_PATH + hook_id, data=small, headers=wrong_signature)
    assert response.status == 401  # under the limit: on to the signature check


async def test_the_run_path_in_a_query_string_does_not_skip_authentication(
    api: ApiClient,
) -> None:
    root = await login(api)
    api.session.cookie_jar.clear()
    await setup_task(api, root)
    trick = f"x={RUN_PATH}abc&next={RUN_PATH}"
    for method, path in (
        ("GET", "/tasks"),
        ("GET", "/users"),
        ("GET", "/webhooks/all"),
        ("POST", "/jobs/hello-kriten"),
        ("DELETE", "/tasks/hello-kriten"),
    ):
        response = await api.request(method, f"{BASE}{path}?{trick}")
        assert response.status == 401, f"{method} {path}?{trick}: {response.status}"
    response = await api.request("GET", f"{BASE}/tasks?{RUN_PATH}")
    assert response.status == 401
    assert (await api.get(f"{BASE}/tasks/hello-kriten", headers=root)).status == 200


async def test_groups_can_be_deleted(api: ApiClient) -> None:
    root = await login(api)
    await ok(await api.post(f"{BASE}/groups", json={"name": "ops"}, headers=root))
    steve = await ok(
        await api.post(
            f"{BASE}/users",
            json={"username": "steve", "password": "pw-steve", "groups": ["ops"]},
            headers=root,
        )
    )
    response = await api.delete(f"{BASE}/groups/ops", headers=root)
    assert response.status == 200
    assert (await api.get(f"{BASE}/groups/ops", headers=root)).status == 404
    after = await ok(await api.get(f"{BASE}/users/{steve['id']}", headers=root))
    assert after["groups"] == []  # the member stays; only the group is gone
    # A group still named by a binding: 409 until the binding goes, then deletable.
    await ok(await api.post(f"{BASE}/groups", json={"name": "dev"}, headers=root))
    binding = {"name": "dev-tasks", "role_name": "WriteAllTasks", "subject_name": "dev"}
    await ok(await api.post(f"{BASE}/role_bindings", json=binding, headers=root))
    assert (await api.delete(f"{BASE}/groups/dev", headers=root)).status == 409
    await ok(await api.delete(f"{BASE}/role_bindings/dev-tasks", headers=root))
    assert (await api.delete(f"{BASE}/groups/dev", headers=root)).status == 200
