"""Turns a `JobRequested` into a `JobSpec`: the task, its runner, decrypted secrets."""

from __future__ import annotations

from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Runner, Task
from kriten_common.messages import JobRequested
from kriten_common.outcomes import PermanentError
from kriten_dispatcher.ports import JobSpec


async def build_spec(event: JobRequested, *, sessions: SessionFactory, box: SecretBox) -> JobSpec:
    """Raises `PermanentError` when the task or its runner no longer exists."""
    async with sessions() as session:
        task = await session.get(Task, event.task)
        if task is None:
            raise PermanentError(f"task {event.task!r} no longer exists")
        runner = await session.get(Runner, task.runner)
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
        git_token=box.decrypt(runner.token_encrypted) if runner.token_encrypted else None,
        secrets=box.decrypt_map(runner.secrets_encrypted),
    )
