"""Every request kritenctl can make: one table of (method, path template, query names).

Commands name a `Route` from here and never spell a path themselves, so this table is the
whole of what the CLI asks of the api; a test checks each entry against the OpenAPI
document the api serves (`tests/cli/test_paths.py`), so a renamed route fails there and
not in a user's terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

BASE = "/api/v1"
LIST_QUERY = ("limit", "offset")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    query: tuple[str, ...] = ()

    def path(self, **parameters: str) -> str:
        """The template with its `{name}`s filled in, each quoted as one path segment
        (an id containing `/` or `?` must not reach another route)."""
        filled = self.template
        for name, value in parameters.items():
            placeholder = "{" + name + "}"
            if placeholder not in filled:
                raise KeyError(f"{self.template} has no parameter {name!r}")
            filled = filled.replace(placeholder, quote(value, safe=""))
        if "{" in filled:
            raise KeyError(f"{self.template}: a parameter is missing")
        return filled


@dataclass(frozen=True)
class Collection:
    """The five routes of a resource kept as a collection plus items."""

    list: Route
    create: Route
    get: Route
    update: Route
    delete: Route
    list_all: Route | None = None  # every owner's items, where the api has such a list

    def routes(self) -> tuple[Route, ...]:
        found = (self.list, self.create, self.get, self.update, self.delete, self.list_all)
        return tuple(r for r in found if r is not None)


def _collection(
    name: str, key: str, *, query: tuple[str, ...] = (), with_all: bool = False
) -> Collection:
    items, item = f"{BASE}/{name}", f"{BASE}/{name}/{{{key}}}"
    return Collection(
        list=Route("GET", items, LIST_QUERY + query),
        create=Route("POST", items),
        get=Route("GET", item),
        # PATCH merges: fields left out keep their value (docs/api.md, conventions).
        update=Route("PATCH", item),
        delete=Route("DELETE", item),
        list_all=Route("GET", f"{items}/all", LIST_QUERY) if with_all else None,
    )


LOGIN = Route("POST", f"{BASE}/login")
LOGOUT = Route("POST", f"{BASE}/logout")

RUNNERS = _collection("runners", "name")
TASKS = _collection("tasks", "name")
CRONJOBS = _collection("cronjobs", "name")
WEBHOOKS = _collection("webhooks", "id", with_all=True)
USERS = _collection("users", "id")
GROUPS = _collection("groups", "id")
ROLES = _collection("roles", "id")
ROLE_BINDINGS = _collection("role_bindings", "id", query=("role_name", "subject_name"))
# `/apitokens` is this api's own spelling; `/api_tokens` (Kriten's) is the same routes.
API_TOKENS = _collection("apitokens", "id", with_all=True)

JOBS_LIST = Route("GET", f"{BASE}/jobs", (*LIST_QUERY, "task", "owner", "status"))
JOB_CREATE = Route("POST", f"{BASE}/jobs/{{task}}")
JOB_GET = Route("GET", f"{BASE}/jobs/{{id}}")
JOB_CANCEL = Route("DELETE", f"{BASE}/jobs/{{id}}")
JOB_LOG = Route("GET", f"{BASE}/jobs/{{id}}/log", ("follow",))

WEBHOOK_ROTATE = Route("POST", f"{BASE}/webhooks/{{id}}/rotate")
WEBHOOK_TEST = Route("POST", f"{BASE}/webhooks/{{id}}/test")
DELIVERIES_LIST = Route("GET", f"{BASE}/webhooks/{{id}}/deliveries", (*LIST_QUERY, "outcome"))
DELIVERY_GET = Route("GET", f"{BASE}/webhooks/{{id}}/deliveries/{{delivery_id}}")
DELIVERY_REDELIVER = Route("POST", f"{BASE}/webhooks/{{id}}/deliveries/{{delivery_id}}/redeliver")

ROUTES: tuple[Route, ...] = (
    LOGIN,
    LOGOUT,
    *RUNNERS.routes(),
    *TASKS.routes(),
    *CRONJOBS.routes(),
    *WEBHOOKS.routes(),
    *USERS.routes(),
    *GROUPS.routes(),
    *ROLES.routes(),
    *ROLE_BINDINGS.routes(),
    *API_TOKENS.routes(),
    JOBS_LIST,
    JOB_CREATE,
    JOB_GET,
    JOB_CANCEL,
    JOB_LOG,
    WEBHOOK_ROTATE,
    WEBHOOK_TEST,
    DELIVERIES_LIST,
    DELIVERY_GET,
    DELIVERY_REDELIVER,
)
