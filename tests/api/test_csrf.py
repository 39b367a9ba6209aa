"""Cross-site request forgery: a change authenticated by the login cookie alone is
refused when a browser says it came from another origin, or is not JSON."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from kriten_api.settings import ApiSettings
from kriten_common.client_address import parse_networks
from tests.api.conftest import ApiClient, BuildApi, login

pytestmark = pytest.mark.integration

USERS = "/api/v1/users"
EVIL = "https://evil.example"


def _user_body() -> str:
    name = f"u{uuid.uuid4().hex[:8]}"
    return json.dumps({"username": name, "password": "pw-123456", "provider": "local"})


async def _cookie(api: ApiClient) -> dict[str, str]:
    """The login cookie as a header, and the test client's jar emptied, so that each
    request carries exactly the credentials the test gives it."""
    token = (await login(api))["Authorization"].removeprefix("Bearer ")
    api.session.cookie_jar.clear()
    return {"Cookie": f"token={token}"}


def _own_origin(api: ApiClient) -> str:
    return f"http://{api.host}:{api.port}"


async def _post(api: ApiClient, headers: dict[str, str], content_type: str) -> Any:
    return await api.post(
        USERS, data=_user_body(), headers={**headers, "Content-Type": content_type}
    )


async def test_a_cross_site_text_plain_form_with_the_cookie_is_refused(api: ApiClient) -> None:
    cookie = await _cookie(api)
    response = await _post(api, {**cookie, "Origin": EVIL}, "text/plain")
    assert response.status == 403
    assert await response.json() == {"error": "cross-site request refused"}
    users = await api.get(USERS, headers=cookie)
    assert len(await users.json()) == 1  # root only


async def test_a_cross_site_json_request_with_the_cookie_is_refused(api: ApiClient) -> None:
    cookie = await _cookie(api)
    response = await _post(api, {**cookie, "Origin": EVIL}, "application/json")
    assert response.status == 403


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_sec_fetch_site_other_than_same_origin_is_refused(api: ApiClient, site: str) -> None:
    cookie = await _cookie(api)
    response = await _post(api, {**cookie, "Sec-Fetch-Site": site}, "application/json")
    assert response.status == 403


async def test_origin_null_is_refused(api: ApiClient) -> None:
    cookie = await _cookie(api)
    response = await _post(api, {**cookie, "Origin": "null"}, "application/json")
    assert response.status == 403


async def test_deletes_are_guarded_too(api: ApiClient) -> None:
    bearer = await login(api)
    created = await _post(api, bearer, "application/json")
    user_id = (await created.json())["id"]
    cookie = await _cookie(api)
    response = await api.delete(f"{USERS}/{user_id}", headers={**cookie, "Origin": EVIL})
    assert response.status == 403
    assert (await api.get(f"{USERS}/{user_id}", headers=bearer)).status == 200


async def test_a_same_origin_browser_request_must_be_json(api: ApiClient) -> None:
    cookie = await _cookie(api)
    browser = {
        **cookie,
        "Origin": _own_origin(api),
        "Sec-Fetch-Site": "same-origin",
    }
    refused = await _post(api, browser, "text/plain")
    assert refused.status == 415
    accepted = await _post(api, browser, "application/json")
    assert accepted.status == 200, await accepted.text()


async def test_a_cookie_request_without_browser_markers_still_works(api: ApiClient) -> None:
    # `curl -b token.txt -d '{...}'`: no Origin, no Sec-Fetch-Site, a form content type.
    cookie = await _cookie(api)
    response = await _post(api, cookie, "application/x-www-form-urlencoded")
    assert response.status == 200, await response.text()


async def test_bearer_and_api_token_clients_are_unaffected(api: ApiClient) -> None:
    bearer = await login(api)
    response = await _post(api, {**bearer, "Origin": EVIL}, "text/plain")
    assert response.status == 200, await response.text()
    created = await api.post("/api/v1/apitokens", json={}, headers=bearer)
    key = (await created.json())["key"]
    api.session.cookie_jar.clear()
    response = await _post(api, {"Token": key, "Origin": EVIL}, "text/plain")
    assert response.status == 200, await response.text()


async def test_a_login_from_another_site_is_refused(api: ApiClient) -> None:
    # Login CSRF: another site logging the visitor's browser in to its own account.
    body = json.dumps({"username": "root", "password": "root"})
    for markers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
        response = await api.post(
            "/api/v1/login", data=body, headers={**markers, "Content-Type": "text/plain"}
        )
        assert response.status == 403, markers
        assert "Set-Cookie" not in response.headers
    # The console's own login (same origin, JSON) and clients that are not browsers.
    same_origin = {"Origin": _own_origin(api), "Sec-Fetch-Site": "same-origin"}
    for headers in (same_origin, {}):
        response = await api.post(
            "/api/v1/login", data=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status == 200, headers


@pytest.fixture
def public_settings(api_settings: ApiSettings) -> ApiSettings:
    return api_settings.model_copy(update={"public_url": "https://kriten.example.org/"})


async def test_the_public_url_is_an_own_origin(
    public_settings: ApiSettings, build_api: BuildApi
) -> None:
    api = await build_api(public_settings)
    cookie = await _cookie(api)
    ok = await _post(api, {**cookie, "Origin": "https://kriten.example.org"}, "application/json")
    assert ok.status == 200, await ok.text()
    # Forwarded headers from a peer that is not a trusted proxy are not believed.
    forged = {**cookie, "Origin": EVIL, "X-Forwarded-Host": "evil.example"}
    refused = await _post(api, {**forged, "X-Forwarded-Proto": "https"}, "application/json")
    assert refused.status == 403


async def test_forwarded_headers_from_a_trusted_proxy_are_believed(
    api_settings: ApiSettings, build_api: BuildApi
) -> None:
    settings = api_settings.model_copy(
        update={"trusted_proxies": parse_networks(["127.0.0.1/32", "::1/128"])}
    )
    api = await build_api(settings)
    cookie = await _cookie(api)
    proxied = {
        **cookie,
        "Origin": "https://kriten.internal",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "kriten.internal",
    }
    response = await _post(api, proxied, "application/json")
    assert response.status == 200, await response.text()
