"""The local executor's record files: round trip, tolerance of other versions, refusal
of malformed records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kriten_common.local_jobs import (
    JobPaths,
    JobResult,
    JobStatus,
    read_record,
    result_from_exit_code,
    write_record,
)

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def test_records_round_trip(tmp_path: Path) -> None:
    records = [
        JobStatus(start_time=MOMENT, pid=42),
        JobStatus(start_time=MOMENT, pid=42, timeout_seconds=5, commit="0a1b2c"),
        JobResult(state="failed", completion_time=MOMENT, start_time=MOMENT, exit_code=3),
    ]
    for record in records:
        path = tmp_path / "record.json"
        write_record(path, record)
        assert read_record(path, type(record)) == record
    assert json.loads(path.read_text())["completion_time"] == "2026-01-02T03:04:05.600000Z"


def test_missing_file_is_none_and_unknown_fields_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert read_record(path, JobStatus) is None
    path.write_text('{"start_time": "2026-01-02T03:04:05Z", "pid": 7, "added_later": 1}')
    assert read_record(path, JobStatus) == JobStatus(
        start_time=MOMENT.replace(microsecond=0), pid=7
    )


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"pid": 7}',
        '{"start_time": "2026-01-02T03:04:05Z", "pid": "7"}',
        '{"start_time": "2026-01-02T03:04:05Z", "pid": true}',
        '{"start_time": "yesterday", "pid": 7}',
        '{"start_time": "2026-01-02T03:04:05Z", "pid": 7, "state": "failed"}',
    ],
)
def test_malformed_records_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "status.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"invalid status\.json"):
        read_record(path, JobStatus)


def test_a_result_needs_a_known_final_state(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"state": "exploded", "completion_time": "2026-01-02T03:04:05Z"}')
    with pytest.raises(ValueError, match="unknown final state"):
        read_record(path, JobResult)


@pytest.mark.parametrize(
    ("content", "state", "exit_code", "error"),
    [
        ("0\n", "succeeded", 0, None),
        ("3\n", "failed", 3, "exit code 3"),
        ("137\n", "failed", 137, "killed by signal SIGKILL"),
        (
            "checkout 1\n",
            "failed",
            None,
            "checkout failed: the copy of the repository exited with 1",
        ),
    ],
)
def test_the_wrappers_exit_code_is_a_result(
    tmp_path: Path, content: str, state: str, exit_code: int | None, error: str | None
) -> None:
    paths = JobPaths.of(tmp_path, "job-1")
    paths.root.mkdir()
    paths.exit_code.write_text(content)

    result = result_from_exit_code(paths, None)

    assert result is not None
    assert (result.state, result.exit_code, result.error) == (state, exit_code, error)


@pytest.mark.parametrize("content", ["", "checkout\n", "x 1\n", "-1\n"])
def test_a_partial_or_missing_exit_code_is_no_result(tmp_path: Path, content: str) -> None:
    paths = JobPaths.of(tmp_path, "job-1")
    paths.root.mkdir()
    assert result_from_exit_code(paths, None) is None
    # A wrapper killed while it wrote the file: the job died, it did not succeed.
    paths.exit_code.write_text(content)
    assert result_from_exit_code(paths, None) is None


def test_the_private_directory_is_outside_the_job_directory(tmp_path: Path) -> None:
    paths = JobPaths.of(tmp_path, "job-1")
    assert paths.private == tmp_path / ".private" / "job-1"
    for secret_path in (paths.private, paths.secret_dir):
        assert paths.root.parent / ".private" in secret_path.parents
        assert paths.root not in secret_path.parents
