"""The login page, and the console's front door.

The page only collects the credentials: its script sends them to `POST /api/v1/login`,
whose answer sets the API's own session cookie, so the console and the API share one
session, one rate limiter and one audit log. Logging out is `POST /api/v1/logout`,
sent by the header's button.
"""

from __future__ import annotations

from aiohttp import web

from kriten_api.keys import LDAP_CONFIG
from kriten_api.ldap_auth import PROVIDER as DIRECTORY
from kriten_api.schemas.login import LOCAL
from kriten_api.ui.pages import LOGIN, safe_next
from kriten_api.ui.paths import UI_BASE
from kriten_api.ui.rendering import PAGE_HEADERS, render


async def login_page(request: web.Request) -> web.Response:
    providers = [(LOCAL, "Local")]
    if LDAP_CONFIG in request.app:
        providers.append((DIRECTORY, "Active Directory"))
    context = {"providers": providers, "next": safe_next(request.query.get("next"))}
    return render("login.html", context)


async def front_door(_request: web.Request) -> web.Response:
    return web.Response(status=303, headers={**PAGE_HEADERS, "Location": f"{UI_BASE}/jobs"})


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{UI_BASE}/", front_door)
    app.router.add_get(LOGIN, login_page)
