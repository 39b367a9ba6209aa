"""`/jobs`: run a task (`POST /jobs/{task}`) and read what the collector stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import get_args

from aiohttp import web
from sqlalchemy import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api import job_events
from kriten_api.authentication import authenticate, still_authenticated
from kriten_api.authz import may_read_job, require, require_owner_or, require_read_job, visible_to
from kriten_api.job_events import wait_woken
from kriten_api.keys import JOB_EVENTS, PUBLISHER, SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import ANY_CONTENT, TEXT, Query, route
from kriten_api.schemas import DeletedOut, JsonSchemaOut, dump
from kriten_api.schemas.jobs import CreateJobOut, JobAcceptedOut, JobPublic, JobSummaryPublic
from kriten_common import errors
from kriten_common.admission import admit
from kriten_common.db.engine import read_session
from kriten_common.db.models import FINAL_JOB_STATUSES, Job, Task
from kriten_common.logging import bind_ids, current_id
from kriten_common.messages import FinalStatus, JobCancelRequested, JobSource

# A followed log re-reads the job this often for new output (and re-checks the caller's
# credential); the job's end wakes it at once (`job.finished`), without waiting for this.
FOLLOW_OUTPUT_SECONDS = 1.0
JOB_STATUSES = ("queued", "running", *get_args(FinalStatus))
JOB_SOURCES = get_args(JobSource)


async def _load_job(request: web.Request, session: AsyncSession) -> Job:
    principal = await authenticate(request)
    job_id = request.match_info["id"]
    job = await session.get(Job, job_id)
    if job is None:
        raise errors.NotFound(f"job {job_id!r} not found")
    require_read_job(principal, job)
    return job


async def create_job(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    name = request.match_info["task"]
    require(principal, "jobs", name, "write")
    raw_input = await request.read()
    if b"\x00" in raw_input:
        # The input becomes the job's EXTRA_VARS and a text column: an environment
        # variable cannot hold NUL, nor can PostgreSQL text.
        raise errors.InvalidInput("the job input must not contain NUL bytes")
    async with request.app[SESSIONS]() as session:
        task = await session.get(Task, name)
    if task is None:
        raise errors.NotFound(f"task {name!r} not found")
    # The request's correlation id goes with the job, so the dispatcher's and the
    # collector's lines about it carry it too.
    event = admit(
        principal=principal,
        task=task,
        raw_input=raw_input,
        source="api",
        correlation_id=current_id("correlation_id"),
    )
    bind_ids(job_id=event.job_id)
    await request.app[PUBLISHER].publish(event)
    if task.synchronous:
        finished = await _wait_woken_final(request, event.job_id)
        if finished is not None:
            return web.json_response(dump(JobPublic.model_validate(finished)))
    return web.json_response(dump(JobAcceptedOut(msg="job created successfully", id=event.job_id)))


async def _wait_woken_final(request: web.Request, job_id: str) -> Job | None:
    """The job once final, or None after `sync_timeout`: woken by `job.finished`, with a
    re-read every `FINISH_RECHECK_SECONDS` in case the event was lost."""
    deadline = time.monotonic() + request.app[SETTINGS].sync_timeout
    # Watching before the first read: a finish between the read and the wait still wakes.
    with request.app[JOB_EVENTS].watch(job_id) as finished:
        while True:
            async with request.app[SESSIONS]() as session:
                job = await session.get(Job, job_id)
            if job is not None and job.status in FINAL_JOB_STATUSES:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await wait_woken(finished, min(remaining, job_events.FINISH_RECHECK_SECONDS))


def _moment(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time query parameter (UTC when it names no offset), or None."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
        # In UTC here: an offset that moves it past year 1 or 9999 is a 400, not a 500
        # when the database column converts it.
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise errors.InvalidInput(f"{name} must be an ISO 8601 time") from None


def _list_conditions(request: web.Request) -> list[ColumnElement[bool]]:
    """The list's filters: equality on task, owner, status and source; a range of
    `created_at` (`since` inclusive, `until` exclusive)."""
    conditions: list[ColumnElement[bool]] = []
    for field, allowed in (
        ("task", ()),
        ("owner", ()),
        ("status", JOB_STATUSES),
        ("source", JOB_SOURCES),
    ):
        value = request.query.get(field)
        if value:
            if allowed and value not in allowed:
                raise errors.InvalidInput(f"{field} must be one of {', '.join(allowed)}")
            conditions.append(getattr(Job, field) == value)
    if (since := _moment(request, "since")) is not None:
        conditions.append(col(Job.created_at) >= since)
    if (until := _moment(request, "until")) is not None:
        conditions.append(col(Job.created_at) < until)
    return conditions


async def list_jobs(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    conditions = _list_conditions(request)
    query = select(Job).where(*conditions).order_by(col(Job.created_at).desc(), col(Job.id))
    keys, owner = [col(Job.task)], col(Job.owner_id)
    query = visible_to(query, principal, "jobs", keys=keys, owner=owner)
    async with read_session(request.app[SESSIONS]) as session:
        jobs, total = await paginate(session, query, Window.of(request))
    return list_response([dump(JobSummaryPublic.model_validate(j)) for j in jobs], total)


async def get_job(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        job = await _load_job(request, session)
    return web.json_response(dump(JobPublic.model_validate(job)))


async def get_job_log(request: web.Request) -> web.StreamResponse:
    """The output as text; with `?follow=true`, streamed until the job is final."""
    async with read_session(request.app[SESSIONS]) as session:
        job = await _load_job(request, session)
    if request.query.get("follow", "").lower() not in ("true", "1"):
        return web.Response(text=job.stdout or "", content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    sent = 0
    # A finish just before this watch is seen by the next output refresh, at most one
    # `FOLLOW_OUTPUT_SECONDS` later; a finish from now on ends the wait at once.
    with request.app[JOB_EVENTS].watch(job.id) as finished:
        while True:
            text = job.stdout or ""
            if len(text) > sent:
                await response.write(text[sent:].encode())
                sent = len(text)
            if job.status in FINAL_JOB_STATUSES:
                break
            await wait_woken(finished, FOLLOW_OUTPUT_SECONDS)
            # A stream may run for hours: it stops, like any request would be refused,
            # once its credential is revoked (logout, a new password, a deleted API
            # token), has expired, or its user is gone or may no longer read the job.
            if not await _may_still_follow(request, job):
                break
            async with read_session(request.app[SESSIONS]) as session:
                job = await session.get(Job, job.id) or job
    await response.write_eof()
    return response


async def _may_still_follow(request: web.Request, job: Job) -> bool:
    try:
        principal = await still_authenticated(request)
    except errors.KritenError:
        return False
    return may_read_job(principal, job)


async def cancel_job(request: web.Request) -> web.Response:
    """Asks the dispatcher to stop the job; the collector records it `cancelled` once the
    executor has stopped it (a job not yet launched is cancelled as soon as it is)."""
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        job = await _load_job(request, session)
    require_owner_or(
        principal, owner_id=job.owner_id, resource="jobs", resource_id=job.task, access="write"
    )
    if job.status in FINAL_JOB_STATUSES:
        raise errors.Conflict(f"job {job.id!r} is already {job.status}")
    await request.app[PUBLISHER].publish(
        JobCancelRequested(job_id=job.id, requested_by=principal.username)
    )
    return web.json_response(dump(DeletedOut(msg="job cancellation requested", id=job.id)))


async def get_job_schema(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        job = await _load_job(request, session)
        task = await session.get(Task, job.task)
    return web.json_response(dump(JsonSchemaOut(task.schema_ if task is not None else None)))


def add_routes(app: web.Application, base: str) -> None:
    item = f"{base}/jobs/{{id}}"
    filters = [
        Query("task", {"type": "string"}, "Only this task's jobs"),
        Query("owner", {"type": "string"}, "Only this user's jobs (a username)"),
        Query("status", {"enum": list(JOB_STATUSES)}, "Only jobs in this status"),
        Query("source", {"enum": list(JOB_SOURCES)}, "Only jobs started this way"),
        Query(
            "since",
            {"type": "string", "format": "date-time"},
            "Only jobs requested at or after this time (ISO 8601; UTC without an offset)",
        ),
        Query(
            "until",
            {"type": "string", "format": "date-time"},
            "Only jobs requested before this time (ISO 8601; UTC without an offset)",
        ),
    ]
    route(
        app,
        "GET",
        f"{base}/jobs",
        list_jobs,
        summary="List jobs, newest first",
        response=JobSummaryPublic,
        listing=True,
        query=filters,
    )
    route(
        app,
        "POST",
        f"{base}/jobs/{{task}}",
        create_job,
        summary="Run a task",
        description=(
            "The body is the task's input, as is (JSON when the task has a schema, which"
            " it must satisfy). A synchronous task answers with the finished job when it"
            " finishes in time, else (like any other task) with the new job's id."
        ),
        request=ANY_CONTENT,
        request_required=False,
        response=CreateJobOut,
        errors=[400, 503],
    )
    route(app, "GET", item, get_job, summary="Get a job, with its output", response=JobPublic)
    route(
        app,
        "DELETE",
        item,
        cancel_job,
        summary="Cancel a job",
        response=DeletedOut,
        errors=[409, 503],
    )
    route(
        app,
        "GET",
        f"{item}/log",
        get_job_log,
        summary="A job's output, as text",
        response=TEXT,
        query=[
            Query(
                "follow",
                {"enum": ["true", "false", "1", "0"]},
                "Stream the output until the job is final",
            )
        ],
    )
    route(
        app,
        "GET",
        f"{item}/schema",
        get_job_schema,
        summary="The input schema of a job's task",
        response=JsonSchemaOut,
    )
