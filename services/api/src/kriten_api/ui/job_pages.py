"""The jobs pages: the list with its filters, refreshed while jobs run, and one job with
its output followed live.

Both read `routes.jobs`' answers (`GET /jobs`, `GET /jobs/{id}`). The parts that change
while a job runs are fragments that htmx polls (the list's rows, a job's status); a
running job's output is followed by `static/console.js` straight from the API's
`GET /jobs/{id}/log?follow=true`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlmodel import col, select

from kriten_api.keys import SESSIONS
from kriten_api.routes import jobs
from kriten_api.ui import abilities
from kriten_api.ui.pages import Viewer, page
from kriten_api.ui.paths import UI_BASE
from kriten_api.ui.rendering import render
from kriten_api.ui.through_api import read, read_list
from kriten_common.db.engine import read_session
from kriten_common.db.models import FINAL_JOB_STATUSES, Job

PAGE_SIZE = 25
FILTERS = ("task", "status", "source", "owner", "since", "until")
POLL_SECONDS = 3


def list_query(request: web.Request) -> dict[str, str]:
    """The filters of the page's URL that are set, as `GET /jobs` takes them, and the page."""
    query = {name: request.query[name] for name in FILTERS if request.query.get(name)}
    query["limit"] = str(PAGE_SIZE)
    query["offset"] = request.query.get("offset") or "0"
    return query


async def _list_context(request: web.Request, viewer: Viewer) -> dict[str, Any]:
    query = list_query(request)
    listing = await read_list(request, jobs.list_jobs, query)
    filters = {name: query.get(name, "") for name in FILTERS}
    offset = int(query["offset"])
    return {
        **viewer.context,
        "jobs": listing.items,
        "total": listing.total,
        "filters": filters,
        "statuses": jobs.JOB_STATUSES,
        "sources": jobs.JOB_SOURCES,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "previous": _page_query(filters, max(offset - PAGE_SIZE, 0)) if offset > 0 else None,
        "next": (
            _page_query(filters, offset + PAGE_SIZE) if offset + PAGE_SIZE < listing.total else None
        ),
        "this_page": _page_query(filters, offset),
        "poll_seconds": POLL_SECONDS,
    }


def _page_query(filters: dict[str, str], offset: int) -> dict[str, str]:
    return {**{k: v for k, v in filters.items() if v}, "offset": str(offset)}


@page("jobs")
async def jobs_page(request: web.Request, viewer: Viewer) -> web.Response:
    return render("jobs.html", await _list_context(request, viewer))


@page("jobs")
async def job_rows(request: web.Request, viewer: Viewer) -> web.Response:
    return render("_job_rows.html", await _list_context(request, viewer))


async def _job_context(request: web.Request, viewer: Viewer) -> dict[str, Any]:
    job = await read(request, jobs.get_job)
    # The owner's id (the answer names the owner, not the id) for the cancel button's
    # rule: that column alone, not the row again with its whole output, on every poll.
    async with read_session(request.app[SESSIONS]) as session:
        found = await session.exec(select(Job.owner_id).where(col(Job.id) == job["id"]))
        # Read a moment ago through the API, so only a purge in between could remove it.
        owner_id = found.first() or ""
    principal = viewer.principal
    return {
        **viewer.context,
        "job": job,
        "final": job["status"] in FINAL_JOB_STATUSES,
        "may_cancel": abilities.may_cancel(principal, owner_id=owner_id, job=job),
        "may_rerun": abilities.may_run(principal, job["task"]),
        "poll_seconds": 2,
    }


@page("jobs")
async def job_page(request: web.Request, viewer: Viewer) -> web.Response:
    return render("job.html", {**await _job_context(request, viewer), "fragment": False})


@page("jobs")
async def job_summary(request: web.Request, viewer: Viewer) -> web.Response:
    context = {**await _job_context(request, viewer), "fragment": True}
    return render("_job_summary.html", context)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{UI_BASE}/jobs", jobs_page)
    app.router.add_get(f"{UI_BASE}/jobs/rows", job_rows)
    app.router.add_get(f"{UI_BASE}/jobs/{{id}}", job_page)
    app.router.add_get(f"{UI_BASE}/jobs/{{id}}/summary", job_summary)
