"""The job store keeps the final state whatever order the job's events arrive in: a
`JobRequested` retried after its dispatch already failed or finished fills in the job's
fields but never makes it `queued` again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from kriten_collector.job_store import JobStore
from kriten_collector.ports import ExecutionUpdate
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Job
from kriten_common.messages import JobDispatchFailed, JobRequested


def requested(job_id: str = "hello-1") -> JobRequested:
    return JobRequested(
        job_id=job_id, task="hello", owner="root", owner_id="u", source="api", input="{}"
    )


async def _job(sessions: SessionFactory, job_id: str = "hello-1") -> Job:
    async with sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


async def test_a_late_request_does_not_reset_a_failed_dispatch(db_sessions: SessionFactory) -> None:
    store = JobStore(db_sessions)
    failed = await store.record_dispatch_failed(
        JobDispatchFailed(job_id="hello-1", error="task 'hello' no longer exists")
    )
    assert failed is not None
    await store.record_requested(requested())
    job = await _job(db_sessions)
    assert (job.status, job.error, job.task, job.owner) == (
        "failed",
        "task 'hello' no longer exists",
        "hello",
        "root",
    )


async def test_a_late_request_does_not_reset_a_finished_job(db_sessions: SessionFactory) -> None:
    store = JobStore(db_sessions)
    now = datetime.now(UTC)
    update = ExecutionUpdate(
        job_id="hello-1", state="succeeded", start_time=now, completion_time=now, exit_code=0
    )
    assert await store.record_update(update) is not None
    await store.record_requested(requested())
    await store.record_requested(requested())  # a redelivery changes nothing either
    job = await _job(db_sessions)
    assert (job.status, job.exit_code, job.task) == ("succeeded", 0, "hello")


async def test_a_failed_dispatch_after_the_job_finished_changes_nothing(
    db_sessions: SessionFactory,
) -> None:
    store = JobStore(db_sessions)
    await store.record_requested(requested())
    now = datetime.now(UTC)
    await store.record_update(
        ExecutionUpdate(job_id="hello-1", state="succeeded", completion_time=now, exit_code=0)
    )
    late = JobDispatchFailed(job_id="hello-1", error="gave up")
    assert await store.record_dispatch_failed(late) is None
    assert (await _job(db_sessions)).status == "succeeded"


async def test_a_replayed_request_reopens_a_job_that_failed_before_it_ran(
    db_sessions: SessionFactory,
) -> None:
    store = JobStore(db_sessions)
    await store.record_requested(requested())
    await store.record_dispatch_failed(JobDispatchFailed(job_id="hello-1", error="task gone"))
    now = datetime.now(UTC)
    # An execution that never started (an image that cannot be pulled, reported twice)
    # does not reopen it: nothing ran.
    unstarted = ExecutionUpdate(job_id="hello-1", state="failed", completion_time=now)
    assert await store.record_update(unstarted) is None
    # One that started does: the replayed dead letter ran it.
    running = ExecutionUpdate(job_id="hello-1", state="running", start_time=now)
    await store.record_update(running)
    assert (await _job(db_sessions)).status == "running"
    done = ExecutionUpdate(
        job_id="hello-1", state="succeeded", start_time=now, completion_time=now, exit_code=0
    )
    assert await store.record_update(done) is not None
    job = await _job(db_sessions)
    assert (job.status, job.exit_code, job.error) == ("succeeded", 0, None)
    # And a finished execution is final again.
    assert await store.record_update(replace(done, state="failed", exit_code=1)) is None


async def test_a_job_ended_by_its_concurrency_key_keeps_its_status_and_key(
    db_sessions: SessionFactory,
) -> None:
    store = JobStore(db_sessions)
    for job_id, status in (("hello-1", "cancelled"), ("hello-2", "skipped")):
        await store.record_requested(
            requested(job_id).model_copy(update={"concurrency_key": "device:7"})
        )
        ended = await store.record_dispatch_failed(
            JobDispatchFailed(job_id=job_id, error="replaced by hello-3", status=status)
        )
        assert ended is not None
        assert ended.status == status
        job = await _job(db_sessions, job_id)
        assert (job.status, job.concurrency_key, job.start_time) == (status, "device:7", None)
        assert job.completion_time is not None
