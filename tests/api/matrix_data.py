"""The authorization matrix: every api route and what each kind of caller gets from it.

`MATRIX` is keyed by (method, route path template) exactly as the app registers them, so
`test_authorization_matrix` can compare it with `app.router.routes()`: a route without an
entry, or an entry without a route, fails that test.

The principals (see `PRINCIPALS`) are, for the resource a route belongs to:

- `anonymous`: no credentials;
- `no_roles`: a user without any role;
- `read_one` / `write_one`: a user with `read` / `write` on the resource's named item
  (for API tokens, the two named tokens, one per path alias);
- `all_items`: a user with `write` on `["*"]` of that resource;
- `admin`: a member of the built-in `Admin` group;
- `owner`: where owners have rights (API tokens, webhooks, cronjobs, jobs), the user
  who owns the named item and holds no role on its resource.

A case's `expect` gives each principal's status; a principal left out (only ever `owner`)
does not apply. Path parameters and list items name keys of the test's world (see
`test_authorization_matrix.World`), resolved when the test runs. The walk runs the list
routes first, then the other routes in the order below, then the deletes (also in the
order below, children before parents), then `/logout`, so that no request undoes what a
later one needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import SQLModel

from kriten_common.db.models import (
    ApiToken,
    AuditLog,
    CronJob,
    Group,
    Job,
    Role,
    RoleBinding,
    Runner,
    Task,
    User,
    Webhook,
)

BASE = "/api/v1"
ANONYMOUS = "anonymous"
NO_ROLES = "no_roles"
READ_ONE = "read_one"
WRITE_ONE = "write_one"
ALL_ITEMS = "all_items"
ADMIN = "admin"
OWNER = "owner"
PRINCIPALS = (ANONYMOUS, NO_ROLES, READ_ONE, WRITE_ONE, ALL_ITEMS, ADMIN, OWNER)
# Every case covers these; `owner` only where owners have rights.
REQUIRED_PRINCIPALS = frozenset(PRINCIPALS) - {OWNER}

# The named item of each resource, as world keys (the roles of `read_one`, `write_one`).
NAMED: dict[str, tuple[str, ...]] = {
    "runners": ("runner",),
    "tasks": ("task",),
    "jobs": ("job_task",),
    "cronjobs": ("cronjob",),
    "users": ("user_name",),
    "groups": ("group",),
    "roles": ("role",),
    "role_bindings": ("binding",),
    "apitokens": ("token", "token_alias"),
    "webhooks": ("webhook",),
    "audit": ("audit",),
}
# Routes that belong to no resource (login, refresh, logout) use these users.
DEFAULT_RESOURCE = "tasks"

ALL = "ALL"  # a list item set: every row in the database


@dataclass(frozen=True)
class Listed:
    """What a list route answers: `items[principal]` are world keys (or ALL), compared
    on the JSON field `field` (for ALL: the database column `column` of `model`)."""

    field: str
    items: Mapping[str, tuple[str, ...] | str]
    model: type[SQLModel] | None = None
    column: str = ""


@dataclass(frozen=True)
class Case:
    resource: str | None
    expect: Mapping[str, int]
    params: Mapping[str, str] = field(default_factory=dict)
    # Another item of the resource: GET routes are also tried on it by the limited
    # principals (read_one, write_one, owner), who must get 403.
    other: Mapping[str, str] | None = None
    body: Any = None
    query: str = ""
    listed: Listed | None = None


def _statuses(
    anonymous: int,
    no_roles: int,
    read_one: int,
    write_one: int,
    all_items: int,
    admin: int,
    owner: int | None = None,
) -> dict[str, int]:
    statuses = {
        ANONYMOUS: anonymous,
        NO_ROLES: no_roles,
        READ_ONE: read_one,
        WRITE_ONE: write_one,
        ALL_ITEMS: all_items,
        ADMIN: admin,
    }
    if owner is not None:
        statuses[OWNER] = owner
    return statuses


def readable(owner: int | None = None) -> dict[str, int]:
    """An item route that needs read on the item."""
    return _statuses(401, 403, 200, 200, 200, 200, owner)


def writable(ok: int = 200, owner: int | None = None) -> dict[str, int]:
    """An item route that needs write on the item."""
    return _statuses(401, 403, 403, ok, ok, ok, owner)


def creatable(ok: int = 200, owner: int | None = None) -> dict[str, int]:
    """A create route: write on `*` of the resource."""
    return _statuses(401, 403, 403, 403, ok, ok, owner)


def authenticated(ok: int = 200, owner: int | None = None) -> dict[str, int]:
    """Any authenticated caller."""
    return _statuses(401, ok, ok, ok, ok, ok, owner)


def listing(
    field: str,
    named: tuple[str, ...],
    model: type[SQLModel],
    column: str,
    owner: tuple[str, ...] | None = None,
) -> Listed:
    """A list filtered by RBAC: the named item for the limited users, all for the rest."""
    items: dict[str, tuple[str, ...] | str] = {
        NO_ROLES: (),
        READ_ONE: named,
        WRITE_ONE: named,
        ALL_ITEMS: ALL,
        ADMIN: ALL,
    }
    if owner is not None:
        items[OWNER] = owner
    return Listed(field, items, model, column)


def fixed(field: str, keys: tuple[str, ...], owner: bool = False) -> Listed:
    """A list every caller who may read it sees whole (a sub-list of one item)."""
    principals = (READ_ONE, WRITE_ONE, ALL_ITEMS, ADMIN) + ((OWNER,) if owner else ())
    return Listed(field, dict.fromkeys(principals, keys))


def _own(field: str, owned: tuple[str, ...]) -> Listed:
    """A list of the caller's own items: only the owner has any."""
    items: dict[str, tuple[str, ...] | str] = {NO_ROLES: (), READ_ONE: (), WRITE_ONE: ()}
    items.update({ALL_ITEMS: (), ADMIN: (), OWNER: owned})
    return Listed(field, items)


