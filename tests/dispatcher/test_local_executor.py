"""The local executor end to end: LocalJobLauncher checks out a real git repository and
starts the job's wrapper, which runs the task; LocalJobObserver reports what happened."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kriten_collector.json_data import extract_json_data
from kriten_collector.local_observer import LocalJobObserver
from kriten_collector.ports import ExecutionUpdate
from kriten_common.local_jobs import (
    PRIVATE_DIR_NAME,
    JobPaths,
    JobResult,
    JobStatus,
    read_record,
    supervisor_alive,
    touch,
    try_lock,
    write_record,
)
from kriten_common.outcomes import PermanentError, RetryableError
from kriten_dispatcher import local_processes
from kriten_dispatcher.app import make_launcher
from kriten_dispatcher.local_executor import LocalJobLauncher, prune
from kriten_dispatcher.ports import JobSpec
from kriten_dispatcher.settings import DispatcherSettings
from tests.dispatcher.conftest import GitHttpServer

TIMEOUT = 60.0

EXTRA_VARS = (
    '{"msg": "say \\"hi\\"", "text": "a\\nb"}\n'
    "'raw' $HOME `id` $(id) \\ ünïcødé ✓ 😀\r\n\t  trailing spaces  "
)
SECRETS = {"api_key": "s3cr3t value\nwith a second line ✓", "DB_PASSWORD": "pw=1;2"}


def make_spec(git_repo: Path, job_id: str = "hello-abc", **changes: Any) -> JobSpec:
    spec = JobSpec(
        job_id=job_id,
        task="hello",
        owner="alice",
        command=f"{shlex.quote(sys.executable)} task.py",
        image="ignored-by-the-local-executor",
        git_url=str(git_repo),
        branch="main",
        extra_vars="{}",
    )
    return replace(spec, **changes)


async def collect(
    observer: LocalJobObserver, job_ids: set[str], timeout: float = TIMEOUT
) -> dict[str, list[ExecutionUpdate]]:
    """Every update of `job_ids` until each has its final one."""
    seen: dict[str, list[ExecutionUpdate]] = {job_id: [] for job_id in job_ids}

    async def run() -> None:
        async with contextlib.aclosing(observer.updates()) as updates:
            async for update in updates:
                if update.job_id in seen:
                    seen[update.job_id].append(update)
                if all(ups and ups[-1].state != "running" for ups in seen.values()):
                    return

    await asyncio.wait_for(run(), timeout)
    return seen


async def run_one(jobs_dir: Path, spec: JobSpec) -> list[ExecutionUpdate]:
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.02)
    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    return (await collect(observer, {spec.job_id}))[spec.job_id]


async def wait_for_path(path: Path, timeout: float = TIMEOUT) -> None:
    """Until `path` exists and has content: a shell's `echo > file` creates the file
    before it writes, and a loaded machine can be read in between."""

    async def poll() -> None:
        while not (path.exists() and path.stat().st_size > 0):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for init to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_round_trip_runs_the_task_with_kriten_environment(
    jobs_dir: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRITEN_TEST_LEAK", "must-not-reach-the-task")
    spec = make_spec(git_repo, extra_vars=EXTRA_VARS, secrets=SECRETS)
    before = datetime.now(UTC)

    updates = await run_one(jobs_dir, spec)

    assert [u.state for u in updates] == ["running", "succeeded"]
    running, final = updates
    assert running.start_time is not None
    assert final.start_time == running.start_time
    assert final.completion_time is not None
    assert before - timedelta(seconds=1) <= final.start_time <= final.completion_time
    assert final.completion_time.utcoffset() == timedelta(0)
    assert final.exit_code == 0
    assert final.error is None
    output = final.output
    assert output is not None
    # The clone section comes first, then the task's stdout and stderr together.
    assert output.index("--- git clone ---\n") == 0
    assert output.index("main at ") < output.index("--- task ---\n")
    assert output.index("--- task ---\n") < output.index("hello from the task")
    assert "to stderr" in output
    assert output.rstrip().endswith("after the block")

    data = extract_json_data(output)
    assert data is not None
    assert data["extra_vars"] == EXTRA_VARS
    assert data["secret_files"] == SECRETS
    assert data["secret_env"] == SECRETS
    assert data["job_id"] == spec.job_id
    paths = JobPaths.of(jobs_dir, spec.job_id)
    assert data["cwd"] == str(paths.repo)
    shell_vars = {"PWD", "OLDPWD", "SHLVL", "_"}
    allowed = {"PATH", "HOME", "LANG", "EXTRA_VARS", "KRITEN_SECRETS_DIR", "KRITEN_JOB_ID"}
    assert set(data["env_keys"]) <= allowed | set(SECRETS) | shell_vars
    assert "KRITEN_TEST_LEAK" not in data["env_keys"]

    # EXTRA_VARS reaches the task byte for byte.
    assert (paths.repo / "extra_vars.bin").read_bytes() == EXTRA_VARS.encode()
    # Only the owner may read the job's records.
    assert mode(paths.root) == 0o700
    # The executor left no secret behind (the task itself printed them, which is its
    # business); the secret files were in a private directory, gone with the job.
    assert data["secrets_dir"] == str(paths.secret_dir)
    assert paths.root not in paths.secret_dir.parents
    assert not paths.private.exists()
    for value in SECRETS.values():
        assert set(files_containing(jobs_dir, value)) <= {paths.output}
    assert "s3cr3t" not in paths.status.read_text()


async def test_failing_command_is_failed_with_its_exit_code(jobs_dir: Path, git_repo: Path) -> None:
    spec = make_spec(git_repo, command="echo before; echo oops >&2; exit 3")

    updates = await run_one(jobs_dir, spec)

    final = updates[-1]
    assert final.state == "failed"
    assert final.exit_code == 3
    assert final.error == "exit code 3"
    assert final.output is not None
    assert "before\noops\n" in final.output


async def test_killed_task_reports_the_signal(jobs_dir: Path, git_repo: Path) -> None:
    updates = await run_one(jobs_dir, make_spec(git_repo, command="kill -KILL $$"))

    final = updates[-1]
    assert final.state == "failed"
    assert final.exit_code == 137
    assert final.error == "killed by signal SIGKILL"


async def test_clone_failure_is_a_failed_job_and_hides_the_token(
    jobs_dir: Path, tmp_path: Path, git_repo: Path
) -> None:
    token = "tok-S3CRET-never-shown"
    spec = make_spec(git_repo, git_url=str(tmp_path / "no-such-repo"), git_token=token)

    updates = await run_one(jobs_dir, spec)

    final = updates[-1]
    assert final.state == "failed"
    assert final.exit_code is None
    assert final.error is not None
    assert final.error.startswith("git clone failed: ")
    assert "no-such-repo" in final.error
    assert final.output is not None
    assert "--- task ---" not in final.output
    assert token not in final.output
    assert token not in final.error
    assert files_containing(jobs_dir, token) == []


async def test_unknown_branch_is_a_clone_failure(jobs_dir: Path, git_repo: Path) -> None:
    updates = await run_one(jobs_dir, make_spec(git_repo, branch="no-such-branch"))

    final = updates[-1]
    assert final.state == "failed"
    assert final.error is not None
    assert "git clone failed" in final.error
    assert "no-such-branch" in final.error


async def test_token_reaches_git_only_through_askpass(
    jobs_dir: Path, git_repo: Path, git_http_server: GitHttpServer
) -> None:
    spec = make_spec(
        git_repo, git_url=git_http_server.url, git_token=git_http_server.token, command="ls"
    )

    updates = await run_one(jobs_dir, spec)

    final = updates[-1]
    assert final.state == "succeeded", final.output
    assert final.output is not None
    assert "task.py" in final.output
    # The server saw the token as basic auth, so it really was used ...
    assert any(a and a.startswith("Basic ") for a in git_http_server.authorizations)
    # ... and no process had it on its command line or in its environment meanwhile.
    assert git_http_server.leaks == []
    assert git_http_server.token not in final.output
    assert files_containing(jobs_dir, git_http_server.token) == []


async def test_wrong_token_is_a_clone_failure_without_the_token(
    jobs_dir: Path, git_repo: Path, git_http_server: GitHttpServer
) -> None:
    wrong = "ghp_WrongTokenAlsoSecret"
    spec = make_spec(git_repo, git_url=git_http_server.url, git_token=wrong)

    updates = await run_one(jobs_dir, spec)

    final = updates[-1]
    assert final.state == "failed"
    assert final.error is not None
    assert final.error.startswith("git clone failed: ")
    assert final.output is not None
    assert wrong not in final.output
    assert wrong not in final.error
    assert files_containing(jobs_dir, wrong) == []


async def test_deadline_exceeded(jobs_dir: Path, git_repo: Path) -> None:
    spec = make_spec(git_repo, command="echo started; sleep 30; echo finished", timeout_seconds=1)

    updates = await run_one(jobs_dir, spec)

    final = updates[-1]
    assert final.state == "failed"
    assert final.error == "deadline exceeded"
    assert final.exit_code is None
    assert final.output is not None
    assert "started" in final.output
    assert "finished" not in final.output  # killed at the deadline, not run to the end


async def test_a_relative_jobs_dir_works(
    jobs_dir: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(jobs_dir.parent)
    spec = make_spec(git_repo, command='cat "$KRITEN_SECRETS_DIR/k"', secrets={"k": "v"})

    updates = await run_one(Path(jobs_dir.name), spec)

    assert updates[-1].state == "succeeded", updates[-1].output
    assert (updates[-1].output or "").endswith("--- task ---\nv")


async def test_redelivery_runs_the_job_once(jobs_dir: Path, git_repo: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    spec = make_spec(git_repo, command=f"echo run >> {shlex.quote(str(runs))}")
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)

    await asyncio.wait_for(asyncio.gather(*(launcher.launch(spec) for _ in range(3))), TIMEOUT)
    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    await wait_for_path(JobPaths.of(jobs_dir, spec.job_id).exit_code)
    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    await asyncio.sleep(0.5)

    assert runs.read_text() == "run\n"


async def test_directory_without_a_started_job_is_launched_on_redelivery(
    jobs_dir: Path, git_repo: Path
) -> None:
    # As if a dispatcher died between mkdir and starting the job, half-way through
    # writing its secrets.
    spec = make_spec(git_repo, secrets={"api_key": "k"})
    paths = JobPaths.of(jobs_dir, spec.job_id)
    paths.root.mkdir(parents=True)
    paths.secret_dir.mkdir(parents=True)
    (paths.secret_dir / "api_key").write_text("half")

    updates = await run_one(jobs_dir, spec)

    assert updates[-1].state == "succeeded"


async def test_start_failure_is_retryable_then_recovers(
    jobs_dir: Path, git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.txt"
    spec = make_spec(git_repo, command=f"echo run >> {shlex.quote(str(runs))}")
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)

    def cannot_fork(*_args: object, **_kwargs: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(local_processes.os, "posix_spawn", cannot_fork)
        with pytest.raises(RetryableError):
            await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    paths = JobPaths.of(jobs_dir, spec.job_id)
    assert not paths.status.exists()
    assert not supervisor_alive(paths)

    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    await wait_for_path(paths.exit_code)

    assert runs.read_text() == "run\n"


@pytest.mark.parametrize(
    "changes",
    [
        {"job_id": "../escape"},
        {"job_id": ""},
        {"secrets": {"a/b": "x"}},
        {"secrets": {"..": "x"}},
        {"extra_vars": "nul\0byte"},
        {"timeout_seconds": 0},
        {"branch": "--upload-pack=evil"},
        {"git_url": "  "},
        {"git_token": "two\nlines"},
    ],
)
async def test_invalid_spec_is_permanent_and_creates_nothing(
    jobs_dir: Path, git_repo: Path, changes: dict[str, Any]
) -> None:
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)

    with pytest.raises(PermanentError):
        await launcher.launch(make_spec(git_repo, **changes))

    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


async def test_cancel_kills_the_task_group(
    jobs_dir: Path, git_repo: Path, alive: Callable[[int], bool]
) -> None:
    spec = make_spec(
        git_repo, command="sleep 60 & echo $! > bg.pid; echo $$ > main.pid; exec sleep 30"
    )
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.02)
    paths = JobPaths.of(jobs_dir, spec.job_id)
    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    await wait_for_path(paths.repo / "main.pid")
    await wait_for_path(paths.repo / "bg.pid")
    pids = [int((paths.repo / name).read_text()) for name in ("main.pid", "bg.pid")]

    assert await asyncio.wait_for(launcher.cancel(spec.job_id), TIMEOUT) is True

    final = (await collect(observer, {spec.job_id}))[spec.job_id][-1]
    assert final.state == "cancelled"
    assert final.start_time is not None
    assert final.completion_time is not None
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not any(alive(pid) for pid in pids)
    # Cancelling a finished job changes nothing.
    assert await launcher.cancel(spec.job_id) is True
    result = read_record(paths.result, JobResult)
    assert result is not None
    assert result.state == "cancelled"


async def test_cancel_of_an_unknown_job_is_false(jobs_dir: Path) -> None:
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)

    assert await launcher.cancel("nobody-here") is False
    assert await launcher.cancel("../etc") is False


async def test_cancel_before_the_supervisor_starts(jobs_dir: Path, git_repo: Path) -> None:
    # A directory whose launch never got as far as a supervisor.
    spec = make_spec(git_repo)
    paths = JobPaths.of(jobs_dir, spec.job_id)
    paths.root.mkdir(parents=True)
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)

    assert await asyncio.wait_for(launcher.cancel(spec.job_id), TIMEOUT) is True
    # A redelivery afterwards must not run it.
    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)

    result = read_record(paths.result, JobResult)
    assert result is not None
    assert result.state == "cancelled"
    assert not paths.status.exists()
    assert not paths.repo.exists()


async def start_sleeping_job(
    jobs_dir: Path, git_repo: Path
) -> tuple[LocalJobLauncher, JobSpec, JobStatus, int]:
    """A launched job whose task sleeps: its launcher, spec, status and the task's pid."""
    spec = make_spec(git_repo, command="echo $$ > main.pid; exec sleep 30")
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)
    paths = JobPaths.of(jobs_dir, spec.job_id)
    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    await wait_for_path(paths.repo / "main.pid")
    status = read_record(paths.status, JobStatus)
    assert status is not None
    return launcher, spec, status, int((paths.repo / "main.pid").read_text())


