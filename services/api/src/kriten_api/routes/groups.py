"""`/groups`: groups of users of one provider, which role bindings give permissions to.

Membership changes, whichever route makes them, go through `membership`. The built-in
`Admin` group cannot be changed or deleted (its membership can, under the escalation
rule, except that root stays in it); any other group can be deleted, which Kriten
never allowed.
"""

from __future__ import annotations

import re
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
from kriten_api.routes.roles import UUID_SHAPE
from kriten_api.schemas import DeletedOut, accepted_fields, dump, read_body
from kriten_api.schemas.groups import GroupIn, GroupOut, MemberIn, MemberOut, MembersIn
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Group, RoleBinding
from kriten_common.http import read_json
from kriten_common.rbac import Access

# Directory groups have spaces in their names ("Domain Admins"), so they are allowed.
GROUP_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._@-]{0,126}[A-Za-z0-9._@-])?$")


def group_json(group: Group, user_ids: list[str]) -> dict[str, Any]:
    answer: dict[str, Any] = dump(
        GroupOut(
            id=group.id,
            name=group.name,
            provider=group.provider,
            users=user_ids,
            created_at=group.created_at.isoformat(),
            updated_at=group.updated_at.isoformat(),
        )
    )
    return answer


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not GROUP_NAME.match(value) or UUID_SHAPE.match(value):
        raise errors.InvalidInput(
            "name must be 1-128 letters, digits, spaces, '.', '_', '@' or '-', starting"
            " with a letter or digit, and must not look like an id"
        )
    return value


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


async def _json(session: AsyncSession, group: Group) -> dict[str, Any]:
    members = await membership.members_by_group(session, [group.id])
    return group_json(group, members[group.id])


async def list_groups(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Group).order_by(col(Group.name), col(Group.provider))
    query = visible_to(query, principal, "groups", keys=[col(Group.id), col(Group.name)])
    async with request.app[SESSIONS]() as session:
        groups, total = await paginate(session, query, Window.of(request))
        members = await membership.members_by_group(session, (g.id for g in groups))
    return list_response([group_json(g, members[g.id]) for g in groups], total)


async def create_group(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "groups", "*", "write")
    body = await read_body(request, GroupIn)
    group = Group(
        name=_check_name(body.get("name")),
        provider=membership.check_provider(body.get("provider", "local"), request.app[SETTINGS]),
    )
    async with request.app[SESSIONS]() as session:
        users = await membership.resolve_user_ids(session, body.get("users") or [])
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
        answer = await _json(session, group)
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
        answer = await _json(session, group)
    return web.json_response(answer)


async def update_group(request: web.Request) -> web.Response:
    """Only the membership can change: the name and provider are the group's identity."""
    principal = await authenticate(request)
    body = await read_body(request, GroupIn)
    async with request.app[SESSIONS]() as session:
        group = await _load(request, session, "write")
        require_not_builtin(group.builtin)
        same_name(body, group.name)
        if "id" in body and body["id"] != group.id:
            raise errors.InvalidInput("id cannot be changed (it is taken from the URL)")
        if "provider" in body and body["provider"] != group.provider:
            raise errors.InvalidInput("provider cannot be changed")
        if "users" in body:
            users = await membership.resolve_user_ids(session, body["users"] or [])
            await membership.set_members(session, principal, group, users)
        group.updated_at = utcnow()
        session.add(group)
        await _commit(session, group)
        answer = await _json(session, group)
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
    items = [dump(MemberOut(id=u.id, name=u.username, provider=u.provider)) for u in users]
    return list_response(items, total)


async def _change_users(request: web.Request, *, adding: bool) -> web.Response:
    principal = await authenticate(request)
    body = await read_json(request)
    if isinstance(body, list):
        body = [
            accepted_fields(MemberIn, item) if isinstance(item, dict) else item for item in body
        ]
    async with request.app[SESSIONS]() as session:
        # Write is checked by `membership.change`; reading first keeps 404 for the unseen.
        group = await _load(request, session, "read")
        users = await membership.resolve_named_users(session, body, provider=group.provider)
        if adding:
            await membership.change(session, principal, group, add=users)
        else:
            await membership.change(session, principal, group, remove=users)
        group.updated_at = utcnow()
        session.add(group)
        await _commit(session, group)
        answer = await _json(session, group)
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
    route(app, "GET", items, list_groups, summary="List groups", response=GroupOut, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_group,
            summary="Create a group",
            request=GroupIn,
            response=GroupOut,
            errors=[409],
        )
    route(app, "GET", item, get_group, summary="Get a group", response=GroupOut, query=provider)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_group,
            summary="Set a group's members",
            request=GroupIn,
            response=GroupOut,
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
        response=MemberOut,
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
            request=MembersIn,
            response=GroupOut,
            query=provider,
            errors=[409],
        )
    route(
        app,
        "DELETE",
        members,
        remove_group_users,
        summary="Remove members from a group",
        request=MembersIn,
        response=GroupOut,
        query=provider,
        errors=[409],
    )
