"""Redirects a path that differs from a route only by a trailing slash, as gin does.

Go Kriten's router (gin, `RedirectTrailingSlash`) answers `POST /api/v1/runners/` with a
redirect to `/api/v1/runners`, and clients rely on it: the kriten-netbox plugin sends the
slashed form. Like gin: 301 for GET, 307 for every other method, so that
`requests`, `curl -L` and browsers repeat the same method, body and headers; the query
string is kept. Only where the other form is a route for the same method, so a redirect
never leads to another 404 or 405, nor anywhere but this server: no route's path starts
with `//`, so the Location is never protocol-relative.

Never for the webhook run endpoint: senders do not follow redirects, so the ingress
answers both forms of it directly.
"""

from __future__ import annotations

from aiohttp import web

from kriten_common.http import Handler
from kriten_common.paths import RUN_PREFIX

KEEPS_METHOD = web.HTTPTemporaryRedirect  # 307
MAY_CHANGE_METHOD = web.HTTPMovedPermanently  # 301: what GET gets, as from gin


@web.middleware
async def trailing_slash_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is None or request.path.startswith(RUN_PREFIX + "/"):
        return await handler(request)
    raw_path = request.rel_url.raw_path
    other = raw_path[:-1] if raw_path.endswith("/") else raw_path + "/"
    if other in ("", "/"):
        return await handler(request)
    match = await request.app.router.resolve(
        request.clone(rel_url=request.rel_url.with_path(other, encoded=True))
    )
    if match.http_exception is not None:
        return await handler(request)
    query = request.rel_url.raw_query_string
    redirect = MAY_CHANGE_METHOD if request.method == "GET" else KEEPS_METHOD
    raise redirect(location=f"{other}?{query}" if query else other)