def _runners() -> dict[tuple[str, str], Case]:
    item = {"name": "runner"}
    other = {"name": "runner_other"}
    new = {"image": "python:3.11-slim", "gitURL": "https://example.org/r.git"}
    return {
        ("GET", "/runners"): Case(
            "runners", authenticated(), listed=listing("name", ("runner",), Runner, "name")
        ),
        ("POST", "/runners"): Case("runners", creatable(), body={"name": "r-post", **new}),
        ("PUT", "/runners"): Case("runners", creatable(), body={"name": "r-put", **new}),
        ("GET", "/runners/{name}"): Case("runners", readable(), item, other),
        ("PATCH", "/runners/{name}"): Case("runners", writable(), item, body={"branch": "dev"}),
        ("PUT", "/runners/{name}"): Case("runners", writable(), item, body={"branch": "main"}),
        ("GET", "/runners/{name}/secret"): Case("runners", readable(), item, other),
        ("POST", "/runners/{name}/secret"): Case("runners", writable(), item, body={"k": "v"}),
        ("PUT", "/runners/{name}/secret"): Case("runners", writable(), item, body={"k2": "v"}),
    }


def _tasks() -> dict[tuple[str, str], Case]:
    item = {"name": "task"}
    other = {"name": "task_other"}
    new = {"runner": "base", "command": "true"}
    # Putting a task on a runner also needs runners:write on it (its command runs with the
    # runner's secrets and token), which no principal but admin holds on `base`.
    create = _statuses(401, 403, 403, 403, 403, 200)
    return {
        ("GET", "/tasks"): Case(
            "tasks", authenticated(), listed=listing("name", ("task",), Task, "name")
        ),
        ("POST", "/tasks"): Case("tasks", create, body={"name": "t-post", **new}),
        ("PUT", "/tasks"): Case("tasks", create, body={"name": "t-put", **new}),
        ("GET", "/tasks/{name}"): Case("tasks", readable(), item, other),
        ("PATCH", "/tasks/{name}"): Case("tasks", writable(), item, body={"description": "p"}),
        ("PUT", "/tasks/{name}"): Case("tasks", writable(), item, body={"description": "u"}),
        ("GET", "/tasks/{name}/schema"): Case("tasks", readable(), item, other),
        ("POST", "/tasks/{name}/schema"): Case("tasks", writable(), item, body={"type": "object"}),
        ("PUT", "/tasks/{name}/schema"): Case("tasks", writable(), item, body={"type": "object"}),
        # The callback secret signs what the task's receivers trust: write, as editing
        # the callbacks needs. Their delivery log names the task's jobs and how they
        # ended: read on the task and on its jobs (here, only the admin has the latter).
        ("POST", "/tasks/{name}/callback_secret/rotate"): Case(
            "tasks", writable(), item, body={"grace_seconds": 0}
        ),
        ("GET", "/tasks/{name}/callback_deliveries"): Case(
            "tasks", _statuses(401, 403, 403, 403, 403, 200), item, other
        ),
    }


