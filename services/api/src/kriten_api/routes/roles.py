"""`/roles`, and the rule that keeps RBAC from being used to climb it.

A role is one permission: `access` (read or write) on `resource` for each of
`resource_ids`. Roles are where permissions are defined, so the escalation rule lives
here too: nobody can give anyone, themselves included, a permission they do not hold.

- Creating or changing a role needs `roles:write` (on `*` to create, on the role to
  change it) and the caller must hold the role's permission afterwards: `access` on
  `resource` for every one of its `resource_ids` (`*` only when they hold `*`).
- Creating or changing a role binding needs `role_bindings:write` and the caller must
  hold the permission of the role it binds (`role_bindings`).
- Adding a user to a group needs `groups:write` on the group and the caller must hold
  every permission bound to the group (`membership`).
- Changing another user's password, or deleting them, needs `users:write` on the user
  and the caller must hold every permission that user holds (`users`), so `users:write`
  is no way into a more powerful account.

Taking permissions away (narrowing a role, deleting a binding, removing a member) needs
only write on what is changed. Admin (`*` on `["*"]`, write) holds everything.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.authentication import authenticate
from kriten_api.authz import require, require_holds, require_item, require_not_builtin, visible_to
from kriten_api.config_events import publish_config_changed
from kriten_api.fields import same_name
from kriten_api.keys import SESSIONS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, dump, read_body, validate
from kriten_api.schemas.roles import RoleIn, RoleOut
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Role, RoleBinding
from kriten_common.rbac import (
    RESOURCES,
    Access,
    role_permission,
)

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
ACCESSES: tuple[Access, ...] = ("read", "write")
MAX_RESOURCE_ID_LENGTH = 253


def check_label(value: Any, field: str = "name") -> str:
    """A role or binding name: item routes take the id or the name, so no UUID shapes."""
    if not isinstance(value, str) or not LABEL.match(value) or UUID_SHAPE.match(value):
        raise errors.InvalidInput(
            f"{field} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter"
            " or digit, and must not look like an id"
        )
    return value


async def find_role(session: AsyncSession, key: str) -> Role | None:
    role = await session.get(Role, key)
    if role is None:
        role = (await session.exec(select(Role).where(Role.name == key))).first()
    return role


def role_json(role: Role) -> dict[str, Any]:
    answer: dict[str, Any] = dump(
        RoleOut(
            id=role.id,
            name=role.name,
            resource=role.resource,
            resource_ids=list(role.resource_ids),
            access=role.access,
            created_at=role.created_at.isoformat(),
            updated_at=role.updated_at.isoformat(),
        )
    )
    return answer


def _resource(value: Any) -> str:
    if isinstance(value, str) and (value == "*" or value in RESOURCES):
        return value
    raise errors.InvalidInput(f"resource must be '*' or one of {', '.join(RESOURCES)}")


def _resource_ids(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or not all(
            isinstance(i, str) and 0 < len(i) <= MAX_RESOURCE_ID_LENGTH and i.strip() == i
            for i in value
        )
    ):
        raise errors.InvalidInput(
            "resource_ids must be a non-empty list of names or ids (['*'] for all)"
        )
    return list(dict.fromkeys(value))


def _access(value: Any) -> Access:
    if value == "read":
        return "read"
    if value == "write":
        return "write"
    raise errors.InvalidInput("access must be 'read' or 'write'")


def _apply(role: Role, body: dict[str, Any]) -> None:
    # Kriten called the list `resource_names` in some versions; its scripts still send it.
    if "resource_ids" not in body and "resource_names" in body:
        body = {**body, "resource_ids": body["resource_names"]}
    if "resource" in body:
        role.resource = _resource(body["resource"])
    if "resource_ids" in body:
        role.resource_ids = _resource_ids(body["resource_ids"])
    if "access" in body:
        role.access = _access(body["access"])
    # Last, after the checks above and their messages: whatever they let through still
    # has the types the document gives.
    validate(RoleIn, body)


async def list_roles(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Role).order_by(col(Role.name))
    query = visible_to(query, principal, "roles", keys=[col(Role.id), col(Role.name)])
    async with request.app[SESSIONS]() as session:
        roles, total = await paginate(session, query, Window.of(request))
    return list_response([role_json(r) for r in roles], total)


async def create_role(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "roles", "*", "write")
    body = await read_body(request, RoleIn)
    for field in ("resource", "access"):
        if field not in body:
            raise errors.InvalidInput(f"{field} is required")
    if "resource_ids" not in body and "resource_names" not in body:
        raise errors.InvalidInput("resource_ids is required")
    role = Role(name=check_label(body.get("name")), resource="", access="")
    _apply(role, body)
    require_holds(principal, [role_permission(role)])
    async with request.app[SESSIONS]() as session:
        session.add(role)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"role {role.name!r} already exists") from None
    return web.json_response(role_json(role))


async def _load(request: web.Request, session: AsyncSession, access: Access) -> Role:
    principal = await authenticate(request)
    key = request.match_info["id"]
    role = await find_role(session, key)
    if role is None:
        # Only a caller who could see the role learns that it does not exist.
        require(principal, "roles", key, access)
        raise errors.NotFound(f"role {key!r} not found")
    require_item(principal, "roles", (role.id, role.name), access)
    return role


async def get_role(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        role = await _load(request, session, "read")
    return web.json_response(role_json(role))


async def update_role(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_body(request, RoleIn)
    async with request.app[SESSIONS]() as session:
        role = await _load(request, session, "write")
        require_not_builtin(role.builtin)
        same_name(body, role.name)
        if "id" in body and body["id"] != role.id:
            raise errors.InvalidInput("id cannot be changed (it is taken from the URL)")
        _apply(role, body)
        require_holds(principal, [role_permission(role)])
        role.updated_at = utcnow()
        session.add(role)
        await session.commit()
    await publish_config_changed(request.app, "rbac", role.name)
    return web.json_response(role_json(role))


async def delete_role(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        role = await _load(request, session, "write")
        require_not_builtin(role.builtin)
        query = select(RoleBinding.name).where(RoleBinding.role_id == role.id)
        bindings = sorted((await session.exec(query)).all())
        if bindings:
            raise errors.Conflict(
                f"role {role.name!r} is still bound by role bindings: {', '.join(bindings)}"
            )
        await session.delete(role)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"role {role.name!r} is still bound") from None
    await publish_config_changed(request.app, "rbac", role.name)
    return web.json_response(dump(DeletedOut(msg="role deleted successfully", id=role.id)))


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/roles", f"{base}/roles/{{id}}"
    route(app, "GET", items, list_roles, summary="List roles", response=RoleOut, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_role,
            summary="Create a role",
            request=RoleIn,
            response=RoleOut,
            errors=[409],
        )
    route(app, "GET", item, get_role, summary="Get a role (by id or name)", response=RoleOut)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_role,
            summary="Update a role (a merge)",
            request=RoleIn,
            response=RoleOut,
        )
    route(
        app,
        "DELETE",
        item,
        delete_role,
        summary="Delete a role no binding uses",
        response=DeletedOut,
        errors=[409],
    )
