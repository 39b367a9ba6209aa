"""`/groups`: groups of users of one provider, which role bindings give permissions to.

Membership changes, whichever route makes them, go through `membership`. The built-in
`Admin` group cannot be changed or deleted (its membership can, under the escalation
rule, except that root stays in it); any other group can be deleted, which Kriten
never allowed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api import membership
from kriten_api.authentication import authenticate
from kriten_api.authz import require, require_item, require_not_builtin, visible_to
from kriten_api.config_events import publish_config_changed
from kriten_api.fields import same_name
from kriten_api.keys import SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import Query, route
from kriten_api.schemas import DeletedOut, accepted_fields, dump, read_body, validate
from kriten_api.schemas.groups import (
    GroupCreate,
    GroupMembers,
    GroupPublic,
    GroupUpdate,
    MemberPublic,
    MemberRef,
)
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Group, RoleBinding
from kriten_common.http import read_json
from kriten_common.rbac import Access


def group_public(group: Group, user_ids: list[str]) -> GroupPublic:
    # A group's members are rows of their own, not a column.
    return GroupPublic.model_validate({**group.model_dump(), "users": user_ids})


async def find_group(session: AsyncSession, key: str, provider: str | None) -> Group | None:
    """By id, else by name; a name used by two providers needs `?provider=`."""
    group = await session.get(Group, key)
    if group is not None:
        return group
    query = select(Group).where(Group.name == key)
    if provider:
        query = query.where(Group.provider == provider)
    found = (await session.exec(query)).all()
    if len(found) > 1:
        raise errors.InvalidInput(
            f"group name {key!r} is used by several providers: give the id or ?provider="
        )
    return found[0] if found else None


async def _answer(session: AsyncSession, group: Group) -> Any:
    members = await membership.members_by_group(session, [group.id])
    return dump(group_public(group, members[group.id]))


async def list_groups(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Group).order_by(col(Group.name), col(Group.provider))
    query = visible_to(query, principal, "groups", keys=[col(Group.id), col(Group.name)])
    async with request.app[SESSIONS]() as session:
        groups, total = await paginate(session, query, Window.of(request))
        members = await membership.members_by_group(session, (g.id for g in groups))
    return list_response([dump(group_public(g, members[g.id])) for g in groups], total)


async def create_group(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "groups", "*", "write")
    data = validate(GroupCreate, await read_body(request, GroupCreate))
    group = Group(
        name=data.name, provider=membership.check_provider(data.provider, request.app[SETTINGS])
    )
    async with request.app[SESSIONS]() as session:
        users = await membership.resolve_user_ids(session, data.users or [])
        existing = await session.exec(
            select(Group.id).where(Group.name == group.name, Group.provider == group.provider)
        )
        if existing.first() is not None:
            raise errors.Conflict(f"group {group.name!r} ({group.provider}) already exists")
        session.add(group)
        try:
            # The membership rows refer to the group: it must exist first.
            await session.flush()
            await membership.change(session, principal, group, add=users)
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(
                f"group {group.name!r} ({group.provider}) already exists"
            ) from None
        answer = await _answer(session, group)
    if users:
        await publish_config_changed(request.app, "rbac", group.name)
    return web.json_response(answer)


async def _load(request: web.Request, session: AsyncSession, access: Access) -> Group:
    principal = await authenticate(request)
    key = request.match_info["id"]
    group = await find_group(session, key, request.query.get("provider"))
    if group is None:
        # Only a caller who could see the group learns that it does not exist.
        require(principal, "groups", key, access)
        raise errors.NotFound(f"group {key!r} not found")
    require_item(principal, "groups", (group.id, group.name), access)
    return group


async def get_group(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        group = await _load(request, session, "read")
        answer = await _answer(session, group)
    return web.json_response(answer)


async def update_group(request: web.Request) -> web.Response:
    """Only the membership can change: the name and provider are the group's identity."""
    principal = await authenticate(request)
    body = await read_body(request, GroupUpdate)
    data = validate(GroupUpdate, body)
    sent = data.model_fields_set
    async with request.app[SESSIONS]() as session:
        group = await _load(request, session, "write")
        require_not_builtin(group.builtin)
        same_name(body, group.name)
        if "id" in body and body["id"] != group.id:
            raise errors.InvalidInput("id cannot be changed (it is taken from the URL)")
        if "provider" in sent and data.provider != group.provider:
            raise errors.InvalidInput("provider cannot be changed")
        if "users" in sent:
            users = await membership.resolve_user_ids(session, data.users or [])
            await membership.set_members(session, principal, group, users)
        group.updated_at = utcnow()
        session.add(group)
        await _commit(session, group)
        answer = await _answer(session, group)
    await publish_config_changed(request.app, "rbac", group.name)
    return web.json_response(answer)


