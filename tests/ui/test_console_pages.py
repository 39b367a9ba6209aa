"""The console's pages, in-process: who may see what (exactly what the API shows), the
login redirect, that the console itself changes nothing (changes go to the API and its
cross-site checks), and that job output and delivery bodies are text, never markup."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yarl
from sqlmodel import select

from kriten_api.keys import SESSIONS
from kriten_common.db.models import Job, User, WebhookDelivery
from tests.api.conftest import ApiClient, create, login

pytestmark = pytest.mark.integration

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


async def _cookie(api: ApiClient, username: str = "root", password: str = "root") -> dict[str, str]:
    token = (await login(api, username, password))["Authorization"].removeprefix("Bearer ")
    api.session.cookie_jar.clear()
    return {"Cookie": f"token={token}"}


async def _page(api: ApiClient, path: str, cookie: dict[str, str], status: int = 200) -> str:
    response = await api.get(path, headers=cookie, allow_redirects=False)
    text = await response.text()
    assert response.status == status, text
    return text


async def _user_id(api: ApiClient, username: str) -> str:
    async with api.app[SESSIONS]() as session:
        return (await session.exec(select(User.id).where(User.username == username))).one()


async def _set_up(api: ApiClient) -> dict[str, Any]:
    """Root's runner, task and webhook; a user with no role (bob), one who may read every
    webhook and job but change nothing (rita); one job of root's with hostile output, and
    one delivery with a hostile body: what the collector would have written."""
    root = await login(api)
    await create(
        api, root, "runners", name="python", image="python:3.11", gitURL="https://git.example/r.git"
    )
    await create(
        api, root, "tasks", name="hello-kriten", runner="python", command="python hello.py"
    )
    hook = await create(api, root, "webhooks", task="hello-kriten", description="NetBox hook")
    for username in ("bob", "rita"):
        await create(api, root, "users", username=username, password="pw-123456", provider="local")
    for resource in ("webhooks", "jobs", "tasks"):
        await create(
            api,
            root,
            "roles",
            name=f"read-{resource}",
            resource=resource,
            resource_ids=["*"],
            access="read",
        )
        await create(
            api,
            root,
            "role_bindings",
            name=f"rita-{resource}",
            role_name=f"read-{resource}",
            subject_kind="users",
            subject_name="rita",
        )
    job_id = "hello-kriten-abc12"
    async with api.app[SESSIONS]() as session:
        session.add(
            Job(
                id=job_id,
                task="hello-kriten",
                owner="root",
                owner_id=await _user_id(api, "root"),
                status="succeeded",
                source="webhook",
                webhook_id=hook["id"],
                delivery_id="d-1",
                input='{"name": "' + HOSTILE.replace('"', '\\"') + '"}',
                stdout=f"Hello\n{HOSTILE}\n",
                json_data={"html": HOSTILE},
                exit_code=0,
                start_time=datetime.now(UTC),
                completion_time=datetime.now(UTC),
            )
        )
        session.add(
            WebhookDelivery(
                id="d-1",
                webhook_id=hook["id"],
                received_at=datetime.now(UTC),
                scheme="netbox",
                outcome="accepted",
                reason=None,
                job_id=job_id,
                size=10,
                body=HOSTILE,
                headers={"x-hook-signature": HOSTILE},
            )
        )
        await session.commit()
    return {"hook": hook["id"], "job": job_id}


# --- signing in ---


async def test_a_page_without_a_session_leads_to_the_login_page(api: ApiClient) -> None:
    response = await api.get("/ui/jobs?status=failed", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Dfailed"
    login_page = await _page(api, response.headers["Location"], {})
    assert 'data-next="/ui/jobs?status=failed"' in login_page


async def test_a_background_refresh_without_a_session_sends_the_page_to_the_login(
    api: ApiClient,
) -> None:
    headers = {"HX-Request": "true", "HX-Current-URL": "http://h/ui/jobs?task=x"}
    response = await api.get("/ui/jobs/rows", headers=headers, allow_redirects=False)
    assert response.headers["HX-Redirect"] == "/ui/login?next=%2Fui%2Fjobs%3Ftask%3Dx"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/", "/api/v1/users"])
async def test_the_login_page_returns_only_to_the_console(api: ApiClient, target: str) -> None:
    page = await _page(api, f"/ui/login?next={target}", {})
    assert 'data-next="/ui/jobs"' in page


async def test_the_console_is_reached_at_ui_with_or_without_the_slash(api: ApiClient) -> None:
    cookie = await _cookie(api)
    for path in ("/ui", "/ui/"):
        response = await api.get(path, headers=cookie)
        assert response.status == 200
        assert response.url.path == "/ui/jobs"


async def test_the_login_page_offers_active_directory_only_when_configured(api: ApiClient) -> None:
    page = await _page(api, "/ui/login", {})
    assert 'name="provider" value="local"' in page
    assert "active_directory" not in page


# --- the console changes nothing itself ---


async def test_the_console_has_no_route_that_changes_anything(api: ApiClient) -> None:
    """Every change is a request to the API (console.js), with the API's cross-site
    checks; so the console has no state-changing route to protect separately."""
    ui_routes = [
        r
        for r in api.app.router.routes()
        if (r.resource and r.resource.canonical.startswith("/ui"))
    ]
    assert ui_routes
    assert {route.method for route in ui_routes} <= {"GET", "HEAD"}
    cookie = await _cookie(api)
    response = await api.post("/ui/jobs", headers={**cookie, "Origin": "https://evil.example"})
    assert response.status == 405


async def test_a_cross_site_request_to_what_a_console_button_calls_is_refused(
    api: ApiClient,
) -> None:
    keys = await _set_up(api)
    cookie = await _cookie(api)
    redeliver = f"/api/v1/webhooks/{keys['hook']}/deliveries/d-1/redeliver"
    for headers, status in (
        ({"Origin": "https://evil.example", "Content-Type": "application/json"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        # A same-origin browser form (not JSON) is refused too: only console.js's JSON.
        (
            {"Sec-Fetch-Site": "same-origin", "Content-Type": "application/x-www-form-urlencoded"},
            415,
        ),
    ):
        response = await api.post(redeliver, data="body=1", headers={**cookie, **headers})
        assert response.status == status, await response.text()


async def test_pages_carry_a_strict_content_security_policy(api: ApiClient) -> None:
    cookie = await _cookie(api)
    for path in ("/ui/login", "/ui/jobs", "/ui/static/console.js", "/ui/static/htmx.min.js"):
        response = await api.get(path, headers=cookie)
        assert response.status == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        # Pages show one user's data: never cached; assets are, by their versioned URL.
        cached = response.headers["Cache-Control"]
        assert cached == ("no-store" if "/static/" not in path else "public, max-age=86400")
    page = await (await api.get("/ui/jobs", headers=cookie)).text()
    # No inline script, no inline style, no asset from anywhere else.
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert " style=" not in page
    assert re.findall(r'(?:src|href)="https?://', page) == []


async def test_assets_are_served_from_the_package(api: ApiClient) -> None:
    page = await _page(api, "/ui/login", {})
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page)
    assert len(assets) >= 3
    for asset in assets:
        response = await api.get(asset)
        assert response.status == 200, asset
        assert len(await response.read()) > 100
    # Sent as written: a client would normalise a plain `..` away before sending it.
    for escape in ("%2E%2E/rendering.py", "..%2Frendering.py", "%2e%2e%2fui%2frendering.py"):
        raw = yarl.URL(f"/ui/static/{escape}", encoded=True)
        response = await api.get(raw)
        assert response.status == 404, escape
        assert "jinja2" not in await response.text()


# --- what each user sees ---


async def test_job_output_input_and_json_data_are_text_not_markup(api: ApiClient) -> None:
    keys = await _set_up(api)
    page = await _page(api, f"/ui/jobs/{keys['job']}", await _cookie(api))
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert page.count("&lt;script&gt;alert(") >= 3  # the input, the output, json_data


async def test_a_delivery_body_and_headers_are_text_not_markup(api: ApiClient) -> None:
    keys = await _set_up(api)
    page = await _page(api, f"/ui/webhooks/{keys['hook']}/deliveries/d-1", await _cookie(api))
    assert "<script>alert" not in page
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") == 2  # header and body


async def test_a_job_another_user_may_not_see_is_not_found(api: ApiClient) -> None:
    keys = await _set_up(api)
    bob = await _cookie(api, "bob", "pw-123456")
    page = await _page(api, f"/ui/jobs/{keys['job']}", bob, status=404)
    assert "Not found" in page
    assert "Hello" not in page
    # As the API: refused there too, and absent from the lists.
    assert (await api.get(f"/api/v1/jobs/{keys['job']}", headers=bob)).status == 403
    assert keys["job"] not in await _page(api, "/ui/jobs", bob)
    assert keys["job"] not in await _page(api, "/ui/tasks/hello-kriten", bob, status=404)
    for path in (f"/ui/webhooks/{keys['hook']}", f"/ui/webhooks/{keys['hook']}/deliveries/d-1"):
        assert "NetBox hook" not in await _page(api, path, bob, status=404)
    assert "NetBox hook" not in await _page(api, "/ui/webhooks", bob)


async def test_an_unknown_job_is_not_found(api: ApiClient) -> None:
    await _page(api, "/ui/jobs/nope-123", await _cookie(api), status=404)


async def test_lists_show_what_the_api_lists(api: ApiClient) -> None:
    keys = await _set_up(api)
    for user, password in (("root", "root"), ("bob", "pw-123456"), ("rita", "pw-123456")):
        cookie = await _cookie(api, user, password)
        listed = await (await api.get("/api/v1/jobs", headers=cookie)).json()
        page = await _page(api, "/ui/jobs", cookie)
        shown = set(re.findall(r'data-job="([^"]+)"', page))
        assert shown == {job["id"] for job in listed}, user
    assert keys["job"] in shown  # rita reads every job


async def test_buttons_are_shown_exactly_when_the_api_accepts_them(api: ApiClient) -> None:
    keys = await _set_up(api)
    hook, delivery = f"/ui/webhooks/{keys['hook']}", f"/ui/webhooks/{keys['hook']}/deliveries/d-1"
    root = await _cookie(api)
    assert 'data-action="send-test"' in await _page(api, hook, root)
    assert 'data-action="rotate"' in await _page(api, hook, root)
    assert 'data-action="redeliver"' in await _page(api, delivery, root)
    assert 'data-action="rerun"' in await _page(api, f"/ui/jobs/{keys['job']}", root)
    # Rita reads it all, and changes nothing: no button, and the API refuses each call.
    rita = await _cookie(api, "rita", "pw-123456")
    hook_page = await _page(api, hook, rita)
    assert "NetBox hook" in hook_page
    assert 'data-action="send-test"' not in hook_page
    assert 'data-action="rotate"' not in hook_page
    delivery_page = await _page(api, delivery, rita)
    assert "&lt;img src=x" in delivery_page
    assert 'data-action="redeliver"' not in delivery_page
    job_page = await _page(api, f"/ui/jobs/{keys['job']}", rita)
    assert 'data-action="rerun"' not in job_page
    api_base = f"/api/v1/webhooks/{keys['hook']}"
    for path in (
        f"{api_base}/test",
        f"{api_base}/rotate",
        f"{api_base}/deliveries/d-1/redeliver",
        "/api/v1/jobs/hello-kriten",
    ):
        assert (await api.post(path, headers=rita)).status == 403, path


async def test_cancel_is_offered_on_a_running_job_to_its_owner(api: ApiClient) -> None:
    await _set_up(api)
    async with api.app[SESSIONS]() as session:
        session.add(
            Job(
                id="hello-kriten-run01",
                task="hello-kriten",
                owner="root",
                owner_id=await _user_id(api, "root"),
                status="running",
            )
        )
        await session.commit()
    root = await _cookie(api)
    page = await _page(api, "/ui/jobs/hello-kriten-run01", root)
    assert 'data-action="cancel"' in page
    assert 'data-follow="/api/v1/jobs/hello-kriten-run01/log?follow=true"' in page
    assert 'hx-trigger="every' in page  # the status is refreshed until final
    finished = await _page(api, "/ui/jobs/hello-kriten-abc12", root)
    assert 'data-action="cancel"' not in finished
    assert "data-follow" not in finished
    assert 'id="job-summary" data-status' in finished  # no polling once final


# --- the jobs list ---


async def test_the_jobs_list_filters_as_the_api_does(api: ApiClient) -> None:
    await _set_up(api)
    root = await _cookie(api)
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    for query, shown in (
        ("source=webhook", True),
        ("source=cron", False),
        ("status=succeeded&task=hello-kriten", True),
        (f"since={past}", True),
        (f"since={future}", False),
        (f"until={past}", False),
        ("owner=bob", False),
    ):
        page = await _page(api, f"/ui/jobs?{query}", root)
        assert ('data-job="hello-kriten-abc12"' in page) is shown, query


async def test_a_bad_filter_is_explained(api: ApiClient) -> None:
    page = await _page(api, "/ui/jobs?status=nope", await _cookie(api), status=400)
    assert "status must be one of" in page
