"""KubernetesJobObserver through the real `kubernetes` client against the fake API server,
which plays the kubelet (`fake_only` tests), or a real cluster (KRITEN_TEST_KUBECONFIG)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import jsonschema
import pytest
import pytest_asyncio

from kriten_collector.kube_observer import NO_POD_ERROR, KubernetesJobObserver
from kriten_collector.kube_pod_status import POD_DELETED_ERROR
from kriten_collector.ports import ExecutionUpdate, JobObserver
from kriten_common.kube import ANNOTATION_CANCEL_REQUESTED, job_name
from kriten_dispatcher.kube_launcher import KubernetesJobLauncher
from kriten_dispatcher.ports import JobSpec
from tests.fake_kube import SCHEMA_DIR, FakeKube, selector_matches
from tests.kube_fixtures import KubeTarget, eventually, fake_only, kube, new_job_id

__all__ = ["kube"]

pytestmark = pytest.mark.timeout(60)

STEP = 10.0  # seconds any single expected update may take


class Updates:
    """Consumes an observer's updates on a task of its own, so a test can wait for the
    next one with a timeout, or check that none comes, without cancelling the stream."""

    def __init__(self, observer: KubernetesJobObserver) -> None:
        self.observer = observer
        self.queue: asyncio.Queue[ExecutionUpdate] = asyncio.Queue()
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for update in self.observer.updates():
                await self.queue.put(update)
        except BaseException as error:
            self.error = error
            raise

    async def next(self, timeout: float = STEP) -> ExecutionUpdate:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no update within {timeout} s (error: {self.error!r})") from None

    async def next_for(self, job_id: str, timeout: float = STEP) -> ExecutionUpdate:
        """The next update of `job_id`, skipping other jobs' (a real cluster has others)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            update = await self.next(max(remaining, 0.01))
            if update.job_id == job_id:
                return update

    async def final_for(self, job_id: str, timeout: float = STEP) -> ExecutionUpdate:
        while True:
            update = await self.next_for(job_id, timeout)
            if update.state != "running":
                return update

    async def quiet(self, seconds: float = 1.0) -> list[ExecutionUpdate]:
        """Whatever arrives within `seconds` (expected: nothing)."""
        await asyncio.sleep(seconds)
        seen = []
        while not self.queue.empty():
            seen.append(self.queue.get_nowait())
        return seen

    async def close(self) -> None:
        await asyncio.wait_for(self.observer.close(), STEP)
        # close() ends the stream: the consumer finishes by itself, no cancel needed.
        await asyncio.wait_for(self.task, STEP)


def make_spec(**overrides: Any) -> JobSpec:
    values: dict[str, Any] = {
        "job_id": new_job_id("obs"),
        "task": "hello-kriten",
        "owner": "alice",
        "command": "echo hello",
        "image": "busybox:1.36",
        "git_url": os.environ.get(
            "KRITEN_TEST_GIT_URL", "https://github.com/kriten-io/kriten-examples.git"
        ),
        "branch": os.environ.get("KRITEN_TEST_GIT_BRANCH", "main"),
        "extra_vars": "{}",
        "timeout_seconds": 120,
    }
    values.update(overrides)
    return JobSpec(**values)


@pytest_asyncio.fixture
async def launcher(kube: KubeTarget) -> AsyncIterator[KubernetesJobLauncher]:
    launcher = KubernetesJobLauncher(settings=kube.settings())
    launched: list[str] = []
    real_launch = launcher.launch

    async def launch(spec: JobSpec) -> None:
        launched.append(spec.job_id)
        await real_launch(spec)

    launcher.launch = launch  # type: ignore[method-assign]
    try:
        yield launcher
    finally:
        if kube.fake is None:
            for job_id in launched:
                with contextlib.suppress(Exception):
                    await launcher.cancel(job_id)
        await launcher.close()


