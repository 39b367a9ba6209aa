"""Group commit of the collector's writes, on each database: a batch is one transaction
with one read, applies its writes in order with the job store's monotonic rules, fails
all its callers together, and survives another replica creating a row under it. And the
observer's updates, pipelined into it, are forgotten only once durable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from kriten_collector import delivery_store, job_store
from kriten_collector.collecting import Collector
from kriten_collector.delivery_store import DeliveryStore
from kriten_collector.job_store import FinishedJob, JobStore
from kriten_collector.ports import ExecutionUpdate
from kriten_collector.write_batcher import WriteBatcher
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Job, WebhookDelivery
from kriten_common.messages import Event, JobDispatchFailed, JobFinished, JobRequested
from tests.collector.test_delivery_store import delivered

NOW = datetime(2025, 6, 30, 21, 11, 56, tzinfo=UTC)


def _engine(sessions: SessionFactory) -> AsyncEngine:
    engine = sessions.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    return engine


class Statements:
    """Counts the commits and the SQL statements run on an engine; `fail_writes` makes
    that many transactions fail at their first write (as a full disk would)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.commits = 0
        self.sql: list[str] = []
        self.fail_writes = 0
        event.listen(engine.sync_engine, "commit", self._on_commit)
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_execute)

    def _on_commit(self, _connection: Any) -> None:
        self.commits += 1

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sql = " ".join(statement.split())
        if self.fail_writes and sql.startswith(("INSERT", "UPDATE")):
            self.fail_writes -= 1
            raise RuntimeError("disk full")
        self.sql.append(sql)

    def reset(self) -> None:
        self.commits = 0
        self.sql.clear()

    def selects_from(self, table: str) -> int:
        return sum(1 for s in self.sql if s.startswith("SELECT") and f"FROM {table}" in s)


@pytest.fixture
def statements(db_sessions: SessionFactory) -> Iterator[Statements]:
    counter = Statements(_engine(db_sessions))
    yield counter
    event.remove(_engine(db_sessions).sync_engine, "commit", counter._on_commit)
    event.remove(_engine(db_sessions).sync_engine, "before_cursor_execute", counter._on_execute)


def requested(job_id: str) -> JobRequested:
    return JobRequested(
        job_id=job_id, task="hello", owner="root", owner_id="u", source="api", input="{}"
    )


def running(job_id: str, output: str | None = None) -> ExecutionUpdate:
    return ExecutionUpdate(job_id=job_id, state="running", start_time=NOW, output=output)


def succeeded(job_id: str) -> ExecutionUpdate:
    return ExecutionUpdate(
        job_id=job_id,
        state="succeeded",
        start_time=NOW,
        completion_time=NOW + timedelta(seconds=1),
        exit_code=0,
        output="done\n",
    )


async def jobs(sessions: SessionFactory) -> dict[str, Job]:
    async with sessions() as session:
        return {job.id: job for job in (await session.exec(select(Job))).all()}


async def test_a_batch_of_updates_is_one_transaction_with_one_read(
    db_sessions: SessionFactory, statements: Statements
) -> None:
    store = JobStore(db_sessions)
    updates = [u for n in range(50) for u in (running(f"job-{n}"), succeeded(f"job-{n}"))]
    finished = await store.record_updates(updates)
    assert statements.commits == 1
    assert statements.selects_from("jobs") == 1
    assert [f.id for f in finished if f is not None] == [f"job-{n}" for n in range(50)]
    stored = await jobs(db_sessions)
    assert len(stored) == 50
    assert {(j.status, j.exit_code, j.stdout) for j in stored.values()} == {
        ("succeeded", 0, "done\n")
    }


async def test_concurrent_callers_share_one_transaction(
    db_sessions: SessionFactory, statements: Statements
) -> None:
    store = JobStore(db_sessions)
    await store.record_requested(requested("warm-up"))  # a lone write goes at once
    assert statements.commits == 1
    statements.reset()
    # Existing rows (updated) and new ones (inserted), from the consumer and the observer.
    await asyncio.gather(
        *(store.record_requested(requested(f"job-{n}")) for n in range(50)),
        *(store.record_update(running(f"job-{n}")) for n in range(50)),
        store.record_update(succeeded("warm-up")),
    )
    assert statements.commits == 1
    assert statements.selects_from("jobs") == 1
    stored = await jobs(db_sessions)
    assert {(j.task, j.status) for j in stored.values() if j.id != "warm-up"} == {
        ("hello", "running")
    }
    assert stored["warm-up"].status == "succeeded"


