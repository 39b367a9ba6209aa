"""Webhook settings in the api: filter and limits validated at create and update, secret
rotation, and the `config.changed` events every change announces."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from kriten_api.keys import SECRET_BOX, SESSIONS
from kriten_api.passwords import hash_password
from kriten_common.clock import utcnow
from kriten_common.db.models import User, Webhook
from kriten_common.messages import ConfigChanged, Event
from tests.api.conftest import ApiClient, login

pytestmark = pytest.mark.integration

RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
TASK = {"name": "hello-kriten", "runner": "python", "command": "true"}


async def setup(api: ApiClient) -> dict[str, str]:
    headers = await login(api)
    assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 200
    assert (await api.post("/api/v1/tasks", json=TASK, headers=headers)).status == 200
    return headers


async def create(api: ApiClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await api.post(
        "/api/v1/webhooks", json={"task": "hello-kriten", **fields}, headers=headers
    )
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"filter": "event =="}, "filter is not a valid JMESPath expression"),
        ({"filter": 5}, "filter must be a string"),
        ({"max_body_bytes": 0}, "max_body_bytes must be between 1 and"),
        ({"max_body_bytes": "big"}, "max_body_bytes must be an integer"),
        ({"max_body_bytes": 10**9}, "max_body_bytes must be between 1 and"),
        ({"rate_limit_per_second": -1}, "rate_limit_per_second must be above 0"),
        ({"rate_limit_per_second": True}, "rate_limit_per_second must be a number"),
        ({"allowed_sources": "10.0.0.0/8"}, "allowed_sources must be a list"),
        ({"allowed_sources": ["10.0.0.0/33"]}, "'10.0.0.0/33' is not an IP address or CIDR"),
        ({"allowed_sources": ["example.org"]}, "is not an IP address or CIDR"),
    ],
)
async def test_bad_settings_are_400_at_create_and_update(
    api: ApiClient, fields: dict[str, Any], message: str
) -> None:
    headers = await setup(api)
    response = await api.post(
        "/api/v1/webhooks", json={"task": "hello-kriten", **fields}, headers=headers
    )
    assert response.status == 400
    assert message in (await response.json())["error"]
    hook = await create(api, headers)
    response = await api.patch(f"/api/v1/webhooks/{hook['id']}", json=fields, headers=headers)
    assert response.status == 400
    assert message in (await response.json())["error"]


async def test_settings_are_stored_and_shown(api: ApiClient) -> None:
    headers = await setup(api)
    hook = await create(
        api,
        headers,
        filter="data.status.value == 'active'",
        max_body_bytes=4096,
        rate_limit_per_second=2.5,
        allowed_sources=["10.1.2.3/8", "2001:db8::1"],
    )
    assert hook["filter"] == "data.status.value == 'active'"
    assert (hook["max_body_bytes"], hook["rate_limit_per_second"]) == (4096, 2.5)
    assert hook["allowed_sources"] == ["10.0.0.0/8", "2001:db8::1/128"]
    assert hook["previous_secret_expires_at"] is None
    patched = await api.patch(
        f"/api/v1/webhooks/{hook['id']}",
        json={"filter": "", "allowed_sources": [], "max_body_bytes": None},
        headers=headers,
    )
    got = await patched.json()
    assert (got["filter"], got["allowed_sources"], got["max_body_bytes"]) == (None, None, None)
    assert got["rate_limit_per_second"] == 2.5


async def test_rotation_shows_the_new_secret_once_and_keeps_the_old_for_the_grace(
    api: ApiClient,
) -> None:
    headers = await setup(api)
    hook = await create(api, headers, secret="the-first-secret-value")
    response = await api.post(f"/api/v1/webhooks/{hook['id']}/rotate", headers=headers)
    assert response.status == 200, await response.text()
    rotated = await response.json()
    assert len(rotated["secret"]) >= 43
    assert rotated["secret"] != "the-first-secret-value"
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(hours=23, minutes=59) < expires - utcnow() <= timedelta(hours=24)
    got = await (await api.get(f"/api/v1/webhooks/{hook['id']}", headers=headers)).json()
    assert got["secret"] == "************"
    box = api.server.app[SECRET_BOX]
    async with api.server.app[SESSIONS]() as session:
        row = await session.get(Webhook, hook["id"])
    assert row is not None
    assert row.previous_secret_encrypted is not None
    assert box.decrypt(row.secret_encrypted) == rotated["secret"]
    assert box.decrypt(row.previous_secret_encrypted) == "the-first-secret-value"
    assert "the-first-secret-value" not in row.previous_secret_encrypted  # encrypted at rest

    response = await api.post(
        f"/api/v1/webhooks/{hook['id']}/rotate",
        json={"grace_seconds": 0, "secret": "a-chosen-new-secret"},
        headers=headers,
    )
    now_rotated = await response.json()
    assert now_rotated["secret"] == "a-chosen-new-secret"
    assert now_rotated["previous_secret_expires_at"] is None
    for bad in ({"grace_seconds": -1}, {"grace_seconds": "1h"}, {"secret": "short"}):
        response = await api.post(
            f"/api/v1/webhooks/{hook['id']}/rotate", json=bad, headers=headers
        )
        assert response.status == 400


async def test_only_the_owner_or_webhooks_write_may_rotate(api: ApiClient) -> None:
    headers = await setup(api)
    hook = await create(api, headers)
    async with api.server.app[SESSIONS]() as session:
        session.add(User(username="mallory", password_hash=hash_password("mallory-pw")))
        await session.commit()
    mallory = await login(api, "mallory", "mallory-pw")
    for path in ("rotate", "test"):
        response = await api.post(f"/api/v1/webhooks/{hook['id']}/{path}", headers=mallory)
        assert response.status == 403
    response = await api.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=mallory)
    assert response.status == 403


async def test_every_change_is_announced(api: ApiClient, announced: list[Event]) -> None:
    headers = await setup(api)
    hook = await create(api, headers)
    path = f"/api/v1/webhooks/{hook['id']}"
    assert (await api.patch(path, json={"enabled": False}, headers=headers)).status == 200
    assert (await api.post(f"{path}/rotate", headers=headers)).status == 200
    assert (await api.delete(path, headers=headers)).status == 200

    def about_webhooks() -> list[tuple[str, str]]:
        # The task made for the webhook is announced too.
        return [
            (e.kind, e.name)
            for e in announced
            if isinstance(e, ConfigChanged) and e.kind == "webhook"
        ]

    for _ in range(50):
        if len(about_webhooks()) >= 4:
            break
        await asyncio.sleep(0.05)
    assert about_webhooks() == [("webhook", hook["id"])] * 4