def _jobs() -> dict[tuple[str, str], Case]:
    item = {"id": "job"}
    other = {"id": "job_other"}
    return {
        ("GET", "/jobs"): Case(
            "jobs",
            authenticated(owner=200),
            listed=listing("id", ("job",), Job, "id", owner=("job",)),
        ),
        # The owner of a job may not start one: running needs jobs:write on the task.
        ("POST", "/jobs/{task}"): Case("jobs", writable(owner=403), {"task": "job_task"}),
        ("GET", "/jobs/{id}"): Case("jobs", readable(owner=200), item, other),
        ("GET", "/jobs/{id}/log"): Case("jobs", readable(owner=200), item, other),
        ("GET", "/jobs/{id}/schema"): Case("jobs", readable(owner=200), item, other),
    }


def _cronjobs() -> dict[tuple[str, str], Case]:
    item = {"name": "cronjob"}
    other = {"name": "cronjob_other"}

    def new(name: str) -> dict[str, Any]:
        return {"name": name, "task": "hello-kriten", "schedule": "0 3 * * *"}

    # Creating a cronjob needs jobs:write on its task (it runs as its owner), which no
    # principal but admin holds on hello-kriten: cronjobs:write on ["*"] is not enough.
    create = _statuses(401, 403, 403, 403, 403, 200, owner=403)
    return {
        ("GET", "/cronjobs"): Case(
            "cronjobs",
            authenticated(owner=200),
            listed=listing("name", ("cronjob",), CronJob, "name", owner=("cronjob",)),
        ),
        ("POST", "/cronjobs"): Case("cronjobs", create, body=new("c-post")),
        ("PUT", "/cronjobs"): Case("cronjobs", create, body=new("c-put")),
        ("GET", "/cronjobs/{name}"): Case("cronjobs", readable(owner=200), item, other),
        ("PATCH", "/cronjobs/{name}"): Case(
            "cronjobs", writable(owner=200), item, body={"disable": True}
        ),
        ("PUT", "/cronjobs/{name}"): Case(
            "cronjobs", writable(owner=200), item, body={"disable": True}
        ),
        ("GET", "/cronjobs/{name}/schema"): Case("cronjobs", readable(owner=200), item, other),
    }


def _users() -> dict[tuple[str, str], Case]:
    item = {"id": "user"}
    other = {"id": "root"}
    return {
        ("GET", "/users"): Case(
            "users", authenticated(), listed=listing("username", ("user_name",), User, "username")
        ),
        ("POST", "/users"): Case(
            "users", creatable(), body={"username": "u-post", "password": "pw-u-post"}
        ),
        ("PUT", "/users"): Case(
            "users", creatable(), body={"username": "u-put", "password": "pw-u-put"}
        ),
        ("GET", "/users/{id}"): Case("users", readable(), item, other),
        ("PATCH", "/users/{id}"): Case("users", writable(), item, body={"password": "new-pw-1"}),
        ("PUT", "/users/{id}"): Case("users", writable(), item, body={"password": "new-pw-2"}),
        ("GET", "/users/{id}/groups"): Case(
            "users", readable(), item, other, listed=fixed("name", ("group",))
        ),
    }


def _groups() -> dict[tuple[str, str], Case]:
    item = {"id": "group"}
    other = {"id": "group_other"}
    members = [{"name": "target", "provider": "local"}]
    return {
        ("GET", "/groups"): Case(
            "groups", authenticated(), listed=listing("name", ("group",), Group, "name")
        ),
        ("POST", "/groups"): Case("groups", creatable(), body={"name": "g-post"}),
        ("PUT", "/groups"): Case("groups", creatable(), body={"name": "g-put"}),
        ("GET", "/groups/{id}"): Case("groups", readable(), item, other),
        ("PATCH", "/groups/{id}"): Case("groups", writable(), item, body={"users": ["@user"]}),
        ("PUT", "/groups/{id}"): Case("groups", writable(), item, body={"users": ["@user"]}),
        ("GET", "/groups/{id}/users"): Case(
            "groups", readable(), item, other, listed=fixed("name", ("user_name",))
        ),
        ("POST", "/groups/{id}/users"): Case("groups", writable(), item, body=members),
        ("PUT", "/groups/{id}/users"): Case("groups", writable(), item, body=members),
    }


def _roles() -> dict[tuple[str, str], Case]:
    item = {"id": "role"}
    other = {"id": "role_other"}

    def new(name: str) -> dict[str, Any]:
        # A role its creator holds: read on roles, for the role itself.
        return {"name": name, "resource": "roles", "resource_ids": [name], "access": "read"}

    return {
        ("GET", "/roles"): Case(
            "roles", authenticated(), listed=listing("name", ("role",), Role, "name")
        ),
        ("POST", "/roles"): Case("roles", creatable(), body=new("role-post")),
        ("PUT", "/roles"): Case("roles", creatable(), body=new("role-put")),
        ("GET", "/roles/{id}"): Case("roles", readable(), item, other),
        ("PATCH", "/roles/{id}"): Case("roles", writable(), item, body={"access": "read"}),
        ("PUT", "/roles/{id}"): Case("roles", writable(), item, body={"access": "read"}),
    }


