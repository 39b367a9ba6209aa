"""The collector's `JobFinished` on a real broker with no api listening: a job's end is
recorded and announced without an error, a warning or a retry (no `NO_ROUTE`)."""

from __future__ import annotations

import pytest
import structlog

from kriten_collector.collecting import Collector
from kriten_collector.job_store import JobStore
from kriten_common.amqp import Publisher, Topology, connect
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Job
from kriten_common.messages import JobDispatchFailed, JobRequested

pytestmark = pytest.mark.integration


async def test_a_finished_job_with_no_api_listening_is_not_an_error(
    db_sessions: SessionFactory, amqp_url: str, topology: Topology
) -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        collector = Collector(
            store=JobStore(db_sessions),
            publisher=publisher,
            # Not used for the broker's events.
            observer=None,  # type: ignore[arg-type]
        )
        requested = JobRequested(
            job_id="t-quiet", task="t", owner="root", owner_id="u", source="api", input=""
        )
        with structlog.testing.capture_logs() as logged:
            await collector.handle(requested)
            # Ends the job (`failed`), so the collector publishes its `JobFinished`.
            await collector.handle(JobDispatchFailed(job_id="t-quiet", error="no such image"))
        await publisher.close()
    async with db_sessions() as session:
        job = await session.get(Job, "t-quiet")
    assert job is not None
    assert job.status == "failed"
    assert [e for e in logged if e["log_level"] in ("warning", "error", "critical")] == []
