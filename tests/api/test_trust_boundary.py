"""Trust boundaries between permissions: what one permission must not reach through
another user's item, each tried over HTTP by a user holding exactly the named role.

- `webhooks:write` does not run another user's webhook task as them (test delivery,
  redelivery) without `jobs:write` on the task, and never rotates their secret;
- `tasks:write` does not put a task on a runner (whose secrets its command would read),
  nor change the command of a task on it, without `runners:write` on that runner;
- a runner's git token goes only to the origin it was given for, and never over http;
- credentials written into a `gitURL` are refused, and masked in rows stored before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kriten_api.keys import SECRET_BOX, SESSIONS
from kriten_api.settings import ApiSettings
from kriten_common.db.models import Runner, Webhook, WebhookDelivery
from kriten_common.messages import JobRequested
from kriten_dispatcher.job_specs import build_spec, load_records
from tests.api.conftest import ApiClient, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"
MASK = "************"
FORBIDDEN = {"error": "unauthorized - user cannot access resource"}
ORIGIN = "https://git.example.org/team/tasks.git"
TOKEN = "plaintext-value-git-token"


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    # Test deliveries go to an ingress that is not there: 503 once allowed, at once.
    return api_settings.model_copy(update={"ingress_url": "http://127.0.0.1:9"})


async def ok(response: Any) -> Any:
    assert 200 <= response.status < 300, await response.text()
    return await response.json()


async def refused(response: Any, status: int = 403) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def user_with(api: ApiClient, root: dict[str, str], name: str, *roles: str) -> dict[str, str]:
    """A new local user bound to exactly `roles` (names of existing roles), logged in."""
    body = {"username": name, "password": f"pw-{name}"}
    await ok(await api.post(f"{BASE}/users", json=body, headers=root))
    for role in roles:
        await bind(api, root, role, name)
    return await login(api, name, f"pw-{name}")


async def bind(api: ApiClient, root: dict[str, str], role: str, name: str) -> None:
    binding = {"name": f"{name}-{role}", "role_name": role, "subject_kind": "users"}
    binding["subject_name"] = name
    await ok(await api.post(f"{BASE}/role_bindings", json=binding, headers=root))


async def role(
    api: ApiClient,
    root: dict[str, str],
    name: str,
    resource: str,
    ids: list[str],
    access: str = "write",
) -> None:
    body = {"name": name, "resource": resource, "resource_ids": ids, "access": access}
    await ok(await api.post(f"{BASE}/roles", json=body, headers=root))


async def stored_runner(api: ApiClient, name: str) -> Runner:
    async with api.app[SESSIONS]() as session:
        runner: Runner | None = await session.get(Runner, name)
    assert runner is not None
    return runner


async def stored_token(api: ApiClient, name: str) -> str | None:
    runner = await stored_runner(api, name)
    if runner.token_encrypted is None:
        return None
    token: str = api.app[SECRET_BOX].decrypt(runner.token_encrypted)
    return token


# --- webhooks:write and another user's webhook ---


async def test_webhooks_write_does_not_run_or_rotate_another_users_webhook(
    api: ApiClient,
) -> None:
    root = await login(api)
    runner = {"name": "py", "gitURL": ORIGIN, "secret": {"DB_PASSWORD": "x"}}
    await ok(await api.post(f"{BASE}/runners", json=runner, headers=root))
    task = {"name": "deploy", "runner": "py", "command": "env"}
    await ok(await api.post(f"{BASE}/tasks", json=task, headers=root))
    await role(api, root, "run-deploy", "jobs", ["deploy"])
    as_olive = await user_with(api, root, "olive", "run-deploy")
    hook = await ok(await api.post(f"{BASE}/webhooks", json={"task": "deploy"}, headers=as_olive))
    hook_path = f"{BASE}/webhooks/{hook['id']}"
    async with api.app[SESSIONS]() as session:
        session.add(
            WebhookDelivery(
                id="d-1",
                webhook_id=hook["id"],
                received_at=datetime.now(UTC),
                scheme="standard",
                outcome="accepted",
                body='{"hello": "kriten"}',
                size=19,
            )
        )
        await session.commit()
    before = await ok(await api.get(hook_path, headers=as_olive))

    # Mallory holds WriteAllWebhooks and nothing else: she may edit the webhook, not run
    # olive's task as olive, nor learn a secret that would let her do it later.
    as_mallory = await user_with(api, root, "mallory", "WriteAllWebhooks")
    test_body = {"body": {"event": "updated", "data": {"chosen": "by mallory"}}}
    attempts = {
        "test delivery": api.post(f"{hook_path}/test", json=test_body, headers=as_mallory),
        "redeliver": api.post(f"{hook_path}/deliveries/d-1/redeliver", headers=as_mallory),
        "rotate": api.post(f"{hook_path}/rotate", json={}, headers=as_mallory),
        "rotate to her secret": api.post(
            f"{hook_path}/rotate", json={"secret": "mallory-knows-this"}, headers=as_mallory
        ),
    }
    for what, attempt in attempts.items():
        response = await attempt
        assert response.status == 403, (what, await response.text())
        assert await response.json() == FORBIDDEN, what
    async with api.app[SESSIONS]() as session:
        row = await session.get(Webhook, hook["id"])
    assert row is not None
    assert row.previous_secret_encrypted is None
    assert await ok(await api.get(hook_path, headers=as_olive)) == before
    # What webhooks:write is for still works.
    patch = await api.patch(hook_path, json={"description": "ops"}, headers=as_mallory)
    assert patch.status == 200

    # With jobs:write on the task she could run it herself: test and redeliver are hers
    # too (the test goes on to the missing ingress: 503). Rotating never is.
    await bind(api, root, "run-deploy", "mallory")
    test = await api.post(f"{hook_path}/test", json=test_body, headers=as_mallory)
    assert test.status == 503, await test.text()
    redelivered = await api.post(f"{hook_path}/deliveries/d-1/redeliver", headers=as_mallory)
    assert redelivered.status == 202, await redelivered.text()
    await refused(await api.post(f"{hook_path}/rotate", json={}, headers=as_mallory))

    # The owner and an admin rotate.
    for headers in (as_olive, root):
        rotated = await ok(await api.post(f"{hook_path}/rotate", json={}, headers=headers))
        assert rotated["secret"] != MASK


# --- tasks:write and runners ---


async def test_tasks_write_does_not_put_a_task_on_a_runner_it_may_not_write(
    api: ApiClient,
) -> None:
    root = await login(api)
    for name in ("vault", "sandbox"):
        runner = {"name": name, "gitURL": ORIGIN, "secret": {"API_KEY": f"{name}-secret"}}
        await ok(await api.post(f"{BASE}/runners", json=runner, headers=root))
    await ok(
        await api.post(
            f"{BASE}/tasks", json={"name": "audit", "runner": "vault", "command": "x"}, headers=root
        )
    )
    # Tess holds WriteAllTasks, and runners:write on her own sandbox only.
    await role(api, root, "write-sandbox", "runners", ["sandbox"])
    as_tess = await user_with(api, root, "tess", "WriteAllTasks", "write-sandbox")

    steal = {"runner": "vault", "command": "env"}
    for method in ("POST", "PUT"):
        body = {"name": f"steal-{method.lower()}", **steal}
        await refused(await api.request(method, f"{BASE}/tasks", json=body, headers=as_tess))
    # A runner that does not exist is refused the same way: its existence is not told.
    ghost = {"name": "ghost", "runner": "nowhere", "command": "env"}
    await refused(await api.post(f"{BASE}/tasks", json=ghost, headers=as_tess))
    mine = {"name": "mine", "runner": "sandbox", "command": "env"}
    await ok(await api.post(f"{BASE}/tasks", json=mine, headers=as_tess))
    await refused(await api.patch(f"{BASE}/tasks/mine", json=steal, headers=as_tess))
    await refused(
        await api.put(f"{BASE}/tasks/mine", json={"name": "mine", **steal}, headers=as_tess)
    )
    tasks = await ok(await api.get(f"{BASE}/tasks", headers=root))
    assert {t["name"]: t["runner"] for t in tasks} == {"audit": "vault", "mine": "sandbox"}

    # A task already on the runner, sent back as read: its runner unchanged, no check.
    audit = await ok(await api.get(f"{BASE}/tasks/audit", headers=as_tess))
    audit["description"] = "reviewed"
    await ok(await api.put(f"{BASE}/tasks/audit", json=audit, headers=as_tess))
    # Changing the command of a task on the runner uses the runner just as well.
    await refused(await api.patch(f"{BASE}/tasks/audit", json={"command": "env"}, headers=as_tess))
    assert (await ok(await api.get(f"{BASE}/tasks/audit", headers=root)))["command"] == "x"
    # runners:write on the runner is what it takes.
    await role(api, root, "write-vault", "runners", ["vault"])
    await bind(api, root, "write-vault", "tess")
    await ok(await api.patch(f"{BASE}/tasks/mine", json={"runner": "vault"}, headers=as_tess))


# --- the git token and the runner's origin ---


async def test_runners_write_cannot_send_the_token_to_another_host(api: ApiClient) -> None:
    root = await login(api)
    runner = {"name": "private", "gitURL": ORIGIN, "token": TOKEN}
    await ok(await api.post(f"{BASE}/runners", json=runner, headers=root))
    as_rita = await user_with(api, root, "rita", "WriteAllRunners")
    path = f"{BASE}/runners/private"

    # Rita sees the token masked; she sends the runner back pointing at her own host.
    seen = await ok(await api.get(path, headers=as_rita))
    assert seen["token"] == MASK
    seen["gitURL"] = "https://attacker.example.net/team/tasks.git"
    moved = await ok(await api.put(path, json=seen, headers=as_rita))
    assert moved["token"] == ""
    assert await stored_token(api, "private") is None

    # Same origin (another path, the default port spelled out, the host's case): kept.
    await ok(await api.patch(path, json={"gitURL": ORIGIN, "token": TOKEN}, headers=root))
    for url in (
        "https://git.example.org/team/other.git",
        "https://git.example.org:443/team/other.git",
        "https://GIT.example.org/team/tasks.git",
    ):
        kept = await ok(await api.patch(path, json={"gitURL": url}, headers=as_rita))
        assert kept["token"] == MASK, url
    assert await stored_token(api, "private") == TOKEN
    # Another port is another origin.
    other_port = {"gitURL": "https://git.example.org:8443/team/tasks.git"}
    assert (await ok(await api.patch(path, json=other_port, headers=as_rita)))["token"] == ""
    # A token given in the same request is one given for the new origin.
    moved_with = {"gitURL": "https://git.example.com/t.git", "token": "new-token"}
    assert (await ok(await api.patch(path, json=moved_with, headers=root)))["token"] == MASK
    assert await stored_token(api, "private") == "new-token"


async def test_a_token_is_never_kept_beside_an_http_url(api: ApiClient) -> None:
    root = await login(api)
    plain = "http://git.example.org/team/tasks.git"
    body = {"name": "plain", "gitURL": plain, "token": TOKEN}
    problem = await refused(await api.post(f"{BASE}/runners", json=body, headers=root), 400)
    assert "https" in problem["error"]
    await ok(
        await api.post(f"{BASE}/runners", json={"name": "plain", "gitURL": plain}, headers=root)
    )
    path = f"{BASE}/runners/plain"
    await refused(await api.patch(path, json={"token": TOKEN}, headers=root), 400)
    # https to http is a change of origin: the token is dropped, not sent in clear.
    await ok(await api.patch(path, json={"gitURL": ORIGIN, "token": TOKEN}, headers=root))
    downgraded = await ok(await api.patch(path, json={"gitURL": plain}, headers=root))
    assert downgraded["token"] == ""
    await refused(await api.patch(path, json={"gitURL": plain, "token": TOKEN}, headers=root), 400)
    # A row stored with both before the rule cannot be saved until one of them goes.
    async with api.app[SESSIONS]() as session:
        row = await session.get(Runner, "plain")
        assert row is not None
        row.token_encrypted = api.app[SECRET_BOX].encrypt(TOKEN)
        session.add(row)
        await session.commit()
    await refused(await api.patch(path, json={"branch": "dev"}, headers=root), 400)
    await ok(await api.patch(path, json={"branch": "dev", "token": ""}, headers=root))
    # Local repositories carry no token and need none.
    local = {"name": "local", "gitURL": "file:///srv/git/tasks"}
    await ok(await api.post(f"{BASE}/runners", json=local, headers=root))


@pytest.mark.parametrize(
    ("git_url", "sent"),
    [
        (ORIGIN, True),
        ("HTTPS://git.example.org/team/tasks.git", True),
        ("http://git.example.org/team/tasks.git", False),
        ("file:///srv/git/tasks", False),
        ("/srv/git/tasks", False),
        ("ssh://git@git.example.org/team/tasks.git", False),
    ],
)
async def test_the_dispatcher_hands_the_token_to_https_clones_only(
    api: ApiClient, git_url: str, sent: bool
) -> None:
    """Rows that predate the api's rule (or written around it) still never send it."""
    async with api.app[SESSIONS]() as session:
        box = api.app[SECRET_BOX]
        session.add(Runner(name="r", git_url=git_url, token_encrypted=box.encrypt(TOKEN)))
        await session.commit()
    root = await login(api)
    task = {"name": "t", "runner": "r", "command": "true"}
    await ok(await api.post(f"{BASE}/tasks", json=task, headers=root))
    event = JobRequested(
        job_id="t-1", task="t", owner="root", owner_id="x", source="api", input="{}"
    )
    async with api.app[SESSIONS]() as session:
        records = await load_records(event, session=session)
    spec = build_spec(event, records, box=api.app[SECRET_BOX])
    assert spec.git_token == (TOKEN if sent else None)


