"""The webhooks pages: the list, a form for a new one, one webhook with its delivery
log (refreshed while deliveries arrive), and one delivery with its headers and body.

Every page reads `routes.webhooks`' and `routes.deliveries`' answers. The buttons (send
test, redeliver, rotate the secret, create) call the API from `static/console.js`; a
secret is on screen only in the answer of the create or the rotation that made it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kriten_api.routes import deliveries, tasks, webhooks
from kriten_api.ui import abilities
from kriten_api.ui.pages import Viewer, page
from kriten_api.ui.paths import UI_BASE
from kriten_api.ui.rendering import render
from kriten_api.ui.through_api import FIRST_PAGE, LIST_SHOWN, read, read_list
from kriten_common.webhook_schemes import CONFIGURED_SCHEMES

DELIVERIES_SHOWN = 50
POLL_SECONDS = 3


@page("webhooks")
async def webhooks_page(request: web.Request, viewer: Viewer) -> web.Response:
    everyone = request.query.get("all") == "1" and abilities.may_read_all_webhooks(viewer.principal)
    handler = webhooks.list_all_webhooks if everyone else webhooks.list_own_webhooks
    listing = await read_list(request, handler, FIRST_PAGE)
    context = {
        **viewer.context,
        "webhooks": listing.items,
        "total": listing.total,
        "shown": LIST_SHOWN,
        "everyone": everyone,
        "may_read_all": abilities.may_read_all_webhooks(viewer.principal),
    }
    return render("webhooks.html", context)


@page("webhooks")
async def new_webhook_page(request: web.Request, viewer: Viewer) -> web.Response:
    # The tasks the caller can see, as suggestions: running one is what the API checks.
    visible = await read_list(request, tasks.list_tasks, FIRST_PAGE)
    context = {
        **viewer.context,
        "tasks": [task["name"] for task in visible.items],
        "schemes": list(CONFIGURED_SCHEMES),
    }
    return render("webhook_new.html", context)


async def _deliveries_context(request: web.Request, viewer: Viewer) -> dict[str, Any]:
    hook = await read(request, webhooks.get_webhook)
    outcome = request.query.get("outcome", "")
    query = {"limit": str(DELIVERIES_SHOWN), **({"outcome": outcome} if outcome else {})}
    listing = await read_list(request, deliveries.list_deliveries, query)
    return {
        **viewer.context,
        "hook": hook,
        "deliveries": listing.items,
        "total": listing.total,
        "outcome": outcome,
        "outcomes": deliveries.OUTCOMES,
        "may_send": abilities.may_send_to(viewer.principal, hook),
        "may_rotate": abilities.may_rotate(viewer.principal, hook),
        "poll_seconds": POLL_SECONDS,
    }


@page("webhooks")
async def webhook_page(request: web.Request, viewer: Viewer) -> web.Response:
    return render("webhook.html", await _deliveries_context(request, viewer))


@page("webhooks")
async def delivery_rows(request: web.Request, viewer: Viewer) -> web.Response:
    return render("_deliveries.html", await _deliveries_context(request, viewer))


@page("webhooks")
async def delivery_page(request: web.Request, viewer: Viewer) -> web.Response:
    hook = await read(request, webhooks.get_webhook)
    delivery = await read(request, deliveries.get_delivery)
    context = {
        **viewer.context,
        "hook": hook,
        "delivery": delivery,
        "may_redeliver": abilities.may_send_to(viewer.principal, hook)
        and delivery["body"] is not None,
    }
    return render("delivery.html", context)


def add_routes(app: web.Application) -> None:
    hook = f"{UI_BASE}/webhooks/{{id}}"
    app.router.add_get(f"{UI_BASE}/webhooks", webhooks_page)
    app.router.add_get(f"{UI_BASE}/webhooks/new", new_webhook_page)
    app.router.add_get(hook, webhook_page)
    app.router.add_get(f"{hook}/deliveries", delivery_rows)
    app.router.add_get(f"{hook}/deliveries/{{delivery_id}}", delivery_page)
