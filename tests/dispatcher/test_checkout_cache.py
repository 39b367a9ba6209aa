"""The local executor's checkout cache: one fetch per commit shared by jobs, a fresh one
once the branch moved, and each job's copy its own."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kriten_dispatcher.checkout_cache import CheckoutCache
from kriten_dispatcher.local_executor import LocalJobLauncher
from tests.dispatcher.conftest import GitHttpServer
from tests.dispatcher.test_local_executor import TIMEOUT, make_spec, run_one


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def push(repo: Path, content: str) -> str:
    (repo / "task.py").write_text(content)
    git("commit", "-qam", "change", cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


def count_fetches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    fetches: list[list[str]] = []
    real = CheckoutCache._git

    async def counting(self: CheckoutCache, argv: list[str], **kwargs: Any) -> str:
        if "fetch" in argv:
            fetches.append(argv)
        return await real(self, argv, **kwargs)

    monkeypatch.setattr(CheckoutCache, "_git", counting)
    return fetches


async def test_concurrent_jobs_share_one_fetch_and_each_has_its_own_copy(
    jobs_dir: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches = count_fetches(monkeypatch)
    launcher = LocalJobLauncher(jobs_dir=jobs_dir, checkout_refresh_seconds=3600)
    head = git("rev-parse", "HEAD", cwd=git_repo)
    # Each job changes its copy: the next must not see it.
    specs = [
        make_spec(
            git_repo,
            job_id=f"job-{n}",
            command='git rev-parse HEAD; cat marker 2>/dev/null; echo "$KRITEN_JOB_ID" > marker',
        )
        for n in range(6)
    ]

    await asyncio.wait_for(asyncio.gather(*(launcher.launch(s) for s in specs)), TIMEOUT)
    outputs = [(await run_one(jobs_dir, s))[-1] for s in specs]

    assert len(fetches) == 1
    for final in outputs:
        assert final.state == "succeeded", final.output
        assert (final.output or "").endswith(f"--- task ---\n{head}\n")


async def test_a_job_after_the_refresh_window_runs_the_pushed_commit(
    jobs_dir: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches = count_fetches(monkeypatch)
    launcher = LocalJobLauncher(jobs_dir=jobs_dir, checkout_refresh_seconds=0)
    before = make_spec(git_repo, job_id="before", command="git rev-parse HEAD")
    after = make_spec(git_repo, job_id="after", command="git rev-parse HEAD")
    original = git("rev-parse", "HEAD", cwd=git_repo)

    await asyncio.wait_for(launcher.launch(before), TIMEOUT)
    pushed = push(git_repo, "print('changed')\n")
    await asyncio.wait_for(launcher.launch(after), TIMEOUT)

    # (run_one only collects: its launch of an existing job is a redelivery.)
    assert (await run_one(jobs_dir, before))[-1].output.endswith(f"\n{original}\n")  # type: ignore[union-attr]
    assert (await run_one(jobs_dir, after))[-1].output.endswith(f"\n{pushed}\n")  # type: ignore[union-attr]
    assert len(fetches) == 2


async def test_within_the_window_a_job_reuses_the_last_fetch(
    jobs_dir: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches = count_fetches(monkeypatch)
    launcher = LocalJobLauncher(jobs_dir=jobs_dir, checkout_refresh_seconds=3600)
    for n in range(3):
        await asyncio.wait_for(launcher.launch(make_spec(git_repo, job_id=f"j-{n}")), TIMEOUT)
    assert len(fetches) == 1


async def test_a_runner_without_the_token_never_gets_what_was_fetched_with_it(
    jobs_dir: Path, git_repo: Path, git_http_server: GitHttpServer
) -> None:
    """Two runners on one private URL: the one without the token must fail as its own
    clone would, not be served the checkout the other fetched with its token."""
    launcher = LocalJobLauncher(jobs_dir=jobs_dir, checkout_refresh_seconds=3600)
    with_token = make_spec(
        git_repo,
        job_id="with-token",
        git_url=git_http_server.url,
        git_token=git_http_server.token,
        command="ls",
    )
    without = make_spec(git_repo, job_id="without", git_url=git_http_server.url, command="ls")

    await asyncio.wait_for(launcher.launch(with_token), TIMEOUT)
    await asyncio.wait_for(launcher.launch(without), TIMEOUT)

    assert (await run_one(jobs_dir, with_token))[-1].state == "succeeded"
    final = (await run_one(jobs_dir, without))[-1]
    assert final.state == "failed"
    assert "task.py" not in (final.output or "")


async def test_two_dispatchers_sharing_the_jobs_directory_fetch_in_turn(
    jobs_dir: Path, git_repo: Path
) -> None:
    # Two caches are two dispatcher processes: nothing shared but the directory. Git's
    # shallow fetch fails outright when the other holds `shallow.lock`.
    first, second = (CheckoutCache(jobs_dir, refresh_seconds=0) for _ in range(2))
    head = git("rev-parse", "HEAD", cwd=git_repo)
    for _ in range(8):
        checkouts = await asyncio.wait_for(
            asyncio.gather(
                *(cache.checkout(str(git_repo), "main", None) for cache in (first, second))
            ),
            TIMEOUT,
        )
        assert {checkout.commit for checkout in checkouts} == {head}
