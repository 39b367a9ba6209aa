"""`MeteredLauncher` counts each launch attempt under its outcome (the integration test in
test_service_metrics.py covers only `launched`) and passes the failure on unchanged."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from kriten_common.outcomes import PermanentError, RetryableError
from kriten_dispatcher.metrics import DispatcherMetrics, MeteredLauncher
from kriten_dispatcher.ports import JobSpec

SPEC = JobSpec(
    job_id="hello-1",
    task="hello",
    owner="root",
    command="true",
    image="",
    git_url="https://example.invalid/repo.git",
    branch="main",
    extra_vars="",
)


class FailingLauncher:
    def __init__(self, problem: Exception | None) -> None:
        self.problem = problem

    async def start(self) -> None:
        return None

    async def launch(self, spec: JobSpec) -> None:
        if self.problem is not None:
            raise self.problem

    async def cancel(self, job_id: str) -> bool:
        return False

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("problem", "outcome"),
    [
        (None, "launched"),
        (PermanentError("runner gone"), "failed"),
        (RetryableError("not yet"), "retry"),
        (ValueError("a bug"), "error"),
    ],
)
async def test_each_outcome_is_counted(problem: Exception | None, outcome: str) -> None:
    registry = CollectorRegistry()
    launcher = MeteredLauncher(
        FailingLauncher(problem), DispatcherMetrics(registry), executor="local"
    )
    if problem is None:
        await launcher.launch(SPEC)
    else:
        with pytest.raises(type(problem)):
            await launcher.launch(SPEC)
    counts = {
        other: registry.get_sample_value(
            "kriten_dispatcher_launches_total", {"executor": "local", "outcome": other}
        )
        for other in ("launched", "retry", "failed", "error")
    }
    assert counts == {other: 1.0 if other == outcome else 0.0 for other in counts}
    timed = registry.get_sample_value(
        "kriten_dispatcher_launch_seconds_count", {"executor": "local"}
    )
    assert timed == (1.0 if outcome == "launched" else 0.0)
