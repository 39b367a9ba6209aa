"""What every console page shares: who is looking, and what a refusal looks like.

`page` wraps a page handler: it authenticates the caller first (the API's
`authenticate`: cookie, Bearer or API token, as for any API request), hands the handler
the caller, and turns the API's errors into pages. No login: a redirect to the login
page (for htmx's background refreshes, an `HX-Redirect` header, which htmx follows).
Not found, or not allowed to see: the same "not found" page, so a page never tells
whether something the caller may not read exists. Invalid input (a bad filter): the
message, on an error page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from kriten_api.authentication import authenticate
from kriten_api.ui.paths import UI_BASE
from kriten_api.ui.rendering import PAGE_HEADERS, render
from kriten_common import errors
from kriten_common.http import Handler
from kriten_common.rbac import Principal

LOGIN = f"{UI_BASE}/login"


@dataclass(frozen=True)
class Viewer:
    """The caller of a page, as its header and templates need them."""

    principal: Principal
    section: str

    @property
    def context(self) -> dict[str, Any]:
        return {"user": self.principal.username, "section": self.section}


PageHandler = Callable[[web.Request, Viewer], Awaitable[web.Response]]


def page(section: str) -> Callable[[PageHandler], Handler]:
    """A page of the console's `section` (the header's tab it belongs to)."""

    def decorate(handler: PageHandler) -> Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                viewer = Viewer(await authenticate(request), section)
                return await handler(request, viewer)
            except errors.NotAuthenticated:
                return login_redirect(request)
            except (errors.NotFound, errors.Forbidden):
                viewer_context = await _viewer_context(request, section)
                return render("not_found.html", viewer_context, status=404)
            except errors.InvalidInput as problem:
                context = {**await _viewer_context(request, section), "message": problem.message}
                return render("error.html", context, status=400)

        return serve

    return decorate


async def _viewer_context(request: web.Request, section: str) -> dict[str, Any]:
    return Viewer(await authenticate(request), section).context


def login_redirect(request: web.Request) -> web.Response:
    """To the login page, which comes back here after the login."""
    if request.headers.get("HX-Request"):
        # A background refresh of a part of a page: htmx leaves for the login page, which
        # comes back to the page (not to the part).
        current = URL(request.headers.get("HX-Current-URL", "")).path_qs
        target = f"{LOGIN}?next={quote(safe_next(current), safe='')}"
        return web.Response(status=200, headers={**PAGE_HEADERS, "HX-Redirect": target})
    target = f"{LOGIN}?next={quote(request.path_qs, safe='')}"
    return web.Response(status=303, headers={**PAGE_HEADERS, "Location": target})


def safe_next(raw: str | None) -> str:
    """Where to go after logging in: a console path only, never another site (an open
    redirect would make the login page a phishing aid)."""
    if raw and raw.startswith(f"{UI_BASE}/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return f"{UI_BASE}/jobs"
