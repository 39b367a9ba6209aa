"""Every request kritenctl can make is one the api documents: each (method, path template)
of `kritenctl.paths`, and each query parameter it sends, is in the OpenAPI document the
api serves. Commands cannot go around that table."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import kritenctl
from kritenctl import paths
from kritenctl.client import Client
from tests.system.harness import ServiceProcess

PACKAGE = Path(kritenctl.__file__).parent


def _declared() -> set[paths.Route]:
    """Every route `paths` defines, alone or in a collection."""
    found: set[paths.Route] = set()
    for value in vars(paths).values():
        if isinstance(value, paths.Route):
            found.add(value)
        elif isinstance(value, paths.Collection):
            found.update(value.routes())
    return found


def test_the_table_holds_every_route_defined() -> None:
    assert _declared() == set(paths.ROUTES)


def test_no_command_spells_a_path_of_its_own() -> None:
    for module in PACKAGE.glob("*.py"):
        if module.name == "paths.py":
            continue
        source = module.read_text()
        assert "Route(" not in source, module.name
        assert not re.search(r"[\"']/api/", source), module.name


def test_a_query_parameter_the_table_does_not_name_is_refused() -> None:
    with Client("http://127.0.0.1:1") as client, pytest.raises(ValueError, match="no query"):
        client.call(paths.JOBS_LIST, query={"tsak": "typo"})


@pytest.mark.integration
@pytest.mark.system
def test_every_route_is_in_the_served_openapi_document(kriten: ServiceProcess) -> None:
    document = httpx.get(f"{kriten.url}/api/v1/openapi.json", timeout=10).json()
    missing = []
    for route in paths.ROUTES:
        operation = document["paths"].get(route.template, {}).get(route.method.lower())
        if operation is None:
            missing.append(f"{route.method} {route.template}")
            continue
        served = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        missing.extend(
            f"{route.method} {route.template}?{name}" for name in set(route.query) - served
        )
        # The path parameters are named as the document names them.
        names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert names == set(re.findall(r"\{(\w+)\}", route.template)), route
    assert not missing, f"not in the api's OpenAPI document: {missing}"
