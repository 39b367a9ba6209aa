"""`/roles` and `/role_bindings` on PostgreSQL: CRUD by id or name, validation, filters,
builtins, and the Kriten defects (updates by the body's name, PATCH answering 502)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from kriten_api.bootstrap import BUILTIN_ROLES
from kriten_api.settings import ApiSettings
from tests.api.conftest import ApiClient, create, get, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"
ROLE = {"name": "read-hello", "resource": "tasks", "resource_ids": ["hello"], "access": "read"}
BINDING_FIELDS = {
    "id",
    "name",
    "role_name",
    "role_id",
    "subject_kind",
    "subject_provider",
    "subject_name",
    "subject_id",
    "created_at",
    "updated_at",
}


@pytest.fixture
def api_settings(api_settings: ApiSettings, migrated_postgres_url: str) -> ApiSettings:
    return api_settings.model_copy(update={"database_url": SecretStr(migrated_postgres_url)})


async def test_role_crud_by_id_and_by_name(api: ApiClient) -> None:
    root = await login(api)
    created = await create(api, root, "roles", **ROLE)
    assert {k: created[k] for k in ROLE} == ROLE
    assert set(created) == {*ROLE, "id", "created_at", "updated_at"}
    assert await get(api, root, f"/roles/{created['id']}") == created
    assert await get(api, root, "/roles/read-hello") == created

    # Kriten answered 502 here after having made the change.
    patched = await api.patch(
        f"{BASE}/roles/read-hello", json={"resource_ids": ["hello", "bye"]}, headers=root
    )
    assert patched.status == 200
    body = await patched.json()
    assert body["resource_ids"] == ["hello", "bye"]
    assert body["id"] == created["id"]
    put = await api.put(f"{BASE}/roles/{created['id']}", json={"access": "write"}, headers=root)
    assert put.status == 200
    assert (await put.json())["access"] == "write"
    assert (await get(api, root, "/roles/read-hello"))["access"] == "write"

    listed = await api.get(f"{BASE}/roles", headers=root)
    names = [r["name"] for r in await listed.json()]
    assert listed.headers["Content-Range"] == str(len(BUILTIN_ROLES) + 1)
    assert names == sorted(names)
    assert "read-hello" in names

    deleted = await api.delete(f"{BASE}/roles/read-hello", headers=root)
    assert deleted.status == 200
    assert (await api.get(f"{BASE}/roles/read-hello", headers=root)).status == 404
    assert (await api.get(f"{BASE}/roles/{created['id']}", headers=root)).status == 404


async def test_role_update_uses_the_urls_name_not_the_bodys(api: ApiClient) -> None:
    """Kriten updated the role the body named; here the URL decides, and a different
    name in the body is refused rather than followed."""
    root = await login(api)
    await create(api, root, "roles", **ROLE)
    other = await create(api, root, "roles", **{**ROLE, "name": "other-role"})
    response = await api.patch(
        f"{BASE}/roles/read-hello", json={"name": "other-role", "access": "write"}, headers=root
    )
    assert response.status == 400
    assert await get(api, root, "/roles/other-role") == other
    assert (await get(api, root, "/roles/read-hello"))["access"] == "read"
    same = await api.patch(
        f"{BASE}/roles/read-hello", json={"name": "read-hello", "access": "write"}, headers=root
    )
    assert same.status == 200
    assert (await get(api, root, "/roles/other-role"))["access"] == "read"


async def test_kriten_resource_names_field_is_accepted(api: ApiClient) -> None:
    root = await login(api)
    body = {"name": "old-style", "resource": "runners", "resource_names": ["a"], "access": "read"}
    created = await create(api, root, "roles", **body)
    assert created["resource_ids"] == ["a"]


ROLE_INPUT_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({**ROLE, "name": ""}, "name must be"),
    ({**ROLE, "name": "has space"}, "name must be"),
    ({**ROLE, "name": "0b6e5a4c-1f5e-4f55-9d53-4a3b6d1c2e3f"}, "name must be"),
    ({**ROLE, "resource": "secrets"}, "resource must be"),
    ({**ROLE, "resource": None}, "resource must be"),
    ({**ROLE, "resource_ids": []}, "resource_ids must be"),
    ({**ROLE, "resource_ids": "hello"}, "resource_ids must be"),
    ({**ROLE, "resource_ids": [1]}, "resource_ids must be"),
    ({**ROLE, "resource_ids": [""]}, "resource_ids must be"),
    ({**ROLE, "access": "execute"}, "access must be"),
    ({k: v for k, v in ROLE.items() if k != "access"}, "access is required"),
    ({k: v for k, v in ROLE.items() if k != "resource_ids"}, "resource_ids is required"),
]


async def test_role_validation(api: ApiClient) -> None:
    root = await login(api)
    for body, message in ROLE_INPUT_ERRORS:
        response = await api.post(f"{BASE}/roles", json=body, headers=root)
        assert response.status == 400, body
        assert message in (await response.json())["error"], body
    await create(api, root, "roles", **ROLE)
    assert (await api.post(f"{BASE}/roles", json=ROLE, headers=root)).status == 409
    bad_update = await api.patch(f"{BASE}/roles/read-hello", json={"access": "x"}, headers=root)
    assert bad_update.status == 400
    all_ids = {**ROLE, "name": "all-tasks", "resource_ids": ["*"]}
    assert (await create(api, root, "roles", **all_ids))["resource_ids"] == ["*"]


async def test_a_bound_role_cannot_be_deleted(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "roles", **ROLE)
    await create(api, root, "groups", name="readers")
    await create(
        api,
        root,
        "role_bindings",
        name="readers-hello",
        role_name="read-hello",
        subject_name="readers",
    )
    response = await api.delete(f"{BASE}/roles/read-hello", headers=root)
    assert response.status == 409
    assert "readers-hello" in (await response.json())["error"]
    assert (await api.delete(f"{BASE}/role_bindings/readers-hello", headers=root)).status == 200
    assert (await api.delete(f"{BASE}/roles/read-hello", headers=root)).status == 200


async def test_builtin_roles_and_binding_are_immutable(api: ApiClient) -> None:
    root = await login(api)
    for name in (*BUILTIN_ROLES, "RootAdminAccess"):
        kind = "role_bindings" if name == "RootAdminAccess" else "roles"
        before = await get(api, root, f"/{kind}/{name}")
        change = {"access": "read"} if kind == "roles" else {"subject_name": "Admin"}
        for response in (
            await api.patch(f"{BASE}/{kind}/{name}", json=change, headers=root),
            await api.put(f"{BASE}/{kind}/{before['id']}", json=change, headers=root),
            await api.delete(f"{BASE}/{kind}/{name}", headers=root),
        ):
            assert response.status == 403, name
            assert await response.json() == {"error": "cannot modify builtin resource"}
        assert await get(api, root, f"/{kind}/{name}") == before


async def test_binding_crud_resolves_names(api: ApiClient) -> None:
    root = await login(api)
    role = await create(api, root, "roles", **ROLE)
    group = await create(api, root, "groups", name="readers")
    created = await create(
        api,
        root,
        "role_bindings",
        name="readers-hello",
        role_name="read-hello",
        subject_kind="groups",
        subject_provider="local",
        subject_name="readers",
    )
    assert set(created) == BINDING_FIELDS
    assert created["role_id"] == role["id"]
    assert created["subject_id"] == group["id"]
    assert (created["subject_kind"], created["subject_provider"]) == ("groups", "local")
    assert await get(api, root, f"/role_bindings/{created['id']}") == created
    assert await get(api, root, "/role_bindings/readers-hello") == created

    user = await create(api, root, "users", username="quinn", password="pw")
    await create(api, root, "roles", **{**ROLE, "name": "write-hello", "access": "write"})
    # Kriten answered 502 here after having made the change.
    patched = await api.patch(
        f"{BASE}/role_bindings/readers-hello",
        json={"role_name": "write-hello", "subject_kind": "users", "subject_name": "quinn"},
        headers=root,
    )
    assert patched.status == 200
    body = await patched.json()
    assert (body["role_name"], body["subject_kind"], body["subject_id"]) == (
        "write-hello",
        "users",
        user["id"],
    )
    assert body["id"] == created["id"]
    assert await get(api, root, "/role_bindings/readers-hello") == body

    deleted = await api.delete(f"{BASE}/role_bindings/{created['id']}", headers=root)
    assert deleted.status == 200
    assert (await api.get(f"{BASE}/role_bindings/readers-hello", headers=root)).status == 404


async def test_binding_update_uses_the_urls_name_not_the_bodys(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "roles", **ROLE)
    await create(api, root, "groups", name="one")
    await create(api, root, "groups", name="two")
    first = {"role_name": "read-hello", "subject_name": "one"}
    await create(api, root, "role_bindings", name="first", **first)
    second = await create(api, root, "role_bindings", name="second", **first)
    response = await api.patch(
        f"{BASE}/role_bindings/first", json={"name": "second", "subject_name": "two"}, headers=root
    )
    assert response.status == 400
    assert await get(api, root, "/role_bindings/second") == second
    assert (await get(api, root, "/role_bindings/first"))["subject_name"] == "one"


BINDING_INPUT_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"name": "b", "role_name": "ghost", "subject_name": "readers"}, "role 'ghost' does not"),
    ({"name": "b", "role_name": "read-hello", "subject_name": "ghosts"}, "does not exist"),
    (
        {
            "name": "b",
            "role_name": "read-hello",
            "subject_name": "readers",
            "subject_kind": "users",
        },
        "does not exist",
    ),
    (
        {
            "name": "b",
            "role_name": "read-hello",
            "subject_name": "readers",
            "subject_provider": "active_directory",
        },
        "does not exist",
    ),
    (
        {"name": "b", "role_name": "read-hello", "subject_name": "readers", "subject_kind": "x"},
        "subject_kind must be",
    ),
    ({"name": "b", "subject_name": "readers"}, "role_name is required"),
    ({"name": "b", "role_name": "read-hello"}, "subject_name is required"),
    ({"name": "", "role_name": "read-hello", "subject_name": "readers"}, "name must be"),
]


async def test_binding_validation(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "roles", **ROLE)
    await create(api, root, "groups", name="readers")
    for body, message in BINDING_INPUT_ERRORS:
        response = await api.post(f"{BASE}/role_bindings", json=body, headers=root)
        assert response.status == 400, body
        assert message in (await response.json())["error"], body
    good = {"name": "b", "role_name": "read-hello", "subject_name": "readers"}
    assert (await create(api, root, "role_bindings", **good))["subject_kind"] == "groups"
    assert (await api.post(f"{BASE}/role_bindings", json=good, headers=root)).status == 409
    unknown = await api.patch(f"{BASE}/role_bindings/b", json={"role_name": "x"}, headers=root)
    assert unknown.status == 400


async def test_binding_filters(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "roles", **ROLE)
    for group in ("g1", "g2"):
        await create(api, root, "groups", name=group)
        await create(
            api,
            root,
            "role_bindings",
            name=f"{group}-read",
            role_name="read-hello",
            subject_name=group,
        )
    await create(
        api,
        root,
        "role_bindings",
        name="g1-runners",
        role_name="WriteAllRunners",
        subject_name="g1",
    )

    async def names(query: str) -> list[str]:
        response = await api.get(f"{BASE}/role_bindings{query}", headers=root)
        items = await response.json()
        assert response.headers["Content-Range"] == str(len(items))
        return [b["name"] for b in items]

    assert await names("") == ["RootAdminAccess", "g1-read", "g1-runners", "g2-read"]
    assert await names("?role_name=read-hello") == ["g1-read", "g2-read"]
    assert await names("?subject_name=g1") == ["g1-read", "g1-runners"]
    assert await names("?role_name=read-hello&subject_name=g1") == ["g1-read"]
    assert await names("?role_name=Admin") == ["RootAdminAccess"]
    assert await names("?role_name=nothing") == []
    # Only those two fields filter: others are not silently taken as filters.
    assert len(await names("?subject_kind=users")) == 4
    paged = await api.get(f"{BASE}/role_bindings?limit=1&offset=1", headers=root)
    assert paged.headers["Content-Range"] == "4"
    assert [b["name"] for b in await paged.json()] == ["g1-read"]


async def test_a_direct_binding_grants_and_revokes_at_once(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "users", username="rita", password="pw-rita")
    rita = await login(api, "rita", "pw-rita")
    runner = {"name": "py", "image": "python:3.11", "gitURL": "https://example.org/r.git"}
    assert (await api.post(f"{BASE}/runners", json=runner, headers=rita)).status == 403
    await create(
        api,
        root,
        "role_bindings",
        name="rita-runners",
        role_name="WriteAllRunners",
        subject_kind="users",
        subject_name="rita",
    )
    assert (await api.post(f"{BASE}/runners", json=runner, headers=rita)).status == 200
    assert (await api.delete(f"{BASE}/role_bindings/rita-runners", headers=root)).status == 200
    assert (await api.delete(f"{BASE}/runners/py", headers=rita)).status == 403


async def test_role_and_binding_lists_show_only_readable_items(api: ApiClient) -> None:
    root = await login(api)
    await create(api, root, "users", username="sam", password="pw-sam")
    await create(api, root, "roles", **ROLE)
    await create(
        api,
        root,
        "roles",
        name="see-one",
        resource="roles",
        resource_ids=["read-hello"],
        access="read",
    )
    binding = await create(
        api,
        root,
        "role_bindings",
        name="sam-sees",
        role_name="see-one",
        subject_kind="users",
        subject_name="sam",
    )
    await create(
        api,
        root,
        "roles",
        name="see-binding",
        resource="role_bindings",
        resource_ids=[binding["id"]],
        access="read",
    )
    await create(
        api,
        root,
        "role_bindings",
        name="sam-sees-binding",
        role_name="see-binding",
        subject_kind="users",
        subject_name="sam",
    )
    sam = await login(api, "sam", "pw-sam")
    roles = await api.get(f"{BASE}/roles", headers=sam)
    assert [r["name"] for r in await roles.json()] == ["read-hello"]
    assert roles.headers["Content-Range"] == "1"
    bindings = await api.get(f"{BASE}/role_bindings", headers=sam)
    assert [b["name"] for b in await bindings.json()] == ["sam-sees"]
    assert (await api.get(f"{BASE}/roles/Admin", headers=sam)).status == 403
    assert (await api.get(f"{BASE}/roles/no-such-role", headers=sam)).status == 403
    assert (await api.get(f"{BASE}/roles/no-such-role", headers=root)).status == 404
    assert (await api.get(f"{BASE}/role_bindings/RootAdminAccess", headers=sam)).status == 403
