"""`/apitokens` (also `/api_tokens`): keys for scripts, acting with their owner's rights.

Any authenticated user may create tokens for themselves: a token grants nothing its owner
does not already hold. The key is returned once, by the create answer; the database keeps
only its HMAC (`kriten_api.api_tokens`), so a later read cannot show it again. Owners read,
update and delete their own tokens without any role; `apitokens:read`/`write` reach others'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api import api_tokens
from kriten_api.authentication import authenticate
from kriten_api.authz import own_items, require, require_owner_or
from kriten_api.keys import SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, dump, read_body, validate
from kriten_api.schemas.api_tokens import ApiTokenCreate, ApiTokenPublic, ApiTokenUpdate
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import ApiToken

PATHS = ("apitokens", "api_tokens")
# Fields a client may not set: a changed key or owner would be a different token. (A body
# that repeats their current values, as a read-modify-write client sends, is accepted.)
READ_ONLY_FIELDS = ("id", "owner", "key")


def token_public(token: ApiToken) -> ApiTokenPublic:
    return ApiTokenPublic.model_validate(token)


def _refuse_read_only_changes(token: ApiToken, body: dict[str, Any]) -> None:
    current = dump(token_public(token))
    for field in READ_ONLY_FIELDS:
        if field in body and body[field] != current.get(field):
            raise errors.InvalidInput(f"{field} cannot be changed")


def _apply(token: ApiToken, data: ApiTokenCreate | ApiTokenUpdate, *, now: datetime) -> None:
    given = data.model_fields_set
    if "description" in given:
        token.description = data.description or ""
    if data.enabled is not None:
        token.enabled = data.enabled
    if "expires" in given:
        # A past time set on purpose is a mistake; one merely kept (an expired token's
        # own value sent back) is not.
        if data.expires is not None and data.expires != token.expires and data.expires <= now:
            raise errors.InvalidInput("expires must be in the future")
        token.expires = data.expires


async def create_token(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    data = validate(ApiTokenCreate, await read_body(request, ApiTokenCreate))
    now = utcnow()
    key = api_tokens.new_key()
    server_key = request.app[SETTINGS].token_key.get_secret_value()
    token = ApiToken(
        owner_id=principal.user_id,
        key_hash=api_tokens.hash_key(key, server_key=server_key),
        created_at=now,
        updated_at=now,
    )
    # The server chooses id, owner and key; a client's values for them are not honoured.
    _apply(token, data, now=now)
    async with request.app[SESSIONS]() as session:
        session.add(token)
        await session.commit()
    answer = token_public(token)
    answer.key = key
    return web.json_response(dump(answer))


async def _list(request: web.Request, *, all_owners: bool) -> web.Response:
    principal = await authenticate(request)
    query = select(ApiToken).order_by(col(ApiToken.created_at), col(ApiToken.id))
    if all_owners:
        require(principal, "apitokens", "*", "read")
    else:
        query = own_items(query, principal, owner=col(ApiToken.owner_id))
    async with request.app[SESSIONS]() as session:
        tokens, total = await paginate(session, query, Window.of(request))
    return list_response([dump(token_public(t)) for t in tokens], total)


async def list_own_tokens(request: web.Request) -> web.Response:
    return await _list(request, all_owners=False)


async def list_all_tokens(request: web.Request) -> web.Response:
    return await _list(request, all_owners=True)


async def _load(request: web.Request, session: AsyncSession, *, write: bool) -> ApiToken:
    principal = await authenticate(request)
    token_id = request.match_info["id"]
    token = await session.get(ApiToken, token_id)
    if token is None:
        raise errors.NotFound(f"api token {token_id!r} not found")
    require_owner_or(
        principal,
        owner_id=token.owner_id,
        resource="apitokens",
        resource_id=token.id,
        access="write" if write else "read",
    )
    return token


async def get_token(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        token = await _load(request, session, write=False)
    return web.json_response(dump(token_public(token)))


async def update_token(request: web.Request) -> web.Response:
    body = await read_body(request, ApiTokenUpdate)
    data = validate(ApiTokenUpdate, body)
    async with request.app[SESSIONS]() as session:
        token = await _load(request, session, write=True)
        _refuse_read_only_changes(token, body)
        now = utcnow()
        _apply(token, data, now=now)
        token.updated_at = now
        session.add(token)
        await session.commit()
    return web.json_response(dump(token_public(token)))


async def delete_token(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        token = await _load(request, session, write=True)
        await session.delete(token)
        await session.commit()
    return web.json_response(dump(DeletedOut(msg="apiToken deleted successfully", id=token.id)))


def add_routes(app: web.Application, base: str) -> None:
    for path in PATHS:
        items, item = f"{base}/{path}", f"{base}/{path}/{{id}}"
        route(
            app,
            "GET",
            items,
            list_own_tokens,
            summary="List the caller's API tokens",
            response=ApiTokenPublic,
            listing=True,
        )
        for method in ("POST", "PUT"):
            route(
                app,
                method,
                items,
                create_token,
                summary="Create an API token for the caller (its key shown once)",
                request=ApiTokenCreate,
                request_required=False,
                response=ApiTokenPublic,
            )
        # Before `{id}`, which would otherwise take "all" for an id.
        route(
            app,
            "GET",
            f"{items}/all",
            list_all_tokens,
            summary="List every user's API tokens",
            response=ApiTokenPublic,
            listing=True,
        )
        route(app, "GET", item, get_token, summary="Get an API token", response=ApiTokenPublic)
        for method in ("PATCH", "PUT"):
            route(
                app,
                method,
                item,
                update_token,
                summary="Update an API token",
                request=ApiTokenUpdate,
                response=ApiTokenPublic,
            )
        route(app, "DELETE", item, delete_token, summary="Delete an API token", response=DeletedOut)
