"""Login sessions end when they should: a new password, "log out everywhere", a deleted
API token, a logout during a followed log. The session epoch (`users.session_epoch`, the
`epoch` claim) is what makes the first two work across every token at once."""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import pytest
from sqlmodel import select

from kriten_api.keys import SESSIONS, SETTINGS
from kriten_common.db.models import Job, User
from tests.api.conftest import ApiClient, create, get, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"


async def _alice(api: ApiClient, root: dict[str, str], password: str = "alice-pw-1") -> str:
    user = await create(api, root, "users", username="alice", password=password)
    return str(user["id"])


async def test_a_password_reset_by_an_admin_ends_the_users_sessions(api: ApiClient) -> None:
    root = await login(api)
    alice_id = await _alice(api, root)
    alice = await login(api, "alice", "alice-pw-1")
    assert (await api.get(f"{BASE}/refresh", headers=alice)).status == 200
    reset = await api.patch(f"{BASE}/users/{alice_id}", json={"password": "new-pw-2"}, headers=root)
    assert reset.status == 200, await reset.text()
    assert (await api.get(f"{BASE}/tasks", headers=alice)).status == 401
    assert (await api.get(f"{BASE}/refresh", headers=alice)).status == 401
    # The new password works, and the admin's own session is untouched.
    await get(api, await login(api, "alice", "new-pw-2"), "/tasks")
    await get(api, root, "/tasks")


async def test_changing_a_users_groups_keeps_their_sessions(api: ApiClient) -> None:
    root = await login(api)
    alice_id = await _alice(api, root)
    alice = await login(api, "alice", "alice-pw-1")
    changed = await api.patch(f"{BASE}/users/{alice_id}", json={"groups": []}, headers=root)
    assert changed.status == 200, await changed.text()
    assert (await api.get(f"{BASE}/refresh", headers=alice)).status == 200


async def test_refresh_refuses_an_api_token(api: ApiClient) -> None:
    root = await login(api)
    created = await create(api, root, "apitokens", description="script")
    api.session.cookie_jar.clear()
    response = await api.get(f"{BASE}/refresh", headers={"Token": created["key"]})
    assert response.status in (401, 403)
    assert "token" not in await response.json()
    assert "token" not in response.cookies


async def test_a_refreshed_login_token_carries_the_epoch(api: ApiClient) -> None:
    root = await login(api)
    response = await api.get(f"{BASE}/refresh", headers=root)
    assert response.status == 200
    token = (await response.json())["token"]
    assert jwt.decode(token, options={"verify_signature": False})["epoch"] == 0


async def test_logout_everywhere_ends_every_session_of_the_user(api: ApiClient) -> None:
    root = await login(api)
    await _alice(api, root)
    first, second = await login(api, "alice", "alice-pw-1"), await login(api, "alice", "alice-pw-1")
    response = await api.post(f"{BASE}/logout?all=true", headers=first)
    assert response.status == 200, await response.text()
    assert (await response.json())["msg"] == "logged out everywhere"
    for headers in (first, second):
        assert (await api.get(f"{BASE}/tasks", headers=headers)).status == 401
    await get(api, root, "/tasks")  # another user's session stays
    await get(api, await login(api, "alice", "alice-pw-1"), "/tasks")


async def test_logout_all_must_be_a_boolean(api: ApiClient) -> None:
    root = await login(api)
    response = await api.post(f"{BASE}/logout?all=maybe", headers=root)
    assert response.status == 400
    await get(api, root, "/tasks")


def _legacy_token(api: ApiClient, user_id: str) -> dict[str, str]:
    """A token as issued before session epochs: no `epoch` claim."""
    now = int(time.time())
    claims = {
        "username": "root",
        "user_id": user_id,
        "provider": "local",
        "exp": now + 600,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    key = api.app[SETTINGS].jwt_key.get_secret_value()
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='HS256')}"}


async def _root_id(api: ApiClient) -> str:
    async with api.app[SESSIONS]() as session:
        return str((await session.exec(select(User.id).where(User.username == "root"))).one())


async def test_tokens_without_an_epoch_are_epoch_zero(api: ApiClient) -> None:
    root = await login(api)
    legacy = _legacy_token(api, await _root_id(api))
    await get(api, legacy, "/tasks")
    assert (await api.post(f"{BASE}/logout?all=true", headers=root)).status == 200
    assert (await api.get(f"{BASE}/tasks", headers=legacy)).status == 401


async def _running_job(api: ApiClient, owner_id: str) -> str:
    job_id = f"hello-{uuid.uuid4().hex[:5]}"
    async with api.app[SESSIONS]() as session:
        session.add(
            Job(
                id=job_id,
                task="hello",
                owner="root",
                owner_id=owner_id,
                status="running",
                stdout="line 1\n",
            )
        )
        await session.commit()
    return job_id


async def test_a_followed_log_ends_when_its_session_is_logged_out(api: ApiClient) -> None:
    root = await login(api)
    job_id = await _running_job(api, await _root_id(api))
    api.session.cookie_jar.clear()
    stream = await api.get(f"{BASE}/jobs/{job_id}/log?follow=true", headers=root)
    assert stream.status == 200
    assert await asyncio.wait_for(stream.content.readline(), 5) == b"line 1\n"
    assert (await api.post(f"{BASE}/logout", headers=root)).status == 200
    # The job is still running; only the revocation can end the stream.
    rest = await asyncio.wait_for(stream.content.read(), 10)
    assert rest == b""


async def test_a_followed_log_ends_when_its_api_token_is_deleted(api: ApiClient) -> None:
    root = await login(api)
    job_id = await _running_job(api, await _root_id(api))
    created = await create(api, root, "apitokens", description="follower")
    api.session.cookie_jar.clear()
    follower = {"Token": created["key"]}
    stream = await api.get(f"{BASE}/jobs/{job_id}/log?follow=true", headers=follower)
    assert stream.status == 200
    assert await asyncio.wait_for(stream.content.readline(), 5) == b"line 1\n"
    deleted = await api.delete(f"{BASE}/apitokens/{created['id']}", headers=root)
    assert deleted.status == 200
    assert await asyncio.wait_for(stream.content.read(), 10) == b""
