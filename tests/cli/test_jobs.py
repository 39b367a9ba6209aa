"""`kritenctl run` and `jobs`, end to end: the launcher's dispatcher runs each job as a
local process from a git repository, and its collector records the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kritenctl import errors, jobs
from tests.cli.conftest import Kritenctl, log_in
from tests.system.harness import ServiceProcess, make_task_repo

pytestmark = [pytest.mark.integration, pytest.mark.system]


def _set_up(kritenctl: Kritenctl, url: str, tmp_path: Path) -> None:
    log_in(kritenctl, url)
    kritenctl.ok("runners", "create", "--name", "python", "--git-url", make_task_repo(tmp_path))
    kritenctl.ok(
        "tasks",
        "create",
        "--name",
        "hello-kriten",
        "--runner",
        "python",
        "--command",
        "python examples/hello-kriten/hello-kriten.py",
    )
    kritenctl.ok(
        "tasks",
        "create",
        "--name",
        "broken",
        "--runner",
        "python",
        "--command",
        "echo about to fail; exit 3",
    )


def test_run_wait_exits_0_for_success_and_1_for_failure(
    kriten: ServiceProcess, kritenctl: Kritenctl, tmp_path: Path
) -> None:
    _set_up(kritenctl, kriten.url, tmp_path)
    input_file = tmp_path / "input.json"
    input_file.write_text('{"device": "sw-1"}')

    succeeded = kritenctl(
        "run", "hello-kriten", "--input", f"@{input_file}", "--wait", "-o", "json"
    )
    assert succeeded.exit_code == errors.OK, succeeded.output
    job = json.loads(succeeded.stdout)
    assert job["status"] == "succeeded"
    assert job["json_data"]["extra_vars"] == {"device": "sw-1"}

    failed = kritenctl("run", "broken", "--wait")
    assert failed.exit_code == errors.JOB_FAILED
    assert "failed" in failed.stdout  # the job's table
    last_line = failed.stderr.splitlines()[-1]
    assert last_line.startswith("kritenctl: job broken-")
    assert " failed" in last_line

    # The output, whole or followed; -f exits as --wait does.
    logs = kritenctl.ok("jobs", "logs", job["id"]).stdout
    assert "Hello from Kriten!" in logs
    broken_id = json.loads(kritenctl.ok("jobs", "list", "--task", "broken", "-o", "json").stdout)[
        0
    ]["id"]
    followed = kritenctl("jobs", "logs", broken_id, "-f")
    assert followed.exit_code == errors.JOB_FAILED
    assert "about to fail" in followed.stdout
    assert kritenctl("jobs", "wait", job["id"]).exit_code == errors.OK

    # Without --wait: the job's id at once.
    started = json.loads(kritenctl.ok("run", "hello-kriten", "-o", "json").stdout)
    assert started["msg"] == "job created successfully"
    streamed = kritenctl("run", "hello-kriten", "--input", '{"a": 1}', "--follow")
    assert streamed.exit_code == errors.OK, streamed.output
    assert "Hello from Kriten!" in streamed.stdout

    statuses = json.loads(kritenctl.ok("jobs", "list", "-o", "json").stdout)
    assert len(statuses) == 4
    # Jobs cannot be run on a task that does not exist.
    assert kritenctl("run", "nope", "--wait").exit_code == errors.NOT_FOUND


def test_webhook_test_deliveries_redeliver_and_rotate(
    kriten: ServiceProcess, kritenctl: Kritenctl, tmp_path: Path
) -> None:
    _set_up(kritenctl, kriten.url, tmp_path)
    hook = json.loads(
        kritenctl.ok("webhooks", "create", "--task", "hello-kriten", "-o", "json").stdout
    )

    event = tmp_path / "event.json"
    event.write_text('{"event": "updated", "data": {"name": "sw-1"}}')
    answer = json.loads(
        kritenctl.ok("webhooks", "test", hook["id"], "--body", f"@{event}", "-o", "json").stdout
    )
    assert answer["status"] == "accepted"
    kritenctl.ok("jobs", "wait", answer["id"])

    deliveries = json.loads(kritenctl.ok("webhooks", "deliveries", hook["id"], "-o", "json").stdout)
    assert [d["outcome"] for d in deliveries] == ["accepted"]
    assert deliveries[0]["job_id"] == answer["id"]
    assert "accepted" in kritenctl.ok("webhooks", "deliveries", hook["id"]).stdout
    one = json.loads(
        kritenctl.ok("webhooks", "deliveries", hook["id"], deliveries[0]["id"], "-o", "json").stdout
    )
    assert json.loads(one["body"]) == {"event": "updated", "data": {"name": "sw-1"}}

    again = json.loads(
        kritenctl.ok("webhooks", "redeliver", hook["id"], deliveries[0]["id"], "-o", "json").stdout
    )
    assert again["id"] != answer["id"]
    job = json.loads(kritenctl.ok("jobs", "wait", again["id"], "-o", "json").stdout)
    assert job["json_data"]["extra_vars"] == {"event": "updated", "data": {"name": "sw-1"}}

    rotated = kritenctl.ok("webhooks", "rotate", hook["id"], "--grace-seconds", "0")
    new_secret = json.loads(
        kritenctl.ok(
            "webhooks", "rotate", hook["id"], "--secret", "a-new-secret-12345", "-o", "json"
        ).stdout
    )["secret"]
    assert new_secret == "a-new-secret-12345"
    # The table shows the new secret too (the only time it is shown).
    assert "secret" in rotated.stdout
    assert hook["secret"] not in rotated.stdout
    assert "************" not in rotated.stdout.split("secret", 1)[1].splitlines()[0]


class _ArrivingJob:
    """An api that answers 404 for a job until its request has been stored."""

    def __init__(self, misses: int) -> None:
        self.misses = misses

    def call(self, _path: object, params: dict[str, str]) -> dict[str, str]:
        if self.misses:
            self.misses -= 1
            raise errors.CliError(f"job {params['id']!r} not found (HTTP 404)", errors.NOT_FOUND)
        return {"id": params["id"], "status": "queued"}


def test_a_job_just_accepted_is_waited_for_until_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs.time, "sleep", lambda _seconds: None)
    arriving = _ArrivingJob(misses=3)
    assert jobs.wait_stored(arriving, "job-1")["status"] == "queued"  # type: ignore[arg-type]
    assert arriving.misses == 0
    # After the grace, a job that never appears is the 404 it is.
    monkeypatch.setattr(jobs, "ARRIVAL_GRACE_SECONDS", 0.0)
    with pytest.raises(errors.CliError) as refused:
        jobs.wait_stored(_ArrivingJob(misses=1), "job-2")  # type: ignore[arg-type]
    assert refused.value.exit_code == errors.NOT_FOUND
