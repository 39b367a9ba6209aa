"""The concurrency-key gate: whether a keyed job may launch now, must wait, or ends.

Arbitrated by the database, so it holds across dispatcher replicas and restarts: each
decision is one transaction that takes the key's lock (a PostgreSQL advisory
transaction lock on a hash of the key; on SQLite, which has one dispatcher, the
process's own lock), reads the key's line (`keyed_jobs` joined to the jobs' statuses),
records the job's place and, when it is the job's turn, marks it launched. A key is busy
while a launched job of it is not final in `jobs`, which only the collector's record of
the job's end changes: a dispatcher killed mid-job leaves its job running and the key
busy, as it should. A redelivered request finds its row and the same decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import FINAL_JOB_STATUSES, Job, KeyedJob
from kriten_common.messages import JobRequested, UnlaunchedStatus


@dataclass(frozen=True)
class Verdict:
    action: Literal["launch", "wait", "end"]
    reason: str = ""
    status: UnlaunchedStatus = "failed"
    retry_in: float = 1.0


LAUNCH = Verdict("launch")
ZERO = timedelta(0)


@dataclass(frozen=True)
class _Place:
    job_id: str
    order: tuple[datetime, str]
    launched: bool
    ended: str | None


class KeyGate:
    def __init__(self, sessions: SessionFactory, *, settle_seconds: float = 1.0) -> None:
        self._sessions = sessions
        self._settle = timedelta(seconds=settle_seconds)
        # SQLite has no advisory lock (and one dispatcher): this process's decisions are
        # serialised here instead. On PostgreSQL the key's lock alone serialises them, so
        # one busy key does not hold back the decisions of every other.
        self._sqlite_lock = asyncio.Lock()

    async def decide(self, event: JobRequested) -> Verdict:
        assert event.concurrency_key is not None
        async with self._sessions() as session, self._serialised(session):
            # A job has one place, in the line it first joined: a redelivery whose body
            # gives another key (a sender's retry with a changed body, a key expression
            # edited meanwhile) is judged in that line, not given a second place.
            placed = await session.exec(
                select(KeyedJob.key).where(col(KeyedJob.job_id) == event.job_id)
            )
            key = placed.first() or event.concurrency_key
            await _lock_key(session, key)
            verdict = await _decide(session, event, key, self._settle)
            await session.commit()
        return verdict

    def _serialised(self, session: AsyncSession) -> contextlib.AbstractAsyncContextManager[Any]:
        if session.get_bind().dialect.name == "postgresql":
            return contextlib.nullcontext()
        return self._sqlite_lock

    async def cancel_waiting(self, job_id: str) -> bool:
        """Ends a job still waiting in its key's line (a user's cancel): True when it is
        (or already was) ended cancelled, False when it is in no line or launched."""
        async with self._sessions() as session, self._serialised(session):
            row = await session.get(KeyedJob, job_id)
            if row is None:
                return False
            await _lock_key(session, row.key)
            # Again under the lock: the gate may have launched it meanwhile.
            await session.refresh(row)
            if row.launched:
                return False
            if row.ended is None:
                row.ended, row.error = "cancelled", "cancelled"
                await session.commit()
            return row.ended == "cancelled"


async def _lock_key(session: AsyncSession, key: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Held until the transaction ends: replicas decide for one key one at a time.
        await session.exec(select(func.pg_advisory_xact_lock(func.hashtext(key))))


async def _decide(
    session: AsyncSession, event: JobRequested, key: str, settle: timedelta
) -> Verdict:
    rows = (
        await session.exec(
            select(KeyedJob, col(Job.status))
            .join(Job, col(Job.id) == col(KeyedJob.job_id), isouter=True)
            .where(col(KeyedJob.key) == key)
        )
    ).all()
    mine = next((row for row, _ in rows if row.job_id == event.job_id), None)
    if mine is None:
        mine = KeyedJob(job_id=event.job_id, key=key, accepted_at=event.occurred_at)
        session.add(mine)
    if mine.launched:
        return LAUNCH  # a redelivery of a launched job: the launch is idempotent
    if mine.ended:
        # Ended before, but its end not announced yet (the publish failed): again.
        return Verdict("end", mine.error or "", _status(mine.ended))
    # Rows of final jobs no longer count; the line forgets them.
    finished = [
        row.job_id
        for row, status in rows
        if status in FINAL_JOB_STATUSES and row.job_id != event.job_id
    ]
    if finished:
        await session.exec(delete(KeyedJob).where(col(KeyedJob.job_id).in_(finished)))
    places = [
        _Place(row.job_id, _order(row), row.launched, row.ended)
        for row, status in rows
        if status not in FINAL_JOB_STATUSES and row.job_id != event.job_id
    ]
    verdict = _verdict(event, _order(mine), places)
    if verdict.action == "launch" and (unsettled := mine.accepted_at + settle - utcnow()) > ZERO:
        # Acceptance order is only as good as what the line holds: a job accepted just
        # before this one may be in another replica's hands, not recorded yet.
        verdict = Verdict("wait", "settling", retry_in=unsettled.total_seconds())
    if verdict.action == "launch":
        mine.launched = True
    elif verdict.action == "end":
        mine.ended, mine.error = verdict.status, verdict.reason
    return verdict


def _verdict(event: JobRequested, order: tuple[datetime, str], others: list[_Place]) -> Verdict:
    """The policy's rule, given the other jobs of the key that are not final."""
    running = [place for place in others if place.launched]
    if event.concurrency_policy == "skip" and running:
        return Verdict("end", f"skipped: key busy with {running[0].job_id}", "skipped")
    if event.concurrency_policy == "replace":
        newer = [place for place in others if place.order > order and not place.ended]
        if newer:
            latest = max(newer, key=lambda place: place.order)
            return Verdict("end", f"replaced by {latest.job_id}", "cancelled")
    if running:
        return Verdict("wait", f"key busy with {running[0].job_id}")
    earlier = [p for p in others if not p.launched and not p.ended and p.order < order]
    if earlier:
        first = min(earlier, key=lambda place: place.order)
        return Verdict("wait", f"waiting behind {first.job_id}")
    return LAUNCH


def _order(row: KeyedJob) -> tuple[datetime, str]:
    return (row.accepted_at, row.job_id)


def _status(ended: str) -> UnlaunchedStatus:
    return "skipped" if ended == "skipped" else "cancelled" if ended == "cancelled" else "failed"