def _role_bindings() -> dict[tuple[str, str], Case]:
    item = {"id": "binding"}
    other = {"id": "binding_other"}

    def new(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "role_name": "m-bind-role",
            "subject_kind": "groups",
            "subject_name": "crew",
        }

    return {
        ("GET", "/role_bindings"): Case(
            "role_bindings",
            authenticated(),
            listed=listing("name", ("binding",), RoleBinding, "name"),
        ),
        ("POST", "/role_bindings"): Case("role_bindings", creatable(), body=new("rb-post")),
        ("PUT", "/role_bindings"): Case("role_bindings", creatable(), body=new("rb-put")),
        ("GET", "/role_bindings/{id}"): Case("role_bindings", readable(), item, other),
        ("PATCH", "/role_bindings/{id}"): Case(
            "role_bindings", writable(), item, body={"subject_name": "crew"}
        ),
        ("PUT", "/role_bindings/{id}"): Case(
            "role_bindings", writable(), item, body={"subject_name": "crew"}
        ),
    }


def _api_tokens(path: str, token: str) -> dict[tuple[str, str], Case]:
    item = {"id": token}
    other = {"id": "token_other"}
    # Each caller lists their own tokens; only the owner has any.
    own = _own("id", NAMED["apitokens"])
    return {
        ("GET", f"/{path}"): Case("apitokens", authenticated(owner=200), listed=own),
        ("POST", f"/{path}"): Case(
            "apitokens", authenticated(owner=200), body={"description": "new"}
        ),
        ("PUT", f"/{path}"): Case("apitokens", authenticated(owner=200), body={"description": "n"}),
        ("GET", f"/{path}/all"): Case(
            "apitokens",
            creatable(owner=403),
            listed=Listed("id", {ALL_ITEMS: ALL, ADMIN: ALL}, ApiToken, "id"),
        ),
        ("GET", f"/{path}/{{id}}"): Case("apitokens", readable(owner=200), item, other),
        ("PATCH", f"/{path}/{{id}}"): Case(
            "apitokens", writable(owner=200), item, body={"description": "p"}
        ),
        ("PUT", f"/{path}/{{id}}"): Case(
            "apitokens", writable(owner=200), item, body={"description": "u"}
        ),
    }


def _webhooks() -> dict[tuple[str, str], Case]:
    item = {"id": "webhook"}
    other = {"id": "webhook_other"}
    delivery = {"id": "webhook", "delivery_id": "delivery"}
    # Creating needs jobs:write on the task (hello-kriten), which only admin holds.
    create = _statuses(401, 403, 403, 403, 403, 200, owner=403)

    # Acts that run the webhook's task as its owner (test, redeliver) also need jobs:write
    # on the task (hook-task) from anyone but the owner; rotating (which shows the new
    # secret) is the owner's or an admin's alone. webhooks:write is not enough for either.
    def as_owner(ok: int) -> dict[str, int]:
        return _statuses(401, 403, 403, 403, 403, ok, owner=ok)

    own = _own("id", ("webhook",))
    return {
        ("GET", "/webhooks"): Case("webhooks", authenticated(owner=200), listed=own),
        ("POST", "/webhooks"): Case("webhooks", create, body={"task": "hello-kriten"}),
        ("PUT", "/webhooks"): Case("webhooks", create, body={"task": "hello-kriten"}),
        ("GET", "/webhooks/all"): Case(
            "webhooks",
            creatable(owner=403),
            listed=Listed("id", {ALL_ITEMS: ALL, ADMIN: ALL}, Webhook, "id"),
        ),
        ("GET", "/webhooks/{id}"): Case("webhooks", readable(owner=200), item, other),
        ("PATCH", "/webhooks/{id}"): Case(
            "webhooks", writable(owner=200), item, body={"description": "p"}
        ),
        ("PUT", "/webhooks/{id}"): Case(
            "webhooks", writable(owner=200), item, body={"description": "u"}
        ),
        ("POST", "/webhooks/{id}/rotate"): Case("webhooks", as_owner(200), item, body={}),
        ("GET", "/webhooks/{id}/deliveries"): Case(
            "webhooks",
            readable(owner=200),
            item,
            other,
            listed=fixed("id", ("delivery",), owner=True),
        ),
        ("GET", "/webhooks/{id}/deliveries/{delivery_id}"): Case(
            "webhooks",
            readable(owner=200),
            delivery,
            {"id": "webhook_other", "delivery_id": "delivery"},
        ),
        ("POST", "/webhooks/{id}/deliveries/{delivery_id}/redeliver"): Case(
            "webhooks", as_owner(202), delivery
        ),
        # The test delivery goes to an ingress that is not there: 503 once allowed.
        ("POST", "/webhooks/{id}/test"): Case("webhooks", as_owner(503), item, body={}),
    }


