"""`/apitokens` and `/api_tokens` on PostgreSQL: the key shown once and stored as an HMAC,
the `Token:` header authenticating only while the token is enabled, unexpired and exists,
and who may see or change whose tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from kriten_api.api_tokens import hash_key, looks_like_key
from kriten_api.keys import SESSIONS
from kriten_api.passwords import hash_password
from kriten_api.settings import ApiSettings
from kriten_common.db.models import ApiToken, Role, RoleBinding, User
from tests.api.conftest import ApiClient, login

pytestmark = pytest.mark.integration

TOKEN_FIELDS = {"id", "owner", "description", "enabled", "expires", "created_at", "updated_at"}
Grant = tuple[str, list[str], str]


@pytest.fixture
def api_settings(api_settings: ApiSettings, migrated_postgres_url: str) -> ApiSettings:
    return api_settings.model_copy(update={"database_url": SecretStr(migrated_postgres_url)})


async def add_user(api: ApiClient, username: str, *grants: Grant) -> dict[str, str]:
    """A local user bound directly to one role per grant; returns their Bearer header."""
    password = f"pw-{username}"
    async with api.app[SESSIONS]() as session:
        user = User(username=username, provider="local", password_hash=hash_password(password))
        session.add(user)
        await session.flush()
        for number, (resource, ids, access) in enumerate(grants):
            role = Role(
                name=f"{username}-{number}", resource=resource, resource_ids=ids, access=access
            )
            session.add(role)
            await session.flush()
            session.add(
                RoleBinding(
                    name=f"{username}-{number}",
                    role_id=role.id,
                    subject_kind="users",
                    subject_provider="local",
                    subject_name=username,
                    subject_id=user.id,
                )
            )
        await session.commit()
    return await login(api, username, password)


async def create_token(api: ApiClient, headers: dict[str, str], **body: object) -> dict[str, Any]:
    response = await api.post("/api/v1/apitokens", json=body, headers=headers)
    assert response.status == 200, await response.text()
    created: dict[str, Any] = await response.json()
    return created


def with_key(created: dict[str, Any]) -> dict[str, str]:
    return {"Token": str(created["key"])}


async def test_create_shows_the_key_once_and_stores_only_its_hmac(
    api: ApiClient, api_settings: ApiSettings
) -> None:
    headers = await login(api)
    created = await create_token(api, headers, description="ci", enabled=True, expires=None)
    assert set(created) == TOKEN_FIELDS | {"key"}
    assert looks_like_key(created["key"])
    assert created["description"] == "ci"
    assert created["enabled"] is True
    assert created["expires"] is None
    got = await (await api.get(f"/api/v1/apitokens/{created['id']}", headers=headers)).json()
    assert set(got) == TOKEN_FIELDS
    assert got == {k: v for k, v in created.items() if k != "key"}
    listed = await api.get("/api/v1/apitokens", headers=headers)
    assert listed.headers["Content-Range"] == "1"
    assert created["key"] not in await listed.text()
    async with api.app[SESSIONS]() as session:
        row = await session.get(ApiToken, created["id"])
        connection = await session.connection()
        dump = (await connection.exec_driver_sql("SELECT * FROM api_tokens")).all()
    assert row is not None
    server_key = api_settings.token_key.get_secret_value()
    assert row.key_hash == hash_key(created["key"], server_key=server_key)
    assert created["key"] not in repr(dump)
    assert created["key"][4:] not in repr(dump)


async def test_a_created_token_authenticates_as_its_owner(api: ApiClient) -> None:
    root = await login(api)
    created = await create_token(api, root)
    mine = await api.get("/api/v1/apitokens", headers=with_key(created))
    assert mine.status == 200
    assert [t["id"] for t in await mine.json()] == [created["id"]]
    # Root's permissions come with the token: an Admin-only list answers.
    assert (await api.get("/api/v1/apitokens/all", headers=with_key(created))).status == 200
    assert (await api.get("/api/v1/runners", headers=with_key(created))).status == 200


async def test_a_disabled_token_is_refused_until_enabled_again(api: ApiClient) -> None:
    root = await login(api)
    created = await create_token(api, root)
    url = f"/api/v1/apitokens/{created['id']}"
    disabled = await api.patch(url, json={"enabled": False}, headers=root)
    assert (await disabled.json())["enabled"] is False
    refused = await api.get("/api/v1/apitokens", headers=with_key(created))
    assert refused.status == 401
    assert "error" in await refused.json()
    assert (await api.patch(url, json={"enabled": True}, headers=root)).status == 200
    assert (await api.get("/api/v1/apitokens", headers=with_key(created))).status == 200


async def test_a_token_created_disabled_never_authenticates(api: ApiClient) -> None:
    created = await create_token(api, await login(api), enabled=False)
    assert created["enabled"] is False
    assert (await api.get("/api/v1/apitokens", headers=with_key(created))).status == 401


async def test_an_expired_token_is_refused(api: ApiClient) -> None:
    root = await login(api)
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    created = await create_token(api, root, expires=expires.isoformat().replace("+00:00", "Z"))
    assert datetime.fromisoformat(created["expires"]) == expires
    assert (await api.get("/api/v1/apitokens", headers=with_key(created))).status == 200
    # Time passes: the stored expiry is now behind us.
    async with api.app[SESSIONS]() as session:
        row = await session.get(ApiToken, created["id"])
        assert row is not None
        row.expires = datetime.now(UTC) - timedelta(seconds=1)
        session.add(row)
        await session.commit()
    assert (await api.get("/api/v1/apitokens", headers=with_key(created))).status == 401


async def test_a_deleted_token_is_refused(api: ApiClient) -> None:
    root = await login(api)
    created = await create_token(api, root)
    deleted = await api.delete(f"/api/v1/apitokens/{created['id']}", headers=root)
    assert deleted.status == 200
    assert (await deleted.json())["id"] == created["id"]
    assert (await api.get("/api/v1/apitokens", headers=with_key(created))).status == 401
    assert (await api.get(f"/api/v1/apitokens/{created['id']}", headers=root)).status == 404


async def test_a_key_under_another_server_key_is_refused(api: ApiClient) -> None:
    # A key that was never issued here, though shaped like one.
    assert (await api.get("/api/v1/apitokens", headers={"Token": "kri_" + "a" * 36})).status == 401


INVALID_FIELDS: list[tuple[dict[str, object], str]] = [
    ({"expires": "tomorrow"}, "RFC 3339"),
    ({"expires": 1893456000}, "RFC 3339"),
    ({"expires": "2099-01-01T00:00:00"}, "UTC offset"),
    ({"expires": "2001-01-01T00:00:00Z"}, "in the future"),
    ({"enabled": "yes"}, "enabled must be a boolean"),
    ({"description": 5}, "description must be a string"),
]


async def test_invalid_token_fields_are_400(api: ApiClient) -> None:
    root = await login(api)
    for body, message in INVALID_FIELDS:
        response = await api.post("/api/v1/apitokens", json=body, headers=root)
        assert response.status == 400, body
        assert message in (await response.json())["error"], body
    assert await (await api.get("/api/v1/apitokens", headers=root)).json() == []


async def test_update_changes_what_it_may_and_refuses_the_rest(api: ApiClient) -> None:
    root = await login(api)
    created = await create_token(api, root, description="old")
    url = f"/api/v1/apitokens/{created['id']}"
    response = await api.patch(
        url, json={"description": "new", "expires": "2099-06-01T12:00:00+02:00"}, headers=root
    )
    updated = await response.json()
    assert updated["description"] == "new"
    assert datetime.fromisoformat(updated["expires"]) == datetime(2099, 6, 1, 10, tzinfo=UTC)
    # PUT on an item is PATCH; sending a read back unchanged is accepted.
    assert (await api.put(url, json=updated, headers=root)).status == 200
    for field, value in (("owner", "someone-else"), ("key", "kri_" + "b" * 36), ("id", "x")):
        refused = await api.patch(url, json={field: value}, headers=root)
        assert refused.status == 400
        assert field in (await refused.json())["error"]
    cleared = await api.patch(url, json={"expires": None}, headers=root)
    assert (await cleared.json())["expires"] is None
    # The key did not change with any of this.
    assert (await api.get("/api/v1/apitokens", headers=with_key(created))).status == 200


async def test_the_api_tokens_alias_serves_the_same_routes(api: ApiClient) -> None:
    root = await login(api)
    created = await create_token(api, root)
    alias = "/api/v1/api_tokens"
    listed = await (await api.get(alias, headers=root)).json()
    assert [t["id"] for t in listed] == [created["id"]]
    assert (await api.get(f"{alias}/all", headers=root)).status == 200
    assert (await api.get(f"{alias}/{created['id']}", headers=root)).status == 200
    made = await api.put(alias, json={"description": "via alias"}, headers=root)
    assert looks_like_key((await made.json())["key"])
    assert (await api.patch(f"{alias}/{created['id']}", json={}, headers=root)).status == 200
    assert (await api.delete(f"{alias}/{created['id']}", headers=root)).status == 200


async def test_owners_manage_their_own_tokens_without_any_role(api: ApiClient) -> None:
    root = await login(api)
    bob = await add_user(api, "bob")
    roots = await create_token(api, root)
    bobs = await create_token(api, bob, description="bob's")
    listed = await api.get("/api/v1/apitokens", headers=bob)
    assert [t["id"] for t in await listed.json()] == [bobs["id"]]
    assert listed.headers["Content-Range"] == "1"
    own = f"/api/v1/apitokens/{bobs['id']}"
    assert (await api.get(own, headers=bob)).status == 200
    assert (await api.patch(own, json={"description": "x"}, headers=bob)).status == 200
    # Bob's token lists Bob's tokens, and Bob can use it to manage them.
    assert (await api.get(own, headers=with_key(bobs))).status == 200
    others = f"/api/v1/apitokens/{roots['id']}"
    for method in ("GET", "PATCH", "DELETE"):
        denied = await api.request(method, others, json={}, headers=bob)
        assert denied.status == 403, method
        assert await denied.json() == {"error": "unauthorized - user cannot access resource"}
    assert (await api.get("/api/v1/apitokens/all", headers=bob)).status == 403
    assert (await api.delete(own, headers=bob)).status == 200


async def test_apitokens_read_and_write_reach_other_users_tokens(api: ApiClient) -> None:
    root = await login(api)
    roots = await create_token(api, root)
    reader = await add_user(api, "reader", ("apitokens", ["*"], "read"))
    writer = await add_user(api, "writer", ("apitokens", ["*"], "write"))
    one = await add_user(api, "one", ("apitokens", [roots["id"]], "read"))
    all_tokens = await api.get("/api/v1/apitokens/all", headers=reader)
    assert [t["id"] for t in await all_tokens.json()] == [roots["id"]]
    assert all_tokens.headers["Content-Range"] == "1"
    url = f"/api/v1/apitokens/{roots['id']}"
    assert (await api.get(url, headers=reader)).status == 200
    assert (await api.patch(url, json={"enabled": False}, headers=reader)).status == 403
    assert (await api.get(url, headers=one)).status == 200
    # Read on one token is not read on all of them.
    assert (await api.get("/api/v1/apitokens/all", headers=one)).status == 403
    assert (await api.patch(url, json={"enabled": False}, headers=writer)).status == 200
    assert (await api.get("/api/v1/apitokens", headers=with_key(roots))).status == 401
    assert (await api.delete(url, headers=writer)).status == 200


async def test_anonymous_callers_are_401(api: ApiClient) -> None:
    assert (await api.get("/api/v1/apitokens")).status == 401
    assert (await api.post("/api/v1/apitokens", json={})).status == 401
    assert (await api.get("/api/v1/apitokens/all")).status == 401
