"""The OpenAPI document: valid OpenAPI 3.1, and in step with the routes actually served."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate as validate_openapi
from pydantic import SecretStr

from kriten_api.app import create_app
from kriten_api.schemas import validate
from kriten_api.schemas.runners import RunnerUpdate
from kriten_api.schemas.tasks import TaskUpdate
from kriten_api.settings import ApiSettings
from kriten_common import errors
from tests.api.conftest import ApiClient, login

pytestmark = pytest.mark.integration

# Served by every service, or the document itself: not part of the documented API.
UNDOCUMENTED = {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/docs"}
METHODS = ("get", "put", "post", "delete", "patch")


def _app() -> web.Application:
    # Building the app opens nothing; its connections are made when it starts.
    settings = ApiSettings(
        database_url=SecretStr("sqlite+aiosqlite:///unused.db"),
        amqp_url=SecretStr("amqp://unused/"),
    )
    return create_app(settings)


def _served(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for resource_route in app.router.routes():
        path = resource_route.resource.canonical if resource_route.resource else ""
        if resource_route.method in ("HEAD", "*") or path in UNDOCUMENTED:
            continue
        if path.startswith("/api/v1/docs/"):  # the docs page's Swagger UI assets
            continue
        if path.startswith("/ui/"):  # the web console's pages, no API (tests/ui)
            continue
        routes.add((resource_route.method, path))
    return routes


def _documented(document: dict[str, Any], *, served_here: bool) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS and ("x-kriten-served-by" not in operation) == served_here
    }


async def test_the_served_document_is_valid_openapi_3_1(api: ApiClient) -> None:
    response = await api.get("/api/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)


async def test_every_route_is_documented_and_every_operation_is_served(api: ApiClient) -> None:
    document = await (await api.get("/api/v1/openapi.json")).json()
    served = _served(_app())
    documented = _documented(document, served_here=True)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


async def test_the_ingress_run_endpoint_is_documented_as_served_elsewhere(api: ApiClient) -> None:
    document = await (await api.get("/api/v1/openapi.json")).json()
    assert _documented(document, served_here=False) == {("POST", "/api/v1/webhooks/run/{id}")}
    operation = document["paths"]["/api/v1/webhooks/run/{id}"]["post"]
    assert operation["x-kriten-served-by"] == "ingress"
    assert operation["security"] == []


async def test_operations_name_the_models_kriten_field_names_included(api: ApiClient) -> None:
    document = await (await api.get("/api/v1/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert "gitURL" in schemas["RunnerPublic"]["properties"]
    assert "schema" in schemas["TaskPublic"]["properties"]
    runners = document["paths"]["/api/v1/runners"]["get"]
    ok = runners["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/RunnerPublic"
    }
    assert "Content-Range" in ok["headers"]
    assert {p["name"] for p in runners["parameters"]} == {"limit", "offset"}
    error = runners["responses"]["401"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorOut"}
    log = document["paths"]["/api/v1/jobs/{id}/log"]["get"]["responses"]["200"]
    assert "text/plain" in log["content"]
    assert document["paths"]["/api/v1/login"]["post"]["security"] == []
    schemes = document["components"]["securitySchemes"]
    assert schemes["cookie"] == {"type": "apiKey", "in": "cookie", "name": "token"}
    assert schemes["apiToken"] == {"type": "apiKey", "in": "header", "name": "Token"}


async def test_the_docs_page_loads_the_document(api: ApiClient) -> None:
    response = await api.get("/api/v1/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "openapi.json" in await response.text()


async def test_the_documents_need_no_credentials(api: ApiClient) -> None:
    for path in ("/api/v1/openapi.json", "/api/v1/docs"):
        assert (await api.get(path)).status == 200


# --- what Schemathesis found, kept as plain regressions ---


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/audit_logs", "/api/v1/tasks"])
async def test_huge_limits_and_offsets_are_no_server_error(api: ApiClient, path: str) -> None:
    headers = await login(api)
    huge = "18900305338763888654094487247793422336"
    response = await api.get(f"{path}?limit={huge}&offset={huge}", headers=headers)
    assert response.status == 200, await response.text()
    assert await response.json() == []


@pytest.mark.parametrize("value", ["²", "٣", "-1", "1.5"])
async def test_non_ascii_digits_are_refused_as_counts(api: ApiClient, value: str) -> None:
    headers = await login(api)
    response = await api.get("/api/v1/jobs", params={"limit": value}, headers=headers)
    assert response.status == 400
    assert await response.json() == {"error": "limit must be a non-negative integer"}


def test_model_validation_errors_name_the_field_in_the_handlers_words() -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        validate(TaskUpdate, {"timeout_seconds": "5"})
    assert refused.value.message == "timeout_seconds must be an integer"
    with pytest.raises(errors.InvalidInput) as refused:
        validate(RunnerUpdate, {"secret": {"key": 5}})
    assert refused.value.message == "secret.key: input should be a valid string"
    assert validate(RunnerUpdate, {"gitURL": "https://e.org/r.git", "other": 1}).git_url
