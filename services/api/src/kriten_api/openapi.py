"""The route registry and the OpenAPI 3.1 document generated from it.

Every api route is added through `route`, which both adds it to the aiohttp router and
records what it takes and answers, naming the same Pydantic models (`schemas`) the
handler builds its answer with. `openapi_document` turns those records into the document
served at `GET /api/v1/openapi.json`, so a route cannot be served undocumented, or
documented unserved, and an answer cannot change shape without the document changing.
Pydantic's JSON Schema (2020-12) is OpenAPI 3.1's own dialect, so it is used as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import swagger_ui_bundle  # type: ignore[import-untyped]  # (ships no py.typed)
from aiohttp import web
from pydantic import BaseModel

from kriten_api import audit_events
from kriten_api.keys import OPERATIONS
from kriten_api.schemas import ErrorOut

REF = "#/components/schemas/{model}"
TITLE = "Kriten API"
VERSION = "1"
PATH_PARAMETER = re.compile(r"\{([^}:]+)\}")
# What each error status means on any route; handlers name only the ones they can give.
ERROR_MEANINGS = {
    400: "Invalid input; the message names the field",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found (or not visible to the caller)",
    409: "Conflict: a duplicate, a resource still in use, or a state that forbids it",
    413: "Request body too large",
    415: "Unsupported content type",
    429: "Too many attempts; see Retry-After",
    503: "A dependency (database, broker, directory) is unavailable; see Retry-After",
}


@dataclass(frozen=True)
class Raw:
    """A body no model describes: any JSON, text, or any bytes at all."""

    media_type: str
    schema: dict[str, Any]
    description: str = ""


Body = type[BaseModel] | Raw
TEXT = Raw("text/plain", {"type": "string"}, "The job's output so far")
ANY_CONTENT = Raw("*/*", {}, "The task's input, as sent; checked against the task's schema")


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str = ""


LIST_QUERY = (
    Query("limit", {"type": "integer", "minimum": 0}, "At most this many items"),
    Query("offset", {"type": "integer", "minimum": 0}, "Skip this many items first"),
)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    request: Body | None = None
    request_required: bool = True
    response: Body | None = None
    status: int = 200
    also: tuple[int, ...] = ()
    listing: bool = False
    query: tuple[Query, ...] = ()
    errors: frozenset[int] = frozenset()
    public: bool = False
    served_by: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def route(
    app: web.Application,
    method: str,
    path: str,
    handler: Any,
    *,
    summary: str,
    request: Body | None = None,
    request_required: bool = True,
    response: Body | None = None,
    status: int = 200,
    also: Iterable[int] = (),
    listing: bool = False,
    query: Iterable[Query] = (),
    errors: Iterable[int] = (),
    public: bool = False,
    description: str = "",
) -> None:
    """Adds the route and records it for the document. `also`: other statuses whose
    answer is `response` too (a relayed answer, whatever its status)."""
    app.router.add_route(method, path, handler)
    audit_events.register(app, method, path)
    record(
        app,
        Operation(
            method=method,
            path=path,
            summary=summary,
            request=request,
            request_required=request_required,
            response=response,
            status=status,
            also=tuple(also),
            listing=listing,
            query=tuple(query),
            errors=frozenset(errors),
            public=public,
            description=description,
        ),
    )


def record(app: web.Application, operation: Operation) -> None:
    """Records an operation; alone, for one another service serves (`served_by`)."""
    if OPERATIONS not in app:
        app[OPERATIONS] = []
    app[OPERATIONS].append(operation)


def path_parameters(path: str) -> list[str]:
    return PATH_PARAMETER.findall(path)


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> Any:
        schema = model.model_json_schema(ref_template=REF, mode=mode, by_alias=True)
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}

    def content(
        self, body: Body, mode: Literal["validation", "serialization"], *, array: bool = False
    ) -> dict[str, Any]:
        if isinstance(body, Raw):
            return {body.media_type: {"schema": body.schema}}
        schema = self.ref(body, mode)
        if array:
            schema = {"type": "array", "items": schema}
        return {"application/json": {"schema": schema}}


def _operation_id(operation: Operation) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", operation.path.removeprefix("/api/v1/")).strip("_")
    return f"{operation.method.lower()}_{words}"


def _tag(path: str) -> str:
    return path.removeprefix("/api/v1/").split("/")[0]


def _error_statuses(operation: Operation) -> set[int]:
    statuses = set(operation.errors)
    if not operation.public:
        statuses |= {401, 403}
    if operation.request is not None:
        statuses |= {400, 413, 415}
    if path_parameters(operation.path):
        # 400 too: a control character in the URL is refused before any handler runs.
        statuses |= {400, 404}
    if operation.query or operation.listing:
        statuses.add(400)
    return statuses


def _operation(operation: Operation, components: _Components) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "operationId": _operation_id(operation),
        "summary": operation.summary,
        "tags": [_tag(operation.path)],
    }
    if operation.description:
        answer["description"] = operation.description
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_parameters(operation.path)
    ]
    queries = (*LIST_QUERY, *operation.query) if operation.listing else operation.query
    parameters += [
        {"name": q.name, "in": "query", "required": False, "schema": q.schema}
        | ({"description": q.description} if q.description else {})
        for q in queries
    ]
    if parameters:
        answer["parameters"] = parameters
    if operation.request is not None:
        body: dict[str, Any] = {
            "required": operation.request_required,
            "content": components.content(operation.request, "validation"),
        }
        if isinstance(operation.request, Raw) and operation.request.description:
            body["description"] = operation.request.description
        answer["requestBody"] = body
    success: dict[str, Any] = {"description": "OK"}
    if isinstance(operation.response, Raw) and operation.response.description:
        success["description"] = operation.response.description
    if operation.response is not None:
        success["content"] = components.content(
            operation.response, "serialization", array=operation.listing
        )
    if operation.listing:
        success["headers"] = {
            "Content-Range": {
                "description": "The total number of items, before limit and offset",
                "schema": {"type": "string"},
            }
        }
    responses: dict[str, Any] = {str(operation.status): success}
    for status in operation.also:
        responses[str(status)] = success
    error = {"application/json": {"schema": components.ref(ErrorOut, "serialization")}}
    for status in sorted(_error_statuses(operation)):
        responses[str(status)] = {"description": ERROR_MEANINGS[status], "content": error}
    answer["responses"] = responses
    if operation.public:
        answer["security"] = []
    if operation.served_by:
        answer["x-kriten-served-by"] = operation.served_by
    answer.update(operation.extra)
    return answer


def openapi_document(app: web.Application) -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for operation in app.get(OPERATIONS, []):
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, components
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": (
                "Kriten's REST API. Authenticate with `POST /api/v1/login` (a JWT, in the"
                " body and the `token` cookie), or an API token in the `Token` header."
                " Lists answer with a `Content-Range` header holding the total."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {
                "cookie": {"type": "apiKey", "in": "cookie", "name": "token"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiToken": {"type": "apiKey", "in": "header", "name": "Token"},
            },
        },
        "security": [{"cookie": []}, {"bearer": []}, {"apiToken": []}],
    }


# Swagger UI from the swagger-ui-bundle-v2 wheel, served by the api itself: the page
# works offline and behind egress filters, and runs only code of the version locked in
# uv.lock, rather than whatever a CDN serves today.
SWAGGER_UI_DIR = Path(str(swagger_ui_bundle.swagger_ui_path))
SWAGGER_UI_VERSION = SWAGGER_UI_DIR.name.removeprefix("swagger-ui-")
# The files the page uses, and their content types; nothing else of the package is served.
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
# The version is in each asset's URL (`?v=`), so a day's caching is safe across upgrades.
ASSET_CACHE_CONTROL = "public, max-age=86400"

DOCS_HTML = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Kriten API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css?v={SWAGGER_UI_VERSION}">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png?v={SWAGGER_UI_VERSION}"
    sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png?v={SWAGGER_UI_VERSION}"
    sizes="16x16">
</head>
<body>
  <div id="ui"><p>Loading Swagger UI; the document itself is at
    <a href="openapi.json">openapi.json</a>.</p></div>
  <script src="docs/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}"></script>
  <script src="docs/swagger-initializer.js?v={SWAGGER_UI_VERSION}"></script>
</body>
</html>
"""
# In a file of its own rather than inline, so the page runs no inline script.
DOCS_INITIALIZER = """window.ui = SwaggerUIBundle({
  url: "openapi.json", dom_id: "#ui", withCredentials: true
});
"""


