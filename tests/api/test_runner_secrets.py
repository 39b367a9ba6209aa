"""`/runners/{name}/secret` on PostgreSQL: masked reads, merge on POST/PUT (empty value
deletes, the mask keeps), DELETE of named keys or of all, values encrypted at rest."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from kriten_api.keys import SECRET_BOX, SESSIONS
from kriten_api.settings import ApiSettings
from kriten_common.db.models import Runner
from tests.api.conftest import ApiClient, login
from tests.api.test_api_tokens_routes import add_user

pytestmark = pytest.mark.integration

MASK = "************"
RUNNER = {"name": "python", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
URL = "/api/v1/runners/python/secret"


@pytest.fixture
def api_settings(api_settings: ApiSettings, migrated_postgres_url: str) -> ApiSettings:
    return api_settings.model_copy(update={"database_url": SecretStr(migrated_postgres_url)})


async def make_runner(api: ApiClient, headers: dict[str, str], **secret: str) -> None:
    body = {**RUNNER, "secret": secret}
    response = await api.post("/api/v1/runners", json=body, headers=headers)
    assert response.status == 200, await response.text()


async def stored(api: ApiClient) -> dict[str, str]:
    """The runner's secrets as the dispatcher will decrypt them."""
    async with api.app[SESSIONS]() as session:
        runner = await session.get(Runner, "python")
    assert runner is not None
    if runner.secrets_encrypted is not None:
        # Long enough that base64 ciphertext cannot contain it by chance.
        assert "plaintext-value-" not in runner.secrets_encrypted  # no plaintext at rest
    secrets: dict[str, str] = api.app[SECRET_BOX].decrypt_map(runner.secrets_encrypted)
    return secrets


async def test_get_shows_the_keys_with_masked_values(api: ApiClient) -> None:
    root = await login(api)
    await make_runner(api, root, user="plaintext-value-user", password="plaintext-value-pass")
    response = await api.get(URL, headers=root)
    assert response.status == 200
    assert await response.json() == {"password": MASK, "user": MASK}
    assert "plaintext-value-" not in await response.text()


async def test_post_merges_empty_deletes_mask_keeps_value_sets(api: ApiClient) -> None:
    root = await login(api)
    await make_runner(
        api,
        root,
        user="plaintext-value-user",
        password="plaintext-value-pass",
        token="plaintext-value-token",
    )
    update = {
        "user": "",
        "password": MASK,
        "token": "plaintext-value-new-token",
        "added": "plaintext-value-added",
    }
    response = await api.post(URL, json=update, headers=root)
    assert response.status == 200
    answer = await response.json()
    assert answer == {"added": MASK, "password": MASK, "token": MASK}
    assert "plaintext-value-" not in json.dumps(answer)
    assert await stored(api) == {
        "password": "plaintext-value-pass",
        "token": "plaintext-value-new-token",
        "added": "plaintext-value-added",
    }
    # The runner's own read agrees.
    runner = await (await api.get("/api/v1/runners/python", headers=root)).json()
    assert runner["secret"] == {"added": MASK, "password": MASK, "token": MASK}


async def test_put_is_the_same_merge_and_works_on_a_runner_without_secrets(
    api: ApiClient,
) -> None:
    root = await login(api)
    await make_runner(api, root)
    assert await (await api.get(URL, headers=root)).json() == {}
    response = await api.put(URL, json={"first": "plaintext-value-1"}, headers=root)
    assert await response.json() == {"first": MASK}
    response = await api.put(URL, json={"second": "plaintext-value-2", "ghost": MASK}, headers=root)
    # The mask keeps what is there; it creates nothing.
    assert await response.json() == {"first": MASK, "second": MASK}
    assert await stored(api) == {"first": "plaintext-value-1", "second": "plaintext-value-2"}


@pytest.mark.parametrize(
    ("body", "remaining"),
    [
        (["a", "missing"], {"b": "plaintext-value-b", "c": "plaintext-value-c"}),
        ({"a": MASK, "b": ""}, {"c": "plaintext-value-c"}),
        (None, {}),
    ],
    ids=["array-of-keys", "object-keys", "no-body-deletes-all"],
)
async def test_delete_removes_the_named_keys_or_all(
    api: ApiClient, body: object, remaining: dict[str, str]
) -> None:
    root = await login(api)
    await make_runner(
        api, root, a="plaintext-value-a", b="plaintext-value-b", c="plaintext-value-c"
    )
    if body is None:
        response = await api.delete(URL, headers=root)
    else:
        response = await api.delete(URL, json=body, headers=root)
    assert response.status == 200, await response.text()
    assert await response.json() == dict.fromkeys(remaining, MASK)
    assert await stored(api) == remaining


MALFORMED: list[tuple[str, object, str]] = [
    ("POST", {"a": 5}, "string values"),
    ("POST", ["a"], "JSON object"),
    ("PUT", {"bad key!": "v"}, "secret key 'bad key!' is invalid"),
    ("POST", {"../etc": "v"}, "is invalid"),
    ("DELETE", [1, 2], "array of key names"),
    ("DELETE", "a", "array of key names"),
]


async def test_malformed_secret_bodies_are_400_and_change_nothing(api: ApiClient) -> None:
    root = await login(api)
    await make_runner(api, root, a="plaintext-value-a")
    for method, body, message in MALFORMED:
        response = await api.request(method, URL, json=body, headers=root)
        assert response.status == 400, (method, body)
        assert message in (await response.json())["error"], (method, body)
    assert await stored(api) == {"a": "plaintext-value-a"}


async def test_runner_create_refuses_invalid_secret_keys_too(api: ApiClient) -> None:
    root = await login(api)
    body = {**RUNNER, "secret": {"has space": "v"}}
    assert (await api.post("/api/v1/runners", json=body, headers=root)).status == 400


async def test_unknown_runner_is_404(api: ApiClient) -> None:
    root = await login(api)
    for method in ("GET", "POST", "PUT", "DELETE"):
        response = await api.request(
            method, "/api/v1/runners/ghost/secret", json={"a": "b"}, headers=root
        )
        assert response.status == 404, method


async def test_reading_needs_runners_read_and_changing_needs_write(api: ApiClient) -> None:
    root = await login(api)
    await make_runner(api, root, a="plaintext-value-a")
    nobody = await add_user(api, "nobody")
    reader = await add_user(api, "reader", ("runners", ["python"], "read"))
    writer = await add_user(api, "writer", ("runners", ["python"], "write"))
    other = await add_user(api, "other", ("runners", ["other-runner"], "write"))
    api.session.cookie_jar.clear()  # the logins above left a session cookie
    assert (await api.get(URL)).status == 401
    for headers in (nobody, other):
        assert (await api.get(URL, headers=headers)).status == 403
    assert (await api.get(URL, headers=reader)).status == 200
    for method in ("POST", "PUT", "DELETE"):
        for headers in (nobody, reader, other):
            denied = await api.request(method, URL, json={"a": ""}, headers=headers)
            assert denied.status == 403, method
    assert await stored(api) == {"a": "plaintext-value-a"}
    assert (await api.post(URL, json={"b": "plaintext-value-b"}, headers=writer)).status == 200
    assert (await api.delete(URL, json=["a"], headers=writer)).status == 200
    assert await stored(api) == {"b": "plaintext-value-b"}
