"""The collector's Prometheus metrics: job state transitions, job durations by task and
status, and the sizes of the store's batches (writes per transaction).

Task names are made by users, so the `task` label is bounded: the first
`MAX_TASK_LABELS` distinct tasks this process sees keep their name, any later one is
counted as `OTHER_TASK`. A restart may pick another first set; the totals by status stay
right whatever the labels. Every other label has a fixed set of values.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

from kriten_common.db.models import FINAL_JOB_STATUSES

MAX_TASK_LABELS = 100
OTHER_TASK = "_other"
# The status a transition starts from when the job had no row yet.
NEW = "new"
# From a failed checkout (a second) to a long playbook (hours).
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
# A callback's call: from a local receiver (milliseconds) to its timeout (10 s).
CALLBACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A job state change the store committed: from, to, task, and for a job that ended
# after it started, how long it ran.
Transition = tuple[str, str, str, float | None]


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._transitions = Counter(
            "kriten_collector_job_transitions_total",
            "Job state changes the collector stored, from one status to another (from=new:"
            " the job's first record)",
            ("from", "to"),
            registry=registry,
        )
        self._durations = Histogram(
            "kriten_collector_job_duration_seconds",
            "How long jobs ran, from start to completion, by task (the first"
            f" {MAX_TASK_LABELS} tasks seen; later ones as {OTHER_TASK}) and final status",
            ("task", "status"),
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self._batch_writes = Histogram(
            "kriten_collector_store_batch_writes",
            "Writes per batch (one database transaction: group commit), by store: jobs or"
            " deliveries",
            ("store",),
            registry=registry,
            buckets=BATCH_BUCKETS,
        )
        self._callbacks = Counter(
            "kriten_collector_callbacks_total",
            "Calls to tasks' completion callbacks, by outcome: delivered (2xx), failed (to be"
            " retried), refused (a non-public address), abandoned (no retry follows)",
            ("outcome",),
            registry=registry,
        )
        self._callback_seconds = Histogram(
            "kriten_collector_callback_seconds",
            "How long each call to a completion callback took, failed ones included",
            registry=registry,
            buckets=CALLBACK_BUCKETS,
        )
        self._transition_children: dict[tuple[str, str], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._tasks: set[str] = set()

    def callback_called(self, outcome: str, seconds: float) -> None:
        self._callbacks.labels(outcome).inc()
        self._callback_seconds.observe(seconds)

    def batch_sizes(self, store: str) -> Histogram:
        """The batch-size histogram of `store`, to `observe` each committed batch's size."""
        return self._batch_writes.labels(store)

    def transitioned(self, transitions: list[Transition]) -> None:
        for before, after, task, seconds in transitions:
            key = (before, after)
            counter = self._transition_children.get(key)
            if counter is None:
                counter = self._transition_children[key] = self._transitions.labels(*key)
            counter.inc()
            if seconds is not None:
                self._duration(self._task_label(task), after).observe(seconds)

    def _duration(self, task: str, status: str) -> Histogram:
        key = (task, status)
        found = self._duration_children.get(key)
        if found is None:
            found = self._duration_children[key] = self._durations.labels(task, status)
        return found

    def _task_label(self, task: str) -> str:
        if task in self._tasks:
            return task
        if len(self._tasks) < MAX_TASK_LABELS:
            self._tasks.add(task)
            return task
        return OTHER_TASK


def transition(
    before: str,
    after: str,
    *,
    task: str,
    start_time: datetime | None,
    completion_time: datetime | None,
) -> Transition:
    """The transition `before` → `after`; with the run time when it ended a started job."""
    seconds = None
    if after in FINAL_JOB_STATUSES and start_time is not None and completion_time is not None:
        seconds = max(0.0, (_aware(completion_time) - _aware(start_time)).total_seconds())
    return (before, after, task, seconds)


def _aware(moment: datetime) -> datetime:
    # Stored times are aware; an executor's may not be (then it is UTC, as everywhere).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
