"""`POST /login`, `GET /refresh`, `POST /logout`: JWTs in a cookie and in the body.

`/refresh` renews a login token only, never an API token: a session minted from an API
token would outlive the API token's deletion. `POST /logout?all=true` ends every session
of the caller (raises their session epoch, see `jwt_tokens`).

Login providers: `local` (argon2id hashes in the database) and `active_directory`
(LDAP, see `ldap_auth`) when `KRITEN_LDAP_URL` is set. Every attempt first passes the
rate limiter (`login_limits`), before any password work.
"""

from __future__ import annotations

import time

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from kriten_api import jwt_tokens, ldap_auth, passwords
from kriten_api.authentication import check_same_origin, presented_claims, verified_claims
from kriten_api.keys import LDAP_CONFIG, LOGIN_LIMITER, SESSIONS, SETTINGS
from kriten_api.login_limits import LoginLimiter
from kriten_api.openapi import Query, route
from kriten_api.schemas import MessageOut, dump, read_body, validate
from kriten_api.schemas.login import LOCAL, LoginIn, TokenOut
from kriten_common import errors
from kriten_common.client_address import client_address, forwarded_hops
from kriten_common.db.models import User
from kriten_common.logging import get_logger

log = get_logger(__name__)
INVALID_CREDENTIALS = "invalid credentials."
DIRECTORY_UNAVAILABLE = "the directory is unavailable; try again later."
REFRESH_NEEDS_LOGIN = "only a login token can be refreshed, not an API token"


def _token_response(request: web.Request, token: str) -> web.Response:
    settings = request.app[SETTINGS]
    secure = settings.cookie_secure if settings.cookie_secure is not None else request.secure
    response = web.json_response(dump(TokenOut(token=token)))
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
        epoch=user.session_epoch,
    )
    return token


def request_client_address(request: web.Request) -> str:
    """The client's address: the peer, or what trusted proxies say it is."""
    trusted = request.app[SETTINGS].trusted_proxies
    hops = forwarded_hops(request.headers.getall("X-Forwarded-For", [])) if trusted else []
    return client_address(request.remote, hops, trusted)


async def login(request: web.Request) -> web.Response:
    # Login CSRF: a page on another site must not log the visitor's browser in to an
    # account of its choosing (whose activity it could then watch). The same check as a
    # cookie-authenticated change; clients that are not browsers send neither marker.
    check_same_origin(request)
    data = validate(LoginIn, await read_body(request, LoginIn))
    username, password, provider = data.username, data.password, data.provider
    directory = request.app.get(LDAP_CONFIG)
    if provider != LOCAL and (provider != ldap_auth.PROVIDER or directory is None):
        raise errors.InvalidInput(f"provider {provider!r} is not configured")
    address = request_client_address(request)
    try:
        attempt = request.app[LOGIN_LIMITER].begin(provider, username, address)
    except errors.RateLimited:
        log.warning("login_rate_limited", username=username, provider=provider, address=address)
        raise
    try:
        if directory is not None and provider == ldap_auth.PROVIDER:
            user = await _directory_login(request, directory, username, password)
        else:
            user = await _local_login(request, username, password)
    except errors.Unavailable:
        # Says nothing about the credentials: not the caller's failure to count.
        attempt.abandoned()
        raise
    if user is None:
        log.info("login_failed", username=username, provider=provider, address=address)
        raise errors.NotAuthenticated(INVALID_CREDENTIALS)
    attempt.succeeded()
    log.info("login_succeeded", username=user.username, provider=provider, address=address)
    return _token_response(request, _issue(request, user))


async def _local_login(request: web.Request, username: str, password: str) -> User | None:
    async with request.app[SESSIONS]() as session:
        query = select(User).where(User.username == username, User.provider == LOCAL)
        user = (await session.exec(query)).first()
    if user is None or user.password_hash is None:
        # Same work as a wrong password, so the time taken does not reveal which.
        await passwords.verify_dummy_async(password)
        return None
    if not await passwords.verify_password_async(user.password_hash, password):
        return None
    return user


async def _directory_login(
    request: web.Request, directory: ldap_auth.LdapConfig, username: str, password: str
) -> User | None:
    try:
        name = await ldap_auth.authenticate(directory, username, password)
    except ldap_auth.DirectoryUnavailable as problem:
        log.error("ldap_unavailable", problem=str(problem))
        raise errors.Unavailable(DIRECTORY_UNAVAILABLE) from None
    if name is None:
        return None
    return await _directory_user(request, name)


async def _directory_user(request: web.Request, username: str) -> User:
    """The Kriten user for a directory account, created on its first login."""
    query = select(User).where(User.username == username, User.provider == ldap_auth.PROVIDER)
    async with request.app[SESSIONS]() as session:
        user = (await session.exec(query)).first()
        if user is not None:
            return user
        user = User(username=username, provider=ldap_auth.PROVIDER, password_hash=None)
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            # A concurrent first login created it a moment ago.
            await session.rollback()
            found = (await session.exec(query)).first()
            if found is None:
                raise
            return found
        await session.refresh(user)
        log.info("directory_user_created", username=username, user_id=user.id)
        return user


async def refresh(request: web.Request) -> web.Response:
    if request.headers.get("Token"):
        # The Token header wins over any JWT (see authentication), so this request is
        # an API token's; a JWT made from it would not end when the API token is deleted.
        raise errors.Forbidden(REFRESH_NEEDS_LOGIN)
    async with request.app[SESSIONS]() as session:
        claims = await verified_claims(request, session)
        user = await session.get(User, claims.user_id)
    if user is None:
        raise errors.NotAuthenticated("not authenticated.")
    return _token_response(request, _issue(request, user))


def _everywhere(request: web.Request) -> bool:
    value = request.query.get("all", "false").lower()
    if value not in ("true", "1", "false", "0"):
        raise errors.InvalidInput("all must be true or false")
    return value in ("true", "1")


async def logout(request: web.Request) -> web.Response:
    everywhere = _everywhere(request)
    claims = await presented_claims(request)
    async with request.app[SESSIONS]() as session:
        if everywhere:
            await jwt_tokens.end_sessions(session, claims.user_id)
        # Commits the epoch too, in one transaction.
        await jwt_tokens.revoke(session, claims)
    if everywhere:
        log.info("logged_out_everywhere", user_id=claims.user_id, username=claims.username)
    message = "logged out everywhere" if everywhere else "logged out"
    response = web.json_response(dump(MessageOut(msg=message)))
    response.del_cookie("token", path="/")
    return response


def add_routes(app: web.Application, base: str) -> None:
    # Login's own state lives on the app, made here from the settings create_app set.
    settings = app[SETTINGS]
    app[LOGIN_LIMITER] = LoginLimiter.from_settings(settings)
    directory = ldap_auth.LdapConfig.from_settings(settings)
    if directory is not None:
        app[LDAP_CONFIG] = directory
    route(
        app,
        "POST",
        f"{base}/login",
        login,
        summary="Log in: a JWT, also set as a cookie",
        request=LoginIn,
        response=TokenOut,
        public=True,
        errors=[401, 429, 503],
    )
    route(
        app,
        "GET",
        f"{base}/refresh",
        refresh,
        summary="A fresh JWT for the current session (from a login token only)",
        response=TokenOut,
    )
    route(
        app,
        "POST",
        f"{base}/logout",
        logout,
        summary="Revoke the session's JWT; with all=true, every session of the user",
        response=MessageOut,
        query=[
            Query(
                "all",
                {"enum": ["true", "false", "1", "0"]},
                "Log out everywhere: revoke every login token of the user, on every device",
            )
        ],
    )
