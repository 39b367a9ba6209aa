"""The local executor's checkout cache: fetch a runner's branch once, copy it per job.

A `git clone` per job was most of a local job's cost. Instead, per runner repository and
branch, a bare repository under `<jobs_dir>/.checkouts/repos/` is fetched (`--depth 1`)
at most once per `refresh_seconds`, and each commit it resolves to is checked out once
into a template under `<jobs_dir>/.checkouts/trees/<commit>`. A job then gets a plain
copy of the template (`cp -a`, done by the job's own wrapper process), a git work tree of
its own with `.git` included, as a clone would have given it.

Freshness: a job launched `refresh_seconds` after a push runs the pushed commit; within
that window it may run the previous one (0 fetches for every job). Concurrent launches
share one fetch. The cache holds no credentials: the git token reaches git only through
GIT_ASKPASS from a 0600 file that exists for the duration of the fetch, and the runner's
URL (which may carry a password) is given on the command line, never stored in a git
config.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kriten_common.local_jobs import CHECKOUTS_DIR_NAME, try_lock, write_atomic
from kriten_common.outcomes import RetryableError

_ERROR_MAX_CHARS = 500
# The environment git may see from the host: enough to run, nothing of the service's.
_SAFE_ENV_KEYS = ("PATH", "HOME", "LANG", "SSH_AUTH_SOCK")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# GitHub, GitLab and Gitea accept any user name with a token as the password; a user name
# in the runner's URL wins (git then asks only for the password), e.g. for Bitbucket.
_GIT_USERNAME = "x-access-token"
_ASKPASS_SCRIPT = b"""#!/bin/sh
# Kriten local executor: answers git's credential prompts from a 0600 file.
case "$1" in
  Username*) printf '%s\\n' "$KRITEN_GIT_USERNAME" ;;
  *) cat "$KRITEN_GIT_TOKEN_FILE" ;;
esac
"""
# A fetch of a remote repository that hangs must not hold every job of its runner.
FETCH_TIMEOUT_SECONDS = 300.0


class CheckoutFailed(Exception):
    """The branch could not be fetched or checked out. `message` is git's reason, and
    `output` what git printed; both are scrubbed of the token and URL password."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.message = message
        self.output = output


@dataclass(frozen=True)
class Checkout:
    commit: str
    template: Path


@dataclass
class _Fetched:
    commit: str
    at: float


def clone_url(git_url: str) -> str:
    """The URL to give git: an absolute local path becomes file:// so that --depth works
    (git ignores it, with a warning, for plain local paths)."""
    if git_url.startswith("/"):
        return "file://" + git_url
    return git_url


def scrub(text: str, hidden: list[str]) -> str:
    for value in hidden:
        text = text.replace(value, "***")
    return text


def git_error(output: str) -> str:
    """What git said about why it failed: its fatal and error lines (the first is usually
    the cause, the last the consequence), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output from git"
    reasons = [
        line.split(":", 1)[1].strip() for line in lines if line.startswith(("fatal:", "error:"))
    ]
    message = "; ".join(reasons) if reasons else lines[-1]
    return message[:_ERROR_MAX_CHARS]


def _secrets_in(git_url: str, token: str | None) -> list[str]:
    hidden = [token] if token else []
    with contextlib.suppress(ValueError):
        password = urlsplit(git_url).password
        if password:
            hidden.append(password)
    return hidden


@contextlib.asynccontextmanager
async def _repository_lock(path: Path) -> AsyncIterator[None]:
    """Held while fetching into a bare repository. A shallow fetch takes git's
    `shallow.lock` and fails, rather than waits, when another process holds it: another
    dispatcher sharing the jobs directory. The OS's advisory lock, given up when its
    descriptor closes (so also when the process dies); polled, so that a cancelled wait
    leaves nothing behind. A wait that outlasts a fetch's timeout is retried later, not
    the job's failure: the holder may still be cloning a large repository."""
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    while (descriptor := try_lock(path)) is None:
        if time.monotonic() > deadline:
            raise RetryableError("another fetch of this repository is still running", delay=30)
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        os.close(descriptor)


def _git_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in _SAFE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    # Without a terminal git would fail anyway; this makes it fail at once, never wait.
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


