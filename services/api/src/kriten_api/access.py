"""Access checks and list helpers every resource module uses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from kriten_common import errors
from kriten_common.rbac import Access, Principal, is_allowed

ALL = "*"
DNS_1123 = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
MASK = "************"
# Databases refuse integers past 64 bits (500); no table comes near this many rows, so a
# larger limit or offset is the same as this one.
MAX_COUNT = 2**62


def require(principal: Principal, resource: str, resource_id: str, access: Access) -> None:
    if not is_allowed(
        principal.permissions, resource=resource, resource_id=resource_id, access=access
    ):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def require_owner_or(
    principal: Principal, *, owner_id: str, resource: str, resource_id: str, access: Access
) -> None:
    """Owners act on their own items (tokens, webhooks, cronjobs, jobs) without any role;
    everyone else needs the permission on the item."""
    if owner_id != principal.user_id:
        require(principal, resource, resource_id, access)


def may(principal: Principal, resource: str, resource_id: str, access: Access) -> bool:
    return is_allowed(
        principal.permissions, resource=resource, resource_id=resource_id, access=access
    )


def readable_ids(principal: Principal, resource: str) -> set[str] | None:
    """The ids of `resource` the principal may read; None means all of them."""
    ids: set[str] = set()
    for permission in principal.permissions:
        if permission.resource in (ALL, resource):
            if ALL in permission.resource_ids:
                return None
            ids.update(permission.resource_ids)
    return ids


def check_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not DNS_1123.match(value):
        raise errors.InvalidInput(
            f"{field} must be a DNS-1123 name: lowercase alphanumerics, '-' and '.',"
            " at most 63 characters"
        )
    return value


def pagination(request: web.Request) -> tuple[int | None, int]:
    """`?limit=` and `?offset=`, validated."""

    return count(request, "limit"), count(request, "offset") or 0


def count(request: web.Request, name: str) -> int | None:
    """A non-negative integer query parameter, or None when absent."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    # isdigit() alone takes other scripts' digits ('²', '٣'), which int() refuses.
    if not (raw.isascii() and raw.isdigit()):
        raise errors.InvalidInput(f"{name} must be a non-negative integer")
    return min(int(raw), MAX_COUNT)


def page(items: Sequence[Any], request: web.Request) -> list[Any]:
    limit, offset = pagination(request)
    end = None if limit is None else offset + limit
    return list(items[offset:end])


def list_response(items: list[Any], total: int) -> web.Response:
    return web.json_response(items, headers={"Content-Range": str(total)})


def optional_str(body: dict[str, Any], field: str, default: str | None = None) -> str | None:
    value = body.get(field, default)
    if value is not None and not isinstance(value, str):
        raise errors.InvalidInput(f"{field} must be a string")
    return value


def required_str(body: dict[str, Any], field: str) -> str:
    value = optional_str(body, field)
    if not value:
        raise errors.InvalidInput(f"{field} is required")
    return value


def optional_bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise errors.InvalidInput(f"{field} must be a boolean")
    return value


def same_name(body: dict[str, Any], name: str) -> None:
    """Updates use the URL's name; a different name in the body is refused, not obeyed."""
    if "name" in body and body["name"] != name:
        raise errors.InvalidInput("name cannot be changed (it is taken from the URL)")
