"""The privilege-escalation suite, on SQLite and on PostgreSQL.

Nobody can give anyone, themselves included, a permission they do not hold: not through
a user's groups, a group's members, a role's definition or a binding. Built-in rows stay
as they are, and a permission taken away is gone for the very next request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr

from kriten_api.bootstrap import BUILTIN_ROLES
from kriten_api.settings import ApiSettings
from kriten_common.messages import ConfigChanged, Event
from tests.api.conftest import ApiClient, login

pytestmark = pytest.mark.integration

BASE = "/api/v1"
BUILTIN = {"error": "cannot modify builtin resource"}
RUNNER = {"name": "py", "image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}


@pytest.fixture
def api_settings(api_settings: ApiSettings, migrated_database_url: str) -> ApiSettings:
    return api_settings.model_copy(update={"database_url": SecretStr(migrated_database_url)})


async def ok(response: Any) -> Any:
    assert 200 <= response.status < 300, await response.text()
    return await response.json()


async def user(api: ApiClient, root: dict[str, str], name: str, **body: Any) -> dict[str, Any]:
    created: dict[str, Any] = await ok(
        await api.post(
            f"{BASE}/users", json={"username": name, "password": f"pw-{name}", **body}, headers=root
        )
    )
    return created


async def bind(
    api: ApiClient, root: dict[str, str], role: str, subject: str, kind: str = "users"
) -> None:
    body = {
        "name": f"{subject}-{role}".replace(" ", "-"),
        "role_name": role,
        "subject_kind": kind,
        "subject_name": subject,
    }
    await ok(await api.post(f"{BASE}/role_bindings", json=body, headers=root))


async def role(
    api: ApiClient, root: dict[str, str], name: str, resource: str, ids: list[str], access: str
) -> None:
    body = {"name": name, "resource": resource, "resource_ids": ids, "access": access}
    await ok(await api.post(f"{BASE}/roles", json=body, headers=root))


async def admin_group(api: ApiClient, root: dict[str, str]) -> dict[str, Any]:
    group: dict[str, Any] = await ok(await api.get(f"{BASE}/groups/Admin", headers=root))
    return group


async def test_users_write_is_no_path_to_admin(api: ApiClient) -> None:
    root = await login(api)
    admins = await admin_group(api, root)
    mallory = await user(api, root, "mallory")
    await bind(api, root, "WriteAllUsers", "mallory")
    alice = await user(api, root, "alice")
    await bind(api, root, "Admin", "alice")
    as_mallory = await login(api, "mallory", "pw-mallory")

    attempts = {
        "join Admin through her own groups": api.patch(
            f"{BASE}/users/{mallory['id']}", json={"groups": [admins["id"]]}, headers=as_mallory
        ),
        "create a user in Admin": api.post(
            f"{BASE}/users",
            json={"username": "minion", "password": "pw", "groups": ["Admin"]},
            headers=as_mallory,
        ),
        "add herself to Admin": api.post(
            f"{BASE}/groups/Admin/users",
            json=[{"name": "mallory", "provider": "local"}],
            headers=as_mallory,
        ),
        "bind Admin to herself": api.post(
            f"{BASE}/role_bindings",
            json={
                "name": "mine",
                "role_name": "Admin",
                "subject_kind": "users",
                "subject_name": "mallory",
            },
            headers=as_mallory,
        ),
        "take over an admin's account": api.patch(
            f"{BASE}/users/{alice['id']}", json={"password": "owned"}, headers=as_mallory
        ),
        "delete an admin": api.delete(f"{BASE}/users/{alice['id']}", headers=as_mallory),
    }
    for what, attempt in attempts.items():
        response = await attempt
        assert response.status == 403, what
    root_id = admins["users"][0]
    root_password = await api.patch(
        f"{BASE}/users/{root_id}", json={"password": "owned"}, headers=as_mallory
    )
    assert root_password.status == 403
    assert await root_password.json() == BUILTIN

    # Nothing changed: no minion, Admin as it was, alice's password hers, mallory as weak.
    users = await ok(await api.get(f"{BASE}/users", headers=root))
    assert sorted(u["username"] for u in users) == ["alice", "mallory", "root"]
    assert (await admin_group(api, root))["users"] == [root_id]
    assert await login(api, "alice", "pw-alice")
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=as_mallory)).status == 403

    # What users:write is for still works on users who hold no more than she does.
    intern = await user(api, as_mallory, "intern")
    changed = await api.patch(
        f"{BASE}/users/{intern['id']}", json={"password": "new-pw"}, headers=as_mallory
    )
    assert changed.status == 200
    assert (await api.delete(f"{BASE}/users/{intern['id']}", headers=as_mallory)).status == 200


async def test_group_write_does_not_grant_the_groups_permissions(api: ApiClient) -> None:
    root = await login(api)
    await ok(await api.post(f"{BASE}/groups", json={"name": "runner-admins"}, headers=root))
    await bind(api, root, "WriteAllRunners", "runner-admins", kind="groups")
    await user(api, root, "gus")
    other = await user(api, root, "hank", groups=["runner-admins"])
    await role(api, root, "manage-runner-admins", "groups", ["runner-admins"], "write")
    await bind(api, root, "manage-runner-admins", "gus")
    gus = await login(api, "gus", "pw-gus")
    me = [{"name": "gus", "provider": "local"}]

    joined = await api.post(f"{BASE}/groups/runner-admins/users", json=me, headers=gus)
    assert joined.status == 403
    assert "runners" in (await joined.json())["error"]
    # Taking members out only takes permissions away: allowed.
    removed = await api.delete(
        f"{BASE}/groups/runner-admins/users",
        json=[{"name": "hank", "provider": "local"}],
        headers=gus,
    )
    assert removed.status == 200
    assert (await removed.json())["users"] == []
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=gus)).status == 403

    # Write on every group is still no way into Admin.
    await role(api, root, "all-groups", "groups", ["*"], "write")
    await bind(api, root, "all-groups", "gus")
    into_admin = await api.post(f"{BASE}/groups/Admin/users", json=me, headers=gus)
    assert into_admin.status == 403
    assert (await admin_group(api, root))["users"] != []
    assert len((await admin_group(api, root))["users"]) == 1

    # Once gus holds what the group grants, he may hand it out (to himself too).
    await bind(api, root, "WriteAllRunners", "gus")
    back = await api.patch(
        f"{BASE}/groups/runner-admins", json={"users": [other["id"]]}, headers=gus
    )
    assert back.status == 200
    joined = await api.post(f"{BASE}/groups/runner-admins/users", json=me, headers=gus)
    assert joined.status == 200


async def test_roles_write_on_one_role_cannot_widen_another(api: ApiClient) -> None:
    root = await login(api)
    await role(api, root, "mine", "tasks", ["hello"], "read")
    await role(api, root, "theirs", "tasks", ["hello"], "read")
    await ok(await api.post(f"{BASE}/groups", json={"name": "readers"}, headers=root))
    await bind(api, root, "theirs", "readers", kind="groups")
    await user(api, root, "ivy")
    await role(api, root, "edit-mine", "roles", ["mine"], "write")
    await bind(api, root, "edit-mine", "ivy")
    ivy = await login(api, "ivy", "pw-ivy")
    everything = {"resource": "*", "resource_ids": ["*"], "access": "write"}

    before = {
        name: await ok(await api.get(f"{BASE}/roles/{name}", headers=root))
        for name in ("mine", "theirs", "edit-mine")
    }
    attempts = {
        "widen another role": api.patch(
            f"{BASE}/roles/theirs", json={"resource_ids": ["*"]}, headers=ivy
        ),
        "widen another role by its id": api.put(
            f"{BASE}/roles/{before['theirs']['id']}", json=everything, headers=ivy
        ),
        "make her own role Admin": api.patch(f"{BASE}/roles/mine", json=everything, headers=ivy),
        "widen the role that lets her edit": api.patch(
            f"{BASE}/roles/edit-mine", json={"resource_ids": ["*"]}, headers=ivy
        ),
        "turn her role into roles:write on all": api.patch(
            f"{BASE}/roles/mine",
            json={"resource": "roles", "resource_ids": ["*"], "access": "write"},
            headers=ivy,
        ),
        "delete another role": api.delete(f"{BASE}/roles/theirs", headers=ivy),
        "create a role": api.post(f"{BASE}/roles", json={"name": "new", **everything}, headers=ivy),
    }
    for what, attempt in attempts.items():
        response = await attempt
        assert response.status == 403, what
    for name, row in before.items():
        assert await ok(await api.get(f"{BASE}/roles/{name}", headers=root)) == row

    # She may change her role within what she holds herself.
    narrowed = await api.patch(
        f"{BASE}/roles/mine",
        json={"resource": "roles", "resource_ids": ["mine"], "access": "read"},
        headers=ivy,
    )
    assert narrowed.status == 200


async def test_write_all_roles_cannot_define_more_than_it_holds(api: ApiClient) -> None:
    root = await login(api)
    await user(api, root, "jack")
    await bind(api, root, "WriteAllRoles", "jack")
    jack = await login(api, "jack", "pw-jack")
    runners = {"name": "runners", "resource": "runners", "resource_ids": ["*"], "access": "write"}
    assert (await api.post(f"{BASE}/roles", json=runners, headers=jack)).status == 403
    within = {"name": "see-a-role", "resource": "roles", "resource_ids": ["x"], "access": "read"}
    assert (await api.post(f"{BASE}/roles", json=within, headers=jack)).status == 200
    wider = await api.patch(f"{BASE}/roles/see-a-role", json={"resource": "*"}, headers=jack)
    assert wider.status == 403
    admin = await api.patch(f"{BASE}/roles/Admin", json={"resource": "roles"}, headers=jack)
    assert admin.status == 403
    assert await admin.json() == BUILTIN


async def test_binding_writers_hand_out_only_what_they_hold(api: ApiClient) -> None:
    root = await login(api)
    await user(api, root, "kate")
    await user(api, root, "carl")
    await bind(api, root, "WriteAllRoleBindings", "kate")
    await ok(await api.post(f"{BASE}/groups", json={"name": "ops"}, headers=root))
    await bind(api, root, "Admin", "ops", kind="groups")
    kate = await login(api, "kate", "pw-kate")

    def binding(name: str, role_name: str, subject: str) -> dict[str, str]:
        return {
            "name": name,
            "role_name": role_name,
            "subject_kind": "users",
            "subject_name": subject,
        }

    for role_name in ("Admin", "WriteAllRunners", "WriteAllUsers"):
        response = await api.post(
            f"{BASE}/role_bindings", json=binding("mine", role_name, "kate"), headers=kate
        )
        assert response.status == 403, role_name
    # Moving an existing Admin binding to herself is handing Admin out too, and so is
    # any change to a binding of a role she does not hold.
    to_me = {"subject_kind": "users", "subject_name": "kate"}
    moved = await api.patch(f"{BASE}/role_bindings/ops-Admin", json=to_me, headers=kate)
    assert moved.status == 403
    assert (await api.patch(f"{BASE}/role_bindings/ops-Admin", json={}, headers=kate)).status == 403
    kept = await ok(await api.get(f"{BASE}/role_bindings/ops-Admin", headers=root))
    assert (kept["subject_kind"], kept["subject_name"]) == ("groups", "ops")
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=kate)).status == 403

    # What she holds she may give, and bindings she may remove.
    given = await api.post(
        f"{BASE}/role_bindings",
        json=binding("carl-bindings", "WriteAllRoleBindings", "carl"),
        headers=kate,
    )
    assert given.status == 200
    assert (await api.delete(f"{BASE}/role_bindings/ops-Admin", headers=kate)).status == 200
    root_binding = await api.delete(f"{BASE}/role_bindings/RootAdminAccess", headers=kate)
    assert root_binding.status == 403
    assert await root_binding.json() == BUILTIN


async def test_builtin_rows_cannot_be_changed_or_deleted(api: ApiClient) -> None:
    """Not even by root, who holds every permission: only the builtin rule stops it."""
    root = await login(api)
    admins = await admin_group(api, root)
    root_id = admins["users"][0]
    reads = [f"/users/{root_id}", "/groups/Admin", "/role_bindings/RootAdminAccess"]
    reads += [f"/roles/{name}" for name in BUILTIN_ROLES]
    before = {path: await ok(await api.get(f"{BASE}{path}", headers=root)) for path in reads}

    await ok(await api.post(f"{BASE}/groups", json={"name": "elsewhere"}, headers=root))
    writes = [
        ("PATCH", f"/users/{root_id}", {"password": "x"}),
        ("PUT", f"/users/{root_id}", {"groups": []}),
        ("DELETE", f"/users/{root_id}", None),
        ("PATCH", "/groups/Admin", {"users": []}),
        ("PUT", f"/groups/{admins['id']}", {"users": [root_id]}),
        ("DELETE", "/groups/Admin", None),
        ("DELETE", "/groups/Admin/users", [{"name": "root", "provider": "local"}]),
        ("PATCH", "/role_bindings/RootAdminAccess", {"subject_name": "elsewhere"}),
        ("PUT", "/role_bindings/RootAdminAccess", {"role_name": "WriteAllJobs"}),
        ("DELETE", "/role_bindings/RootAdminAccess", None),
    ]
    for name in BUILTIN_ROLES:
        writes += [
            ("PATCH", f"/roles/{name}", {"access": "read"}),
            ("PUT", f"/roles/{name}", {"resource_ids": ["x"]}),
            ("DELETE", f"/roles/{name}", None),
        ]
    for method, path, body in writes:
        response = await api.request(method, f"{BASE}{path}", json=body, headers=root)
        assert response.status == 403, (method, path)
        assert await response.json() == BUILTIN, (method, path)
    for path, row in before.items():
        assert await ok(await api.get(f"{BASE}{path}", headers=root)) == row, path
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=await login(api))).status == 200


async def test_a_user_removed_from_a_group_loses_its_permissions_at_once(
    api: ApiClient, announced: list[Event]
) -> None:
    root = await login(api)
    await ok(await api.post(f"{BASE}/groups", json={"name": "runner-admins"}, headers=root))
    await bind(api, root, "WriteAllRunners", "runner-admins", kind="groups")
    tess = await user(api, root, "tess", groups=["runner-admins"])
    jwt = await login(api, "tess", "pw-tess")
    key = (await ok(await api.post(f"{BASE}/apitokens", json={}, headers=jwt)))["key"]
    token = {"Token": key}
    api.session.cookie_jar.clear()
    assert (await api.post(f"{BASE}/runners", json=RUNNER, headers=jwt)).status == 200
    second = {**RUNNER, "name": "py2"}
    assert (await api.post(f"{BASE}/runners", json=second, headers=token)).status == 200
    announced.clear()

    removed = await api.delete(
        f"{BASE}/groups/runner-admins/users",
        json=[{"name": "tess", "provider": "local"}],
        headers=root,
    )
    assert removed.status == 200
    for headers in (jwt, token):
        assert (await api.delete(f"{BASE}/runners/py", headers=headers)).status == 403
        assert (await api.get(f"{BASE}/runners", headers=headers)).status == 200
        assert await (await api.get(f"{BASE}/runners", headers=headers)).json() == []
    # The ingress caches webhook owners' permissions: it is told to forget them.
    for _ in range(100):
        if announced:
            break
        await asyncio.sleep(0.05)
    assert [(e.kind, e.name) for e in announced if isinstance(e, ConfigChanged)] == [
        ("rbac", "runner-admins")
    ]

    # The same through the user's side of the membership: back in, then out again.
    path = f"{BASE}/users/{tess['id']}"
    assert (await api.patch(path, json={"groups": ["runner-admins"]}, headers=root)).status == 200
    assert (await api.patch(f"{BASE}/runners/py", json={}, headers=token)).status == 200
    assert (await api.patch(path, json={"groups": []}, headers=root)).status == 200
    assert (await api.patch(f"{BASE}/runners/py", json={}, headers=token)).status == 403
    for _ in range(100):
        if len(announced) >= 3:
            break
        await asyncio.sleep(0.05)
    assert [(e.kind, e.name) for e in announced if isinstance(e, ConfigChanged)][1:] == [
        ("user", tess["id"])
    ] * 2


async def test_an_owner_of_tokens_or_webhooks_is_not_deleted_and_a_deleted_user_is_out(
    api: ApiClient,
) -> None:
    root = await login(api)
    await ok(await api.post(f"{BASE}/runners", json=RUNNER, headers=root))
    task = {"name": "hello", "runner": "py", "command": "echo hi"}
    await ok(await api.post(f"{BASE}/tasks", json=task, headers=root))
    await role(api, root, "run-hello", "jobs", ["hello"], "write")
    await ok(await api.post(f"{BASE}/groups", json={"name": "hello-runners"}, headers=root))
    await bind(api, root, "run-hello", "hello-runners", kind="groups")
    uma = await user(api, root, "uma", groups=["hello-runners"])
    jwt = await login(api, "uma", "pw-uma")
    hook = await ok(await api.post(f"{BASE}/webhooks", json={"task": "hello"}, headers=jwt))
    token = await ok(await api.post(f"{BASE}/apitokens", json={}, headers=jwt))
    api.session.cookie_jar.clear()

    refused = await api.delete(f"{BASE}/users/{uma['id']}", headers=root)
    assert refused.status == 409
    message = (await refused.json())["error"]
    assert hook["id"] in message
    assert token["id"] in message
    # Nothing of hers was touched by the refused delete.
    assert (await api.get(f"{BASE}/apitokens", headers={"Token": token["key"]})).status == 200
    assert (await api.get(f"{BASE}/webhooks/{hook['id']}", headers=jwt)).status == 200

    assert (await api.delete(f"{BASE}/webhooks/{hook['id']}", headers=jwt)).status == 200
    assert (await api.delete(f"{BASE}/apitokens/{token['id']}", headers=jwt)).status == 200
    assert (await api.delete(f"{BASE}/users/{uma['id']}", headers=root)).status == 200
    assert (await api.get(f"{BASE}/webhooks", headers=jwt)).status == 401
    assert (await api.get(f"{BASE}/apitokens", headers={"Token": token["key"]})).status == 401
    assert (await ok(await api.get(f"{BASE}/groups/hello-runners", headers=root)))["users"] == []
