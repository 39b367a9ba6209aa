"""A task's completion callbacks: rotating the secret that signs them, and reading their
delivery log (written by the collector, which makes the calls; docs/callbacks.md).

Rotating needs the right to change the task, as editing its callbacks does; the
delivery log is readable by whoever may read the task.
"""

from __future__ import annotations

from aiohttp import web
from sqlmodel import col, select

from kriten_api.authentication import authenticate
from kriten_api.authz import require
from kriten_api.keys import SECRET_BOX, SESSIONS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import Query, route
from kriten_api.routes.tasks import load_task, task_answer
from kriten_api.routes.webhooks import optional_body
from kriten_api.schemas import dump, validate
from kriten_api.schemas.tasks import CallbackDeliveryPublic, CallbackSecretRotate, TaskPublic
from kriten_api.secret_rotation import previous_secret
from kriten_common.callbacks import new_secret
from kriten_common.clock import utcnow
from kriten_common.db.models import CallbackDelivery


async def rotate_callback_secret(request: web.Request) -> web.Response:
    """A new secret (shown once); the current one keeps signing beside it for
    `grace_seconds` (a day by default; 0: stops at once), so a receiver can switch."""
    data = validate(CallbackSecretRotate, await optional_body(request, CallbackSecretRotate))
    secret = new_secret()
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        (
            task.previous_callback_secret_encrypted,
            task.previous_callback_secret_expires_at,
        ) = previous_secret(task.callback_secret_encrypted, data.grace_seconds)
        task.callback_secret_encrypted = box.encrypt(secret)
        task.updated_at = utcnow()
        session.add(task)
        await session.commit()
    return web.json_response(task_answer(task, secret=secret))


async def list_callback_deliveries(request: web.Request) -> web.Response:
    """Newest first; `?job_id=` narrows to one job's calls."""
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=False)
        # The log names the task's jobs and how they ended: readable by those who may
        # read every job of the task, as `GET /jobs` would show them.
        require(await authenticate(request), "jobs", task.name, "read")
        query = (
            select(CallbackDelivery)
            .where(col(CallbackDelivery.task) == task.name)
            .order_by(col(CallbackDelivery.attempted_at).desc(), col(CallbackDelivery.id))
        )
        if job_id := request.query.get("job_id"):
            query = query.where(col(CallbackDelivery.job_id) == job_id)
        rows, total = await paginate(session, query, Window.of(request))
    return list_response([dump(CallbackDeliveryPublic.model_validate(r)) for r in rows], total)


def add_routes(app: web.Application, base: str) -> None:
    item = f"{base}/tasks/{{name}}"
    route(
        app,
        "POST",
        f"{item}/callback_secret/rotate",
        rotate_callback_secret,
        summary="Rotate a task's callback secret (the new one shown once)",
        request=CallbackSecretRotate,
        request_required=False,
        response=TaskPublic,
    )
    route(
        app,
        "GET",
        f"{item}/callback_deliveries",
        list_callback_deliveries,
        summary="A task's completion callback delivery log (one row per attempt)",
        response=CallbackDeliveryPublic,
        listing=True,
        query=[Query("job_id", {"type": "string"}, "Only this job's calls")],
    )
