"""Group membership, both ways, in one place.

A user's `groups` and a group's `users` are two views of the same `group_members`
rows, and this module is the only one that writes them (the built-ins aside). Every
change goes through `change`, which holds the rules whichever route asked for it:

- the caller needs `groups:write` on the group, by its id or its name;
- the user's provider must be the group's (400);
- adding a member needs the caller to hold every permission bound to the group, so
  that membership is no way around the escalation rule in `roles`;
- a built-in user never leaves a built-in group (root stays in Admin).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from kriten_api.authz import bound_permissions, require_holds, require_item
from kriten_api.settings import ApiSettings
from kriten_common import errors
from kriten_common.db.models import Group, GroupMember, User
from kriten_common.rbac import Principal

LOCAL = "local"
DIRECTORY = "active_directory"


def check_provider(value: str | None, settings: ApiSettings) -> str:
    """A provider users and groups may be created for: `local`, and `active_directory`
    when a directory is configured (its users may be created before their first login)."""
    providers = (LOCAL, DIRECTORY) if settings.ldap_url else (LOCAL,)
    if value is not None and value in providers:
        return value
    raise errors.InvalidInput(f"provider must be one of {', '.join(providers)}")


async def members_by_group(session: AsyncSession, group_ids: Iterable[str]) -> dict[str, list[str]]:
    """Group id → its members' user ids, sorted, for every id asked (one query)."""
    ids = list(group_ids)
    members: dict[str, list[str]] = {group_id: [] for group_id in ids}
    if ids:
        query = (
            select(GroupMember)
            .where(col(GroupMember.group_id).in_(ids))
            .order_by(col(GroupMember.user_id))
        )
        for row in (await session.exec(query)).all():
            members[row.group_id].append(row.user_id)
    return members


async def groups_by_user(session: AsyncSession, user_ids: Iterable[str]) -> dict[str, list[str]]:
    """User id → the ids of its groups, sorted, for every id asked (one query)."""
    ids = list(user_ids)
    groups: dict[str, list[str]] = {user_id: [] for user_id in ids}
    if ids:
        query = (
            select(GroupMember)
            .where(col(GroupMember.user_id).in_(ids))
            .order_by(col(GroupMember.group_id))
        )
        for row in (await session.exec(query)).all():
            groups[row.user_id].append(row.group_id)
    return groups


def members_query(group_id: str) -> SelectOfScalar[User]:
    return (
        select(User)
        .join(GroupMember, col(GroupMember.user_id) == col(User.id))
        .where(GroupMember.group_id == group_id)
        .order_by(col(User.username), col(User.id))
    )


def groups_query(user_id: str) -> SelectOfScalar[Group]:
    return (
        select(Group)
        .join(GroupMember, col(GroupMember.group_id) == col(Group.id))
        .where(GroupMember.user_id == user_id)
        .order_by(col(Group.name), col(Group.id))
    )


async def members_of(session: AsyncSession, group_id: str) -> list[User]:
    return list((await session.exec(members_query(group_id))).all())


async def groups_of(session: AsyncSession, user_id: str) -> list[Group]:
    return list((await session.exec(groups_query(user_id))).all())


async def change(
    session: AsyncSession,
    principal: Principal,
    group: Group,
    *,
    add: Sequence[User] = (),
    remove: Sequence[User] = (),
) -> None:
    """Adds and removes members of `group` after checking the rules; the caller commits."""
    require_item(principal, "groups", (group.id, group.name), "write")
    for user in add:
        if user.provider != group.provider:
            raise errors.InvalidInput(
                f"user {user.username!r} has provider {user.provider!r} but group"
                f" {group.name!r} has provider {group.provider!r}"
            )
    if group.builtin and any(user.builtin for user in remove):
        raise errors.Forbidden(errors.BUILTIN_MESSAGE)
    current = {row.user_id for row in await _rows(session, group_id=group.id)}
    joining = {user.id for user in add} - current
    leaving = {user.id for user in remove} & current
    if joining:
        granted = await bound_permissions(session, subject_kind="groups", subject_id=group.id)
        require_holds(principal, granted)
    for user_id in sorted(joining):
        session.add(GroupMember(group_id=group.id, user_id=user_id))
    if leaving:
        await session.exec(
            delete(GroupMember).where(
                col(GroupMember.group_id) == group.id, col(GroupMember.user_id).in_(leaving)
            )
        )


async def set_members(
    session: AsyncSession, principal: Principal, group: Group, users: Sequence[User]
) -> None:
    """Makes `users` the group's members exactly."""
    wanted = {user.id for user in users}
    current = await members_of(session, group.id)
    leaving = [user for user in current if user.id not in wanted]
    await change(session, principal, group, add=users, remove=leaving)


async def set_groups(
    session: AsyncSession, principal: Principal, user: User, groups: Sequence[Group]
) -> None:
    """Makes `groups` the user's groups exactly; each group changed is checked alone."""
    wanted = {group.id: group for group in groups}
    current = {group.id: group for group in await groups_of(session, user.id)}
    for group_id in sorted(wanted.keys() - current.keys()):
        await change(session, principal, wanted[group_id], add=[user])
    for group_id in sorted(current.keys() - wanted.keys()):
        await change(session, principal, current[group_id], remove=[user])


async def forget_user(session: AsyncSession, user_id: str) -> None:
    """Removes a user being deleted from every group (deleting is authorized already)."""
    await session.exec(delete(GroupMember).where(col(GroupMember.user_id) == user_id))


async def forget_group(session: AsyncSession, group_id: str) -> None:
    """Empties a group being deleted (deleting it is authorized already)."""
    await session.exec(delete(GroupMember).where(col(GroupMember.group_id) == group_id))


async def _rows(session: AsyncSession, *, group_id: str) -> Sequence[GroupMember]:
    return (await session.exec(select(GroupMember).where(GroupMember.group_id == group_id))).all()


async def resolve_groups(
    session: AsyncSession, keys: Sequence[str], *, provider: str
) -> list[Group]:
    """Groups named by id, or by name within `provider` (a user's `groups` field)."""
    groups: dict[str, Group] = {}
    for key in keys:
        group = await session.get(Group, key)
        if group is None:
            query = select(Group).where(Group.name == key, Group.provider == provider)
            group = (await session.exec(query)).first()
        if group is None:
            raise errors.InvalidInput(f"group {key!r} does not exist")
        groups[group.id] = group
    return list(groups.values())


async def resolve_user_ids(session: AsyncSession, ids: Sequence[str]) -> list[User]:
    """Users named by id (a group's `users` field)."""
    users: dict[str, User] = {}
    for user_id in ids:
        user = await session.get(User, user_id)
        if user is None:
            raise errors.InvalidInput(f"user {user_id!r} does not exist")
        users[user.id] = user
    return list(users.values())


async def resolve_named_users(
    session: AsyncSession, names: Sequence[tuple[str, str | None]], *, provider: str
) -> list[User]:
    """Users by (username, provider given), of the group's `provider` only."""
    users: dict[str, User] = {}
    for name, user_provider in names:
        if user_provider != provider:
            raise errors.InvalidInput(
                f"user {name!r} has provider {user_provider!r} but the group has"
                f" provider {provider!r}"
            )
        query = select(User).where(User.username == name, User.provider == provider)
        user = (await session.exec(query)).first()
        if user is None:
            raise errors.InvalidInput(f"user {name!r} ({provider}) does not exist")
        users[user.id] = user
    return list(users.values())
