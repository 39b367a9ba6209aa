"""`/users` and `/groups` on PostgreSQL: CRUD, validation, membership both ways, builtins."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from sqlmodel import select

from kriten_api.keys import SESSIONS
from kriten_api.settings import ApiSettings
from kriten_common.db.models import User
from tests.api.conftest import ApiClient, BuildApi, create, get, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"


@pytest.fixture
def api_settings(api_settings: ApiSettings, migrated_postgres_url: str) -> ApiSettings:
    # A directory URL makes `active_directory` a provider users and groups may have;
    # nothing connects to it unless someone logs in with it.
    return api_settings.model_copy(
        update={"database_url": SecretStr(migrated_postgres_url), "ldap_url": "ldaps://127.0.0.1:1"}
    )


async def test_password_is_hashed_and_never_read_back(api: ApiClient) -> None:
    root = await login(api)
    created = await create(api, root, "users", username="alice", password="wonder-land-1")
    assert set(created) == {"id", "username", "provider", "groups", "created_at", "updated_at"}
    assert created["username"] == "alice"
    assert created["provider"] == "local"
    assert created["groups"] == []
    reads = [
        created,
        await get(api, root, f"/users/{created['id']}"),
        await get(api, root, "/users"),
        await get(api, root, f"/users/{created['id']}/groups"),
    ]
    patched = await api.patch(
        f"{BASE}/users/{created['id']}", json={"password": "wonder-land-2"}, headers=root
    )
    reads.append(await patched.json())
    for read in reads:
        text = json.dumps(read)
        assert "password" not in text
        assert "argon2" not in text
        assert "wonder-land" not in text
    async with api.app[SESSIONS]() as session:
        user = (await session.exec(select(User).where(User.username == "alice"))).one()
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert await login(api, "alice", "wonder-land-2")


async def test_kriten_name_field_is_accepted_for_the_username(api: ApiClient) -> None:
    root = await login(api)
    created = await create(api, root, "users", name="bob", password="builder-pw")
    assert created["username"] == "bob"


USER_INPUT_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"username": "", "password": "x"}, "username must be"),
    ({"username": "has space", "password": "x"}, "username must be"),
    ({"username": "a/b", "password": "x"}, "username must be"),
    ({"username": "*", "password": "x"}, "username must be"),
    ({"username": "a" * 129, "password": "x"}, "username must be"),
    ({"username": 5, "password": "x"}, "username must be"),
    ({"username": "carol"}, "password is required"),
    ({"username": "carol", "password": ""}, "password is required"),
    ({"username": "carol", "password": 5}, "password is required"),
    ({"username": "carol", "password": "x" * 1025}, "at most 1024"),
    ({"username": "carol", "password": "x", "provider": "github"}, "provider must be"),
    (
        {"username": "carol", "password": "x", "provider": "active_directory"},
        "password is not used",
    ),
    ({"username": "carol", "password": "x", "groups": "Admin"}, "groups must be a list"),
    ({"username": "carol", "password": "x", "groups": ["ghost"]}, "does not exist"),
]


async def test_user_validation(api: ApiClient) -> None:
    root = await login(api)
    for body, message in USER_INPUT_ERRORS:
        response = await api.post(f"{BASE}/users", json=body, headers=root)
        assert response.status == 400, body
        assert message in (await response.json())["error"], body
    assert [u["username"] for u in await get(api, root, "/users")] == ["root"]


async def test_users_are_unique_per_provider(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "users", username="dave", password="pw")
    again = await api.post(
        f"{BASE}/users", json={"username": "dave", "password": "other"}, headers=root
    )
    assert again.status == 409
    assert "already exists" in (await again.json())["error"]
    directory = await create(api, root, "users", username="dave", provider="active_directory")
    assert directory["provider"] == "active_directory"
    listed = await api.get(f"{BASE}/users", headers=root)
    assert listed.headers["Content-Range"] == "3"


async def test_directory_users_need_a_configured_directory(
    api_settings: ApiSettings, build_api: BuildApi
) -> None:
    client = await build_api(api_settings.model_copy(update={"ldap_url": None}))
    root = await login(client)
    body = {"username": "erin", "provider": "active_directory"}
    response = await client.post(f"{BASE}/users", json=body, headers=root)
    assert response.status == 400
    assert (await response.json())["error"] == "provider must be one of local"


async def test_update_keeps_identity_from_the_url(api: ApiClient) -> None:
    root = await login(api)
    frank = await create(api, root, "users", username="frank", password="pw-1")
    await create(api, root, "users", username="grace", password="pw-g")
    path = f"{BASE}/users/{frank['id']}"
    renamed = await api.patch(path, json={"username": "grace", "password": "x"}, headers=root)
    assert renamed.status == 400
    moved = await api.patch(path, json={"provider": "active_directory"}, headers=root)
    assert moved.status == 400
    other_id = await api.patch(path, json={"id": "someone-else", "password": "x"}, headers=root)
    assert other_id.status == 400
    # grace's password was not touched by any of that.
    assert await login(api, "grace", "pw-g")
    put = await api.put(path, json={"username": "frank", "password": "pw-2"}, headers=root)
    assert put.status == 200
    assert (await put.json())["username"] == "frank"
    failed = await api.post(
        f"{BASE}/login", json={"username": "frank", "password": "pw-1", "provider": "local"}
    )
    assert failed.status == 401
    assert await login(api, "frank", "pw-2")


async def test_membership_is_the_same_seen_from_either_side(api: ApiClient) -> None:
    root = await login(api)
    ops = await create(api, root, "groups", name="ops")
    dev = await create(api, root, "groups", name="dev")
    assert ops["users"] == []
    assert ops["provider"] == "local"
    heidi = await create(api, root, "users", username="heidi", password="pw", groups=[ops["id"]])
    assert heidi["groups"] == [ops["id"]]
    assert (await get(api, root, f"/groups/{ops['id']}"))["users"] == [heidi["id"]]

    # A user's `groups` may name groups by id or by name.
    patched = await api.patch(f"{BASE}/users/{heidi['id']}", json={"groups": ["dev"]}, headers=root)
    assert (await patched.json())["groups"] == [dev["id"]]
    assert (await get(api, root, "/groups/ops"))["users"] == []
    assert (await get(api, root, "/groups/dev"))["users"] == [heidi["id"]]

    added = await api.post(
        f"{BASE}/groups/ops/users", json=[{"name": "heidi", "provider": "local"}], headers=root
    )
    assert added.status == 200
    assert (await added.json())["users"] == [heidi["id"]]
    assert sorted((await get(api, root, f"/users/{heidi['id']}"))["groups"]) == sorted(
        [ops["id"], dev["id"]]
    )
    members = await api.get(f"{BASE}/groups/ops/users", headers=root)
    assert members.headers["Content-Range"] == "1"
    assert await members.json() == [{"id": heidi["id"], "name": "heidi", "provider": "local"}]
    user_groups = await get(api, root, f"/users/{heidi['id']}/groups")
    assert user_groups == [
        {"id": dev["id"], "name": "dev", "provider": "local"},
        {"id": ops["id"], "name": "ops", "provider": "local"},
    ]

    # Kriten's clients sent `username` in the same list.
    removed = await api.delete(
        f"{BASE}/groups/{dev['id']}/users",
        json=[{"username": "heidi", "provider": "local"}],
        headers=root,
    )
    assert (await removed.json())["users"] == []
    assert (await get(api, root, f"/users/{heidi['id']}"))["groups"] == [ops["id"]]

    emptied = await api.patch(f"{BASE}/groups/ops", json={"users": []}, headers=root)
    assert (await emptied.json())["users"] == []
    assert (await get(api, root, f"/users/{heidi['id']}"))["groups"] == []
    refilled = await api.put(f"{BASE}/groups/ops", json={"users": [heidi["id"]]}, headers=root)
    assert (await refilled.json())["users"] == [heidi["id"]]
    assert (await get(api, root, f"/users/{heidi['id']}"))["groups"] == [ops["id"]]


async def test_providers_of_member_and_group_must_match(api: ApiClient) -> None:
    root = await login(api)
    local_group = await create(api, root, "groups", name="locals")
    directory_user = await create(api, root, "users", username="ivan", provider="active_directory")
    as_directory = await api.post(
        f"{BASE}/groups/locals/users",
        json=[{"name": "ivan", "provider": "active_directory"}],
        headers=root,
    )
    assert as_directory.status == 400
    assert "provider" in (await as_directory.json())["error"]
    by_id = await api.post(
        f"{BASE}/groups",
        json={"name": "more-locals", "users": [directory_user["id"]]},
        headers=root,
    )
    assert by_id.status == 400
    assert "provider" in (await by_id.json())["error"]
    from_user = await api.patch(
        f"{BASE}/users/{directory_user['id']}", json={"groups": [local_group["id"]]}, headers=root
    )
    assert from_user.status == 400
    assert (await get(api, root, "/groups/locals"))["users"] == []
    # Not the local user of that name either: there is none.
    unknown = await api.post(
        f"{BASE}/groups/locals/users", json=[{"name": "ivan", "provider": "local"}], headers=root
    )
    assert unknown.status == 400
    assert "does not exist" in (await unknown.json())["error"]


async def test_group_by_id_or_name_and_names_shared_by_providers(api: ApiClient) -> None:
    root = await login(api)
    local = await create(api, root, "groups", name="Domain Admins")
    assert await get(api, root, f"/groups/{local['id']}") == local
    assert await get(api, root, "/groups/Domain%20Admins") == local
    directory = await create(api, root, "groups", name="Domain Admins", provider="active_directory")
    ambiguous = await api.get(f"{BASE}/groups/Domain%20Admins", headers=root)
    assert ambiguous.status == 400
    assert "?provider=" in (await ambiguous.json())["error"]
    chosen = await get(api, root, "/groups/Domain%20Admins?provider=active_directory")
    assert chosen["id"] == directory["id"]
    duplicate = await api.post(f"{BASE}/groups", json={"name": "Domain Admins"}, headers=root)
    assert duplicate.status == 409
    assert (await api.get(f"{BASE}/groups/nothing", headers=root)).status == 404


GROUP_INPUT_ERRORS: list[dict[str, Any]] = [
    {"name": ""},
    {"name": " leading"},
    {"name": "trailing "},
    {"name": "a/b"},
    {"name": "0b6e5a4c-1f5e-4f55-9d53-4a3b6d1c2e3f"},
    {"name": "ok", "provider": "github"},
    {"name": "ok", "users": "root"},
    {"name": "ok", "users": ["no-such-user"]},
]


async def test_group_validation(api: ApiClient) -> None:
    root = await login(api)
    for body in GROUP_INPUT_ERRORS:
        response = await api.post(f"{BASE}/groups", json=body, headers=root)
        assert response.status == 400, body
    assert [g["name"] for g in await get(api, root, "/groups")] == ["Admin"]


async def test_groups_can_be_deleted(api: ApiClient) -> None:
    """Kriten could never delete a group; here one with members goes, bound ones wait."""
    root = await login(api)
    group = await create(api, root, "groups", name="temps")
    judy = await create(api, root, "users", username="judy", password="pw", groups=["temps"])
    deleted = await api.delete(f"{BASE}/groups/temps", headers=root)
    assert deleted.status == 200
    assert (await deleted.json())["id"] == group["id"]
    assert (await api.get(f"{BASE}/groups/{group['id']}", headers=root)).status == 404
    assert (await get(api, root, f"/users/{judy['id']}"))["groups"] == []

    await create(api, root, "groups", name="bound")
    binding = {"name": "bound-runners", "role_name": "WriteAllRunners", "subject_name": "bound"}
    await create(api, root, "role_bindings", subject_kind="groups", **binding)
    still_bound = await api.delete(f"{BASE}/groups/bound", headers=root)
    assert still_bound.status == 409
    assert "bound-runners" in (await still_bound.json())["error"]
    assert (await api.delete(f"{BASE}/role_bindings/bound-runners", headers=root)).status == 200
    assert (await api.delete(f"{BASE}/groups/bound", headers=root)).status == 200


async def test_deleting_a_user_removes_their_memberships(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "groups", name="crew")
    kim = await create(api, root, "users", username="kim", password="pw", groups=["crew"])
    response = await api.delete(f"{BASE}/users/{kim['id']}", headers=root)
    assert response.status == 200
    assert await response.json() == {"msg": "user deleted successfully", "id": kim["id"]}
    assert (await get(api, root, "/groups/crew"))["users"] == []
    assert (await api.get(f"{BASE}/users/{kim['id']}", headers=root)).status == 404
    assert (await api.delete(f"{BASE}/users/{kim['id']}", headers=root)).status == 404


async def test_root_and_admin_are_builtin(api: ApiClient) -> None:
    root = await login(api)
    root_id = (await get(api, root, "/users"))[0]["id"]
    admin = await get(api, root, "/groups/Admin")
    assert admin["users"] == [root_id]
    attempts = [
        api.patch(f"{BASE}/users/{root_id}", json={"password": "mine-now"}, headers=root),
        api.patch(f"{BASE}/users/{root_id}", json={"groups": []}, headers=root),
        api.delete(f"{BASE}/users/{root_id}", headers=root),
        api.patch(f"{BASE}/groups/Admin", json={"users": []}, headers=root),
        api.delete(f"{BASE}/groups/Admin", headers=root),
        api.delete(
            f"{BASE}/groups/Admin/users", json=[{"name": "root", "provider": "local"}], headers=root
        ),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status == 403
        assert await response.json() == {"error": "cannot modify builtin resource"}
    assert (await get(api, root, "/groups/Admin"))["users"] == [root_id]
    assert await login(api)


async def test_user_list_shows_only_readable_users_and_paginates(api: ApiClient) -> None:
    root = await login(api)
    ids = {}
    for name in ("liam", "mia", "noah", "olga"):
        ids[name] = (await create(api, root, "users", username=name, password=f"pw-{name}"))["id"]
    # resource_ids may name a user by id or by username.
    await create(
        api,
        root,
        "roles",
        name="read-some-users",
        resource="users",
        resource_ids=[ids["mia"], "noah"],
        access="read",
    )
    await create(
        api,
        root,
        "role_bindings",
        name="liam-reads",
        role_name="read-some-users",
        subject_kind="users",
        subject_name="liam",
    )
    liam = await login(api, "liam", "pw-liam")
    listed = await api.get(f"{BASE}/users", headers=liam)
    assert listed.headers["Content-Range"] == "2"
    assert [u["username"] for u in await listed.json()] == ["mia", "noah"]
    assert (await api.get(f"{BASE}/users/{ids['noah']}", headers=liam)).status == 200
    assert (await api.get(f"{BASE}/users/{ids['olga']}", headers=liam)).status == 403
    # Reading is not writing.
    write = await api.patch(f"{BASE}/users/{ids['mia']}", json={"password": "x"}, headers=liam)
    assert write.status == 403
    # A user it may not read is 403 whether or not it exists.
    assert (await api.get(f"{BASE}/users/not-a-user", headers=liam)).status == 403
    assert (await api.get(f"{BASE}/users/not-a-user", headers=root)).status == 404

    paged = await api.get(f"{BASE}/users?limit=2&offset=1", headers=root)
    assert paged.headers["Content-Range"] == "5"
    assert [u["username"] for u in await paged.json()] == ["mia", "noah"]
    assert (await api.get(f"{BASE}/users?limit=x", headers=root)).status == 400
    api.session.cookie_jar.clear()
    assert (await api.get(f"{BASE}/users")).status == 401


async def test_group_list_shows_only_readable_groups(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "users", username="pat", password="pw-pat")
    for name in ("alpha", "beta", "gamma"):
        await create(api, root, "groups", name=name)
    await create(
        api,
        root,
        "roles",
        name="read-beta",
        resource="groups",
        resource_ids=["beta"],
        access="read",
    )
    await create(
        api,
        root,
        "role_bindings",
        name="pat-beta",
        role_name="read-beta",
        subject_kind="users",
        subject_name="pat",
    )
    pat = await login(api, "pat", "pw-pat")
    listed = await api.get(f"{BASE}/groups", headers=pat)
    assert listed.headers["Content-Range"] == "1"
    assert [g["name"] for g in await listed.json()] == ["beta"]
    assert (await api.get(f"{BASE}/groups/beta/users", headers=pat)).status == 200
    assert (await api.get(f"{BASE}/groups/alpha", headers=pat)).status == 403
    joined = await api.post(
        f"{BASE}/groups/beta/users", json=[{"name": "pat", "provider": "local"}], headers=pat
    )
    assert joined.status == 403
    assert (await api.delete(f"{BASE}/groups/beta", headers=pat)).status == 403
    assert (await api.post(f"{BASE}/groups", json={"name": "mine"}, headers=pat)).status == 403