def add_routes(app: web.Application, base: str) -> None:
    """The document and its UI; added last, once every other route is recorded."""
    document: dict[str, Any] = {}

    async def serve_document(_request: web.Request) -> web.Response:
        # Built on first use: by then every module has recorded its routes.
        if not document:
            document.update(openapi_document(app))
        return web.json_response(document)

    async def serve_docs(_request: web.Request) -> web.Response:
        return web.Response(text=DOCS_HTML, content_type="text/html")

    async def serve_initializer(_request: web.Request) -> web.Response:
        return web.Response(
            text=DOCS_INITIALIZER,
            content_type="text/javascript",
            headers={"Cache-Control": ASSET_CACHE_CONTROL},
        )

    app.router.add_get(f"{base}/openapi.json", serve_document)
    app.router.add_get(f"{base}/docs", serve_docs)
    app.router.add_get(f"{base}/docs/swagger-initializer.js", serve_initializer)
    for name, content_type in DOCS_ASSETS.items():
        app.router.add_get(f"{base}/docs/{name}", _asset(SWAGGER_UI_DIR / name, content_type))


def _asset(path: Path, content_type: str) -> Any:
    async def serve(_request: web.Request) -> web.FileResponse:
        # FileResponse adds ETag and Last-Modified, and answers conditional requests.
        return web.FileResponse(
            path,
            headers={"Content-Type": content_type, "Cache-Control": ASSET_CACHE_CONTROL},
        )

    return serve