async def test_killed_wrapper_is_failed_by_the_dispatcher_watching_it(
    jobs_dir: Path, git_repo: Path
) -> None:
    # The launcher stays referenced: it is the dispatcher watching the job.
    _launcher, spec, status, task_pid = await start_sleeping_job(jobs_dir, git_repo)
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.02)

    os.kill(status.pid, signal.SIGKILL)

    updates = (await collect(observer, {spec.job_id}))[spec.job_id]
    assert [u.state for u in updates] == ["running", "failed"]
    assert updates[-1].error == "execution vanished: the executor process died"
    # Its task went with it, as a pod's processes go with its main one.
    assert not running(task_pid)


async def test_dead_job_without_a_dispatcher_is_reported_failed(
    jobs_dir: Path, git_repo: Path
) -> None:
    launcher, spec, status, _task_pid = await start_sleeping_job(jobs_dir, git_repo)
    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.02)
    paths = JobPaths.of(jobs_dir, spec.job_id)
    # The dispatcher goes (the job runs on), then the job dies with its wrapper.
    await launcher.close()
    assert supervisor_alive(paths)

    os.killpg(status.pid, signal.SIGKILL)

    updates = (await collect(observer, {spec.job_id}))[spec.job_id]
    assert [u.state for u in updates] == ["running", "failed"]
    assert updates[-1].error == "execution vanished: the executor process died"
    assert not paths.result.exists()


