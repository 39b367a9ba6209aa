"""The dispatcher's Prometheus metrics: launches by executor and outcome, and how long a
launch takes. `MeteredLauncher` wraps the configured `JobLauncher`, so the dispatcher's
handler and the executors know nothing of metrics."""

from __future__ import annotations

import time
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

from kriten_common.outcomes import PermanentError, RetryableError
from kriten_common.transient import is_transient
from kriten_dispatcher.ports import JobLauncher, JobSpec

LaunchOutcome = Literal["launched", "retry", "failed", "error"]
LAUNCH_OUTCOMES: tuple[LaunchOutcome, ...] = ("launched", "retry", "failed", "error")
# A Kubernetes Job is created in tens of milliseconds; a local job clones (or fetches) its
# runner's repository first, which takes seconds.
LAUNCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.launches = Counter(
            "kriten_dispatcher_launches_total",
            "Launch attempts by executor and outcome: launched (running, or found already"
            " launched), retry (a transient failure: tried again later), failed (can never"
            " run: the request is dead-lettered), error (anything else: a bug, retried)",
            ("executor", "outcome"),
            registry=registry,
        )
        self.launch_seconds = Histogram(
            "kriten_dispatcher_launch_seconds",
            "Time a successful launch took (for a local job, including its checkout)",
            ("executor",),
            registry=registry,
            buckets=LAUNCH_BUCKETS,
        )


class MeteredLauncher:
    """A `JobLauncher` that counts and times the launches of the one it wraps."""

    def __init__(self, launcher: JobLauncher, metrics: DispatcherMetrics, *, executor: str) -> None:
        self._launcher = launcher
        self._outcomes = {o: metrics.launches.labels(executor, o) for o in LAUNCH_OUTCOMES}
        self._seconds = metrics.launch_seconds.labels(executor)

    async def start(self) -> None:
        await self._launcher.start()

    async def launch(self, spec: JobSpec) -> None:
        started = time.perf_counter()
        try:
            await self._launcher.launch(spec)
        except PermanentError:
            self._outcomes["failed"].inc()
            raise
        except Exception as problem:
            self._outcomes["retry" if _retried(problem) else "error"].inc()
            raise
        self._seconds.observe(time.perf_counter() - started)
        self._outcomes["launched"].inc()

    async def cancel(self, job_id: str) -> bool:
        return await self._launcher.cancel(job_id)

    async def close(self) -> None:
        await self._launcher.close()


def _retried(problem: Exception) -> bool:
    return isinstance(problem, RetryableError) or is_transient(problem)
