"""The cron scheduler: the schedule arithmetic without I/O, then on real PostgreSQL and
RabbitMQ: catch-up after a restart, refusals, retry after a broker failure, and two
replicas firing the same minutes with each minute launched (and recorded) exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shlex
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aio_pika import connect_robust
from pydantic import SecretStr
from sqlmodel import col, select

from kriten_api.bootstrap import ensure_builtins
from kriten_api.migrate import upgrade_database
from kriten_collector.collecting import Collector
from kriten_collector.job_store import JobStore
from kriten_collector.local_observer import LocalJobObserver
from kriten_common import errors
from kriten_common.admission import MAX_JOB_ID_LENGTH
from kriten_common.amqp import Consumer, Publisher, Topology
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from kriten_common.db.models import CronJob, Job, Runner, Task, User
from kriten_common.local_jobs import JobPaths, has_ended, is_valid_job_id
from kriten_common.messages import Event, JobRequested
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_dispatcher.app import create_app
from kriten_dispatcher.dispatching import Dispatcher
from kriten_dispatcher.local_executor import LocalJobLauncher
from kriten_dispatcher.scheduler import (
    CATCH_UP,
    ScheduleError,
    Scheduler,
    cron_job_id,
    due_minutes,
    minute_since_epoch,
    plan_firings,
    window_start,
)
from kriten_dispatcher.settings import DispatcherSettings

TIMEOUT = 60.0


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cronjob(name: str = "tick", schedule: str = "* * * * *", **fields: Any) -> CronJob:
    since = fields.pop("since", at("2031-05-04T00:00:00"))
    return CronJob(
        name=name,
        owner="root",
        owner_id="root-id",
        task="count",
        schedule=schedule,
        created_at=since,
        updated_at=since,
        **fields,
    )


# --- the arithmetic, no I/O -------------------------------------------------------------


def test_due_minutes_are_after_exclusive_and_until_inclusive() -> None:
    due = due_minutes("*/15 * * * *", after=at("2031-05-04T10:00:00"), until=at("2031-05-04T11:00"))
    assert due == [at(f"2031-05-04T{t}") for t in ("10:15", "10:30", "10:45", "11:00")]


def test_due_minutes_within_a_minute_and_across_seconds() -> None:
    assert due_minutes(
        "* * * * *", after=at("2031-05-04T10:00:59.999"), until=at("2031-05-04T10:01:00.001")
    ) == [at("2031-05-04T10:01")]
    # A check a few seconds after the previous one, inside the same minute: nothing.
    assert (
        due_minutes("* * * * *", after=at("2031-05-04T10:01:02"), until=at("2031-05-04T10:01:07"))
        == []
    )
    assert (
        due_minutes("* * * * *", after=at("2031-05-04T10:01"), until=at("2031-05-04T10:01")) == []
    )


def test_due_minutes_follow_cron_day_rules() -> None:
    # Both day fields restricted: either matches (cron's OR rule). 2031-05-01 is a Thursday.
    due = due_minutes("0 9 1 * MON", after=at("2031-04-30T12:00"), until=at("2031-05-13T00:00"))
    assert due == [at("2031-05-01T09:00"), at("2031-05-05T09:00"), at("2031-05-12T09:00")]
    # Weekdays only, at 02:30.
    due = due_minutes("30 2 * * 1-5", after=at("2031-05-02T00:00"), until=at("2031-05-06T00:00"))
    assert due == [at("2031-05-02T02:30"), at("2031-05-05T02:30")]


def test_due_minutes_are_in_utc_whatever_zone_the_bounds_are_given_in() -> None:
    paris = datetime.fromisoformat("2031-05-04T12:00:00+02:00")  # 10:00 UTC
    due = due_minutes("0 10 * * *", after=paris - timedelta(minutes=1), until=paris)
    assert due == [at("2031-05-04T10:00")]


@pytest.mark.parametrize("schedule", ["* * * *", "0 * * * * *", "61 * * * *", "@daily", ""])
def test_due_minutes_refuses_what_is_not_a_5_field_schedule(schedule: str) -> None:
    with pytest.raises(ScheduleError):
        due_minutes(schedule, after=at("2031-05-04T10:00"), until=at("2031-05-04T11:00"))


def test_job_ids_are_the_cronjob_and_the_minute_since_the_epoch() -> None:
    minute = minute_since_epoch(at("2031-05-04T10:02:00"))
    assert minute == int(at("2031-05-04T10:02").timestamp()) // 60
    assert minute_since_epoch(at("2031-05-04T10:02:59.9")) == minute
    job_id = cron_job_id("nightly-report", minute)
    # Readable: the name, a digest of the whole name, then the minute.
    assert job_id.startswith("nightly-report-")
    assert job_id.endswith(f"-{minute}")
    assert len(job_id) == len("nightly-report") + 1 + 16 + 1 + len(str(minute))
    assert is_valid_job_id(job_id)


def test_job_ids_of_different_cronjobs_never_collide() -> None:
    """Regression: `<name>-<minute>`, with a digest only for long names, let a user name a
    cronjob after another's shortened form; the other's firing then had the same job id,
    was taken for a duplicate of theirs and never ran."""
    minute = minute_since_epoch(at("2031-05-04T10:02"))
    victim = "nightly-backup-of-the-production-database-cluster-primary"
    # What the old scheme made of the victim's long name: its first 45 characters, an
    # 8-hex digest, the minute. A name equal to that id minus `-<minute>` is short enough
    # to be used whole, so its old id was the victim's.
    old_digest = hashlib.sha256(victim.encode()).hexdigest()[:8]
    attacker = f"{victim[:45].rstrip('-.')}-{old_digest}"
    assert f"{attacker}-{minute}" == f"{victim[:45].rstrip('-.')}-{old_digest}-{minute}"

    firings, _ = plan_firings(
        [cronjob(victim), cronjob(attacker)],
        since=at("2031-05-04T10:01:30"),
        now=at("2031-05-04T10:02:30"),
    )

    assert len(firings) == 2
    assert firings[0].job_id != firings[1].job_id
    # Nor may a short name collide with another's `<name>-<minute>`: the digest is always in.
    assert cron_job_id("x", minute + 1) != cron_job_id(f"x-{minute}", minute)


def test_long_cronjob_names_give_valid_distinct_job_ids() -> None:
    minute = minute_since_epoch(at("2031-05-04T10:02"))
    first = cron_job_id("a" * 60 + "-x", minute)
    second = cron_job_id("a" * 60 + "-y", minute)
    assert first != second
    for job_id in (first, second):
        assert len(job_id) <= MAX_JOB_ID_LENGTH
        assert job_id.endswith(f"-{minute}")
        assert is_valid_job_id(job_id)
    assert cron_job_id("a" * 60 + "-x", minute) == first  # stable across replicas


def test_window_starts_at_the_last_check_but_never_before_the_catch_up() -> None:
    now = at("2031-05-04T10:00")
    assert window_start(last_check=None, now=now, catch_up=CATCH_UP) == now - CATCH_UP
    recent = now - timedelta(seconds=5)
    assert window_start(last_check=recent, now=now, catch_up=CATCH_UP) == recent
    long_ago = now - timedelta(days=1)
    assert window_start(last_check=long_ago, now=now, catch_up=CATCH_UP) == now - CATCH_UP


def test_plan_skips_disabled_and_minutes_before_the_last_change() -> None:
    since, now = at("2031-05-04T09:55:00"), at("2031-05-04T10:00:30")
    old = cronjob("old")
    changed = cronjob("changed", since=at("2031-05-04T09:58:30"))
    disabled = cronjob("disabled", disable=True)
    broken = cronjob("broken", schedule="every minute")
    firings, problems = plan_firings([old, changed, disabled, broken], since=since, now=now)
    minutes: dict[str, list[str]] = {"old": [], "changed": []}
    for firing in firings:
        minutes[firing.cronjob.name].append(firing.scheduled.strftime("%H:%M"))
        assert firing.job_id == cron_job_id(
            firing.cronjob.name, minute_since_epoch(firing.scheduled)
        )
    assert minutes == {
        "old": ["09:56", "09:57", "09:58", "09:59", "10:00"],
        "changed": ["09:59", "10:00"],
    }
    assert [(c.name, "every minute" in reason) for c, reason in problems] == [("broken", True)]


# --- on PostgreSQL (and RabbitMQ for the replicas) ---------------------------------------


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class RecordingPublisher:
    """Records what a scheduler publishes; forwards to a real publisher when given one."""

    inner: Publisher | None = None
    failures: int = 0
    job_ids: list[str] = field(default_factory=list)
    events: list[JobRequested] = field(default_factory=list)

    async def publish(self, *events: Event) -> None:
        if self.failures:
            self.failures -= 1
            raise errors.Unavailable("message broker unavailable")
        if self.inner is not None:
            await self.inner.publish(*events)
        for event in events:
            assert isinstance(event, JobRequested)
            self.events.append(event)
            self.job_ids.append(event.job_id)


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[SessionFactory]:
    """A migrated database with root (Admin), a runner and the task `count`."""
    await upgrade_database(postgres_url)
    engine = create_engine(postgres_url)
    factory = session_factory(engine)
    await ensure_builtins(factory, root_password="root-password")
    try:
        yield factory
    finally:
        await engine.dispose()


async def root_id(sessions: SessionFactory) -> str:
    async with sessions() as session:
        root = (await session.exec(select(User).where(User.username == "root"))).one()
    return root.id


async def add_task(sessions: SessionFactory, *, git_url: str, command: str, **task: Any) -> None:
    async with sessions() as session:
        session.add(Runner(name="local", git_url=git_url))
        await session.flush()
        session.add(Task(name="count", runner="local", command=command, **task))
        await session.commit()


async def add_cronjob(sessions: SessionFactory, owner_id: str, **fields: Any) -> None:
    async with sessions() as session:
        owner = await session.get(User, owner_id)
        assert owner is not None
        row = cronjob(**fields)
        row.owner, row.owner_id = owner.username, owner.id
        session.add(row)
        await session.commit()


def job_dirs(jobs_dir: Path) -> set[str]:
    """The job directories (not the executor's own dot-directories, such as `.private`)."""
    return {p.name for p in jobs_dir.iterdir() if is_valid_job_id(p.name)}


def ids(name: str, *times: str) -> list[str]:
    return [cron_job_id(name, minute_since_epoch(at(f"2031-05-04T{t}"))) for t in times]


@pytest.mark.integration
async def test_a_cronjob_named_after_anothers_job_id_does_not_swallow_its_firing(
    sessions: SessionFactory,
) -> None:
    await add_task(sessions, git_url="file:///nowhere", command="true")
    root = await root_id(sessions)
    victim = "nightly-backup-of-the-production-database-cluster-primary"
    attacker = f"{victim[:45]}-{hashlib.sha256(victim.encode()).hexdigest()[:8]}"
    await add_cronjob(sessions, root, name=victim)
    await add_cronjob(sessions, root, name=attacker)
    publisher = RecordingPublisher()
    clock = FakeClock(at("2031-05-04T10:02:30"))

    published = await Scheduler(
        sessions=sessions, publisher=publisher, clock=clock, catch_up=timedelta(minutes=1)
    ).check()

    assert sorted(published) == sorted(ids(victim, "10:02") + ids(attacker, "10:02"))
    assert len(set(published)) == 2


@pytest.mark.integration
async def test_a_restart_catches_up_recent_minutes_but_not_stored_or_old_ones(
    sessions: SessionFactory,
) -> None:
    await add_task(sessions, git_url="file:///nowhere", command="true")
    root = await root_id(sessions)
    extra_vars = {"b": [1, 2], "a": "é", "nested": {"x": None}}
    await add_cronjob(sessions, root, name="tick", extra_vars=extra_vars)  # since 00:00
    await add_cronjob(sessions, root, name="hourly", schedule="0 * * * *")
    await add_cronjob(sessions, root, name="off", disable=True)
    clock = FakeClock(at("2031-05-04T10:02:30"))
    first = RecordingPublisher()

    published = await Scheduler(sessions=sessions, publisher=first, clock=clock).check()

    # Hours of history, but only the catch-up window (five minutes) is made up for.
    assert sorted(published) == sorted(
        ids("tick", "09:58", "09:59", "10:00", "10:01", "10:02") + ids("hourly", "10:00")
    )
    event = next(e for e in first.events if e.job_id == ids("tick", "10:02")[0])
    assert (event.task, event.owner, event.owner_id, event.source) == (
        "count",
        "root",
        root,
        "cron",
    )
    assert event.input == '{"b":[1,2],"a":"é","nested":{"x":null}}'

    # The collector stored some of them; a new replica (or a restart) skips those.
    async with sessions() as session:
        for job_id in ids("tick", "09:58", "09:59", "10:00") + ids("hourly", "10:00"):
            session.add(Job(id=job_id, task="count", owner="root", owner_id=root))
        await session.commit()
    second = RecordingPublisher()
    replica = Scheduler(sessions=sessions, publisher=second, clock=clock)
    assert sorted(await replica.check()) == sorted(ids("tick", "10:01", "10:02"))
    # The same replica, checking again in the same minute, has nothing more to do...
    clock.now = at("2031-05-04T10:02:55")
    assert await replica.check() == []
    # ...and the next minute brings exactly that minute.
    clock.now = at("2031-05-04T10:03:04")
    assert await replica.check() == ids("tick", "10:03")


@pytest.mark.integration
async def test_firings_the_owner_may_not_run_are_refused(sessions: SessionFactory) -> None:
    schema = {"type": "object", "required": ["site"]}
    await add_task(sessions, git_url="file:///nowhere", command="true", schema_=schema)
    root = await root_id(sessions)
    async with sessions() as session:
        nobody = User(username="nobody", provider="local")
        session.add(nobody)
        await session.commit()
    await add_cronjob(sessions, nobody.id, name="no-rights", extra_vars={"site": "x"})
    await add_cronjob(sessions, root, name="bad-input", extra_vars={"other": 1})
    await add_cronjob(sessions, root, name="good", extra_vars={"site": "x"})
    publisher = RecordingPublisher()
    clock = FakeClock(at("2031-05-04T10:00:30"))

    published = await Scheduler(sessions=sessions, publisher=publisher, clock=clock).check()

    assert all(job_id.startswith("good-") for job_id in published)
    assert len(published) == CATCH_UP // timedelta(minutes=1)


@pytest.mark.integration
async def test_a_failed_publish_loses_no_firing(sessions: SessionFactory) -> None:
    await add_task(sessions, git_url="file:///nowhere", command="true")
    await add_cronjob(sessions, await root_id(sessions), since=at("2031-05-04T10:00:10"))
    clock = FakeClock(at("2031-05-04T10:01:10"))
    publisher = RecordingPublisher(failures=1)
    scheduler = Scheduler(sessions=sessions, publisher=publisher, clock=clock)

    with pytest.raises(errors.Unavailable):
        await scheduler.check()
    clock.now = at("2031-05-04T10:02:10")
    assert await scheduler.check() == ids("tick", "10:01", "10:02")


# The task the two replicas run: one line per run, naming the job and its EXTRA_VARS.
COUNT_RUNS = (
    "import json, os\n"
    "extra = os.environ['EXTRA_VARS']\n"
    "with open(json.loads(extra)['file'], 'a') as out:\n"
    "    out.write(os.environ['KRITEN_JOB_ID'] + ' ' + extra + '\\n')\n"
)


@dataclass
class Replica:
    """One dispatcher replica's scheduler and consumer, on its own broker connection."""

    scheduler: Scheduler
    published: RecordingPublisher
    handled: list[str]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_two_replicas_launch_and_record_each_minute_exactly_once(
    sessions: SessionFactory,
    amqp_url: str,
    topology: Topology,
    git_repo: Path,
    jobs_dir: Path,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs.txt"
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(COUNT_RUNS)}"
    await add_task(sessions, git_url=str(git_repo), command=command)
    await add_cronjob(
        sessions,
        await root_id(sessions),
        name="every-minute",
        since=at("2031-05-04T09:59:50"),
        extra_vars={"file": str(runs)},
    )
    clock = FakeClock(at("2031-05-04T10:00:30"))
    box = SecretBox(DEVELOPMENT_ENCRYPTION_KEY)

    async with contextlib.AsyncExitStack() as stack:
        replicas: list[Replica] = []
        for _ in range(2):
            connection = await connect_robust(amqp_url)
            stack.push_async_callback(connection.close)
            publisher = Publisher(connection, topology)
            await publisher.open()
            stack.push_async_callback(publisher.close)
            launcher = LocalJobLauncher(jobs_dir=jobs_dir)
            stack.push_async_callback(launcher.close)
            dispatcher = Dispatcher(
                launcher=launcher, publisher=publisher, sessions=sessions, box=box, executor="local"
            )
            handled: list[str] = []

            async def handle(
                event: Event, dispatcher: Dispatcher = dispatcher, seen: list[str] = handled
            ) -> None:
                await dispatcher.handle(event)
                if isinstance(event, JobRequested):
                    seen.append(event.job_id)

            consumer = Consumer(
                connection=connection,
                topology=topology,
                consumer="dispatcher.job-requested",
                handler=handle,
            )
            await consumer.start()
            stack.push_async_callback(consumer.stop, 5.0)
            recording = RecordingPublisher(inner=publisher)
            scheduler = Scheduler(
                sessions=sessions, publisher=recording, clock=clock, poll_seconds=0.05
            )
            stack.push_async_callback(stop, asyncio.create_task(scheduler.run()))
            replicas.append(Replica(scheduler, recording, handled))

        def both_fired(want: list[str]) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return all(r.published.job_ids == want for r in replicas)

            return check

        # Three minutes pass; both replicas see each one.
        expected: list[str] = []
        for moment in ("10:00:30", "10:01:30", "10:02:30"):
            clock.now = at(f"2031-05-04T{moment}")
            expected += ids("every-minute", moment[:5])

            await wait_until(both_fired(list(expected)), f"both replicas to fire {moment}")

        # Every firing went to the broker twice, once from each replica...
        async def all_handled() -> bool:
            return sum(len(r.handled) for r in replicas) == 2 * len(expected)

        await wait_until(all_handled, "the dispatchers to take every request")
        assert sorted(j for r in replicas for j in r.handled) == sorted(expected * 2)

        # ...yet each job was launched once: one job directory each, and one run each.
        async def all_finished() -> bool:
            return all(has_ended(JobPaths.of(jobs_dir, j)) for j in expected)

        await wait_until(all_finished, "the jobs to finish")
        assert sorted(job_dirs(jobs_dir)) == sorted(expected)
        lines = runs.read_text().splitlines()
        assert sorted(lines) == sorted(f'{j} {{"file":{json.dumps(str(runs))}}}' for j in expected)

        # The collector, given both copies of every request, records each job once.
        connection = await connect_robust(amqp_url)
        stack.push_async_callback(connection.close)
        publisher = Publisher(connection, topology)
        await publisher.open()
        stack.push_async_callback(publisher.close)
        observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.05)
        stack.push_async_callback(observer.close)
        collector = Collector(store=JobStore(sessions), publisher=publisher, observer=observer)
        consumer = Consumer(
            connection=connection,
            topology=topology,
            consumer="collector.events",
            handler=collector.handle,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop, 5.0)
        stack.push_async_callback(stop, asyncio.create_task(collector.observe()))

        async def all_recorded() -> bool:
            async with sessions() as session:
                jobs = (await session.exec(select(Job).order_by(col(Job.id)))).all()
            return [(j.id, j.status) for j in jobs] == [(j, "succeeded") for j in sorted(expected)]

        await wait_until(all_recorded, "the collector to record three succeeded jobs")
        async with sessions() as session:
            jobs = (await session.exec(select(Job))).all()
        assert {(j.task, j.owner, j.source) for j in jobs} == {("count", "root", "cron")}
        # Nothing ran again meanwhile.
        assert len(runs.read_text().splitlines()) == len(expected)


