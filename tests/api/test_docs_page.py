"""The docs page runs Swagger UI from the api's own assets: nothing from a CDN, so it
works offline and runs only the locked version of Swagger UI."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest

from tests.api.conftest import ApiClient

pytestmark = pytest.mark.integration

DOCS = "/api/v1/docs"
REFERENCE = re.compile(r"""<(script|link)\b[^>]*?\b(src|href)=["']([^"']+)["']""", re.IGNORECASE)
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


async def test_the_page_references_only_local_assets_and_each_is_served(api: ApiClient) -> None:
    response = await api.get(DOCS)
    assert response.status == 200
    page = await response.text()
    references = [url for _tag, _attr, url in REFERENCE.findall(page)]
    assert references
    assert not [url for url in references if re.match(r"(?i)(https?:)?//", url)]
    scripts = [url for tag, _attr, url in REFERENCE.findall(page) if tag.lower() == "script"]
    assert any("swagger-ui-bundle.js" in url for url in scripts)
    assert any("swagger-ui.css" in url for url in references)
    for url in references:
        path = urlsplit(urljoin(DOCS, url)).path
        assert path.startswith(f"{DOCS}/"), path
        asset = await api.get(urljoin(DOCS, url))
        assert asset.status == 200, path
        suffix = path[path.rindex(".") :]
        assert asset.content_type == CONTENT_TYPES[suffix], path
        assert "max-age" in asset.headers.get("Cache-Control", ""), path
        assert len(await asset.read()) > 0


async def test_the_page_runs_no_inline_script(api: ApiClient) -> None:
    page = await (await api.get(DOCS)).text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page, re.IGNORECASE)


async def test_only_the_pages_assets_are_served(api: ApiClient) -> None:
    for name in (
        "index.html",
        "swagger-ui-bundle.js.map",
        "../openapi.json%00",
        "oauth2-redirect.html",
    ):
        assert (await api.get(f"{DOCS}/{name}")).status in (400, 404), name