async def test_observer_reconciles_jobs_finished_while_nobody_watched(
    jobs_dir: Path, git_repo: Path
) -> None:
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)
    first = make_spec(git_repo, job_id="hello-first", command="echo first")
    second = make_spec(git_repo, job_id="hello-second", command="echo second")
    for spec in (first, second):
        await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
        await wait_for_path(JobPaths.of(jobs_dir, spec.job_id).exit_code)

    observer = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.02)
    seen = await collect(observer, {first.job_id, second.job_id})
    assert [u.state for u in seen[first.job_id]] == ["running", "succeeded"]
    assert seen[first.job_id][-1].output is not None
    assert "first" in (seen[first.job_id][-1].output or "")
    await observer.forget(first.job_id)
    assert JobPaths.of(jobs_dir, first.job_id).collected.exists()

    # A new observer (a restarted collector) reports only what was not forgotten.
    restarted = LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.02)
    seen_again: list[ExecutionUpdate] = []

    async def watch() -> None:
        async for update in restarted.updates():
            seen_again.append(update)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch(), 1.0)
    assert {u.job_id for u in seen_again} == {second.job_id}
    assert [u.state for u in seen_again] == ["running", "succeeded"]


# --- secrets never outlive their job; finished directories are pruned ------------------

RUNNER_A_SECRET = "runner-A-s3cret-Value-9f2c"

