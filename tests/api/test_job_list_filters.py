"""`GET /jobs` filters by source and by time of request, and a job answers its input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from sqlmodel import select

from kriten_api.keys import SESSIONS
from kriten_common.db.models import Job, User
from tests.api.conftest import ApiClient, get, login

pytestmark = pytest.mark.integration

# Fixed: the parameters name it, and must be the same in every xdist worker.
NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)


async def _jobs(api: ApiClient) -> None:
    async with api.app[SESSIONS]() as session:
        root = (await session.exec(select(User).where(User.username == "root"))).one()
        for suffix, source, age in (("a", "api", 3), ("b", "webhook", 2), ("c", "cron", 1)):
            session.add(
                Job(
                    id=f"t-{suffix}",
                    task="t",
                    owner="root",
                    owner_id=root.id,
                    source=source,
                    input='{"n": 1}',
                    created_at=NOW - timedelta(hours=age),
                )
            )
        await session.commit()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("source=webhook", ["t-b"]),
        ("source=api&task=t", ["t-a"]),
        (f"since={quote((NOW - timedelta(hours=2)).isoformat())}", ["t-c", "t-b"]),
        (f"until={quote((NOW - timedelta(hours=2)).isoformat())}", ["t-a"]),
        # No offset: UTC, as the console's time fields send it.
        (f"since={(NOW - timedelta(hours=2)).strftime('%Y-%m-%dT%H:%M')}", ["t-c", "t-b"]),
        ("since=2000-01-01T00:00:00Z&source=cron", ["t-c"]),
    ],
)
async def test_jobs_are_filtered_by_source_and_time(
    api: ApiClient, query: str, expected: list[str]
) -> None:
    await _jobs(api)
    root = await login(api)
    assert [job["id"] for job in await get(api, root, f"/jobs?{query}")] == expected


@pytest.mark.parametrize(
    "query",
    [
        "source=email",
        "since=yesterday",
        "until=2025-13-01",
        # In range as written, out of it in UTC.
        f"since={quote('0001-01-01T00:00:00+05:00')}",
        f"until={quote('9999-12-31T23:59:59-05:00')}",
    ],
)
async def test_a_bad_filter_is_a_400_naming_it(api: ApiClient, query: str) -> None:
    response = await api.get(f"/api/v1/jobs?{query}", headers=await login(api))
    assert response.status == 400
    assert query.split("=")[0] in (await response.json())["error"]


async def test_a_job_answers_its_input_and_a_list_does_not(api: ApiClient) -> None:
    await _jobs(api)
    root = await login(api)
    assert (await get(api, root, "/jobs/t-a"))["input"] == '{"n": 1}'
    assert all("input" not in job for job in await get(api, root, "/jobs"))