class CheckoutCache:
    """Per (repository, branch): the commit last fetched and a template per commit."""

    def __init__(self, jobs_dir: Path, *, refresh_seconds: float = 2.0) -> None:
        self._root = jobs_dir / CHECKOUTS_DIR_NAME
        self._refresh_seconds = refresh_seconds
        self._locks: dict[str, asyncio.Lock] = {}
        self._fetched: dict[str, _Fetched] = {}

    @property
    def root(self) -> Path:
        return self._root

    async def checkout(self, git_url: str, branch: str, token: str | None) -> Checkout:
        """The template of the branch's commit, fetching when the last fetch is older
        than `refresh_seconds`. Raises CheckoutFailed."""
        # The token is part of the key: a runner without it (or with another) must not
        # be handed what was fetched with it, as its own clone would have been refused.
        key = hashlib.sha256(f"{git_url}\0{branch}\0{token or ''}".encode()).hexdigest()[:32]
        asked_at = time.monotonic()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            fetched = self._fetched.get(key)
            # A fetch that started after this request was made is fresh enough for it:
            # concurrent launches share one.
            if fetched is None or fetched.at < asked_at - self._refresh_seconds:
                started = time.monotonic()
                fetched = self._fetched[key] = _Fetched(
                    await self._fetch(key, git_url, branch, token), started
                )
                # Marks the template in use, for `prune_templates`.
                template = self._root / "trees" / fetched.commit
                with contextlib.suppress(FileNotFoundError):
                    os.utime(template)
        return Checkout(commit=fetched.commit, template=self._root / "trees" / fetched.commit)

    async def _git(
        self, argv: list[str], *, env: dict[str, str], hidden: list[str], cwd: Path | None = None
    ) -> str:
        """Runs git; its output scrubbed; raises CheckoutFailed when it fails."""
        proc = await asyncio.create_subprocess_exec(
            "git",
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            raw, _ = await asyncio.wait_for(proc.communicate(), FETCH_TIMEOUT_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise CheckoutFailed("git timed out", "") from None
        output = scrub(raw.decode("utf-8", "replace"), hidden)
        if proc.returncode != 0:
            raise CheckoutFailed(git_error(output), output)
        return output

    async def _bare(self, key: str) -> Path:
        bare = self._root / "repos" / f"{key}.git"
        if not (bare / "HEAD").exists():
            await asyncio.to_thread(bare.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
            # Idempotent, also against another dispatcher doing the same. Never gc'd
            # automatically: templates made from it are independent copies anyway.
            await self._git(
                ["init", "-q", "--bare", "--template=", str(bare)], env=_git_env(), hidden=[]
            )
            await self._git(
                ["--git-dir", str(bare), "config", "gc.auto", "0"], env=_git_env(), hidden=[]
            )
        return bare

    async def _fetch(self, key: str, git_url: str, branch: str, token: str | None) -> str:
        await asyncio.to_thread(
            (self._root / "repos").mkdir, parents=True, exist_ok=True, mode=0o700
        )
        async with _repository_lock(self._root / "repos" / f"{key}.lock"):
            return await self._fetch_locked(key, git_url, branch, token)

    async def _fetch_locked(self, key: str, git_url: str, branch: str, token: str | None) -> str:
        bare = await self._bare(key)
        hidden = _secrets_in(git_url, token)
        env = _git_env()
        argv = ["--git-dir", str(bare)]
        # A per-fetch branch, so that two dispatchers fetching at once do not race on one
        # (a branch, because the template is cloned from it).
        ref = f"refs/heads/fetch-{secrets.token_hex(8)}"
        with contextlib.ExitStack() as stack:
            if token:
                askpass_dir = Path(tempfile.mkdtemp(prefix=".askpass-", dir=self._root))
                stack.callback(shutil.rmtree, askpass_dir, True)
                write_atomic(askpass_dir / "token", token.encode(), durable=False)
                write_atomic(askpass_dir / "askpass", _ASKPASS_SCRIPT, mode=0o700, durable=False)
                env["GIT_ASKPASS"] = str(askpass_dir / "askpass")
                env["KRITEN_GIT_TOKEN_FILE"] = str(askpass_dir / "token")
                env["KRITEN_GIT_USERNAME"] = _GIT_USERNAME
                # An empty helper resets the user's helpers, which would otherwise answer
                # first with other credentials and the runner's token would never be used.
                argv += ["-c", "credential.helper="]
            try:
                await self._git(
                    [
                        *argv,
                        "fetch",
                        "-q",
                        # FETCH_HEAD would keep the URL, which may carry a password.
                        "--no-write-fetch-head",
                        "--depth",
                        "1",
                        "--no-tags",
                        "--",
                        clone_url(git_url),
                        f"+{branch}:{ref}",
                    ],
                    env=env,
                    hidden=hidden,
                )
                output = await self._git(
                    ["--git-dir", str(bare), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                    env=_git_env(),
                    hidden=hidden,
                )
                commit = output.strip()
                template = self._root / "trees" / commit
                if not template.is_dir():
                    await self._make_template(ref, bare, commit, template)
            finally:
                # Left in place, refs would pin every fetched commit; a template holds a
                # copy of what it needs.
                with contextlib.suppress(CheckoutFailed):
                    await self._git(
                        ["--git-dir", str(bare), "update-ref", "-d", ref],
                        env=_git_env(),
                        hidden=[],
                    )
        return commit

    async def _make_template(self, ref: str, bare: Path, commit: str, template: Path) -> None:
        """A checkout of `commit` at `template`, made aside and renamed into place so a
        job never copies half of one."""
        await asyncio.to_thread(template.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        making = template.parent / f".making-{secrets.token_hex(4)}-{commit}"
        try:
            await self._git(
                [
                    "clone",
                    "-q",
                    "--template=",
                    "--no-checkout",
                    "--branch",
                    ref.removeprefix("refs/heads/"),
                    str(bare),
                    str(making),
                ],
                env=_git_env(),
                hidden=[],
            )
            await self._git(
                ["checkout", "-q", "--detach", commit], env=_git_env(), hidden=[], cwd=making
            )
            try:
                await asyncio.to_thread(os.rename, making, template)
            except OSError:
                # Another dispatcher made it first: theirs is as good.
                if not await asyncio.to_thread(template.is_dir):
                    raise
        finally:
            await asyncio.to_thread(shutil.rmtree, making, True)

    def prune_templates(self, *, older_than_seconds: float, now: float | None = None) -> None:
        """Removes templates not used for a job within `older_than_seconds` (a job's copy
        touches its template's mtime), and half-made ones."""
        now = time.time() if now is None else now
        trees = self._root / "trees"
        try:
            entries = list(os.scandir(trees))
        except FileNotFoundError:
            return
        current = {fetched.commit for fetched in self._fetched.values()}
        for entry in entries:
            if entry.name in current:
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if age >= older_than_seconds:
                doomed = trees / f".pruning-{secrets.token_hex(4)}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(entry.path, doomed)
                    shutil.rmtree(doomed, ignore_errors=True)
