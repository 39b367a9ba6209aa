"""The collector's job metrics: transitions and durations as the store commits them, a
bounded `task` label, and the store's batch sizes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from kriten_collector.job_store import JobStore
from kriten_collector.metrics import MAX_TASK_LABELS, OTHER_TASK, CollectorMetrics, transition
from kriten_collector.ports import ExecutionUpdate
from kriten_common.db.engine import SessionFactory
from kriten_common.messages import JobDispatchFailed, JobRequested


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def requested(job_id: str, task: str = "backup") -> JobRequested:
    return JobRequested(
        job_id=job_id, task=task, owner="root", owner_id="u", source="api", input=""
    )


def test_the_task_label_is_capped() -> None:
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry)
    metrics.transitioned(
        [
            transition(
                "running", "succeeded", task=f"task-{n}", start_time=_t(0), completion_time=_t(1)
            )
            for n in range(MAX_TASK_LABELS + 5)
        ]
    )
    name = "kriten_collector_job_duration_seconds_count"
    assert sample(registry, name, task="task-0", status="succeeded") == 1
    assert sample(registry, name, task=f"task-{MAX_TASK_LABELS - 1}", status="succeeded") == 1
    assert sample(registry, name, task=f"task-{MAX_TASK_LABELS}", status="succeeded") == 0
    assert sample(registry, name, task=OTHER_TASK, status="succeeded") == 5
    # A task seen before the cap keeps its own label.
    metrics.transitioned(
        [transition("running", "failed", task="task-3", start_time=_t(0), completion_time=_t(2))]
    )
    assert sample(registry, name, task="task-3", status="failed") == 1


def test_only_an_ended_started_job_has_a_duration() -> None:
    assert (
        transition("queued", "running", task="t", start_time=_t(0), completion_time=None)[3] is None
    )
    assert (
        transition("queued", "failed", task="t", start_time=None, completion_time=_t(1))[3] is None
    )
    naive = datetime(2026, 1, 1, 0, 0, 0)  # an executor's time without a zone is UTC
    seconds = transition("running", "succeeded", task="t", start_time=naive, completion_time=_t(4))
    assert seconds[3] == 4.0


def _t(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


@pytest.mark.integration
async def test_the_store_counts_what_it_committed(db_sessions: SessionFactory) -> None:
    registry = CollectorRegistry()
    store = JobStore(db_sessions, metrics=CollectorMetrics(registry))
    await store.record_requested(requested("backup-1"))
    await store.record_requested(requested("backup-1"))  # a redelivery changes nothing
    await store.record_updates(
        [
            ExecutionUpdate(job_id="backup-1", state="running", start_time=_t(0)),
            ExecutionUpdate(
                job_id="backup-1",
                state="succeeded",
                start_time=_t(0),
                completion_time=_t(42),
                exit_code=0,
                output="done",
            ),
        ]
    )
    await store.record_requested(requested("backup-2"))
    await store.record_dispatch_failed(JobDispatchFailed(job_id="backup-2", error="no image"))

    def moved(before: str, after: str) -> float:
        name = "kriten_collector_job_transitions_total"
        return sample(registry, name, **{"from": before, "to": after})

    assert moved("new", "queued") == 2
    assert moved("queued", "running") == 1
    assert moved("running", "succeeded") == 1
    assert moved("queued", "failed") == 1
    duration = "kriten_collector_job_duration_seconds"
    assert sample(registry, duration + "_count", task="backup", status="succeeded") == 1
    assert sample(registry, duration + "_sum", task="backup", status="succeeded") == 42
    # Failed before launch: never ran, so no duration.
    assert sample(registry, duration + "_count", task="backup", status="failed") == 0
    batches = "kriten_collector_store_batch_writes"
    # Five writes were committed (the redelivery's batch too), the two updates as one.
    assert sample(registry, batches + "_count", store="jobs") == 5
    assert sample(registry, batches + "_sum", store="jobs") == 6


@pytest.mark.integration
async def test_a_job_first_seen_running_starts_from_new(db_sessions: SessionFactory) -> None:
    registry = CollectorRegistry()
    store = JobStore(db_sessions, metrics=CollectorMetrics(registry))
    await store.record_update(ExecutionUpdate(job_id="early-1", state="running", start_time=_t(0)))
    await store.record_requested(requested("early-1"))
    name = "kriten_collector_job_transitions_total"
    assert sample(registry, name, **{"from": "new", "to": "running"}) == 1
    assert sample(registry, name, **{"from": "new", "to": "queued"}) == 0
