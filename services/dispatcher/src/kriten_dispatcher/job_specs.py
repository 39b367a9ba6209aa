"""Turns a `JobRequested` into a `JobSpec`: the task, its runner, decrypted secrets.

This is the one place that decides whether a job's clone gets the runner's git token
(`git_token_for`); the executors hand git whatever token the spec carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_common.crypto import SecretBox
from kriten_common.db.models import Job, Runner, Task
from kriten_common.logging import get_logger
from kriten_common.messages import JobRequested
from kriten_common.outcomes import PermanentError
from kriten_dispatcher.ports import JobSpec

log = get_logger(__name__)


def sends_token(git_url: str) -> bool:
    """Only an https:// clone gets the token: over plain http it would cross the network in
    clear, and the other forms (ssh, local paths) do not take one. The api refuses a token
    beside an http URL; this also covers rows stored before it did."""
    return git_url.strip().lower().startswith("https://")


def git_token_for(runner: Runner, box: SecretBox) -> str | None:
    if not runner.token_encrypted:
        return None
    if not sends_token(runner.git_url):
        # Not an error: the clone goes ahead without it, as for a public repository.
        log.warning("git_token_withheld", runner=runner.name, reason="gitURL is not https://")
        return None
    return box.decrypt(runner.token_encrypted)


@dataclass(frozen=True)
class LaunchRecords:
    """What a launch reads: the job (if recorded yet), its task and the task's runner."""

    job: Job | None
    task: Task | None
    runner: Runner | None


async def load_records(event: JobRequested, *, session: AsyncSession) -> LaunchRecords:
    """One query for the three (a launch's database cost is mostly round trips); a second
    only when the task is gone."""
    row = (
        await session.exec(
            select(Task, Runner, Job)
            .join(Runner, col(Runner.name) == col(Task.runner), isouter=True)
            .join(Job, col(Job.id) == event.job_id, isouter=True)
            .where(col(Task.name) == event.task)
        )
    ).first()
    if row is None:
        return LaunchRecords(job=await session.get(Job, event.job_id), task=None, runner=None)
    task, runner, job = row
    return LaunchRecords(job=job, task=task, runner=runner)


def build_spec(event: JobRequested, records: LaunchRecords, *, box: SecretBox) -> JobSpec:
    """Raises `PermanentError` when the task or its runner no longer exists."""
    task, runner = records.task, records.runner
    if task is None:
        raise PermanentError(f"task {event.task!r} no longer exists")
    if runner is None:
        raise PermanentError(f"runner {task.runner!r} no longer exists")
    return JobSpec(
        job_id=event.job_id,
        task=task.name,
        owner=event.owner,
        command=task.command,
        image=runner.image,
        git_url=runner.git_url,
        branch=runner.branch,
        extra_vars=event.input,
        timeout_seconds=task.timeout_seconds,
        git_token=git_token_for(runner, box),
        secrets=box.decrypt_map(runner.secrets_encrypted),
    )
