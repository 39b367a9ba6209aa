"""The console's static files, served from the package itself: no CDN, so the console
works offline and runs only the code this version ships.

`htmx.min.js` is htmx 2.0.11, from the npm registry's `htmx.org` package (0BSD licence),
unchanged. Only the files named here are served (no directory listing, no path taken
from the URL), each with a version in its URL (`?v=`, its content's digest), so a day's
caching is safe across upgrades.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from pathlib import Path

from aiohttp import web

from kriten_api.ui.paths import STATIC
from kriten_api.ui.rendering import ENVIRONMENT, SECURITY_HEADERS
from kriten_common.http import Handler

ASSETS = {
    "htmx.min.js": "text/javascript",
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
CACHE_CONTROL = "public, max-age=86400"


def _path(name: str) -> Path:
    return Path(str(resources.files("kriten_api.ui") / "static" / name))


@cache
def asset_url(name: str) -> str:
    """The URL of one of `ASSETS`, its version in it."""
    digest = hashlib.sha256(_path(name).read_bytes()).hexdigest()[:12]
    return f"{STATIC}/{name}?v={digest}"


def add_routes(app: web.Application) -> None:
    ENVIRONMENT.globals["asset"] = asset_url
    for name, content_type in ASSETS.items():
        app.router.add_get(f"{STATIC}/{name}", _serve(_path(name), content_type))


def _serve(path: Path, content_type: str) -> Handler:
    headers = {**SECURITY_HEADERS, "Content-Type": content_type, "Cache-Control": CACHE_CONTROL}

    async def serve(_request: web.Request) -> web.FileResponse:
        # FileResponse adds ETag and Last-Modified, and answers conditional requests.
        return web.FileResponse(path, headers=headers)

    return serve