# --- credentials in the URL ---


@pytest.mark.parametrize(
    "git_url",
    [
        "https://deploy:hunter2-secret@git.example.org/team/tasks.git",
        "https://ghp_hunter2secret@github.com/team/tasks.git",
        "http://user:hunter2-secret@git.example.org/tasks.git",
        "ssh://git:hunter2-secret@git.example.org/team/tasks.git",
    ],
)
async def test_credentials_in_the_git_url_are_refused(api: ApiClient, git_url: str) -> None:
    root = await login(api)
    body = {"name": "creds", "gitURL": git_url}
    problem = await refused(await api.post(f"{BASE}/runners", json=body, headers=root), 400)
    assert "`token`" in problem["error"]
    await ok(
        await api.post(f"{BASE}/runners", json={"name": "creds", "gitURL": ORIGIN}, headers=root)
    )
    patch = await api.patch(f"{BASE}/runners/creds", json={"gitURL": git_url}, headers=root)
    await refused(patch, 400)
    assert (await stored_runner(api, "creds")).git_url == ORIGIN


async def test_an_ssh_login_name_is_no_credential(api: ApiClient) -> None:
    root = await login(api)
    for name, url in (
        ("ssh", "ssh://git@git.example.org/team/tasks.git"),
        ("scp", "git@github.com:team/tasks.git"),
    ):
        created = await ok(
            await api.post(f"{BASE}/runners", json={"name": name, "gitURL": url}, headers=root)
        )
        assert created["gitURL"] == url


