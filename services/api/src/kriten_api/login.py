"""`POST /login`, `GET /refresh`, `POST /logout`: JWTs in a cookie and in the body."""

from __future__ import annotations

import time

from aiohttp import web
from sqlmodel import select

from kriten_api import jwt_tokens, passwords
from kriten_api.authentication import authenticate, presented_claims
from kriten_api.keys import SESSIONS, SETTINGS
from kriten_common import errors
from kriten_common.db.models import User
from kriten_common.http import read_json_object
from kriten_common.logging import get_logger

log = get_logger(__name__)
INVALID_CREDENTIALS = "invalid credentials."


def _token_response(request: web.Request, token: str) -> web.Response:
    settings = request.app[SETTINGS]
    secure = settings.cookie_secure if settings.cookie_secure is not None else request.secure
    response = web.json_response({"token": token})
    response.set_cookie(
        "token",
        token,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure,
        max_age=settings.jwt_ttl_seconds,
    )
    return response


def _issue(request: web.Request, user: User) -> str:
    settings = request.app[SETTINGS]
    token, _claims = jwt_tokens.issue_token(
        key=settings.jwt_key.get_secret_value(),
        user_id=user.id,
        username=user.username,
        provider=user.provider,
        ttl_seconds=settings.jwt_ttl_seconds,
        now=time.time(),
    )
    return token


async def login(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    username, password = body.get("username"), body.get("password")
    provider = body.get("provider") or "local"
    if not isinstance(username, str) or not isinstance(password, str):
        raise errors.InvalidInput("username and password are required strings")
    if provider != "local":
        raise errors.InvalidInput(f"provider {provider!r} is not configured")
    async with request.app[SESSIONS]() as session:
        query = select(User).where(User.username == username, User.provider == "local")
        user = (await session.exec(query)).first()
    if user is None or user.password_hash is None:
        # Same work as a wrong password, so the time taken does not reveal which.
        await passwords.verify_dummy_async(password)
        ok = False
    else:
        ok = await passwords.verify_password_async(user.password_hash, password)
    if not ok or user is None:
        log.info("login_failed", username=username, provider=provider)
        raise errors.NotAuthenticated(INVALID_CREDENTIALS)
    log.info("login_succeeded", username=username, provider=provider)
    return _token_response(request, _issue(request, user))


async def refresh(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        user = await session.get(User, principal.user_id)
    if user is None:
        raise errors.NotAuthenticated("not authenticated.")
    return _token_response(request, _issue(request, user))


async def logout(request: web.Request) -> web.Response:
    claims = await presented_claims(request)
    async with request.app[SESSIONS]() as session:
        await jwt_tokens.revoke(session, claims)
    response = web.json_response({"msg": "logged out"})
    response.del_cookie("token", path="/")
    return response


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_post(f"{base}/login", login)
    app.router.add_get(f"{base}/refresh", refresh)
    app.router.add_post(f"{base}/logout", logout)
