"""The built-ins: created on the first start, left alone or repaired on the next ones."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlmodel import SQLModel, col, func, select

from kriten_api.bootstrap import BUILTIN_ROLES, ensure_builtins
from kriten_api.migrate import upgrade_database
from kriten_api.passwords import verify_password
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from kriten_common.db.models import Group, GroupMember, Role, RoleBinding, User
from kriten_common.rbac import RESOURCES, is_allowed, load_permissions

WRITE_ALL = {
    "WriteAllRunners": "runners",
    "WriteAllTasks": "tasks",
    "WriteAllJobs": "jobs",
    "WriteAllUsers": "users",
    "WriteAllRoles": "roles",
    "WriteAllRoleBindings": "role_bindings",
    "WriteAllWebhooks": "webhooks",
}


async def root(sessions: SessionFactory) -> User:
    async with sessions() as session:
        query = select(User).where(User.username == "root", User.provider == "local")
        return (await session.exec(query)).one()


async def snapshot(sessions: SessionFactory) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables the built-ins live in."""
    tables: list[type[SQLModel]] = [User, Group, GroupMember, Role, RoleBinding]
    rows: dict[str, list[dict[str, Any]]] = {}
    async with sessions() as session:
        for model in tables:
            found = (await session.exec(select(model))).all()
            rows[model.__name__] = sorted((r.model_dump() for r in found), key=repr)
    return rows


async def test_the_builtins_exist_after_the_first_start(db_sessions: SessionFactory) -> None:
    await ensure_builtins(db_sessions, root_password="s3cret")

    user = await root(db_sessions)
    assert user.builtin
    assert user.password_hash is not None
    assert verify_password(user.password_hash, "s3cret")
    async with db_sessions() as session:
        admins = (await session.exec(select(Group).where(Group.name == "Admin"))).one()
        assert (admins.provider, admins.builtin) == ("local", True)
        members = (await session.exec(select(GroupMember))).all()
        assert [(m.group_id, m.user_id) for m in members] == [(admins.id, user.id)]

        roles = {r.name: r for r in (await session.exec(select(Role))).all()}
        assert set(roles) == {"Admin", *WRITE_ALL}
        assert (roles["Admin"].resource, roles["Admin"].resource_ids) == ("*", ["*"])
        for name, resource in WRITE_ALL.items():
            assert (roles[name].resource, roles[name].resource_ids) == (resource, ["*"])
        assert all(r.access == "write" and r.builtin for r in roles.values())

        binding = (await session.exec(select(RoleBinding))).one()
        assert binding.name == "RootAdminAccess"
        assert binding.builtin
        assert binding.role_id == roles["Admin"].id
        assert (binding.subject_kind, binding.subject_provider) == ("groups", "local")
        assert (binding.subject_name, binding.subject_id) == ("Admin", admins.id)


def test_the_role_table_matches_the_contract() -> None:
    assert dict(BUILTIN_ROLES) == {"Admin": "*", **WRITE_ALL}


async def test_root_may_do_everything(db_sessions: SessionFactory) -> None:
    await ensure_builtins(db_sessions, root_password="s3cret")
    user = await root(db_sessions)
    async with db_sessions() as session:
        permissions = await load_permissions(session, user.id)
    for resource in RESOURCES:
        for resource_id in ("*", "anything", "0b7c6a2e-3f7e-4c1e-9a4b-2d6f1e8c5a90"):
            for access in ("read", "write"):
                assert is_allowed(
                    permissions, resource=resource, resource_id=resource_id, access=access
                ), (resource, resource_id, access)


async def test_a_second_start_writes_nothing(db_sessions: SessionFactory) -> None:
    await ensure_builtins(db_sessions, root_password="s3cret")
    before = await snapshot(db_sessions)

    await ensure_builtins(db_sessions, root_password="s3cret")

    assert await snapshot(db_sessions) == before


async def test_the_root_password_follows_the_configuration(db_sessions: SessionFactory) -> None:
    await ensure_builtins(db_sessions, root_password="first")
    first = await root(db_sessions)

    await ensure_builtins(db_sessions, root_password="second")

    second = await root(db_sessions)
    assert second.id == first.id
    assert second.password_hash is not None
    assert verify_password(second.password_hash, "second")
    assert not verify_password(second.password_hash, "first")
    assert second.updated_at > first.updated_at


async def test_a_damaged_builtin_is_repaired(db_sessions: SessionFactory) -> None:
    await ensure_builtins(db_sessions, root_password="s3cret")
    async with db_sessions() as session:
        role = (await session.exec(select(Role).where(Role.name == "WriteAllTasks"))).one()
        role.access, role.resource_ids = "read", ["one"]
        user = (await session.exec(select(User).where(User.username == "root"))).one()
        user.password_hash = "not a hash"
        member = (await session.exec(select(GroupMember))).one()
        await session.delete(member)
        session.add(role)
        session.add(user)
        await session.commit()

    await ensure_builtins(db_sessions, root_password="s3cret")

    async with db_sessions() as session:
        role = (await session.exec(select(Role).where(Role.name == "WriteAllTasks"))).one()
        assert (role.access, role.resource_ids) == ("write", ["*"])
        assert len((await session.exec(select(GroupMember))).all()) == 1
    user = await root(db_sessions)
    assert user.password_hash is not None
    assert verify_password(user.password_hash, "s3cret")


@pytest.mark.integration
async def test_replicas_starting_at_once_create_each_builtin_once(postgres_url: str) -> None:
    # PostgreSQL only: replicas share a database there; SQLite is one process's file.
    await upgrade_database(postgres_url)
    # An engine each, so that the replicas really race on separate connections.
    engines = [create_engine(postgres_url) for _ in range(4)]
    try:
        await asyncio.gather(
            *(ensure_builtins(session_factory(e), root_password="s3cret") for e in engines)
        )
        async with session_factory(engines[0])() as session:
            for model, expected in ((User, 1), (Group, 1), (GroupMember, 1), (Role, 8)):
                count = (await session.exec(select(func.count()).select_from(model))).one()
                assert count == expected, model.__name__
            bindings = await session.exec(select(col(RoleBinding.name)))
            assert bindings.all() == ["RootAdminAccess"]
    finally:
        for engine in engines:
            await engine.dispose()
