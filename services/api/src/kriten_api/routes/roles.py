"""`/roles`, and the rule that keeps RBAC from being used to climb it.

A role is one permission: `access` (read or write) on `resource` for each of
`resource_ids`. Roles are where permissions are defined, so the escalation rule
(`kriten_api.authz.require_holds`) guards them and every way to grant one: nobody can
give anyone, themselves included, a permission they do not hold.

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
from kriten_api.schemas.roles import RoleBase, RoleCreate, RolePublic, RoleUpdate
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Role, RoleBinding
from kriten_common.rbac import Access, role_permission


async def find_role(session: AsyncSession, key: str) -> Role | None:
    role = await session.get(Role, key)
    if role is None:
        role = (await session.exec(select(Role).where(Role.name == key))).first()
    return role


def _apply(role: Role, data: RoleBase) -> None:
    """A merge: the fields sent replace the role's."""
    if data.resource is not None:
        role.resource = data.resource
    if data.resource_ids is not None:
        role.resource_ids = data.resource_ids
    if data.access is not None:
        role.access = data.access


async def list_roles(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Role).order_by(col(Role.name))
    query = visible_to(query, principal, "roles", keys=[col(Role.id), col(Role.name)])
    async with request.app[SESSIONS]() as session:
        roles, total = await paginate(session, query, Window.of(request))
    return list_response([dump(RolePublic.model_validate(r)) for r in roles], total)


async def create_role(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "roles", "*", "write")
    data = validate(RoleCreate, await read_body(request, RoleCreate))
    role = Role(
        name=data.name, resource=data.resource, resource_ids=data.resource_ids, access=data.access
    )
    require_holds(principal, [role_permission(role)])
    async with request.app[SESSIONS]() as session:
        session.add(role)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"role {role.name!r} already exists") from None
    return web.json_response(dump(RolePublic.model_validate(role)))


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
    return web.json_response(dump(RolePublic.model_validate(role)))


async def update_role(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_body(request, RoleUpdate)
    data = validate(RoleUpdate, body)
    async with request.app[SESSIONS]() as session:
        role = await _load(request, session, "write")
        require_not_builtin(role.builtin)
        same_name(body, role.name)
        if "id" in body and body["id"] != role.id:
            raise errors.InvalidInput("id cannot be changed (it is taken from the URL)")
        _apply(role, data)
        require_holds(principal, [role_permission(role)])
        role.updated_at = utcnow()
        session.add(role)
        await session.commit()
    await publish_config_changed(request.app, "rbac", role.name)
    return web.json_response(dump(RolePublic.model_validate(role)))


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
    route(app, "GET", items, list_roles, summary="List roles", response=RolePublic, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_role,
            summary="Create a role",
            request=RoleCreate,
            response=RolePublic,
            errors=[409],
        )
    route(app, "GET", item, get_role, summary="Get a role (by id or name)", response=RolePublic)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_role,
            summary="Update a role (a merge)",
            request=RoleUpdate,
            response=RolePublic,
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
