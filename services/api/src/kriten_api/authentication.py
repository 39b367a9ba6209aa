"""Who is calling: API token (`Token:`), then `Authorization: Bearer`, then the `token`
cookie. The result, a `Principal` with its permissions, is cached on the request."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api import api_tokens, jwt_tokens
from kriten_api.keys import SESSIONS, SETTINGS
from kriten_common import errors
from kriten_common.db.models import ApiToken
from kriten_common.rbac import Principal, load_principal

PRINCIPAL = web.RequestKey("principal", Principal)
NOT_AUTHENTICATED = "not authenticated."


def bearer_or_cookie(request: web.Request) -> str | None:
    """The JWT the request presents, if any."""
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return request.cookies.get("token") or None


async def presented_claims(request: web.Request) -> jwt_tokens.Claims:
    """The verified, unrevoked claims of the request's JWT (401 otherwise)."""
    token = bearer_or_cookie(request)
    if token is None:
        raise errors.NotAuthenticated(NOT_AUTHENTICATED)
    settings = request.app[SETTINGS]
    claims = jwt_tokens.decode_token(
        token, key=settings.jwt_key.get_secret_value(), now=time.time()
    )
    async with request.app[SESSIONS]() as session:
        if await jwt_tokens.is_revoked(session, claims.jti):
            raise errors.NotAuthenticated("invalid token.")
    return claims


async def authenticate(request: web.Request) -> Principal:
    """The caller, or `NotAuthenticated`."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    key = request.headers.get("Token")
    async with request.app[SESSIONS]() as session:
        if key:
            user_id = await _api_token_owner(request, session, key)
        else:
            user_id = (await presented_claims(request)).user_id
        principal = await load_principal(session, user_id)
    if principal is None:
        raise errors.NotAuthenticated(NOT_AUTHENTICATED)
    request[PRINCIPAL] = principal
    return principal


async def _api_token_owner(request: web.Request, session: AsyncSession, key: str) -> str:
    """The id of the user whose enabled, unexpired API token `key` is."""
    if not api_tokens.looks_like_key(key):
        raise errors.NotAuthenticated(NOT_AUTHENTICATED)
    digest = api_tokens.hash_key(key, server_key=request.app[SETTINGS].token_key.get_secret_value())
    token = (await session.exec(select(ApiToken).where(ApiToken.key_hash == digest))).first()
    if token is None or not token.enabled:
        raise errors.NotAuthenticated(NOT_AUTHENTICATED)
    if token.expires is not None and token.expires <= datetime.now(UTC):
        raise errors.NotAuthenticated(NOT_AUTHENTICATED)
    return token.owner_id