async def _commit(session: AsyncSession, group: Group) -> None:
    try:
        await session.commit()
    except IntegrityError:
        # A user deleted, or the same member added, by a concurrent request.
        raise errors.Conflict(f"group {group.name!r} changed meanwhile; try again") from None


async def delete_group(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        group = await _load(request, session, "write")
        require_not_builtin(group.builtin)
        query = select(RoleBinding.name).where(
            RoleBinding.subject_kind == "groups", RoleBinding.subject_id == group.id
        )
        bindings = sorted((await session.exec(query)).all())
        if bindings:
            raise errors.Conflict(
                f"group {group.name!r} is still bound by role bindings: {', '.join(bindings)}"
            )
        await membership.forget_group(session, group.id)
        await session.delete(group)
        await _commit(session, group)
    await publish_config_changed(request.app, "rbac", group.name)
    return web.json_response(dump(DeletedOut(msg="group deleted successfully", id=group.id)))


async def list_group_users(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        group = await _load(request, session, "read")
        users, total = await paginate(
            session, membership.members_query(group.id), Window.of(request)
        )
    items = [dump(MemberPublic.model_validate(u)) for u in users]
    return list_response(items, total)


async def _change_users(request: web.Request, *, adding: bool) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request)
    if isinstance(body, list):
        body = [
            accepted_fields(MemberRef, item) if isinstance(item, dict) else item for item in body
        ]
    members = validate(GroupMembers, body).root
    async with request.app[SESSIONS]() as session:
        # Write is checked by `membership.change`; reading first keeps 404 for the unseen.
        group = await _load(request, session, "read")
        # A member's provider defaults to the group's; another is refused by `membership`.
        names = [
            (m.name, m.provider if "provider" in m.model_fields_set else group.provider)
            for m in members
        ]
        users = await membership.resolve_named_users(session, names, provider=group.provider)
        if adding:
            await membership.change(session, principal, group, add=users)
        else:
            await membership.change(session, principal, group, remove=users)
        group.updated_at = utcnow()
        session.add(group)
        await _commit(session, group)
        answer = await _answer(session, group)
    await publish_config_changed(request.app, "rbac", group.name)
    return web.json_response(answer)


async def add_group_users(request: web.Request) -> web.Response:
    return await _change_users(request, adding=True)


async def remove_group_users(request: web.Request) -> web.Response:
    return await _change_users(request, adding=False)


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/groups", f"{base}/groups/{{id}}"
    members = f"{item}/users"
    # An item is named by its id, or by its name (then `?provider=` when ambiguous).
    provider = [Query("provider", {"type": "string"}, "The provider, for a name two share")]
    route(app, "GET", items, list_groups, summary="List groups", response=GroupPublic, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_group,
            summary="Create a group",
            request=GroupCreate,
            response=GroupPublic,
            errors=[409],
        )
    route(app, "GET", item, get_group, summary="Get a group", response=GroupPublic, query=provider)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_group,
            summary="Set a group's members",
            request=GroupUpdate,
            response=GroupPublic,
            query=provider,
            errors=[409],
        )
    route(
        app,
        "DELETE",
        item,
        delete_group,
        summary="Delete a group no binding uses",
        response=DeletedOut,
        query=provider,
        errors=[409],
    )
    route(
        app,
        "GET",
        members,
        list_group_users,
        summary="A group's members",
        response=MemberPublic,
        listing=True,
        query=provider,
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            members,
            add_group_users,
            summary="Add members to a group",
            request=GroupMembers,
            response=GroupPublic,
            query=provider,
            errors=[409],
        )
    route(
        app,
        "DELETE",
        members,
        remove_group_users,
        summary="Remove members from a group",
        request=GroupMembers,
        response=GroupPublic,
        query=provider,
        errors=[409],
    )
