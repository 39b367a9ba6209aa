"""LocalJobObserver against job directories written by hand through the shared contract
(`kriten_common.local_jobs`), so every state, including odd ones, is exact."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kriten_collector.local_observer import LocalJobObserver, read_output
from kriten_collector.ports import ExecutionUpdate
from kriten_common.local_jobs import (
    JobPaths,
    JobResult,
    JobStatus,
    try_lock,
    write_record,
)

START = datetime(2025, 6, 30, 21, 11, 56, tzinfo=UTC)
END = START + timedelta(seconds=3)


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "jobs"
    path.mkdir()
    return path


@pytest.fixture
def held_locks() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def job(jobs_dir: Path, job_id: str) -> JobPaths:
    paths = JobPaths.of(jobs_dir, job_id)
    paths.root.mkdir(mode=0o700)
    return paths


def start(paths: JobPaths, held_locks: list[int] | None) -> None:
    """The supervisor took charge; it is alive while this test holds its lock."""
    if held_locks is not None:
        fd = try_lock(paths.supervisor_lock)
        assert fd is not None
        held_locks.append(fd)
    write_record(paths.status, JobStatus(start_time=START, pid=os.getpid()))


def finish(paths: JobPaths, output: str = "", **fields: object) -> None:
    paths.output.write_text(output)
    record = {"state": "succeeded", "start_time": START, "completion_time": END, "exit_code": 0}
    record.update(fields)
    write_record(paths.result, JobResult(**record))  # type: ignore[arg-type]


async def gather(
    observer: LocalJobObserver, expect: int = 0, *, settle: float = 0.2, timeout: float = 10.0
) -> list[ExecutionUpdate]:
    """The first `expect` updates (waiting up to `timeout`), plus whatever else comes in the
    `settle` seconds after them: what the observer should not say needs a window too."""
    seen: list[ExecutionUpdate] = []
    enough = asyncio.Event()

    async def watch() -> None:
        async with contextlib.aclosing(observer.updates()) as updates:
            async for update in updates:
                seen.append(update)
                if len(seen) >= expect:
                    enough.set()

    task = asyncio.create_task(watch())
    try:
        if expect:
            await asyncio.wait_for(enough.wait(), timeout)
        await asyncio.sleep(settle)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return seen


def states(updates: list[ExecutionUpdate], job_id: str) -> list[str]:
    return [u.state for u in updates if u.job_id == job_id]


async def test_running_job_is_reported_once(jobs_dir: Path, held_locks: list[int]) -> None:
    start(job(jobs_dir, "t-running"), held_locks)
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    updates = await gather(observer, 1, settle=0.3)

    assert updates == [ExecutionUpdate(job_id="t-running", state="running", start_time=START)]


async def test_growing_output_of_a_running_job_is_reported_at_most_per_interval(
    jobs_dir: Path, held_locks: list[int]
) -> None:
    paths = job(jobs_dir, "t-progress")
    start(paths, held_locks)
    paths.output.write_text("first\n")
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01, progress_interval=0.2)

    updates = await gather(observer, 2, settle=0.5)

    # The start, then the output so far once; unchanged output is not reported again.
    assert [(u.state, u.output) for u in updates] == [("running", None), ("running", "first\n")]


async def test_running_then_final_with_capped_output(jobs_dir: Path, held_locks: list[int]) -> None:
    paths = job(jobs_dir, "t-done")
    start(paths, held_locks)
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01, output_cap_bytes=100)
    output = "begin\n" + "x" * 1000 + "\n^JSON\n{}\n^JSON\n"

    async def finish_later() -> None:
        await asyncio.sleep(0.1)
        # As the dispatcher does: the result first, then the lock goes.
        finish(paths, output, state="failed", exit_code=3, error="exit code 3")
        os.close(held_locks.pop())

    updates, _ = await asyncio.gather(gather(observer, 2), finish_later())

    assert [u.state for u in updates] == ["running", "failed"]
    final = updates[-1]
    assert final.start_time == START
    assert final.completion_time == END
    assert final.exit_code == 3
    assert final.error == "exit code 3"
    assert final.output is not None
    assert len(final.output.encode()) <= 100
    assert final.output.startswith("begin\n")
    assert final.output.endswith("^JSON\n{}\n^JSON\n")
    assert "output truncated" in final.output


async def test_a_job_finished_between_polls_still_starts_with_running(jobs_dir: Path) -> None:
    finish(job(jobs_dir, "t-quick"), "out\n")
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    updates = await gather(observer, 2)

    assert updates[0] == ExecutionUpdate(job_id="t-quick", state="running", start_time=START)
    assert updates[1].state == "succeeded"
    assert updates[1].output == "out\n"
    assert len(updates) == 2


async def test_cancelled_before_start_has_no_running(jobs_dir: Path) -> None:
    finish(job(jobs_dir, "t-cancel"), state="cancelled", start_time=None, exit_code=None)
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    updates = await gather(observer, 1)

    assert [u.state for u in updates] == ["cancelled"]
    assert updates[0].start_time is None


async def test_dead_supervisor_without_result_is_failed(jobs_dir: Path) -> None:
    paths = job(jobs_dir, "t-dead")
    start(paths, held_locks=None)
    paths.output.write_text("partial output\n")
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    updates = await gather(observer, 2)

    assert [u.state for u in updates] == ["running", "failed"]
    assert updates[1].error == "execution vanished: the executor process died"
    assert updates[1].start_time == START
    assert updates[1].output == "partial output\n"


async def test_launched_but_not_started_says_nothing(jobs_dir: Path) -> None:
    job(jobs_dir, "t-pending")
    (jobs_dir / ".hidden").mkdir()
    (jobs_dir / "a-file").write_text("")
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    assert await gather(observer, settle=0.3) == []


async def test_forget_marks_collected_and_a_new_observer_skips_it(jobs_dir: Path) -> None:
    for job_id in ("t-one", "t-two"):
        finish(job(jobs_dir, job_id))
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    first = await gather(observer, 4)
    # Each final is reported once, however many polls pass.
    assert states(first, "t-one") == ["running", "succeeded"]
    assert states(first, "t-two") == ["running", "succeeded"]

    await observer.forget("t-one")
    await observer.forget("no-such-job")
    assert JobPaths.of(jobs_dir, "t-one").collected.exists()

    restarted = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)
    second = await gather(restarted, 2)
    assert states(second, "t-one") == []
    assert states(second, "t-two") == ["running", "succeeded"]


async def test_memory_holds_only_unforgotten_jobs(jobs_dir: Path) -> None:
    for index in range(20):
        finish(job(jobs_dir, f"t-{index}"))
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)
    assert len(await gather(observer, 40)) == 40

    for index in range(20):
        await observer.forget(f"t-{index}")
    await gather(observer, settle=0.1)

    assert observer._finished == set()
    assert observer._running == {}


async def test_an_unreadable_job_does_not_hide_the_others(jobs_dir: Path) -> None:
    broken = job(jobs_dir, "t-broken")
    broken.result.write_text("{not json")
    finish(job(jobs_dir, "t-fine"))
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    updates = await gather(observer, 2)

    assert {u.job_id for u in updates} == {"t-fine"}


async def test_missing_jobs_dir_is_not_an_error(tmp_path: Path) -> None:
    observer = LocalJobObserver(jobs_dir=tmp_path / "absent", poll_interval=0.01)

    assert await gather(observer, settle=0.1) == []


async def test_close_ends_the_updates(jobs_dir: Path) -> None:
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=10)

    async def consume() -> list[ExecutionUpdate]:
        return [update async for update in observer.updates()]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await observer.close()

    assert await asyncio.wait_for(task, 2) == []


def test_read_output_of_a_large_file_reads_the_ends_and_keeps_characters_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "output.log"
    text = "HEAD" + "é✓😀" * 5000 + "TAIL"
    path.write_text(text)

    for cap in range(100, 140):
        capped = read_output(path, cap)
        assert len(capped.encode()) <= cap
        assert capped.startswith("HEAD")
        assert capped.endswith("TAIL")
        assert "\ufffd" not in capped
        match = re.search(r"\n\[kriten: output truncated, (\d+) bytes omitted\]\n", capped)
        assert match is not None
        head, tail = capped[: match.start()], capped[match.end() :]
        omitted = int(match.group(1))
        assert omitted == len(text.encode()) - len(head.encode()) - len(tail.encode())


def test_read_output_of_a_small_file_and_of_none(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    path.write_bytes(b"ok \xff\n")

    assert read_output(path, 100) == "ok \ufffd\n"
    assert read_output(tmp_path / "missing.log", 100) == ""


async def watch_in_background(
    observer: LocalJobObserver, seen: list[ExecutionUpdate]
) -> asyncio.Task[None]:
    async def watch() -> None:
        async with contextlib.aclosing(observer.updates()) as updates:
            async for update in updates:
                seen.append(update)

    return asyncio.create_task(watch())


async def until(predicate: object, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_a_launched_job_is_watched_at_once_without_rescanning(
    jobs_dir: Path, held_locks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many jobs collected long ago: a scan of them all on every poll was the old cost.
    for n in range(50):
        (job(jobs_dir, f"old-{n}").collected).touch()
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01, discovery_interval=3600)
    listings: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path: str) -> object:
        listings.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    seen: list[ExecutionUpdate] = []
    task = await watch_in_background(observer, seen)
    try:
        await until(lambda: len(listings) >= 1)
        await asyncio.sleep(0.1)
        paths = job(jobs_dir, "t-new")
        start(paths, held_locks)
        observer.launched("t-new")

        await until(lambda: states(seen, "t-new") == ["running"])
        finish(paths)
        os.close(held_locks.pop())
        await until(lambda: states(seen, "t-new") == ["running", "succeeded"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # One listing at start (reconciliation); the new job came by its message.
    assert listings == [str(jobs_dir)]


async def test_a_job_without_its_message_is_found_when_the_directory_changes(
    jobs_dir: Path, held_locks: list[int]
) -> None:
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01, discovery_interval=0.05)
    seen: list[ExecutionUpdate] = []
    task = await watch_in_background(observer, seen)
    try:
        await asyncio.sleep(0.1)
        start(job(jobs_dir, "t-unannounced"), held_locks)
        await until(lambda: states(seen, "t-unannounced") == ["running"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("exit_code", "marker", "state", "error"),
    [
        ("0\n", None, "succeeded", None),
        ("2\n", None, "failed", "exit code 2"),
        ("0\n", "cancel-requested", "succeeded", None),
        (None, "cancel-requested", "cancelled", "cancelled"),
        (None, "deadline-exceeded", "failed", "deadline exceeded"),
        (None, None, "failed", "execution vanished: the executor process died"),
    ],
)
async def test_a_job_that_ended_with_no_dispatcher_watching_is_read_from_its_files(
    jobs_dir: Path, exit_code: str | None, marker: str | None, state: str, error: str | None
) -> None:
    paths = job(jobs_dir, "t-alone")
    start(paths, held_locks=None)
    if exit_code is not None:
        paths.exit_code.write_text(exit_code)
    if marker is not None:
        (paths.root / marker).touch()
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.01)

    updates = await gather(observer, 2)

    assert [u.state for u in updates] == ["running", state]
    assert updates[1].error == error
