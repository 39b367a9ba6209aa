"""What each route is for the audit log, decided once when the route is registered.

`route()` (kriten_api.openapi) classifies every operation from its method and path
template and keeps the answer in the app's registry; the audit middleware looks the
matched route up there and reads the target from the request's match info. So no URL is
parsed per request, and only a registered route can ever be recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from kriten_api.keys import AUDITED
from kriten_common.paths import API_BASE

CHANGES = ("POST", "PUT", "PATCH", "DELETE")
NOT_AUDITED = ("logout", "refresh")
CATEGORY_ALIASES = {"api_tokens": "apitokens"}


@dataclass(frozen=True)
class Event:
    event_type: str  # login, create, update, delete
    category: str
    target: str | None


@dataclass(frozen=True)
class AuditedRoute:
    """A route's audit event; `target` is a path segment of its template: a `{parameter}`
    whose value is the target, or a literal one."""

    event_type: str
    category: str
    target: str | None

    def target_in(self, match_info: Mapping[str, str]) -> str | None:
        if self.target is not None and self.target.startswith("{"):
            return match_info.get(self.target[1:-1].split(":", 1)[0])
        return self.target


def classify(method: str, template: str) -> AuditedRoute | None:
    """What requests of the route `method template` are for the audit log, or None when
    they are not recorded: reads, `/logout` and `/refresh`, and routes outside the api."""
    base = API_BASE + "/"
    if not template.startswith(base) or method not in CHANGES:
        return None
    segments = [s for s in template[len(base) :].split("/") if s]
    if not segments:
        return None
    category = CATEGORY_ALIASES.get(segments[0], segments[0])
    if category == "login":
        return AuditedRoute("login", category, None) if method == "POST" else None
    if category in NOT_AUDITED:
        return None
    target = segments[1] if len(segments) > 1 else None
    if len(segments) == 1:
        event_type = "delete" if method == "DELETE" else "create"
    elif len(segments) == 2 and method == "DELETE":
        event_type = "delete"
    elif len(segments) == 2 and method == "POST" and category == "jobs":
        event_type = "create"
    else:
        event_type = "update"
    return AuditedRoute(event_type, category, target)


def register(app: web.Application, method: str, template: str) -> None:
    audited = classify(method, template)
    if audited is not None:
        app.setdefault(AUDITED, {})[(method, template)] = audited


def audited_route(request: web.Request) -> AuditedRoute | None:
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return None
    return request.app.get(AUDITED, {}).get((request.method, resource.canonical))