async def test_a_batch_applies_its_writes_in_order_and_monotonically(
    db_sessions: SessionFactory, statements: Statements
) -> None:
    store = JobStore(db_sessions)
    late = datetime(2025, 7, 1, tzinfo=UTC)
    results = await asyncio.gather(
        # A running reported after the final one is ignored.
        store.record_update(succeeded("done-first")),
        store.record_update(running("done-first", output="partial")),
        # A request after the execution started fills in task and owner, keeps running.
        store.record_update(running("requested-late", output="so far")),
        store.record_requested(requested("requested-late")),
        # Failed before launch, then its replay ran: reopened, then final again.
        store.record_dispatch_failed(JobDispatchFailed(job_id="replayed", error="gone")),
        store.record_update(running("replayed")),
        store.record_update(succeeded("replayed")),
        store.record_update(ExecutionUpdate(job_id="replayed", state="failed", exit_code=1)),
        # A failed dispatch after the end changes nothing.
        store.record_dispatch_failed(
            JobDispatchFailed(job_id="done-first", error="late", occurred_at=late)
        ),
    )
    assert statements.commits == 1
    assert results == [
        FinishedJob(id="done-first", task="", status="succeeded", exit_code=0),
        None,
        None,
        None,
        # Each as that write left it, though the batch changed the job again later.
        FinishedJob(id="replayed", task="", status="failed", exit_code=None),
        None,
        FinishedJob(id="replayed", task="", status="succeeded", exit_code=0),
        None,
        None,
    ]
    stored = await jobs(db_sessions)
    first, late_request, replayed = (
        stored["done-first"],
        stored["requested-late"],
        stored["replayed"],
    )
    assert (first.status, first.stdout, first.error) == ("succeeded", "done\n", None)
    assert (late_request.status, late_request.task, late_request.owner) == (
        "running",
        "hello",
        "root",
    )
    assert late_request.stdout == "so far"
    assert (replayed.status, replayed.exit_code, replayed.error) == ("succeeded", 0, None)


async def test_a_failed_commit_fails_every_caller_and_a_retry_stores_them(
    db_sessions: SessionFactory, statements: Statements
) -> None:
    store = JobStore(db_sessions)
    publisher = FakePublisher()
    collector = Collector(
        store=store,
        publisher=publisher,  # type: ignore[arg-type]
        # Not used for these events.
        observer=None,  # type: ignore[arg-type]
    )
    statements.fail_writes = 1

    def writes() -> list[Awaitable[object]]:
        return [
            collector.handle(requested("a")),
            store.record_update(succeeded("a")),
            collector.handle(JobDispatchFailed(job_id="b", error="no image")),
            store.record_updates([running("c"), succeeded("c")]),
        ]

    outcomes = await asyncio.gather(*writes(), return_exceptions=True)
    # The consumer's handler raises too: its message is retried, not acked.
    assert [type(o) for o in outcomes] == [RuntimeError] * 4
    assert await jobs(db_sessions) == {}  # nothing of the batch is stored
    assert publisher.calls == []  # nor announced
    # What the consumer's retry and the observer's do: the same writes again.
    await asyncio.gather(*writes())
    assert statements.commits == 1
    ((events, _),) = publisher.calls
    assert [(e.job_id, e.status) for e in events if isinstance(e, JobFinished)] == [("b", "failed")]
    stored = await jobs(db_sessions)
    assert {job_id: (j.status, j.task) for job_id, j in stored.items()} == {
        "a": ("succeeded", "hello"),
        "b": ("failed", ""),
        "c": ("succeeded", ""),
    }


