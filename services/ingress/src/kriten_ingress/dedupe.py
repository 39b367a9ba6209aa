"""Recognising a sender's retry, so it can be answered `"status": "duplicate"`.

Exactly-once does not depend on this: the job id is derived from the idempotency key, so
a retry that slips through becomes the same job downstream. This only decides what the
answer and the delivery log say: a replica knows the job ids it accepted recently (an
in-memory LRU), and for the rest (another replica's, or from before a restart) it reads
the jobs table, which the collector writes. The ingress never writes it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from sqlmodel import select

from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Job
from kriten_common.logging import get_logger

log = get_logger(__name__)


class RecentJobs:
    """The most recent `size` job ids this replica accepted."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, job_id: str) -> bool:
        if job_id in self._ids:
            self._ids.move_to_end(job_id)
            return True
        return False

    def add(self, job_id: str) -> None:
        if self._size <= 0:
            return
        self._ids[job_id] = None
        self._ids.move_to_end(job_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


async def job_exists(sessions: SessionFactory, job_id: str, *, within: float) -> bool:
    """Whether the collector has recorded `job_id`; False when the database is slow or
    down, since the derived job id keeps the effect exactly-once anyway."""
    try:
        async with asyncio.timeout(within), sessions() as session:
            found = (await session.exec(select(Job.id).where(Job.id == job_id))).first()
    except asyncio.CancelledError:
        raise
    except Exception as problem:
        log.warning("duplicate_check_skipped", job_id=job_id, error=str(problem) or "timeout")
        return False
    return found is not None
