"""`/users`: local and Active Directory users, with their groups.

Passwords are write-only: stored as argon2id hashes, never read back. `users:write` on a
user is not enough to take it over: changing another user's password, or deleting them,
also needs the caller to hold every permission that user holds, and putting a user in a
group goes through the group's own rules (`membership`).

Setting a password ends the user's login sessions (their tokens are refused from then
on, see `jwt_tokens.end_sessions`); deleting a user ends them too, since a token whose
user is gone is refused.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api import jwt_tokens, membership
from kriten_api.authentication import authenticate
from kriten_api.authz import (
    require,
    require_holds_all_of,
    require_item,
    require_not_builtin,
    visible_to,
)
from kriten_api.config_events import publish_config_changed
from kriten_api.keys import SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.passwords import hash_password_async
from kriten_api.schemas import DeletedOut, dump, read_body, validate
from kriten_api.schemas.groups import MemberPublic
from kriten_api.schemas.users import LOCAL_USERS_NEED_ONE, UserCreate, UserPublic, UserUpdate
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import ApiToken, CronJob, RoleBinding, User, Webhook
from kriten_common.rbac import Access


def user_public(user: User, group_ids: list[str]) -> UserPublic:
    # A user's groups are rows of their own, not a column. The hash is left out of the
    # dict, and the answer names its fields, so it can never slip into an answer.
    return UserPublic.model_validate(
        {**user.model_dump(exclude={"password_hash"}), "groups": group_ids}
    )


async def _password_hash(password: str | None, provider: str) -> str | None:
    """The hash of a new password; whether one is wanted depends on the provider."""
    if provider != "local":
        if password not in (None, ""):
            raise errors.InvalidInput(f"password is not used for {provider} users")
        return None
    if not password:
        raise errors.InvalidInput(LOCAL_USERS_NEED_ONE)
    return await hash_password_async(password)


async def list_users(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(User).order_by(col(User.username), col(User.provider))
    query = visible_to(query, principal, "users", keys=[col(User.id), col(User.username)])
    async with request.app[SESSIONS]() as session:
        users, total = await paginate(session, query, Window.of(request))
        groups = await membership.groups_by_user(session, (u.id for u in users))
    return list_response([dump(user_public(u, groups[u.id])) for u in users], total)


async def create_user(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "users", "*", "write")
    data = validate(UserCreate, await read_body(request, UserCreate))
    username = data.username
    provider = membership.check_provider(data.provider, request.app[SETTINGS])
    password_hash = await _password_hash(data.password, provider)
    user = User(username=username, provider=provider, password_hash=password_hash)
    async with request.app[SESSIONS]() as session:
        groups = await membership.resolve_groups(session, data.groups or [], provider=provider)
        existing = await session.exec(
            select(User.id).where(User.username == username, User.provider == provider)
        )
        if existing.first() is not None:
            raise errors.Conflict(f"user {username!r} ({provider}) already exists")
        session.add(user)
        try:
            # The membership rows refer to the user: it must exist first.
            await session.flush()
            await membership.set_groups(session, principal, user, groups)
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"user {username!r} ({provider}) already exists") from None
    if groups:
        await publish_config_changed(request.app, "user", user.id)
    return web.json_response(dump(user_public(user, sorted(g.id for g in groups))))


async def _load(request: web.Request, session: AsyncSession, access: Access) -> User:
    principal = await authenticate(request)
    user_id = request.match_info["id"]
    user = await session.get(User, user_id)
    if user is None:
        # Only a caller who could see the user learns that it does not exist.
        require(principal, "users", user_id, access)
        raise errors.NotFound(f"user {user_id!r} not found")
    require_item(principal, "users", (user.id, user.username), access)
    return user


async def get_user(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        user = await _load(request, session, "read")
        groups = await membership.groups_by_user(session, [user.id])
    return web.json_response(dump(user_public(user, groups[user.id])))


async def update_user(request: web.Request) -> web.Response:
    """Changes the password and/or the groups; the username and provider stay."""
    principal = await authenticate(request)
    body = await read_body(request, UserUpdate)
    data = validate(UserUpdate, body)
    sent = data.model_fields_set
    async with request.app[SESSIONS]() as session:
        user = await _load(request, session, "write")
        require_not_builtin(user.builtin)
        if "id" in body and body["id"] != user.id:
            raise errors.InvalidInput("id cannot be changed (it is taken from the URL)")
        if data.username is not None and data.username != user.username:
            raise errors.InvalidInput("username cannot be changed")
        if "provider" in sent and data.provider != user.provider:
            raise errors.InvalidInput("provider cannot be changed")
        if "password" in sent:
            await require_holds_all_of(session, principal, user.id)
            user.password_hash = await _password_hash(data.password, user.provider)
            if user.password_hash is not None:
                # A new password ends the user's sessions, the caller's own included if
                # it is their own: whoever knew the old one must not stay logged in.
                await jwt_tokens.end_sessions(session, user.id)
        if "groups" in sent:
            groups = await membership.resolve_groups(
                session, data.groups or [], provider=user.provider
            )
            await membership.set_groups(session, principal, user, groups)
        user.updated_at = utcnow()
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict("the user or one of its groups changed meanwhile") from None
        groups_now = await membership.groups_by_user(session, [user.id])
    await publish_config_changed(request.app, "user", user.id)
    return web.json_response(dump(user_public(user, groups_now[user.id])))


async def _still_owned(session: AsyncSession, user_id: str) -> list[str]:
    """What keeps a user from being deleted, one phrase per kind, for the 409."""
    found: list[str] = []
    hooks = (await session.exec(select(Webhook.id).where(Webhook.owner_id == user_id))).all()
    if hooks:
        found.append(f"webhooks: {', '.join(sorted(hooks))}")
    tokens = (await session.exec(select(ApiToken.id).where(ApiToken.owner_id == user_id))).all()
    if tokens:
        found.append(f"API tokens: {', '.join(sorted(tokens))}")
    crons = (await session.exec(select(CronJob.name).where(CronJob.owner_id == user_id))).all()
    if crons:
        found.append(f"cronjobs: {', '.join(sorted(crons))}")
    query = select(RoleBinding.name).where(
        RoleBinding.subject_kind == "users", RoleBinding.subject_id == user_id
    )
    bindings = (await session.exec(query)).all()
    if bindings:
        found.append(f"role bindings: {', '.join(sorted(bindings))}")
    return found


async def delete_user(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        user = await _load(request, session, "write")
        require_not_builtin(user.builtin)
        await require_holds_all_of(session, principal, user.id)
        owned = await _still_owned(session, user.id)
        if owned:
            raise errors.Conflict(f"user {user.username!r} still owns {'; '.join(owned)}")
        await membership.forget_user(session, user.id)
        await session.delete(user)
        try:
            await session.commit()
        except IntegrityError:
            # Something of theirs was created meanwhile; the foreign keys refused.
            raise errors.Conflict(f"user {user.username!r} still owns resources") from None
    await publish_config_changed(request.app, "user", user.id)
    return web.json_response(dump(DeletedOut(msg="user deleted successfully", id=user.id)))


async def list_user_groups(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        user = await _load(request, session, "read")
        groups, total = await paginate(
            session, membership.groups_query(user.id), Window.of(request)
        )
    items = [dump(MemberPublic.model_validate(g)) for g in groups]
    return list_response(items, total)


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/users", f"{base}/users/{{id}}"
    route(app, "GET", items, list_users, summary="List users", response=UserPublic, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_user,
            summary="Create a user",
            request=UserCreate,
            response=UserPublic,
            errors=[409],
        )
    route(app, "GET", item, get_user, summary="Get a user", response=UserPublic)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_user,
            summary="Change a user's password or groups",
            request=UserUpdate,
            response=UserPublic,
            errors=[409],
        )
    route(
        app,
        "DELETE",
        item,
        delete_user,
        summary="Delete a user who owns nothing",
        response=DeletedOut,
        errors=[409],
    )
    route(
        app,
        "GET",
        f"{item}/groups",
        list_user_groups,
        summary="A user's groups",
        response=MemberPublic,
        listing=True,
    )
