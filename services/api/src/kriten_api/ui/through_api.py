"""The console reads through the API's own handlers: one place for every permission check.

A console page is a view of API answers. Its handler calls the REST handler of the same
resource (`routes/*.py`) in-process, on the page's own request (its cookie, its path
parameters, and the query it is given), and renders the JSON that handler answers. So
the console asks the same authentication, the same authorization (`authz`) and the same
queries (`visible_to`, paging) as the API, and shows a user exactly what the API would
show them: there is no second implementation to drift. A refusal is the API's own error
(`KritenError`), which the page turns into a login redirect or a "not found" page.

Changes never come through here: the browser sends them to the API itself (see
`static/console.js`), so they pass the API's cross-site checks and its audit log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kriten_common.http import Handler

# The most items a list page shows (the API's lists have no limit unless asked): a
# page says when there are more.
LIST_SHOWN = 200
FIRST_PAGE = {"limit": str(LIST_SHOWN)}


@dataclass(frozen=True)
class Listing:
    """One page of an API list, and how many items the whole list holds."""

    items: list[dict[str, Any]]
    total: int


async def read(
    request: web.Request, handler: Handler, query: Mapping[str, str] | None = None
) -> Any:
    """What `handler` answers `request` (with `query` instead of the page's own, when
    given), decoded from its JSON. Raises what the handler raises."""
    response = await handler(_with_query(request, query))
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        raise TypeError(f"{handler.__name__} did not answer a JSON body")
    return json.loads(response.body)


async def read_list(
    request: web.Request, handler: Handler, query: Mapping[str, str] | None = None
) -> Listing:
    """A list handler's page of items and its `Content-Range` total."""
    response = await handler(_with_query(request, query))
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        raise TypeError(f"{handler.__name__} did not answer a JSON body")
    return Listing(json.loads(response.body), int(response.headers["Content-Range"]))


def _with_query(request: web.Request, query: Mapping[str, str] | None) -> web.Request:
    if query is None:
        return request
    # A clone keeps the match info and the request's state (the caller, once known).
    return request.clone(rel_url=request.rel_url.with_query(dict(query)))
