"""Completion callbacks: the consumer of `job.finished` (the `collector.callbacks` queue)
that calls each of the task's callbacks asking for the job's final status.

The delivery log (`callback_deliveries`, one row per attempt) is the state: a callback
already delivered, or given up on, is not called again, so a redelivered or retried
message re-sends only the callbacks still owed, and an attempt's number is the count of
the ones before it. Each call carries the same `webhook-id` on every attempt (derived
from the job and the URL) so a receiver can tell a retry from a new event. A callback
that failed is retried through the consumer's delay queues (`RetryableError`) on the
schedule of `kriten_collector.callback_schedule`; after the last attempt, or a `410
Gone`, or an address callbacks may not reach, the failure is final and logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlmodel import col, select

from kriten_collector.callback_schedule import retry_delay
from kriten_collector.callback_sender import CallOutcome, call
from kriten_collector.callback_tasks import CallbackTasks
from kriten_collector.metrics import CollectorMetrics
from kriten_collector.settings import CollectorSettings
from kriten_common.answers import dump
from kriten_common.callbacks import shown_url, signed_headers, webhook_id
from kriten_common.clock import utcnow
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import CallbackDelivery, Job, Task
from kriten_common.job_answers import JobPublic
from kriten_common.logging import get_logger
from kriten_common.messages import Event, JobFinished
from kriten_common.outcomes import RetryableError
from kriten_common.paths import API_BASE

log = get_logger(__name__)

# The receiver says the endpoint is gone for good: retrying would only add load.
GONE = 410
# Finished jobs of one `job.finished` message whose callbacks are handled at once.
CALLBACK_EVENT_CONCURRENCY = 16


def callback_body(job: Job, *, status: str, public_url: str | None) -> bytes:
    """The job as `GET /jobs/{id}` answers it, without its output (a link to it instead),
    and the event's type (`job.succeeded`, `job.failed`, `job.cancelled`)."""
    answer = dump(JobPublic.model_validate(job))
    answer.pop("stdout", None)
    answer["log_url"] = f"{(public_url or '').rstrip('/')}{API_BASE}/jobs/{job.id}/log"
    return json.dumps({"type": f"job.{status}", **answer}).encode()


@dataclass(frozen=True)
class _Owed:
    url: str
    attempt: int


class CompletionCallbacks:
    def __init__(
        self,
        *,
        sessions: SessionFactory,
        http: aiohttp.ClientSession,
        settings: CollectorSettings,
        metrics: CollectorMetrics | None = None,
    ) -> None:
        self._sessions = sessions
        self._http = http
        self._settings = settings
        self._box = SecretBox(settings.encryption_keys.get_secret_value())
        self._metrics = metrics
        # Whether a finished job's task has callbacks at all; `config.changed` about a
        # task must reach `tasks.on_event` (the collector's app subscribes it).
        self.tasks = CallbackTasks(sessions)

    async def handle(self, event: Event) -> None:
        if not isinstance(event, JobFinished):
            return
        if not await self.tasks.wanted(event.task, event.status):
            return
        async with self._sessions() as session:
            task = await session.get(Task, event.task)
            if task is None or not task.callbacks:
                return
            urls = [c["url"] for c in task.callbacks if event.status in c.get("events", ())]
            if not urls:
                return
            # Read only now: the job's row holds its whole output.
            job = await session.get(Job, event.job_id)
            if job is None:
                return
            rows = (
                await session.exec(
                    select(CallbackDelivery).where(col(CallbackDelivery.job_id) == job.id)
                )
            ).all()
        owed = _owed(urls, rows)
        if not owed:
            return
        keys = self._signing_secrets(task)
        if not keys:
            log.warning("callback_without_secret", task=task.name)
            return
        body = callback_body(job, status=event.status, public_url=self._settings.public_url)
        outcomes = await asyncio.gather(
            *(self._call(one, body=body, secrets_=keys, job_id=job.id) for one in owed)
        )
        await self._record(task=task.name, job_id=job.id, status=event.status, results=outcomes)
        retry = [one.attempt for one, outcome in outcomes if self._retried(one, outcome)]
        if retry:
            delay = retry_delay(min(retry), first=self._settings.callback_first_retry_seconds)
            raise RetryableError(f"{len(retry)} callback(s) not delivered yet", delay=delay)

    def _signing_secrets(self, task: Task) -> list[str]:
        if task.callback_secret_encrypted is None:
            return []
        keys = [self._box.decrypt(task.callback_secret_encrypted)]
        expires = task.previous_callback_secret_expires_at
        if task.previous_callback_secret_encrypted and expires is not None and expires > utcnow():
            keys.append(self._box.decrypt(task.previous_callback_secret_encrypted))
        return keys

    async def _call(
        self, one: _Owed, *, body: bytes, secrets_: list[str], job_id: str
    ) -> tuple[_Owed, CallOutcome]:
        headers = signed_headers(
            secrets_=secrets_,
            message_id=webhook_id(job_id, one.url),
            timestamp=int(time.time()),
            body=body,
        )
        outcome = await call(
            self._http,
            url=one.url,
            headers=headers,
            body=body,
            timeout_seconds=self._settings.callback_timeout_seconds,
            allowed=self._settings.callback_allowed_networks,
        )
        return one, outcome

    def _retried(self, one: _Owed, outcome: CallOutcome) -> bool:
        return not self._final(one, outcome)

    def _final(self, one: _Owed, outcome: CallOutcome) -> bool:
        return (
            outcome.delivered
            or outcome.refused
            or outcome.status_code == GONE
            or one.attempt >= self._settings.callback_max_attempts
        )

    async def _record(
        self, *, task: str, job_id: str, status: str, results: list[tuple[_Owed, CallOutcome]]
    ) -> None:
        async with self._sessions() as session:
            for one, outcome in results:
                final = self._final(one, outcome)
                session.add(
                    CallbackDelivery(
                        task=task,
                        job_id=job_id,
                        url=one.url,
                        event=status,
                        webhook_id=webhook_id(job_id, one.url),
                        attempt=one.attempt,
                        status_code=outcome.status_code,
                        latency_ms=outcome.latency_ms,
                        error=outcome.error,
                        delivered=outcome.delivered,
                        gave_up=final and not outcome.delivered,
                    )
                )
            await session.commit()
        for one, outcome in results:
            self._report(one, outcome)

    def _report(self, one: _Owed, outcome: CallOutcome) -> None:
        fields: dict[str, Any] = {
            "callback": shown_url(one.url),
            "attempt": one.attempt,
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
        }
        if outcome.delivered:
            kind = "delivered"
            log.info("callback_delivered", **fields)
        elif outcome.refused:
            kind = "refused"
            log.warning("callback_refused", error=outcome.error, **fields)
        elif self._final(one, outcome):
            kind = "abandoned"
            log.warning("callback_abandoned", error=outcome.error, **fields)
        else:
            kind = "failed"
            log.info("callback_failed", error=outcome.error, **fields)
        if self._metrics is not None:
            self._metrics.callback_called(kind, outcome.latency_ms / 1000)


def _owed(urls: list[str], rows: Any) -> list[_Owed]:
    """The callbacks among `urls` still to call, each with its attempt's number."""
    attempts: dict[str, int] = {}
    done: set[str] = set()
    for row in rows:
        attempts[row.url] = max(attempts.get(row.url, 0), row.attempt)
        if row.delivered or row.gave_up:
            done.add(row.url)
    return [_Owed(url, attempts.get(url, 0) + 1) for url in urls if url not in done]
