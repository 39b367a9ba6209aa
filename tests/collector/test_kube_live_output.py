"""Live output of running pods (KubernetesJobObserver following pod logs), through the
real `kubernetes` client against the fake API server, which plays the kubelet."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from kriten_collector.kube_observer import KubernetesJobObserver
from kriten_collector.ports import ExecutionUpdate
from kriten_dispatcher.kube_launcher import KubernetesJobLauncher
from tests.collector.test_kube_observer import Updates, make_spec
from tests.kube_fixtures import KubeTarget, eventually, fake_only, kube

__all__ = ["kube"]

pytestmark = [pytest.mark.timeout(60), fake_only]

INIT = "===== git-clone (init container) =====\nCloning\n===== task =====\n"


@pytest_asyncio.fixture
async def launcher(kube: KubeTarget) -> AsyncIterator[KubernetesJobLauncher]:
    launcher = KubernetesJobLauncher(settings=kube.settings())
    yield launcher
    await launcher.close()


@pytest_asyncio.fixture
async def observe(kube: KubeTarget) -> AsyncIterator[Any]:
    opened: list[Updates] = []

    def start(**kwargs: Any) -> Updates:
        kwargs.setdefault("progress_interval", 0.05)
        updates = Updates(KubernetesJobObserver(settings=kube.settings(), **kwargs))
        opened.append(updates)
        return updates

    yield start
    for updates in opened:
        if not updates.task.done():
            await updates.close()


async def output_update(updates: Updates, job_id: str, expected: str) -> ExecutionUpdate:
    """The next running update of `job_id` whose output is `expected` (earlier ones may
    show less of it)."""
    while True:
        update = await updates.next_for(job_id)
        assert update.state == "running", update
        if update.output == expected:
            return update


async def test_output_appears_while_running_and_the_final_has_all(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.run_init(spec.job_id, logs="Cloning\n")
    fake.start_task(spec.job_id, logs="line 1\n")
    first = await updates.next_for(spec.job_id)
    assert (first.state, first.output) == ("running", None)
    live = await output_update(updates, spec.job_id, INIT + "line 1\n")
    assert live.start_time == first.start_time
    fake.append_logs(spec.job_id, "task", "line 2\n")
    await output_update(updates, spec.job_id, INIT + "line 1\nline 2\n")
    fake.finish_pod(spec.job_id, logs={"task": "line 1\nline 2\nline 3\n"})
    final = await updates.final_for(spec.job_id)
    assert final.state == "succeeded"
    assert final.output == INIT + "line 1\nline 2\nline 3\n"
    # The follow ended with the pod.
    await eventually(lambda: fake.log_follows_in_flight == 0)


async def test_nothing_new_is_not_reported_again(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="working\n")
    await output_update(updates, spec.job_id, "working\n")
    # Many progress intervals: the output did not grow, so nothing is said.
    assert await updates.quiet(0.5) == []


async def test_live_output_is_capped_as_the_final_is_and_the_follow_stops(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe(output_cap_bytes=64)
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="y" * 10_000)
    await updates.next_for(spec.job_id)
    live = await updates.next_for(spec.job_id)
    assert live.state == "running"
    # Nothing past the cap is kept, so there is nothing more to follow.
    await eventually(lambda: fake.log_follows_in_flight == 0)
    fake.finish_pod(spec.job_id, logs={"task": "y" * 10_000})
    final = await updates.final_for(spec.job_id)
    assert live.output == final.output
    assert final.output is not None
    assert final.output.startswith("y" * 64)
    assert "truncated" in final.output


async def test_a_dropped_stream_is_resumed_without_repeating_output(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="before\n")
    await output_update(updates, spec.job_id, "before\n")
    follows = len([r for r in fake.requests if r.query.get("follow") == "true"])
    fake.drop_log_streams()
    fake.append_logs(spec.job_id, "task", "after\n")
    await output_update(updates, spec.job_id, "before\nafter\n")
    assert len([r for r in fake.requests if r.query.get("follow") == "true"]) > follows


async def test_at_most_the_configured_number_of_pods_is_followed(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe(max_followed_pods=2)
    specs = [make_spec() for _ in range(4)]
    for spec in specs:
        await launcher.launch(spec)
        fake.start_task(spec.job_id, logs=f"{spec.job_id}\n")
    seen: dict[str, str | None] = {}

    def collect(count: int) -> bool:
        while not updates.queue.empty():
            update = updates.queue.get_nowait()
            if update.output is not None:
                seen[update.job_id] = update.output
        return len(seen) == count

    await eventually(lambda: collect(2))
    assert fake.max_concurrent_log_follows == 2
    # Two pods end: their slots go to the two waiting.
    for spec in specs:
        if spec.job_id in seen:
            fake.finish_pod(spec.job_id, logs={"task": f"{spec.job_id}\n"})
    await eventually(lambda: collect(4))
    assert fake.max_concurrent_log_follows == 2
    assert all(seen[spec.job_id] == f"{spec.job_id}\n" for spec in specs)


async def test_forget_stops_the_follow(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="x\n")
    await output_update(updates, spec.job_id, "x\n")
    assert fake.log_follows_in_flight == 1
    await updates.observer.forget(spec.job_id)
    await eventually(lambda: fake.log_follows_in_flight == 0)


async def test_no_live_output_when_turned_off(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe(max_followed_pods=0)
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="x\n")
    assert (await updates.next_for(spec.job_id)).output is None
    assert await updates.quiet(0.3) == []
    assert fake.max_concurrent_log_follows == 0


async def test_close_stops_the_follows_and_their_threads(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="x\n")
    await output_update(updates, spec.job_id, "x\n")
    await updates.close()
    assert updates.error is None
    await eventually(lambda: fake.log_follows_in_flight == 0)
    await eventually(
        lambda: not any(t.name.startswith("kriten-kube-log") for t in threading.enumerate())
    )