RUNNER_A_DIGEST = hashlib.sha256(RUNNER_A_SECRET.encode()).hexdigest()

# Checks the secret as an environment variable and as a file against its digest (the
# command is in spec.json, so it must not hold the secret), and leaves where the files
# were (and their modes) for the test.
CHECK_SECRET = (
    f'test "$(printf %s "$token" | sha256sum | cut -c1-64)" = {RUNNER_A_DIGEST}'
    f' && test "$(sha256sum < "$KRITEN_SECRETS_DIR/token" | cut -c1-64)" = {RUNNER_A_DIGEST}'
    ' && echo "secret seen as env and file"'
    ' && stat -c "%a %n" "$KRITEN_SECRETS_DIR" "$KRITEN_SECRETS_DIR/token" > secret-modes.txt'
)


async def test_secrets_are_seen_by_the_task_and_gone_from_disk_when_it_is_final(
    jobs_dir: Path, git_repo: Path
) -> None:
    """Regression: the runner's secrets stayed in every job directory, in plaintext, for a
    later job (of any runner) to read."""
    spec = make_spec(
        git_repo, job_id="a-job", command=CHECK_SECRET, secrets={"token": RUNNER_A_SECRET}
    )

    updates = await run_one(jobs_dir, spec)

    final = updates[-1]
    assert final.state == "succeeded", final.output
    assert "secret seen as env and file" in (final.output or "")
    paths = JobPaths.of(jobs_dir, spec.job_id)
    modes = (paths.repo / "secret-modes.txt").read_text().split("\n")
    assert modes[0] == f"700 {paths.secret_dir}"
    assert modes[1] == f"600 {paths.secret_dir / 'token'}"
    # Nothing under the jobs directory holds the secret once the job is final: not the
    # job's directory, not its private one.
    assert files_containing(jobs_dir, RUNNER_A_SECRET) == []
    assert not paths.private.exists()
    assert list((jobs_dir / PRIVATE_DIR_NAME).iterdir()) == []

    # Nor after a later job (of another runner) has run.
    probe = make_spec(git_repo, job_id="b-job", command="echo later job")
    assert (await run_one(jobs_dir, probe))[-1].state == "succeeded"
    assert files_containing(jobs_dir, RUNNER_A_SECRET) == []