def _audit() -> dict[tuple[str, str], Case]:
    return {
        ("GET", "/audit_logs"): Case(
            "audit",
            authenticated(),
            query="max=100000",
            listed=listing("id", ("audit",), AuditLog, "id"),
        ),
        ("GET", "/audit_logs/{id}"): Case("audit", readable(), {"id": "audit"}, {"id": "audit2"}),
    }


def _dead_letters() -> dict[tuple[str, str], Case]:
    # Admin only: no resource permission reaches them, `*` write on tasks included. The
    # world has no dead letter, so past the check the item routes answer 404 (for any
    # id; "delivery" is just a world key); tests/api/test_dead_letters.py has the rest.
    admin_only = _statuses(401, 403, 403, 403, 403, 200)
    missing = _statuses(401, 403, 403, 403, 403, 404)
    item = {"id": "delivery"}
    return {
        ("GET", "/dead_letters"): Case(None, admin_only),
        ("GET", "/dead_letters/{id}"): Case(None, missing, item),
        ("POST", "/dead_letters/{id}/replay"): Case(None, missing, item),
    }


def _session() -> dict[tuple[str, str], Case]:
    return {
        # Public: valid credentials log in whoever sends them.
        ("POST", "/login"): Case(
            None,
            _statuses(200, 200, 200, 200, 200, 200),
            body={"username": "nobody", "password": "pw-nobody", "provider": "local"},
        ),
        ("GET", "/refresh"): Case(None, authenticated()),
    }


def _deletes() -> dict[tuple[str, str], Case]:
    """Run last, in this order: parts before their item, users of an item before it."""
    members = [{"name": "target", "provider": "local"}]
    return {
        ("DELETE", "/runners/{name}/secret"): Case("runners", writable(), {"name": "runner"}),
        ("DELETE", "/tasks/{name}/schema"): Case("tasks", writable(), {"name": "task"}),
        ("DELETE", "/groups/{id}/users"): Case("groups", writable(), {"id": "group"}, body=members),
        ("DELETE", "/webhooks/{id}"): Case("webhooks", writable(owner=200), {"id": "webhook"}),
        ("DELETE", "/apitokens/{id}"): Case("apitokens", writable(owner=200), {"id": "token"}),
        ("DELETE", "/api_tokens/{id}"): Case(
            "apitokens", writable(owner=200), {"id": "token_alias"}
        ),
        ("DELETE", "/cronjobs/{name}"): Case("cronjobs", writable(owner=200), {"name": "cronjob"}),
        # Cancels the (running) job: its owner may, others need jobs:write on the task.
        ("DELETE", "/jobs/{id}"): Case("jobs", writable(owner=200), {"id": "job"}),
        ("DELETE", "/role_bindings/{id}"): Case("role_bindings", writable(), {"id": "binding"}),
        ("DELETE", "/roles/{id}"): Case("roles", writable(), {"id": "role"}),
        ("DELETE", "/groups/{id}"): Case("groups", writable(), {"id": "group"}),
        ("DELETE", "/users/{id}"): Case("users", writable(), {"id": "user"}),
        ("DELETE", "/tasks/{name}"): Case("tasks", writable(), {"name": "task"}),
        ("DELETE", "/runners/{name}"): Case("runners", writable(), {"name": "runner"}),
        # Revokes the caller's own session: the very last request.
        ("POST", "/logout"): Case(None, authenticated()),
    }


def _matrix() -> dict[tuple[str, str], Case]:
    parts = (
        _session(),
        _runners(),
        _tasks(),
        _jobs(),
        _cronjobs(),
        _users(),
        _groups(),
        _roles(),
        _role_bindings(),
        _api_tokens("apitokens", "token"),
        _api_tokens("api_tokens", "token_alias"),
        _webhooks(),
        _audit(),
        _dead_letters(),
        _deletes(),
    )
    matrix: dict[tuple[str, str], Case] = {}
    for part in parts:
        for (method, path), case in part.items():
            key = (method, BASE + path)
            assert key not in matrix, f"duplicate matrix entry {key}"
            matrix[key] = case
    return matrix


MATRIX: dict[tuple[str, str], Case] = _matrix()
