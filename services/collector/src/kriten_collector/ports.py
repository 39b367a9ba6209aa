"""The `JobObserver` port: how the collector learns what happened to executions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

ExecutionState = Literal["running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class ExecutionUpdate:
    """A change seen in one execution. `output` is its combined output: all of it in the
    final update, what there is so far in a `running` one (adapters that can tell)."""

    job_id: str
    state: ExecutionState
    start_time: datetime | None = None
    completion_time: datetime | None = None
    exit_code: int | None = None
    output: str | None = None
    error: str | None = None


class JobObserver(Protocol):
    def updates(self) -> AsyncIterator[ExecutionUpdate]:
        """Yields updates for every execution, forever; at start it reports every
        execution that finished while nobody watched (reconciliation)."""
        ...

    def launched(self, job_id: str) -> None:
        """A hint that `job_id` was just launched (its `job.dispatched` event), so an
        observer that watches only what it knows of can start watching it at once."""
        ...

    async def missing(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Of `job_ids`, those the executor has no execution of at all (never created,
        or gone: pruned, deleted), each with the reason to record on its job. One it
        cannot tell about is not missing."""
        ...

    async def forget(self, job_id: str) -> None:
        """The final update of `job_id` is stored durably; it need not be reported again."""
        ...

    async def close(self) -> None: ...
