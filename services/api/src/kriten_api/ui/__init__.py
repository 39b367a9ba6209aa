"""The web console, served by the api at `/ui/`: server-rendered pages over the API.

Pages read through the API's own handlers (`through_api`), so they show each user what
the API would answer them and decide nothing about access themselves; every change is
a request the browser sends to the API itself, with the session cookie, through the
API's cross-site checks (`static/console.js`). Live parts are htmx fragments polled
while something runs, and a job's output is followed from the API's log stream.

Modules: `pages` (the wrapper every page shares), `rendering` (templates, headers),
`assets` (static files), `abilities` (which buttons to show), `schema_form` (a task's
run form), and one module of pages per subject.
"""

from __future__ import annotations

from aiohttp import web

from kriten_api.ui import assets, job_pages, session_pages, task_pages, webhook_pages


def add_routes(app: web.Application) -> None:
    assets.add_routes(app)
    for module in (session_pages, job_pages, webhook_pages, task_pages):
        module.add_routes(app)
