"""Who is calling: API token (`Token:`), then `Authorization: Bearer`, then the `token`
cookie. The result, a `Principal` with its permissions, is cached on the request.

A login token (Bearer or cookie) is accepted while it is unexpired, not revoked by a
logout, its user still exists, and its `epoch` claim is the user's current session
epoch (see `jwt_tokens`).

Cookies are sent by browsers on their own, so a request authenticated by the cookie
alone could have been started by another site (cross-site request forgery). Such a
request, when it changes something, must not come from another origin; see
`check_same_origin`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api import api_tokens, jwt_tokens
from kriten_api.keys import SESSIONS, SETTINGS
from kriten_common import errors
from kriten_common.client_address import parse_address
from kriten_common.db.engine import read_session
from kriten_common.db.models import ApiToken, User
from kriten_common.rbac import Principal, load_principal

PRINCIPAL = web.RequestKey("principal", Principal)
NOT_AUTHENTICATED = "not authenticated."
CROSS_SITE = "cross-site request refused"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a browser's fetch() or form sends with `Sec-Fetch-Site` when the request comes
# from the page's own origin, or from the user (typed URL, bookmark).
SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class PresentedJwt:
    token: str
    by_cookie: bool


def presented_jwt(request: web.Request) -> PresentedJwt | None:
    """The login token the request presents, if any, and whether it came as the cookie."""
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
        return PresentedJwt(token, by_cookie=False) if token else None
    cookie = request.cookies.get("token")
    return PresentedJwt(cookie, by_cookie=True) if cookie else None


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, default port filled in; None if not one."""
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else DEFAULT_PORTS[scheme]


def own_origins(request: web.Request) -> set[tuple[str, str, int]]:
    """The origins this request may come from: the api's own, as the client sees it.

    `KRITEN_PUBLIC_URL` when set (behind a proxy the server's own view is the proxy's);
    and the scheme and `Host` the request arrived with, or what `X-Forwarded-Proto` and
    `X-Forwarded-Host` say when the peer is a trusted proxy (from anyone else they are
    ignored). Trusting `Host` is safe: a page on another site that makes the browser send
    a matching `Host` (DNS rebinding) is on that other site's name, for which the
    browser holds no Kriten cookie.
    """
    settings = request.app[SETTINGS]
    origins: set[tuple[str, str, int]] = set()
    if settings.public_url and (public := _origin(settings.public_url)) is not None:
        origins.add(public)
    scheme, host = request.scheme, request.host
    peer = parse_address(request.remote) if request.remote else None
    if peer is not None and any(peer in network for network in settings.trusted_proxies):
        # The nearest proxy's word: the last value of each header.
        forwarded_proto = request.headers.getall("X-Forwarded-Proto", [])
        forwarded_host = request.headers.getall("X-Forwarded-Host", [])
        if forwarded_proto:
            scheme = forwarded_proto[-1].split(",")[-1].strip()
        if forwarded_host:
            host = forwarded_host[-1].split(",")[-1].strip()
    if (seen := _origin(f"{scheme}://{host}")) is not None:
        origins.add(seen)
    return origins


def check_same_origin(request: web.Request) -> None:
    """Refuses a cookie-authenticated change that a browser says came from elsewhere.

    Browsers mark their requests: every cross-origin POST, PUT, PATCH or DELETE (a form
    or `fetch`) carries `Origin`, and current browsers add `Sec-Fetch-Site`; a page
    cannot remove either. So a request with a marker is judged by it, and one with none
    did not come from a browser on another site: it is a client such as `curl -b
    token.txt` (as Kriten's documentation uses), which keeps working. A browser request
    must also be JSON: `application/json` cannot be sent cross-origin without a CORS
    preflight, which Kriten never grants, so a form post is never taken for an API call.
    """
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if origin is None and fetch_site is None:
        return
    if fetch_site is not None and fetch_site.strip().lower() not in SAME_ORIGIN_FETCH_SITES:
        raise errors.Forbidden(CROSS_SITE)
    if origin is not None and _origin(origin) not in own_origins(request):
        # `Origin: null` (sandboxed frames, some redirects) is no origin: refused too.
        raise errors.Forbidden(CROSS_SITE)
    content_type = request.content_type
    if request.body_exists and not (
        content_type == "application/json" or content_type.endswith("+json")
    ):
        raise errors.UnsupportedMediaType(
            "a browser request authenticated by cookie must be application/json"
        )


async def verified_claims(request: web.Request, session: AsyncSession) -> jwt_tokens.Claims:
    """The claims of the request's login token, if it is still good; 401 otherwise.

    Good: signed, unexpired, not revoked, its user still there, and the user's session
    epoch still the token's. A cookie-authenticated change must also pass
    `check_same_origin`.
    """
    presented = presented_jwt(request)
    if presented is None:
        raise errors.NotAuthenticated(NOT_AUTHENTICATED)
    if presented.by_cookie and request.method in UNSAFE_METHODS:
        check_same_origin(request)
    settings = request.app[SETTINGS]
    claims = jwt_tokens.decode_token(
        presented.token, key=settings.jwt_key.get_secret_value(), now=time.time()
    )
    if await jwt_tokens.is_revoked(session, claims.jti):
        raise errors.NotAuthenticated(jwt_tokens.INVALID_TOKEN)
    user = await session.get(User, claims.user_id)
    if user is None or user.session_epoch != claims.epoch:
        raise errors.NotAuthenticated(jwt_tokens.INVALID_TOKEN)
    return claims


async def presented_claims(request: web.Request) -> jwt_tokens.Claims:
    """The verified, unrevoked, current claims of the request's JWT (401 otherwise)."""
    async with read_session(request.app[SESSIONS]) as session:
        return await verified_claims(request, session)


async def authenticate(request: web.Request) -> Principal:
    """The caller, or `NotAuthenticated`."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    principal = await _load_caller(request)
    request[PRINCIPAL] = principal
    return principal


async def still_authenticated(request: web.Request) -> Principal:
    """The caller as of now, checked afresh: for a long answer (a followed log) that
    must end once its credential is revoked, expires, or its user is gone."""
    return await _load_caller(request)


async def _load_caller(request: web.Request) -> Principal:
    key = request.headers.get("Token")
    # Reads only, on every request: outside a transaction, one round trip per query.
    async with read_session(request.app[SESSIONS]) as session:
        if key:
            user_id = await _api_token_owner(request, session, key)
        else:
            user_id = (await verified_claims(request, session)).user_id
        principal = await load_principal(session, user_id)
    if principal is None:
        raise errors.NotAuthenticated(NOT_AUTHENTICATED)
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