async def test_credentials_stored_before_are_masked_for_readers(api: ApiClient) -> None:
    async with api.app[SESSIONS]() as session:
        for name, url in (
            ("pw", "https://deploy:hunter2-secret@git.example.org/team/tasks.git"),
            ("tok", "https://ghp_hunter2secret@github.com/team/tasks.git"),
            ("ssh", "ssh://git:hunter2-secret@git.example.org/tasks.git"),
        ):
            session.add(Runner(name=name, git_url=url))
        await session.commit()
    root = await login(api)
    await role(api, root, "read-runners", "runners", ["*"], "read")
    as_reader = await user_with(api, root, "reader", "read-runners")
    expected = {
        "pw": f"https://deploy:{MASK}@git.example.org/team/tasks.git",
        "tok": f"https://{MASK}@github.com/team/tasks.git",
        "ssh": f"ssh://git:{MASK}@git.example.org/tasks.git",
    }
    listed = await api.get(f"{BASE}/runners", headers=as_reader)
    assert "hunter2" not in await listed.text()
    assert {r["name"]: r["gitURL"] for r in await ok(listed)} == expected
    for name, url in expected.items():
        one = await api.get(f"{BASE}/runners/{name}", headers=as_reader)
        assert "hunter2" not in await one.text()
        assert (await ok(one))["gitURL"] == url
