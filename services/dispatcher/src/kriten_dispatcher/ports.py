"""The `JobLauncher` port: how the dispatcher starts an execution, whatever runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class JobSpec:
    """Everything an executor needs to run one job. `git_token` and `secrets` are secret:
    never log them, never put them in a URL, command line or manifest in the clear."""

    job_id: str
    task: str
    owner: str
    command: str
    image: str
    git_url: str
    branch: str
    extra_vars: str
    timeout_seconds: int | None = None
    git_token: str | None = field(default=None, repr=False)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


class JobLauncher(Protocol):
    async def start(self) -> None:
        """Take charge of what an earlier launcher left running (deadlines, reaping)."""
        ...

    async def launch(self, spec: JobSpec) -> None:
        """Start the job. Idempotent by `spec.job_id`: a job already launched is success.

        Raises `kriten_common.outcomes.RetryableError` for transient failures and
        `PermanentError` for ones that can never succeed.
        """
        ...

    async def cancel(self, job_id: str) -> bool:
        """Stop the job if it runs; False when there is no such job."""
        ...

    async def close(self) -> None: ...
