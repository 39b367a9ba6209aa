"""HTML out of the console's templates, with the headers every console answer carries.

Every template autoescapes (`autoescape=True`, for all of them, whatever their name), so
a job's output or a delivery's body is text on the page, never markup. The pages run only
the scripts served from `static/` (the Content-Security-Policy allows no inline script,
no inline style and no other origin), cannot be framed, and are not cached: they show
what one user may see.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from aiohttp import web

from kriten_api.ui.paths import UI_BASE
from kriten_common import errors
from kriten_common.http import parse_json
from kriten_common.paths import API_BASE

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
UNIX_DATE_FORMAT = "%a %b %d %H:%M:%S UTC %Y"


def when(value: str | None) -> str:
    """A time as the API gives it (ISO 8601, or a job's Go `UnixDate`) as `YYYY-MM-DD
    HH:MM:SS` UTC: one format on every page, whichever the field used."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.strptime(" ".join(value.split()), UNIX_DATE_FORMAT)
        except ValueError:
            return value
        moment = moment.replace(tzinfo=UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def pretty_input(raw: str) -> str:
    """A job's input, indented when it is JSON, else as it was given."""
    try:
        # The api's parser: deep nesting or a huge number is the raw text, not a 500.
        return pretty_json(parse_json(raw))
    except errors.InvalidInput:
        return raw


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("kriten_api.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = when
    environment.filters["pretty_json"] = pretty_json
    environment.filters["pretty_input"] = pretty_input
    environment.globals["ui"] = UI_BASE
    environment.globals["api"] = API_BASE
    return environment


ENVIRONMENT = _environment()


def render(template: str, context: Mapping[str, Any], *, status: int = 200) -> web.Response:
    """The template rendered with `context`, as an HTML answer with the console's headers."""
    html = ENVIRONMENT.get_template(template).render(context)
    return web.Response(text=html, status=status, content_type="text/html", headers=PAGE_HEADERS)
