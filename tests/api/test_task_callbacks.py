"""A task's completion callbacks in the api: validated when saved (SSRF included), the
secret shown once (at creation, at rotation) and never read back, and the delivery log
the collector writes, readable with the task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kriten_api.keys import SECRET_BOX, SESSIONS
from kriten_api.settings import ApiSettings
from kriten_common.client_address import parse_networks
from kriten_common.clock import utcnow
from kriten_common.db.models import CallbackDelivery, Task
from kriten_common.messages import ConfigChanged, Event
from tests.api.conftest import ApiClient, BuildApi, login
from tests.api.test_authorization_matrix import grant, new_user, session_of

pytestmark = pytest.mark.integration

RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
HOOK = "https://receiver.example/hooks/kriten?token=abc"


async def create_task(api: ApiClient, headers: dict[str, str], **fields: Any) -> Any:
    if (await api.get("/api/v1/runners/python", headers=headers)).status == 404:
        assert (await api.post("/api/v1/runners", json=RUNNER, headers=headers)).status == 200
    body = {"name": "hello", "runner": "python", "command": "true", **fields}
    return await api.post("/api/v1/tasks", json=body, headers=headers)


async def test_the_secret_is_shown_at_creation_only(api: ApiClient) -> None:
    headers = await login(api)
    response = await create_task(api, headers, callbacks=[{"url": HOOK}])
    assert response.status == 200, await response.text()
    created = await response.json()
    secret = created["callback_secret"]
    assert secret.startswith("whsec_")
    assert created["callbacks"] == [{"url": HOOK, "events": ["succeeded", "failed", "cancelled"]}]
    read = await (await api.get("/api/v1/tasks/hello", headers=headers)).json()
    listed = await (await api.get("/api/v1/tasks", headers=headers)).json()
    for answer in (read, listed[0]):
        assert "callback_secret" not in answer
        assert secret not in str(answer)
        assert answer["callbacks"] == created["callbacks"]
    # Stored encrypted.
    async with api.app[SESSIONS]() as session:
        task = await session.get(Task, "hello")
    assert task is not None
    assert task.callback_secret_encrypted is not None
    assert secret not in task.callback_secret_encrypted
    assert api.app[SECRET_BOX].decrypt(task.callback_secret_encrypted) == secret


async def test_a_task_without_callbacks_answers_an_empty_list(api: ApiClient) -> None:
    headers = await login(api)
    assert (await create_task(api, headers)).status == 200
    read = await (await api.get("/api/v1/tasks/hello", headers=headers)).json()
    assert read["callbacks"] == []
    # Sending the task back as read changes nothing.
    response = await api.put("/api/v1/tasks/hello", json=read, headers=headers)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("callbacks", "message"),
    [
        ([{"url": "ftp://a.example/"}], "absolute http or https URL"),
        ([{"url": "https://u:p@a.example/"}], "must not hold credentials"),
        ([{"url": "https://a.example/", "events": ["running"]}], "events must be"),
        ([{"url": f"https://a.example/{n}"} for n in range(11)], "at most 10"),
        ([{"url": "http://127.0.0.1:8080/"}], "non-public address"),
        ([{"url": "http://10.0.0.7/"}], "non-public address"),
        ([{"url": "http://169.254.169.254/latest/meta-data"}], "non-public address"),
        ([{"url": "http://[::1]/"}], "non-public address"),
        ("https://a.example/", "callbacks must be a list"),
    ],
)
async def test_bad_callbacks_are_400_at_create_and_update(
    api: ApiClient, callbacks: Any, message: str
) -> None:
    headers = await login(api)
    response = await create_task(api, headers, callbacks=callbacks)
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert (await create_task(api, headers)).status == 200
    response = await api.patch(
        "/api/v1/tasks/hello", json={"callbacks": callbacks}, headers=headers
    )
    assert response.status == 400
    assert message in (await response.json())["error"]


async def test_the_operator_may_allow_private_networks(
    api_settings: ApiSettings, build_api: BuildApi
) -> None:
    allowed = api_settings.model_copy(
        update={"callback_allowed_networks": parse_networks(["127.0.0.0/8"])}
    )
    api = await build_api(allowed)
    headers = await login(api)
    response = await create_task(api, headers, callbacks=[{"url": "http://127.0.0.1:9/"}])
    assert response.status == 200, await response.text()
    response = await api.patch(
        "/api/v1/tasks/hello", json={"callbacks": [{"url": "http://10.0.0.1/"}]}, headers=headers
    )
    assert response.status == 400


async def test_null_or_empty_removes_the_callbacks(api: ApiClient) -> None:
    headers = await login(api)
    assert (await create_task(api, headers, callbacks=[{"url": HOOK}])).status == 200
    for value in (None, []):
        response = await api.patch(
            "/api/v1/tasks/hello", json={"callbacks": [{"url": HOOK}]}, headers=headers
        )
        assert "callback_secret" not in await response.json()
        response = await api.patch(
            "/api/v1/tasks/hello", json={"callbacks": value}, headers=headers
        )
        assert (await response.json())["callbacks"] == []


async def test_rotation_shows_the_new_secret_once_and_keeps_the_old_for_the_grace(
    api: ApiClient,
) -> None:
    headers = await login(api)
    first = (await (await create_task(api, headers, callbacks=[{"url": HOOK}])).json())[
        "callback_secret"
    ]
    response = await api.post("/api/v1/tasks/hello/callback_secret/rotate", headers=headers)
    assert response.status == 200, await response.text()
    second = (await response.json())["callback_secret"]
    assert second.startswith("whsec_")
    assert second != first
    read = await (await api.get("/api/v1/tasks/hello", headers=headers)).json()
    assert "callback_secret" not in read
    box = api.app[SECRET_BOX]
    async with api.app[SESSIONS]() as session:
        task = await session.get(Task, "hello")
    assert task is not None
    assert task.callback_secret_encrypted is not None
    assert task.previous_callback_secret_encrypted is not None
    assert box.decrypt(task.callback_secret_encrypted) == second
    # The previous one still signs, beside the new one, for a day.
    assert box.decrypt(task.previous_callback_secret_encrypted) == first
    assert task.previous_callback_secret_expires_at is not None
    assert task.previous_callback_secret_expires_at > utcnow()

    response = await api.post(
        "/api/v1/tasks/hello/callback_secret/rotate", json={"grace_seconds": 0}, headers=headers
    )
    assert response.status == 200
    async with api.app[SESSIONS]() as session:
        task = await session.get(Task, "hello")
    assert task is not None
    assert task.previous_callback_secret_encrypted is None
    response = await api.post(
        "/api/v1/tasks/hello/callback_secret/rotate", json={"grace_seconds": -1}, headers=headers
    )
    assert response.status == 400


async def test_an_older_task_gets_its_secret_with_its_first_callbacks(api: ApiClient) -> None:
    headers = await login(api)
    assert (await create_task(api, headers)).status == 200
    async with api.app[SESSIONS]() as session:
        task = await session.get(Task, "hello")
        assert task is not None
        task.callback_secret_encrypted = None  # as migrated from before callbacks
        session.add(task)
        await session.commit()
    response = await api.patch(
        "/api/v1/tasks/hello", json={"callbacks": [{"url": HOOK}]}, headers=headers
    )
    assert (await response.json())["callback_secret"].startswith("whsec_")
    response = await api.patch(
        "/api/v1/tasks/hello", json={"description": "again"}, headers=headers
    )
    assert "callback_secret" not in await response.json()


async def test_the_delivery_log_lists_every_attempt_newest_first(api: ApiClient) -> None:
    headers = await login(api)
    assert (await create_task(api, headers, callbacks=[{"url": HOOK}])).status == 200
    async with api.app[SESSIONS]() as session:
        for attempt, status in ((1, 500), (2, 200)):
            session.add(
                CallbackDelivery(
                    task="hello",
                    job_id="hello-1",
                    url=HOOK,
                    event="succeeded",
                    webhook_id="msg_1",
                    attempt=attempt,
                    status_code=status,
                    latency_ms=3,
                    error="HTTP 500 Internal Server Error" if status == 500 else None,
                    delivered=status == 200,
                )
            )
            await session.commit()
        session.add(
            CallbackDelivery(
                task="other", job_id="other-1", url=HOOK, event="failed", webhook_id="m", attempt=1
            )
        )
        await session.commit()
    response = await api.get("/api/v1/tasks/hello/callback_deliveries", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Range"] == "2"
    rows = await response.json()
    assert [(r["attempt"], r["status_code"], r["delivered"]) for r in rows] == [
        (2, 200, True),
        (1, 500, False),
    ]
    assert rows[1]["error"] == "HTTP 500 Internal Server Error"
    # Which callback, not the receiver's token in its query.
    assert {r["url"] for r in rows} == {"https://receiver.example/hooks/kriten"}
    response = await api.get("/api/v1/tasks/hello/callback_deliveries?job_id=nope", headers=headers)
    assert await response.json() == []
    response = await api.get("/api/v1/tasks/nope/callback_deliveries", headers=headers)
    assert response.status == 404


async def test_every_change_of_a_task_is_announced(api: ApiClient, announced: list[Event]) -> None:
    """The collector caches which tasks have callbacks: a task created with callbacks, or
    changed, must reach it at once (`config.changed`), or a job finishing soon after
    would be called back by the old callbacks, or not at all."""
    headers = await login(api)
    created = await create_task(api, headers, callbacks=[{"url": HOOK, "events": ["failed"]}])
    assert created.status == 200
    path = "/api/v1/tasks/hello"
    assert (await api.patch(path, json={"callbacks": []}, headers=headers)).status == 200
    assert (await api.delete(path, headers=headers)).status == 200
    for _ in range(50):
        if len(announced) >= 3:
            break
        await asyncio.sleep(0.05)
    assert [(e.kind, e.name) for e in announced if isinstance(e, ConfigChanged)] == [
        ("task", "hello")
    ] * 3


async def test_a_reader_who_may_not_change_the_task_sees_no_url_query(api: ApiClient) -> None:
    """A callback URL's query may hold the receiver's token: only those who may change
    the task (and so set the URL) see it."""
    root = await login(api)
    assert (await create_task(api, root, callbacks=[{"url": HOOK}])).status == 200
    await new_user(api, root, "reader")
    await grant(api, root, "reader", "tasks", ["hello"], "read")
    reader = await session_of(api, "reader", "pw-reader")
    for headers, url in ((root, HOOK), (reader, "https://receiver.example/hooks/kriten")):
        task = await (await api.get("/api/v1/tasks/hello", headers=headers)).json()
        (listed,) = await (await api.get("/api/v1/tasks", headers=headers)).json()
        assert task["callbacks"][0]["url"] == listed["callbacks"][0]["url"] == url
