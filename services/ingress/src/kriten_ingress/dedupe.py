"""Recognising a sender's retry, so it can be answered `"status": "duplicate"`.

Exactly-once does not depend on this: the job id is derived from the idempotency key, so
a retry becomes the same job downstream (the dispatcher launches a job id once, and
skips one already finished). This only decides what the answer says, from the job ids
this replica accepted recently, in memory: the request path makes no database query.
A retry that reaches another replica, or comes after a restart, is answered `accepted`
with the same job id, and the collector marks it `duplicate` in the delivery log.
"""

from __future__ import annotations

from collections import OrderedDict


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