@pytest.mark.integration
async def test_the_dispatcher_app_runs_the_scheduler(
    sessions: SessionFactory,
    postgres_url: str,
    amqp_url: str,
    topology: Topology,
    git_repo: Path,
    jobs_dir: Path,
    aiohttp_client: Callable[..., Awaitable[Any]],
) -> None:
    """The wiring: a started dispatcher fires, on the real clock, the minutes it missed."""
    await add_task(sessions, git_url=str(git_repo), command="true")
    created = datetime.now(UTC) - timedelta(seconds=150)
    await add_cronjob(sessions, await root_id(sessions), name="wired", since=created)
    missed = due_minutes("* * * * *", after=created, until=datetime.now(UTC))
    expected = {cron_job_id("wired", minute_since_epoch(m)) for m in missed}
    assert len(expected) >= 2
    settings = DispatcherSettings(
        database_url=SecretStr(postgres_url),
        amqp_url=SecretStr(amqp_url),
        amqp_prefix=topology.prefix,
        jobs_dir=jobs_dir,
    )
    await aiohttp_client(create_app(settings))

    async def launched() -> bool:
        return jobs_dir.is_dir() and expected <= job_dirs(jobs_dir)

    await wait_until(launched, "the dispatcher app to launch the missed minutes")
    # At most the minute that began meanwhile came on top.
    assert len(job_dirs(jobs_dir) - expected) <= 1


class FailingScheduler(Scheduler):
    """A scheduler whose checks fail with `problem`, then stop the loop."""

    def __init__(self, problem: Exception, sessions: SessionFactory) -> None:
        super().__init__(sessions=sessions, publisher=RecordingPublisher(), poll_seconds=0)
        self.problem = problem
        self.checks = 0

    async def check(self) -> list[str]:
        self.checks += 1
        if self.checks > 1:
            raise asyncio.CancelledError
        raise self.problem


@pytest.mark.parametrize(
    ("problem", "level"),
    [(ConnectionRefusedError("database is down"), "warning"), (ValueError("a bug"), "error")],
)
async def test_an_outage_is_a_warning_and_a_bug_an_error(
    problem: Exception, level: str, sessions: SessionFactory
) -> None:
    scheduler = FailingScheduler(problem, sessions)
    with structlog.testing.capture_logs() as logged, pytest.raises(asyncio.CancelledError):
        await scheduler.run()
    assert [entry["log_level"] for entry in logged] == [level]
