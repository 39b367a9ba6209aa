"""The dispatcher's handling of job requests: launch once, never re-run a finished job,
record permanent failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Job, Runner, Task
from kriten_common.local_jobs import JobPaths
from kriten_common.messages import (
    Event,
    JobCancelRequested,
    JobDispatched,
    JobDispatchFailed,
    JobRequested,
)
from kriten_common.outcomes import PermanentError
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_dispatcher.dispatching import Dispatcher
from kriten_dispatcher.local_executor import LocalJobLauncher, prune
from kriten_dispatcher.ports import JobSpec


class CountingLauncher:
    def __init__(self) -> None:
        self.launched: list[JobSpec] = []

    async def launch(self, spec: JobSpec) -> None:
        self.launched.append(spec)

    async def start(self) -> None:
        pass

    async def cancel(self, job_id: str) -> bool:
        return False

    async def close(self) -> None:
        pass


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, *events: Event) -> None:
        self.events.extend(events)


def request(job_id: str = "hello-abc", task: str = "hello") -> JobRequested:
    return JobRequested(
        job_id=job_id, task=task, owner="root", owner_id="u", source="webhook", input='{"a": 1}'
    )


@pytest.fixture
async def world(db_sessions: SessionFactory) -> tuple[Dispatcher, CountingLauncher, Any]:
    async with db_sessions() as session:
        session.add(Runner(name="python", git_url="file:///repo"))
        await session.commit()
        session.add(Task(name="hello", runner="python", command="echo hi"))
        await session.commit()
    launcher = CountingLauncher()
    publisher = RecordingPublisher()
    dispatcher = Dispatcher(
        launcher=launcher,
        publisher=publisher,  # type: ignore[arg-type]
        sessions=db_sessions,
        box=SecretBox(DEVELOPMENT_ENCRYPTION_KEY),
        executor="local",
    )
    return dispatcher, launcher, publisher


async def test_a_request_is_launched_with_its_input(world: Any) -> None:
    dispatcher, launcher, publisher = world
    await dispatcher.handle(request())
    (spec,) = launcher.launched
    assert (spec.job_id, spec.command, spec.extra_vars) == ("hello-abc", "echo hi", '{"a": 1}')
    assert [type(e) for e in publisher.events] == [JobDispatched]


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
async def test_a_retry_of_a_finished_job_runs_nothing(
    world: Any, db_sessions: SessionFactory, status: str
) -> None:
    dispatcher, launcher, publisher = world
    async with db_sessions() as session:
        session.add(
            Job(
                id="hello-abc",
                task="hello",
                owner="root",
                owner_id="u",
                status=status,
                start_time=datetime.now(UTC),
            )
        )
        await session.commit()
    await dispatcher.handle(request())
    assert launcher.launched == []
    assert publisher.events == []


async def test_a_job_that_failed_before_launch_is_launched_by_its_replay(
    world: Any, db_sessions: SessionFactory
) -> None:
    dispatcher, launcher, _ = world
    async with db_sessions() as session:
        # What the dead-letter hook records: failed, no execution ever started.
        session.add(Job(id="hello-abc", task="hello", owner="root", owner_id="u", status="failed"))
        await session.commit()
    await dispatcher.handle(request())
    assert [s.job_id for s in launcher.launched] == ["hello-abc"]


async def test_a_queued_job_is_still_launched(world: Any, db_sessions: SessionFactory) -> None:
    dispatcher, launcher, _ = world
    async with db_sessions() as session:
        # The collector records the request as it arrives, often before the launch.
        session.add(Job(id="hello-abc", task="hello", owner="root", owner_id="u"))
        await session.commit()
    await dispatcher.handle(request())
    assert [s.job_id for s in launcher.launched] == ["hello-abc"]


async def test_a_vanished_task_is_a_permanent_failure_recorded_on_the_job(world: Any) -> None:
    dispatcher, launcher, publisher = world
    with pytest.raises(PermanentError, match="no longer exists") as raised:
        await dispatcher.handle(request(task="gone"))
    assert launcher.launched == []
    # The handler only raises; the job is recorded failed by the one dead-letter path.
    assert publisher.events == []
    await dispatcher.on_dead_letter(request(task="gone"), str(raised.value))
    (failed,) = publisher.events
    assert isinstance(failed, JobDispatchFailed)
    assert failed.job_id == "hello-abc"
    assert "no longer exists" in failed.error


async def test_a_cancellation_given_up_on_publishes_nothing(world: Any) -> None:
    dispatcher, _, publisher = world
    cancel = JobCancelRequested(job_id="hello-abc", requested_by="root")
    await dispatcher.on_dead_letter(cancel, "gave up after 10 attempts")
    assert publisher.events == []


async def test_a_pruned_jobs_redelivery_runs_nothing(
    db_sessions: SessionFactory, jobs_dir: Path, git_repo: Path, tmp_path: Path
) -> None:
    """A job directory is the local executor's launch idempotency; once pruned, the jobs
    table is: a sender's retry of a job that ran days ago must not run it again."""
    runs = tmp_path / "runs.txt"
    async with db_sessions() as session:
        session.add(Runner(name="python", git_url=str(git_repo)))
        await session.commit()
        session.add(Task(name="hello", runner="python", command=f"echo run >> {runs}"))
        await session.commit()
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)
    dispatcher = Dispatcher(
        launcher=launcher,
        publisher=RecordingPublisher(),  # type: ignore[arg-type]
        sessions=db_sessions,
        box=SecretBox(DEVELOPMENT_ENCRYPTION_KEY),
        executor="local",
    )
    await dispatcher.handle(request())
    paths = JobPaths.of(jobs_dir, "hello-abc")
    await asyncio.wait_for(_until_exists(paths.exit_code), 30)
    # What the collector does: the final state stored, the directory marked collected.
    async with db_sessions() as session:
        session.add(
            Job(id="hello-abc", task="hello", owner="root", owner_id="u", status="succeeded")
        )
        await session.commit()
    paths.collected.touch()
    assert prune(jobs_dir, retention=timedelta(0)) == ["hello-abc"]

    await dispatcher.handle(request())
    await asyncio.sleep(0.5)

    assert not paths.root.exists()
    assert runs.read_text() == "run\n"


async def _until_exists(path: Path) -> None:
    while not path.exists():
        await asyncio.sleep(0.02)
