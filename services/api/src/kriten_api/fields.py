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


def is_admin(principal: Principal) -> bool:
    """Holds `write` on every item of every resource (the built-in Admin role, or a role
    equal to it): the only callers trusted with what no narrower role can be given."""
    return may(principal, ALL, ALL, "write")


def require_owner_or_admin(principal: Principal, *, owner_id: str) -> None:
    """For acts that no resource permission may delegate: a webhook's new secret lets its
    holder start the owner's task as the owner, so rotating it (which shows the secret) is
    for the owner, or an admin, alone; `webhooks:write` is not enough."""
    if owner_id != principal.user_id and not is_admin(principal):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def require_run_as_owner(principal: Principal, *, owner_id: str, task: str) -> None:
    """Starting a job that runs with another user's permissions (a webhook's test delivery
    or redelivery runs as the webhook's owner): a non-owner must also be allowed to run
    the task themselves (`jobs:write` on it), or access to the webhook alone would let
    them run, with a body of their choosing, what only its owner may run."""
    if owner_id != principal.user_id:
        require(principal, "jobs", task, "write")


def require_runner_use(principal: Principal, runner: str) -> None:
    """Putting a task on a runner (creating it there, moving it there, or changing the
    command of a task there): the task's command runs with the runner's secrets and git
    token, so whoever chooses the command must be trusted with the runner itself
    (`runners:write` on it), not only with tasks."""
    require(principal, "runners", runner, "write")


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