@pytest_asyncio.fixture
async def observe(kube: KubeTarget) -> AsyncIterator[Any]:
    """`observe(**settings)` starts an observer and its consumer; all closed at the end."""
    opened: list[Updates] = []

    def start(output_cap_bytes: int = 1_048_576, **overrides: Any) -> Updates:
        observer = KubernetesJobObserver(
            settings=kube.settings(**overrides), output_cap_bytes=output_cap_bytes
        )
        updates = Updates(observer)
        opened.append(updates)
        return updates

    yield start
    for updates in opened:
        if not updates.task.done():
            await updates.close()


def test_it_is_a_job_observer() -> None:
    def accepts(observer: JobObserver) -> None: ...

    accepts(KubernetesJobObserver.__new__(KubernetesJobObserver))


# -- the happy paths ---------------------------------------------------------------------


@fake_only
async def test_running_then_succeeded_with_init_logs_first(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.run_init(spec.job_id, logs="Cloning into '/mnt/repo'...\n")
    fake.start_task(spec.job_id)
    running = await updates.next()
    assert running.job_id == spec.job_id
    assert running.state == "running"
    assert running.start_time is not None
    fake.finish_pod(spec.job_id, exit_code=0, logs={"task": 'hello\n^JSON\n{"a": 1}\n^JSON\n'})
    # (Live output of the running pod may come first.)
    final = await updates.final_for(spec.job_id)
    assert final.job_id == spec.job_id
    assert final.state == "succeeded"
    assert final.exit_code == 0
    assert final.error is None
    assert final.start_time is not None
    assert final.completion_time is not None
    assert final.completion_time >= final.start_time
    assert final.output == (
        "===== git-clone (init container) =====\n"
        "Cloning into '/mnt/repo'...\n"
        "===== task =====\n"
        'hello\n^JSON\n{"a": 1}\n^JSON\n'
    )
    assert await updates.quiet(0.5) == []


@fake_only
async def test_running_is_reported_once(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert (await updates.next()).state == "running"
    # Further changes to the running pod (status churn) report nothing new.

    def churn(pod: dict[str, Any]) -> None:
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]

    for _ in range(3):
        fake.update_pod(spec.job_id, churn)
    assert await updates.quiet(0.5) == []


@fake_only
async def test_quiet_clone_leaves_just_the_task_output(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.finish_pod(spec.job_id, logs={"task": "just this\n"})
    final = await updates.final_for(spec.job_id)
    assert final.output == "just this\n"


# -- failures ----------------------------------------------------------------------------


@fake_only
async def test_failed_with_exit_code(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.finish_pod(spec.job_id, exit_code=3, logs={"task": "boom\n"})
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.exit_code == 3
    assert final.error == "task exited with code 3"
    assert final.output == "boom\n"


@fake_only
async def test_oom_killed(kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.finish_pod(spec.job_id, exit_code=137, reason="OOMKilled", logs={"task": "allocating\n"})
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.exit_code == 137
    assert final.error is not None
    assert final.error.startswith("OOMKilled")
    assert final.output == "allocating\n"


@fake_only
async def test_clone_failure(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec(branch="no-such-branch")
    await launcher.launch(spec)
    fake.run_init(
        spec.job_id,
        exit_code=128,
        logs="Cloning into '/mnt/repo'...\nfatal: Remote branch no-such-branch not found\n",
    )
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.exit_code is None
    assert final.error is not None
    assert final.error.startswith("git clone failed (git-clone exited with code 128)")
    assert "Remote branch no-such-branch not found" in final.error
    assert final.output is not None
    assert final.output.startswith("===== git-clone (init container) =====\nCloning")


@fake_only
async def test_image_that_cannot_exist_fails_at_once(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec(image="Not A Valid Image")
    await launcher.launch(spec)
    fake.image_pull_error(spec.job_id, reason="InvalidImageName")
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.error is not None
    assert "InvalidImageName" in final.error
    assert "Not A Valid Image" in final.error


@fake_only
async def test_image_pull_backoff_fails_after_the_grace_period(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe(image_pull_grace_seconds=60)
    spec = make_spec(image="registry.example/missing:1")
    await launcher.launch(spec)
    fake.image_pull_error(spec.job_id, reason="ErrImagePull")
    assert await updates.quiet(0.5) == []
    # The kubelet keeps retrying; a minute and more later it is still backing off.
    fake.image_pull_error(spec.job_id, reason="ImagePullBackOff", age_seconds=90)
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.error is not None
    assert "image pull failed for task (registry.example/missing:1): ImagePullBackOff" in (
        final.error
    )


@fake_only
async def test_deadline_exceeded(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec(timeout_seconds=1)
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="working...\n")
    assert (await updates.next_for(spec.job_id)).state == "running"
    fake.deadline_exceeded(spec.job_id)
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.exit_code == 137
    assert final.error is not None
    assert final.error.startswith("deadline exceeded")
    assert final.output == "working...\n"


@fake_only
async def test_output_is_capped(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe(output_cap_bytes=64)
    spec = make_spec()
    await launcher.launch(spec)
    fake.finish_pod(spec.job_id, logs={"task": "y" * 10_000})
    final = await updates.final_for(spec.job_id)
    assert final.output is not None
    assert final.output.startswith("y" * 64)
    assert "y" * 65 not in final.output
    assert "truncated" in final.output
    log_reads = [r for r in fake.requests if r.path.endswith("/log")]
    assert all(r.query.get("limitBytes") == "65" for r in log_reads)


# -- cancellation ------------------------------------------------------------------------


@fake_only
async def test_cancelled_job_is_reported_cancelled(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    # The stopped pod stays a moment, as a gracefully deleted pod does: logs are readable.
    fake.graceful_deletion_seconds = 0.5
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="started\n")
    assert (await updates.next_for(spec.job_id)).state == "running"
    assert await launcher.cancel(spec.job_id)
    final = await updates.final_for(spec.job_id)
    assert final.state == "cancelled"
    assert final.exit_code == 143
    assert final.output == "started\n"
    # Its removal a moment later says nothing new.
    assert await updates.quiet(1.0) == []


@fake_only
async def test_cancelled_job_whose_pod_went_at_once_has_no_output(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="started\n")
    assert (await updates.next_for(spec.job_id)).state == "running"
    assert await launcher.cancel(spec.job_id)
    final = await updates.final_for(spec.job_id)
    assert final.state == "cancelled"
    assert final.output is None
    assert await updates.quiet(0.5) == []


@fake_only
async def test_pod_deleted_while_running_is_failed(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    """Deleted by anyone but Kriten's cancel (kubectl, a lost node): nobody asked for the
    job to stop, so it failed, and says why."""
    fake = kube.require_fake
    fake.graceful_deletion_seconds = 0.5
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id, logs="started\n")
    assert (await updates.next_for(spec.job_id)).state == "running"
    fake.delete_job(spec.job_id)
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.error == POD_DELETED_ERROR
    assert final.exit_code == 143
    assert final.output == "started\n"
    assert await updates.quiet(1.0) == []


@fake_only
async def test_pod_vanishing_while_unwatched_is_failed(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert (await updates.next_for(spec.job_id)).state == "running"
    fake.set_unavailable()
    fake.delete_job(spec.job_id, graceful=False)
    fake.compact()
    await asyncio.sleep(0.2)
    fake.set_unavailable(False)
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.error == POD_DELETED_ERROR
    assert final.output is None


@fake_only
async def test_cancelled_pod_vanishing_while_unwatched_is_cancelled(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    """The cancel's mark was seen before the watch went down: the pod's removal, seen
    only by the relist, is still a cancel."""
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert (await updates.next_for(spec.job_id)).state == "running"

    def mark(pod: dict[str, Any]) -> None:
        pod["metadata"]["annotations"][ANNOTATION_CANCEL_REQUESTED] = "true"

    fake.update_pod(spec.job_id, mark)
    await eventually(lambda: spec.job_id in updates.observer._cancelling)  # the watch saw it
    fake.set_unavailable()
    fake.delete_job(spec.job_id, graceful=False)
    fake.compact()
    await asyncio.sleep(0.2)
    fake.set_unavailable(False)
    final = await updates.final_for(spec.job_id)
    assert final.state == "cancelled"
    assert final.output is None


@fake_only
async def test_missing_names_jobs_without_a_pod(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert (await updates.next_for(spec.job_id)).state == "running"
    observer = updates.observer
    never = new_job_id("never")
    assert await observer.missing([spec.job_id, never]) == {never: NO_POD_ERROR}
    # A pod the observer has not seen (another replica's, or before its first list)
    # is looked up.
    fresh = KubernetesJobObserver(settings=kube.settings())
    try:
        assert await fresh.missing([spec.job_id]) == {}
    finally:
        await fresh.close()


# -- keeping up: 410, outages, disconnects, restarts --------------------------------------


def list_requests(fake: FakeKube) -> int:
    return sum(
        1
        for r in fake.requests
        if r.method == "GET" and r.path.endswith("/pods") and r.query.get("watch") != "true"
    )


@fake_only
async def test_watch_expiry_relists_without_missing_a_pod(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    first, second = make_spec(), make_spec()
    await launcher.launch(first)
    await launcher.launch(second)
    fake.start_task(first.job_id)
    assert (await updates.next_for(first.job_id)).state == "running"
    lists_before = list_requests(fake)
    # While the watch is down, history is compacted past it and both pods finish.
    fake.drop_watches()
    fake.finish_pod(first.job_id, logs={"task": "one\n"})
    fake.finish_pod(second.job_id, exit_code=1, logs={"task": "two\n"})
    fake.compact()
    seen: dict[str, list[str]] = {}
    for _ in range(3):
        update = await updates.next()
        seen.setdefault(update.job_id, []).append(update.state)
        if {first.job_id, second.job_id} <= seen.keys() and seen[second.job_id][-1] == "failed":
            break
    assert seen[first.job_id] == ["succeeded"]
    assert seen[second.job_id][-1] == "failed"
    assert list_requests(fake) > lists_before, "expected a relist after 410"
    assert await updates.quiet(0.5) == []


@fake_only
async def test_410_as_an_http_status_also_relists(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert (await updates.next_for(spec.job_id)).state == "running"
    fake.fail("GET", r"/pods$", 410, reason="Expired", message="too old resource version")
    fake.drop_watches()
    fake.finish_pod(spec.job_id)
    assert (await updates.final_for(spec.job_id)).state == "succeeded"


@fake_only
async def test_disconnect_resumes_from_where_it_was(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert (await updates.next_for(spec.job_id)).state == "running"
    lists_before = list_requests(fake)
    watches_before = fake.watch_requests
    fake.drop_watches()
    fake.finish_pod(spec.job_id, logs={"task": "done\n"})
    final = await updates.final_for(spec.job_id)
    assert final.state == "succeeded"
    assert final.output == "done\n"
    assert fake.watch_requests > watches_before
    assert list_requests(fake) == lists_before, "a resumable watch must not relist"


@fake_only
async def test_bookmarks_keep_an_idle_watch_resumable(kube: KubeTarget, observe: Any) -> None:
    fake = kube.require_fake
    updates = observe()
    await eventually(lambda: fake.watch_requests >= 1)
    # Other objects move the version on; this watch sees none of them but bookmarks.
    fake.other_activity(5)
    await asyncio.sleep(fake.bookmark_interval * 3)
    lists_before = list_requests(fake)
    fake.compact()
    fake.drop_watches()
    await eventually(lambda: fake.watch_requests >= 2)
    await asyncio.sleep(0.3)
    assert list_requests(fake) == lists_before, "the bookmark's version should still be valid"
    assert await updates.quiet(0.1) == []


@fake_only
async def test_server_side_watch_timeouts_are_resumed(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe(watch_timeout_seconds=1)
    spec = make_spec()
    await launcher.launch(spec)
    await eventually(lambda: fake.watch_requests >= 3, timeout=10)
    fake.finish_pod(spec.job_id)
    assert (await updates.final_for(spec.job_id)).state == "succeeded"


@fake_only
async def test_api_unavailable_for_a_while_then_resumes(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert (await updates.next_for(spec.job_id)).state == "running"
    fake.set_unavailable()
    failures_before = len(fake.requests)
    fake.finish_pod(spec.job_id, exit_code=2, logs={"task": "finished in the dark\n"})
    await asyncio.sleep(1.0)
    # It kept trying, with backoff: several attempts, but not a tight loop.
    attempts = len(fake.requests) - failures_before
    assert 2 <= attempts <= 40
    assert updates.error is None
    fake.set_unavailable(False)
    final = await updates.final_for(spec.job_id)
    assert final.state == "failed"
    assert final.exit_code == 2
    assert final.output == "finished in the dark\n"


@fake_only
async def test_unavailable_at_start(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    spec = make_spec()
    await launcher.launch(spec)
    fake.finish_pod(spec.job_id)
    fake.set_unavailable()
    updates = observe()
    assert await updates.quiet(0.5) == []
    fake.set_unavailable(False)
    assert (await updates.final_for(spec.job_id)).state == "succeeded"


@fake_only
async def test_log_read_failure_is_retried_not_stored_without_output(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    updates = observe()
    spec = make_spec()
    await launcher.launch(spec)
    fake.fail("GET", r"/log$", 503, reason="ServiceUnavailable", times=2)
    fake.finish_pod(spec.job_id, logs={"task": "kept\n"})
    final = await updates.final_for(spec.job_id)
    assert final.output == "kept\n"
    assert await updates.quiet(0.5) == []


@fake_only
async def test_restart_reconciles_and_forgotten_jobs_are_not_reported_again(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    a, b, c = make_spec(), make_spec(), make_spec()
    for spec in (a, b, c):
        await launcher.launch(spec)

    first = observe()
    fake.finish_pod(a.job_id, logs={"task": "a\n"})
    fake.start_task(b.job_id)
    got = {}
    for _ in range(2):
        update = await first.next()
        got[update.job_id] = update
    assert got[a.job_id].state == "succeeded"
    assert got[b.job_id].state == "running"
    await first.observer.forget(a.job_id)
    await first.close()

    # Nobody watches while b and c finish.
    fake.finish_pod(b.job_id, exit_code=1, logs={"task": "b\n"})
    fake.finish_pod(c.job_id, logs={"task": "c\n"})

    second = observe()
    reconciled = {}
    for _ in range(2):
        update = await second.next()
        reconciled[update.job_id] = update
    assert set(reconciled) == {b.job_id, c.job_id}
    assert reconciled[b.job_id].state == "failed"
    assert reconciled[b.job_id].output == "b\n"
    assert reconciled[c.job_id].state == "succeeded"
    assert await second.quiet(0.5) == []
    await second.observer.forget(b.job_id)
    # c's result is never confirmed stored (the collector died before): it comes again.
    await second.close()

    third = observe()
    again = await third.next()
    assert again.job_id == c.job_id
    assert again.state == "succeeded"
    assert await third.quiet(0.5) == []
    await third.observer.forget(c.job_id)
    await third.close()

    fourth = observe()
    assert await fourth.quiet(0.8) == []
    for spec in (a, b, c):
        labels = fake.pod(spec.job_id)["metadata"]["labels"]
        assert labels["kriten.io/collected"] == "true"


@fake_only
async def test_forget_of_a_job_this_observer_never_saw(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    spec = make_spec(job_id="Odd Job ID/1")
    await launcher.launch(spec)
    fake.finish_pod(job_name(spec.job_id))
    updates = observe()
    final = await updates.final_for(spec.job_id)
    assert final.job_id == "Odd Job ID/1"
    await updates.close()
    other = KubernetesJobObserver(settings=kube.settings())
    try:
        await other.forget(spec.job_id)
        await other.forget("no-such-job")
    finally:
        await other.close()
    pod = fake.pod(job_name(spec.job_id))
    assert pod["metadata"]["labels"]["kriten.io/collected"] == "true"


@fake_only
async def test_many_pods_listed_in_pages_with_bounded_state(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    fake = kube.require_fake
    specs = [make_spec() for _ in range(120)]
    for spec in specs:
        await launcher.launch(spec)
    for spec in specs[:100]:
        fake.finish_pod(spec.job_id, logs={"task": f"{spec.job_id}\n"})
    for spec in specs[100:110]:
        fake.start_task(spec.job_id)
    updates = observe(list_page_size=25)
    seen: dict[str, ExecutionUpdate] = {}
    for _ in range(110):
        update = await updates.next()
        seen[update.job_id] = update
    assert sum(1 for u in seen.values() if u.state == "succeeded") == 100
    assert sum(1 for u in seen.values() if u.state == "running") == 10
    assert all(u.output == f"{u.job_id}\n" for u in seen.values() if u.state == "succeeded")
    pages = [r for r in fake.requests if r.path.endswith("/pods") and "limit" in r.query]
    assert len(pages) >= 120 // 25
    observer = updates.observer
    # Only small per-job state for what is not final; finals until forgotten.
    assert len(observer._active) == 20
    assert len(observer._running) == 10
    assert len(observer._reported) == 100
    for job_id in list(observer._reported):
        await observer.forget(job_id)
    assert not observer._reported


# -- closing -----------------------------------------------------------------------------


@fake_only
async def test_close_stops_the_stream_and_its_thread(kube: KubeTarget) -> None:
    fake = kube.require_fake
    observer = KubernetesJobObserver(settings=kube.settings())
    updates = Updates(observer)
    await eventually(lambda: fake.watch_requests >= 1)
    await eventually(
        lambda: any(t.name.startswith("kriten-kube-watch") for t in threading.enumerate())
    )
    await updates.close()
    assert updates.error is None
    assert updates.task.done()
    await eventually(
        lambda: not any(t.name.startswith("kriten-kube-watch") for t in threading.enumerate()),
        timeout=5,
    )


async def test_close_during_an_outage_does_not_hang(kube: KubeTarget) -> None:
    if kube.fake is not None:
        kube.fake.set_unavailable()
    observer = KubernetesJobObserver(settings=kube.settings(backoff_max_seconds=30))
    updates = Updates(observer)
    await asyncio.sleep(0.3)
    await updates.close()


# -- the fake server itself ---------------------------------------------------------------


def test_selector_grammar() -> None:
    labels = {"app": "kriten", "tier": "job"}
    assert selector_matches("app=kriten", labels)
    assert selector_matches("app==kriten,tier", labels)
    assert not selector_matches("app!=kriten", labels)
    assert selector_matches("!missing,app in (x, kriten)", labels)
    assert not selector_matches("tier notin (job)", labels)
    assert selector_matches(None, labels)


@fake_only
async def test_fake_pods_are_valid_pods(kube: KubeTarget, launcher: KubernetesJobLauncher) -> None:
    fake = kube.require_fake
    validator = jsonschema.Draft202012Validator(
        json.loads((SCHEMA_DIR / "pod-v1.json").read_text())
    )
    spec = make_spec()
    await launcher.launch(spec)
    steps: list[Callable[[], None]] = [
        lambda: None,
        lambda: fake.run_init(spec.job_id, logs="x"),
        lambda: fake.start_task(spec.job_id),
        lambda: fake.finish_pod(spec.job_id, exit_code=1),
    ]
    for step in steps:
        step()
        errors = [e.message for e in validator.iter_errors(fake.pod(spec.job_id))]
        assert errors == []


# -- end to end, on a real cluster too -----------------------------------------------------


@pytest.mark.timeout(300)
async def test_a_job_end_to_end(
    kube: KubeTarget, launcher: KubernetesJobLauncher, observe: Any
) -> None:
    """Launch, observe, forget. On a real cluster this runs a real pod (busybox, and a
    clone of KRITEN_TEST_GIT_URL), so it waits longer."""
    updates = observe()
    spec = make_spec(command='echo "hello $EXTRA_VARS"', extra_vars='{"who": "$world"}')
    await launcher.launch(spec)
    if kube.fake is not None:
        kube.fake.finish_pod(spec.job_id, logs={"task": 'hello {"who": "$world"}\n'})
    final = await updates.final_for(spec.job_id, timeout=STEP if kube.fake else 240)
    assert final.state == "succeeded", final
    assert final.exit_code == 0
    assert final.output is not None
    assert final.output.endswith('hello {"who": "$world"}\n')
    await updates.observer.forget(spec.job_id)
