"""`/role_bindings`: a role given to a group or, directly, to a user.

The role and the subject are given by name and resolved here; the binding stores their
ids, so what it grants cannot drift to another row of the same name. Creating or
changing a binding needs `role_bindings:write` and the caller must hold the permission
of the role it binds (the escalation rule, see `roles`).
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
from kriten_api.openapi import Query, route
from kriten_api.schemas import DeletedOut, dump, read_body, validate
from kriten_api.schemas.role_bindings import (
    RoleBindingBase,
    RoleBindingCreate,
    RoleBindingPublic,
    RoleBindingUpdate,
)
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Group, Role, RoleBinding, User
from kriten_common.rbac import Access, role_permission


def binding_public(binding: RoleBinding, role: Role) -> RoleBindingPublic:
    # The role's name is the role row's, not a column of the binding.
    return RoleBindingPublic.model_validate(
        {**binding.model_dump(), "role_name": role.name, "role_id": role.id}
    )


async def _role(session: AsyncSession, name: str) -> Role:
    role = (await session.exec(select(Role).where(Role.name == name))).first()
    if role is None:
        raise errors.InvalidInput(f"role {name!r} does not exist")
    return role


async def _subject_id(session: AsyncSession, kind: str, provider: str, name: str) -> str:
    found: str | None
    if kind == "groups":
        query = select(Group.id).where(Group.name == name, Group.provider == provider)
        found = (await session.exec(query)).first()
    else:
        user_query = select(User.id).where(User.username == name, User.provider == provider)
        found = (await session.exec(user_query)).first()
    if found is None:
        raise errors.InvalidInput(f"subject {name!r} ({kind}, {provider}) does not exist")
    return found


async def _apply(session: AsyncSession, binding: RoleBinding, data: RoleBindingBase) -> Role:
    """Merges the fields sent into the binding, resolving the role and subject it names;
    returns the role."""
    if data.role_name is not None:
        role = await _role(session, data.role_name)
        binding.role_id = role.id
    else:
        found = await session.get(Role, binding.role_id)
        if found is None:
            raise errors.Conflict(f"the role of binding {binding.name!r} no longer exists")
        role = found
    if data.subject_kind is not None:
        binding.subject_kind = data.subject_kind
    if data.subject_provider is not None:
        binding.subject_provider = data.subject_provider
    if data.subject_name is not None:
        binding.subject_name = data.subject_name
    # Resolved on every change, so an update cannot leave a name and an id that disagree.
    binding.subject_id = await _subject_id(
        session, binding.subject_kind, binding.subject_provider, binding.subject_name
    )
    return role


async def find_binding(session: AsyncSession, key: str) -> RoleBinding | None:
    binding = await session.get(RoleBinding, key)
    if binding is None:
        query = select(RoleBinding).where(RoleBinding.name == key)
        binding = (await session.exec(query)).first()
    return binding


async def list_bindings(request: web.Request) -> web.Response:
    """Filters on `role_name` and `subject_name` only, as Kriten's clients expect."""
    principal = await authenticate(request)
    query = (
        select(RoleBinding, Role)
        .join(Role, col(Role.id) == col(RoleBinding.role_id))
        .order_by(col(RoleBinding.name))
    )
    keys = [col(RoleBinding.id), col(RoleBinding.name)]
    query = visible_to(query, principal, "role_bindings", keys=keys)
    role_name = request.query.get("role_name")
    if role_name:
        query = query.where(Role.name == role_name)
    subject_name = request.query.get("subject_name")
    if subject_name:
        query = query.where(RoleBinding.subject_name == subject_name)
    async with request.app[SESSIONS]() as session:
        rows, total = await paginate(session, query, Window.of(request))
    return list_response([dump(binding_public(b, r)) for b, r in rows], total)


async def create_binding(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "role_bindings", "*", "write")
    data = validate(RoleBindingCreate, await read_body(request, RoleBindingCreate))
    name = data.name
    binding = RoleBinding(
        name=name,
        role_id="",
        subject_kind=data.subject_kind,
        subject_provider=data.subject_provider,
        subject_name=data.subject_name,
        subject_id="",
    )
    async with request.app[SESSIONS]() as session:
        role = await _apply(session, binding, data)
        require_holds(principal, [role_permission(role)])
        if await find_binding(session, name) is not None:
            raise errors.Conflict(f"role binding {name!r} already exists")
        session.add(binding)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"role binding {name!r} already exists") from None
    await publish_config_changed(request.app, "rbac", binding.name)
    return web.json_response(dump(binding_public(binding, role)))


async def _load(request: web.Request, session: AsyncSession, access: Access) -> RoleBinding:
    principal = await authenticate(request)
    key = request.match_info["id"]
    binding = await find_binding(session, key)
    if binding is None:
        # Only a caller who could see the binding learns that it does not exist.
        require(principal, "role_bindings", key, access)
        raise errors.NotFound(f"role binding {key!r} not found")
    require_item(principal, "role_bindings", (binding.id, binding.name), access)
    return binding


async def get_binding(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        binding = await _load(request, session, "read")
        role = await session.get(Role, binding.role_id)
    if role is None:
        raise errors.NotFound(f"the role of binding {binding.name!r} no longer exists")
    return web.json_response(dump(binding_public(binding, role)))


async def update_binding(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_body(request, RoleBindingUpdate)
    data = validate(RoleBindingUpdate, body)
    async with request.app[SESSIONS]() as session:
        binding = await _load(request, session, "write")
        require_not_builtin(binding.builtin)
        same_name(body, binding.name)
        if "id" in body and body["id"] != binding.id:
            raise errors.InvalidInput("id cannot be changed (it is taken from the URL)")
        role = await _apply(session, binding, data)
        # Checked on every change, not only a new role: moving a binding to another
        # subject hands its role to someone new.
        require_holds(principal, [role_permission(role)])
        binding.updated_at = utcnow()
        session.add(binding)
        await session.commit()
    await publish_config_changed(request.app, "rbac", binding.name)
    return web.json_response(dump(binding_public(binding, role)))


async def delete_binding(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        binding = await _load(request, session, "write")
        require_not_builtin(binding.builtin)
        await session.delete(binding)
        await session.commit()
    await publish_config_changed(request.app, "rbac", binding.name)
    deleted = DeletedOut(msg="role binding deleted successfully", id=binding.id)
    return web.json_response(dump(deleted))


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/role_bindings", f"{base}/role_bindings/{{id}}"
    filters = [
        Query("role_name", {"type": "string"}, "Only bindings of this role"),
        Query("subject_name", {"type": "string"}, "Only bindings to this subject"),
    ]
    route(
        app,
        "GET",
        items,
        list_bindings,
        summary="List role bindings",
        response=RoleBindingPublic,
        listing=True,
        query=filters,
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_binding,
            summary="Bind a role to a group or user",
            request=RoleBindingCreate,
            response=RoleBindingPublic,
            errors=[409],
        )
    route(
        app,
        "GET",
        item,
        get_binding,
        summary="Get a role binding (by id or name)",
        response=RoleBindingPublic,
    )
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_binding,
            summary="Update a role binding (a merge)",
            request=RoleBindingUpdate,
            response=RoleBindingPublic,
            errors=[409],
        )
    route(app, "DELETE", item, delete_binding, summary="Delete a role binding", response=DeletedOut)