async def test_a_job_created_by_another_replica_meanwhile_is_read_again(
    db_sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = job_store._load
    raced = False

    async def load_then_race(session: Any, job_ids: set[str]) -> dict[str, Job]:
        nonlocal raced
        found = await load(session, job_ids)
        if not raced:
            raced = True
            # Another replica stores the job's request between our read and our insert.
            await JobStore(db_sessions).record_requested(requested("raced"))
        return found

    monkeypatch.setattr(job_store, "_load", load_then_race)
    store = JobStore(db_sessions)
    finished = await store.record_updates([running("raced"), succeeded("raced"), running("other")])
    # Read again: the final update saw the other replica's row (its task).
    assert finished == [
        None,
        FinishedJob(id="raced", task="hello", status="succeeded", exit_code=0),
        None,
    ]
    stored = await jobs(db_sessions)
    assert (stored["raced"].status, stored["raced"].owner) == ("succeeded", "root")
    assert stored["other"].status == "running"


async def test_deliveries_are_batched(db_sessions: SessionFactory, statements: Statements) -> None:
    store = DeliveryStore(db_sessions)
    await store.record(delivered("warm-up"))
    statements.reset()
    old = utcnow() - timedelta(hours=2)
    stored = await asyncio.gather(
        *(store.record(delivered(f"d-{n}", received_at=old, job_id=f"job-{n}")) for n in range(50)),
        store.record(delivered("d-0", received_at=old, job_id="job-0")),  # redelivered
        store.record(delivered("retry", job_id="job-1")),  # a sender's retry
        store.record(delivered("warm-up")),
    )
    assert stored == [True] * 50 + [False, True, False]
    # One insert transaction; no purge (the retention loop's, test_retention.py).
    assert statements.commits == 1
    assert not any(s.startswith("DELETE") for s in statements.sql)
    async with db_sessions() as session:
        rows = {r.id: r for r in (await session.exec(select(WebhookDelivery))).all()}
    assert len(rows) == 52
    assert (rows["retry"].outcome, rows["retry"].body) == ("duplicate", None)
    assert rows["d-1"].outcome == "accepted"


async def test_a_delivery_stored_by_another_replica_meanwhile_is_a_redelivery(
    db_sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_ids = delivery_store._stored_ids
    raced = False

    async def read_then_race(session: Any, ids: set[str]) -> set[str]:
        nonlocal raced
        found = await stored_ids(session, ids)
        if not raced:
            raced = True
            other = DeliveryStore(db_sessions)
            await other.record(delivered("raced", job_id="job-1"))
        return found

    monkeypatch.setattr(delivery_store, "_stored_ids", read_then_race)
    store = DeliveryStore(db_sessions)
    results = await asyncio.gather(
        store.record(delivered("raced", job_id="job-1")),
        store.record(delivered("mine", job_id="job-2")),
    )
    assert list(results) == [False, True]
    async with db_sessions() as session:
        rows = sorted(r.id for r in (await session.exec(select(WebhookDelivery))).all())
    assert rows == ["mine", "raced"]


async def test_a_single_group_larger_than_a_batch_is_not_split() -> None:
    batches: list[list[int]] = []

    async def commit(items: Any) -> list[int]:
        batches.append(list(items))
        return list(items)

    batcher: WriteBatcher[int, int] = WriteBatcher(commit, max_batch=3)
    results = await asyncio.gather(
        batcher.write(0), batcher.write_all([1, 2, 3, 4]), batcher.write(5), batcher.write(6)
    )
    assert list(results) == [0, [1, 2, 3, 4], 5, 6]
    # A lone write goes at once; a group goes whole; the rest fill a batch.
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]


# -- the observer's pipeline ----------------------------------------------------------


class FakeObserver:
    """Reports its updates at once, then nothing; checks each forget is durable."""

    def __init__(self, sessions: SessionFactory, updates: list[ExecutionUpdate]) -> None:
        self._sessions = sessions
        self._updates = updates
        self.forgotten: list[str] = []
        self.forgotten_before_stored: list[str] = []
        self.all_forgotten = asyncio.Event()
        self._finals = {u.job_id for u in updates if u.state != "running"}

    async def updates(self) -> AsyncIterator[ExecutionUpdate]:
        for update in self._updates:
            yield update
        await asyncio.Event().wait()

    def launched(self, job_id: str) -> None:
        return None

    async def forget(self, job_id: str) -> None:
        async with self._sessions() as session:
            job = await session.get(Job, job_id)
        if job is None or job.status == "running":
            self.forgotten_before_stored.append(job_id)
        self.forgotten.append(job_id)
        if set(self.forgotten) >= self._finals:
            self.all_forgotten.set()

    async def close(self) -> None:
        return None


class FakePublisher:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Event, ...], bool]] = []

    async def publish(self, *events: Event, mandatory: bool = True) -> None:
        self.calls.append((events, mandatory))


@contextlib.asynccontextmanager
async def observing(collector: Collector) -> AsyncIterator[None]:
    task = asyncio.create_task(collector.observe())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_observed_updates_are_stored_in_one_batch_then_announced_and_forgotten(
    db_sessions: SessionFactory, statements: Statements
) -> None:
    updates = [u for n in range(50) for u in (running(f"job-{n}"), succeeded(f"job-{n}"))]
    observer = FakeObserver(db_sessions, updates)
    publisher = FakePublisher()
    collector = Collector(
        store=JobStore(db_sessions),
        publisher=publisher,  # type: ignore[arg-type]
        observer=observer,
    )
    async with observing(collector):
        await asyncio.wait_for(observer.all_forgotten.wait(), timeout=60)
    assert statements.commits == 1
    assert observer.forgotten_before_stored == []
    assert sorted(observer.forgotten) == sorted(f"job-{n}" for n in range(50))
    ((events, mandatory),) = publisher.calls  # one message for the whole batch
    assert not mandatory
    assert all(isinstance(e, JobFinished) and e.status == "succeeded" for e in events)
    assert sorted(e.job_id for e in events if isinstance(e, JobFinished)) == sorted(
        f"job-{n}" for n in range(50)
    )


async def test_observed_updates_whose_batch_failed_are_retried_in_order(
    db_sessions: SessionFactory, statements: Statements
) -> None:
    statements.fail_writes = 1
    updates = [running("a", output="1"), running("a", output="12"), succeeded("a"), running("b")]
    observer = FakeObserver(db_sessions, updates)
    collector = Collector(
        store=JobStore(db_sessions),
        publisher=FakePublisher(),  # type: ignore[arg-type]
        observer=observer,
    )
    async with observing(collector):
        await asyncio.wait_for(observer.all_forgotten.wait(), timeout=60)
    assert statements.commits == 1
    assert observer.forgotten == ["a"]
    assert observer.forgotten_before_stored == []
    stored = await jobs(db_sessions)
    assert (stored["a"].status, stored["a"].stdout) == ("succeeded", "done\n")
    assert stored["b"].status == "running"
