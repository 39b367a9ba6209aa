"""Deleting what has outlived its retention: in bounded batches, one replica at a time,
with metrics; a service lists its rules (which rows, after how long) and runs a `Purger`.

Each batch is one short transaction that changes at most `batch_size` rows, so a first
purge of millions of rows never holds a long lock and lets every other writer in
between batches. On PostgreSQL each batch first takes a transaction-level advisory lock
without waiting: when another replica holds it, that replica is purging, and this run
stops there (the next one will find less to do). The statements are idempotent anyway,
so replicas that do overlap (SQLite has no such lock) only share the work.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.logging import get_logger
from kriten_common.transient import is_transient

log = get_logger(__name__)

DEFAULT_BATCH_SIZE = 1000
# Keys of the PostgreSQL advisory locks held by a replica purging, one per service that
# purges ("kriten" in ASCII, then the service), so replicas of one service take turns
# and two services never wait for each other.
COLLECTOR_LOCK_KEY = 0x6B726974656E01
API_LOCK_KEY = 0x6B726974656E02

# Given the cutoff and the batch size: one statement that deletes (or clears) at most
# that many of the rows older than the cutoff.
BatchStatement = Callable[[datetime, int], UpdateBase]


@dataclass(frozen=True)
class RetentionRule:
    # The `table` label of the metrics and the key of the counts logged.
    name: str
    # How long rows are kept; None keeps them forever (the rule never runs).
    retention: timedelta | None
    statement: BatchStatement


class RetentionMetrics:
    """One per service registry (a metric may be registered only once in it): `of`."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, RetentionMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> RetentionMetrics:
        """The registry's retention metrics, registered on first use (a service's
        `create_app` asks, so `/metrics` lists them before the first run)."""
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.purged = Counter(
            "kriten_retention_purged_rows_total",
            "Rows the retention purge deleted (table=job_output: jobs whose output it"
            " cleared, the job kept).",
            ("table",),
            registry=registry,
        )
        self.last_run = Gauge(
            "kriten_retention_last_run_timestamp_seconds",
            "When the last retention purge run ended without error (Unix time); 0 before"
            " the first.",
            registry=registry,
        )
        self.duration = Histogram(
            "kriten_retention_run_duration_seconds",
            "How long a retention purge run took, failed ones included.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0),
            registry=registry,
        )
        self.failures = Counter(
            "kriten_retention_failures_total",
            "Retention purge runs that failed (the next run retries).",
            registry=registry,
        )


async def _purge_lock(session: AsyncSession, key: int) -> bool:
    """Takes the purge's advisory lock for this transaction; False when another replica
    holds it. SQLite has one writer at a time anyway: always True there."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return True
    taken = await connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key})
    return bool(taken.scalar())


class Purger:
    def __init__(
        self,
        sessions: SessionFactory,
        rules: Sequence[RetentionRule],
        metrics: RetentionMetrics,
        *,
        lock_key: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._rules = [rule for rule in rules if rule.retention is not None]
        self._metrics = metrics
        self._lock_key = lock_key
        self._batch_size = batch_size
        self._clock = clock

    @property
    def active(self) -> bool:
        """Whether any rule runs (all kept forever: nothing to do, ever)."""
        return bool(self._rules)

    async def run_once(self) -> dict[str, int]:
        """One run of every rule; how many rows each changed. Logs one line when it
        changed any. Raises what the database raised (the rows of the batches committed
        before are counted)."""
        started = time.monotonic()
        counts = {rule.name: 0 for rule in self._rules}
        busy = False
        try:
            for rule in self._rules:
                assert rule.retention is not None  # (left out in __init__ otherwise)
                cutoff = self._clock() - rule.retention
                done = await self._purge(rule, cutoff, counts)
                if not done:
                    busy = True  # another replica is purging: it will do the rest
                    break
        finally:
            self._metrics.duration.observe(time.monotonic() - started)
        self._metrics.last_run.set(time.time())
        elapsed = round(time.monotonic() - started, 3)
        if any(counts.values()):
            log.info("retention_purged", **counts, seconds=elapsed, stopped_for_other=busy)
        else:
            log.debug("retention_purged", **counts, seconds=elapsed, stopped_for_other=busy)
        return counts

    async def _purge(self, rule: RetentionRule, cutoff: datetime, counts: dict[str, int]) -> bool:
        """Runs the rule's statement batch after batch until one changes fewer rows than a
        full batch; False when another replica holds the lock."""
        while True:
            async with self._sessions() as session:
                if not await _purge_lock(session, self._lock_key):
                    return False
                result = await session.exec(rule.statement(cutoff, self._batch_size))
                await session.commit()
            changed = int(result.rowcount)
            counts[rule.name] += changed
            self._metrics.purged.labels(table=rule.name).inc(changed)
            if changed < self._batch_size:
                return True
            await asyncio.sleep(0)  # between batches, the rest of the service runs

    async def run_guarded(self) -> dict[str, int] | None:
        """`run_once`, but a failure is logged (a warning when the database is away, with
        its traceback otherwise) and counted, not raised: None then."""
        try:
            return await self.run_once()
        except Exception as problem:
            self._metrics.failures.inc()
            if is_transient(problem):
                # The database is away (or restarted under a pooled connection).
                log.warning("retention_purge_failed", error=str(problem))
            else:
                log.exception("retention_purge_failed")
            return None

    async def run_forever(self, *, interval_seconds: float, first_delay_seconds: float) -> None:
        """A run after `first_delay_seconds`, then every `interval_seconds`; a failed run
        is retried at the next. Returns at once when every rule keeps forever."""
        if not self.active:
            return
        await asyncio.sleep(first_delay_seconds)
        while True:
            await self.run_guarded()
            await asyncio.sleep(interval_seconds)