async def test_a_killed_jobs_secrets_are_removed_before_the_next_job_starts(
    jobs_dir: Path, git_repo: Path
) -> None:
    spec = make_spec(
        git_repo,
        job_id="a-killed",
        command="echo $$ > main.pid; exec sleep 30",
        secrets={"token": RUNNER_A_SECRET},
        git_token="ghp_TokenOfTheKilledJob",
    )
    launcher = LocalJobLauncher(jobs_dir=jobs_dir)
    paths = JobPaths.of(jobs_dir, spec.job_id)
    await asyncio.wait_for(launcher.launch(spec), TIMEOUT)
    await wait_for_path(paths.repo / "main.pid")
    status = read_record(paths.status, JobStatus)
    assert status is not None
    # The files exist while the job runs (and the token is gone after the clone) ...
    assert (paths.secret_dir / "token").read_text() == RUNNER_A_SECRET
    assert files_containing(jobs_dir, "ghp_TokenOfTheKilledJob") == []

    # ... and a job killed outright while no dispatcher watched cannot remove them.
    await launcher.close()
    os.killpg(status.pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert paths.private.exists()

    restarted = LocalJobLauncher(jobs_dir=jobs_dir)
    await asyncio.wait_for(restarted.launch(make_spec(git_repo, job_id="b-next")), TIMEOUT)

    assert not paths.private.exists()
    assert files_containing(jobs_dir, RUNNER_A_SECRET) == []


def make_finished_job(
    jobs_dir: Path, job_id: str, *, collected_hours_ago: float | None, result: bool = True
) -> JobPaths:
    paths = JobPaths.of(jobs_dir, job_id)
    paths.root.mkdir(parents=True)
    (paths.root / "output.log").write_text("output\n")
    if result:
        write_record(paths.result, JobResult(state="succeeded", completion_time=datetime.now(UTC)))
    if collected_hours_ago is not None:
        touch(paths.collected)
        moment = time.time() - collected_hours_ago * 3600
        os.utime(paths.collected, (moment, moment))
    return paths


def test_prune_removes_only_jobs_collected_longer_ago_than_the_retention(
    jobs_dir: Path,
) -> None:
    old = make_finished_job(jobs_dir, "old-collected", collected_hours_ago=25)
    died = make_finished_job(jobs_dir, "old-died", collected_hours_ago=25, result=False)
    make_finished_job(jobs_dir, "recent-collected", collected_hours_ago=1)
    uncollected = make_finished_job(jobs_dir, "old-uncollected", collected_hours_ago=None)
    os.utime(uncollected.result, (time.time() - 90_000, time.time() - 90_000))
    running = make_finished_job(jobs_dir, "running", collected_hours_ago=25, result=False)
    lock = try_lock(running.supervisor_lock)
    assert lock is not None
    try:
        pruned = prune(jobs_dir, retention=timedelta(hours=24))
    finally:
        os.close(lock)

    assert sorted(pruned) == ["old-collected", "old-died"]
    assert not old.root.exists()
    assert not died.root.exists()
    assert sorted(p.name for p in jobs_dir.iterdir()) == [
        "old-uncollected",
        "recent-collected",
        "running",
    ]


def test_prune_removes_secrets_that_older_versions_left_in_finished_jobs(
    jobs_dir: Path,
) -> None:
    paths = make_finished_job(jobs_dir, "legacy", collected_hours_ago=None)
    (paths.root / "secret").mkdir()
    (paths.root / "secret" / "token").write_text(RUNNER_A_SECRET)
    (paths.root / "git-token").write_text(RUNNER_A_SECRET)

    assert prune(jobs_dir, retention=timedelta(hours=24)) == []

    assert paths.root.exists()
    assert files_containing(jobs_dir, RUNNER_A_SECRET) == []


@pytest.mark.parametrize(
    "variable", ["KRITEN_JOB_DIR_RETENTION_HOURS", "KRITEN_LOCAL_JOB_RETENTION_HOURS"]
)
async def test_the_launcher_prunes_with_the_configured_retention(
    jobs_dir: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "2")
    old = make_finished_job(jobs_dir, "old-collected", collected_hours_ago=3)
    recent = make_finished_job(jobs_dir, "recent-collected", collected_hours_ago=1)
    launcher = make_launcher(DispatcherSettings(executor="local", jobs_dir=jobs_dir))
    assert isinstance(launcher, LocalJobLauncher)

    await asyncio.wait_for(launcher.launch(make_spec(git_repo)), TIMEOUT)

    assert not old.root.exists()
    assert recent.root.exists()
    assert JobPaths.of(jobs_dir, "hello-abc").root.exists()


async def test_a_restarted_dispatcher_enforces_the_deadline_of_a_job_it_did_not_start(
    jobs_dir: Path, git_repo: Path
) -> None:
    spec = make_spec(git_repo, command="echo started; sleep 30; echo finished", timeout_seconds=2)
    first = LocalJobLauncher(jobs_dir=jobs_dir)
    await asyncio.wait_for(first.launch(spec), TIMEOUT)
    # The dispatcher restarts; the job runs on without it.
    await first.close()
    restarted = LocalJobLauncher(jobs_dir=jobs_dir)
    await restarted.start()

    updates = (
        await collect(LocalJobObserver(jobs_dir=jobs_dir, poll_interval=0.02), {spec.job_id})
    )[spec.job_id]

    final = updates[-1]
    assert final.state == "failed"
    assert final.error == "deadline exceeded"
    assert "finished" not in (final.output or "")
    await restarted.close()


async def test_a_restarted_dispatcher_cancels_a_job_it_did_not_start(
    jobs_dir: Path, git_repo: Path
) -> None:
    spec = make_spec(git_repo, command="echo $$ > main.pid; exec sleep 30")
    first = LocalJobLauncher(jobs_dir=jobs_dir)
    await asyncio.wait_for(first.launch(spec), TIMEOUT)
    paths = JobPaths.of(jobs_dir, spec.job_id)
    await wait_for_path(paths.repo / "main.pid")
    task_pid = int((paths.repo / "main.pid").read_text())
    await first.close()
    restarted = LocalJobLauncher(jobs_dir=jobs_dir)

    assert await asyncio.wait_for(restarted.cancel(spec.job_id), TIMEOUT) is True

    result = read_record(paths.result, JobResult)
    assert result is not None
    assert result.state == "cancelled"
    assert not running(task_pid)
