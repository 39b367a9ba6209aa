"""The cron scheduler: turns each enabled cronjob's scheduled minutes into job requests.

It runs in every dispatcher replica, with no leader, no lock and no state but the time of
its own last check. Exactly once comes from the job id, not from coordination: a firing's
id is `<cronjob>-<digest of the cronjob's name>-<scheduled minute since the epoch>`, a pure
function of the cronjob and the minute, so every replica that sees a minute pass requests
the same job. The dispatcher launches under that id idempotently (the
Kubernetes Job or the local job directory already exists) and the collector records a
`JobRequested` for a known id only once, so a duplicate request changes nothing.
Firings whose job the collector has already stored are not even requested again.

Each check covers the minutes since the previous one, at most `catch_up` back: after a
restart (or on a new replica) the recent past is made up for, a day of downtime is not
replayed. A cronjob fires only for minutes after its last change, so enabling (or
re-scheduling) one never makes up for minutes it was disabled (or scheduled otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cronsim import CronSim, CronSimError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_common import errors
from kriten_common.admission import MAX_JOB_ID_LENGTH, admit
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import CronJob, Job, Task
from kriten_common.logging import get_logger
from kriten_common.messages import Event, JobRequested
from kriten_common.rbac import Principal, load_principal
from kriten_common.transient import is_transient

log = get_logger(__name__)

CATCH_UP = timedelta(minutes=5)
POLL_SECONDS = 5.0
CRON_FIELDS = 5
# 64 bits: the digest is what keeps two cronjobs' job ids apart, and cronjob names are
# chosen by users, so it must resist a deliberate search for a colliding name (32 bits
# would be a few minutes of hashing), not only chance.
NAME_DIGEST_LENGTH = 16

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class EventPublisher(Protocol):
    async def publish(self, *events: Event) -> None: ...


class ScheduleError(ValueError):
    """A schedule that is not a valid 5-field cron expression."""


def due_minutes(schedule: str, *, after: datetime, until: datetime) -> list[datetime]:
    """The scheduled minutes `t` of `schedule` with `after < t <= until`, in UTC."""
    if len(schedule.split()) != CRON_FIELDS:
        raise ScheduleError(f"not a {CRON_FIELDS}-field cron expression: {schedule!r}")
    if until <= after:
        return []
    try:
        times = CronSim(schedule, after.astimezone(UTC))
    except CronSimError as problem:
        raise ScheduleError(f"{schedule!r}: {problem}") from None
    due = []
    # cronsim yields strictly after `after` (to the second) and stops by itself, with
    # StopIteration, for a schedule that never matches again.
    for moment in times:
        if moment > until:
            break
        due.append(moment)
    return due


def minute_since_epoch(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def cron_job_id(cronjob: str, minute: int) -> str:
    """`<cronjob>-<digest>-<minute>`: the name (cut to fit a Kubernetes name), a digest of
    the full name, and the scheduled minute.

    The digest is always there, not only for long names: with a bare `<cronjob>-<minute>`
    a user could name a cronjob after another's shortened form (or its `<name>-<minute>`)
    and the other's firing would be taken for a duplicate of theirs and never run. The
    tail `-<16 hex>-<digits>` has a fixed shape, so two ids are equal only when the
    digests are, that is when the names are; and the last segment is the 8 digits of the
    minute, never the 10-character suffix of an api or webhook job id.
    """
    digest = hashlib.sha256(f"cron:{cronjob}".encode()).hexdigest()[:NAME_DIGEST_LENGTH]
    tail = f"-{digest}-{minute}"
    room = MAX_JOB_ID_LENGTH - len(tail)
    prefix = cronjob[:room].rstrip("-.")
    # The api only accepts DNS-1123 names, so the prefix is never empty; if it were, the id
    # must still start with an alphanumeric (the digest does).
    return f"{prefix}{tail}" if prefix else tail[1:]


def window_start(*, last_check: datetime | None, now: datetime, catch_up: timedelta) -> datetime:
    """Where a check starts: the previous check, but never more than `catch_up` ago."""
    earliest = now - catch_up
    return earliest if last_check is None else max(last_check, earliest)


def compact_json(extra_vars: dict[str, object]) -> str:
    return json.dumps(extra_vars, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Firing:
    cronjob: CronJob
    scheduled: datetime
    job_id: str


def plan_firings(
    cronjobs: Sequence[CronJob], *, since: datetime, now: datetime
) -> tuple[list[Firing], list[tuple[CronJob, str]]]:
    """The firings due in `(since, now]`, and the cronjobs whose schedule cannot be read."""
    firings: list[Firing] = []
    broken: list[tuple[CronJob, str]] = []
    for cronjob in cronjobs:
        if cronjob.disable:
            continue
        after = max(since, cronjob.updated_at, cronjob.created_at)
        try:
            due = due_minutes(cronjob.schedule, after=after, until=now)
        except ScheduleError as problem:
            broken.append((cronjob, str(problem)))
            continue
        firings.extend(
            Firing(cronjob, moment, cron_job_id(cronjob.name, minute_since_epoch(moment)))
            for moment in due
        )
    return firings, broken


class Scheduler:
    """Checks every `poll_seconds` and requests the jobs of the minutes that have passed."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        publisher: EventPublisher,
        clock: Clock = system_clock,
        poll_seconds: float = POLL_SECONDS,
        catch_up: timedelta = CATCH_UP,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._catch_up = catch_up
        self._last_check: datetime | None = None

    async def run(self) -> None:
        """Runs until cancelled; a failed check is logged and its minutes retried next time."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as problem:
                if is_transient(problem):
                    # The database or broker is away (or a pooled connection died with
                    # its restart): expected in an outage, and the next check retries.
                    log.warning("scheduler_check_deferred", error=str(problem))
                else:
                    log.exception("scheduler_check_failed")
            await asyncio.sleep(self._poll_seconds)

    async def check(self) -> list[str]:
        """Requests every firing due since the last check; returns the job ids requested.

        The last check moves forward only once every request is confirmed by the broker,
        so a broker outage delays firings (within `catch_up`) instead of losing them.
        """
        now = self._clock()
        since = window_start(last_check=self._last_check, now=now, catch_up=self._catch_up)
        async with self._sessions() as session:
            query = select(CronJob).where(col(CronJob.disable).is_(False))
            cronjobs = (await session.exec(query.order_by(col(CronJob.name)))).all()
            firings, broken = plan_firings(cronjobs, since=since, now=now)
            for cronjob, reason in broken:
                log.warning("cronjob_schedule_invalid", cronjob=cronjob.name, reason=reason)
            admitted = await self._admit_new(session, firings)
        await asyncio.gather(*(self._publisher.publish(event) for _, event in admitted))
        for firing, event in admitted:
            log.info(
                "cronjob_fired",
                cronjob=firing.cronjob.name,
                job_id=event.job_id,
                scheduled=firing.scheduled.isoformat(),
            )
        self._last_check = now
        return [event.job_id for _, event in admitted]

    async def _admit_new(
        self, session: AsyncSession, firings: list[Firing]
    ) -> list[tuple[Firing, JobRequested]]:
        if not firings:
            return []
        ids = [firing.job_id for firing in firings]
        stored = set((await session.exec(select(Job.id).where(col(Job.id).in_(ids)))).all())
        principals: dict[str, Principal | None] = {}
        tasks: dict[str, Task | None] = {}
        admitted = []
        for firing in firings:
            if firing.job_id in stored:
                continue
            cronjob = firing.cronjob
            if cronjob.owner_id not in principals:
                principals[cronjob.owner_id] = await load_principal(session, cronjob.owner_id)
            if cronjob.task not in tasks:
                tasks[cronjob.task] = await session.get(Task, cronjob.task)
            principal, task = principals[cronjob.owner_id], tasks[cronjob.task]
            if principal is None or task is None:
                missing = "owner" if principal is None else "task"
                log.warning(
                    "cronjob_firing_refused",
                    cronjob=cronjob.name,
                    job_id=firing.job_id,
                    reason=f"the cronjob's {missing} no longer exists",
                )
                continue
            try:
                event = admit(
                    principal=principal,
                    task=task,
                    raw_input=compact_json(cronjob.extra_vars).encode(),
                    source="cron",
                    job_id=firing.job_id,
                )
            except errors.KritenError as problem:
                # The owner lost `jobs:write` on the task, or the task's schema changed
                # under the cronjob's extra_vars: nothing a retry would change.
                log.warning(
                    "cronjob_firing_refused",
                    cronjob=cronjob.name,
                    job_id=firing.job_id,
                    reason=problem.message,
                )
                continue
            admitted.append((firing, event))
        return admitted
