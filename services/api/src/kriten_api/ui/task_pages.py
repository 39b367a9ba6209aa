"""The tasks and runners pages: lists, one task with its run form and its latest jobs,
one runner with the tasks on it.

They read `routes.tasks`', `routes.runners`' and `routes.jobs`' answers; the run form
(`schema_form`) is sent by `static/console.js` to `POST /api/v1/jobs/{task}`.
"""

from __future__ import annotations

from aiohttp import web

from kriten_api.routes import jobs, runners, tasks
from kriten_api.ui import abilities
from kriten_api.ui.pages import Viewer, page
from kriten_api.ui.paths import UI_BASE
from kriten_api.ui.rendering import render
from kriten_api.ui.schema_form import form_fields
from kriten_api.ui.through_api import FIRST_PAGE, LIST_SHOWN, read, read_list

LATEST_JOBS = 10


@page("tasks")
async def tasks_page(request: web.Request, viewer: Viewer) -> web.Response:
    listing = await read_list(request, tasks.list_tasks, FIRST_PAGE)
    context = {**viewer.context, "tasks": listing.items, "total": listing.total}
    return render("tasks.html", {**context, "shown": LIST_SHOWN})


@page("tasks")
async def task_page(request: web.Request, viewer: Viewer) -> web.Response:
    task = await read(request, tasks.get_task)
    latest = await read_list(
        request, jobs.list_jobs, {"task": task["name"], "limit": str(LATEST_JOBS)}
    )
    context = {
        **viewer.context,
        "task": task,
        "fields": form_fields(task["schema"]),
        "may_run": abilities.may_run(viewer.principal, task["name"]),
        "jobs": latest.items,
        "total": latest.total,
    }
    return render("task.html", context)


@page("runners")
async def runners_page(request: web.Request, viewer: Viewer) -> web.Response:
    listing = await read_list(request, runners.list_runners, FIRST_PAGE)
    context = {**viewer.context, "runners": listing.items, "total": listing.total}
    return render("runners.html", {**context, "shown": LIST_SHOWN})


@page("runners")
async def runner_page(request: web.Request, viewer: Viewer) -> web.Response:
    runner = await read(request, runners.get_runner)
    # The tasks on it that the caller may see: the API's list, narrowed here.
    visible = await read_list(request, tasks.list_tasks, {})
    on_it = [task for task in visible.items if task["runner"] == runner["name"]]
    return render("runner.html", {**viewer.context, "runner": runner, "tasks": on_it})


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{UI_BASE}/tasks", tasks_page)
    app.router.add_get(f"{UI_BASE}/tasks/{{name}}", task_page)
    app.router.add_get(f"{UI_BASE}/runners", runners_page)
    app.router.add_get(f"{UI_BASE}/runners/{{name}}", runner_page)
