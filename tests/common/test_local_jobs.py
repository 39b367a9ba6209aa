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
    JobSecrets,
    JobStatus,
    LocalJobSpec,
    decode_secrets,
    encode_secrets,
    read_record,
    write_record,
)

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def test_records_round_trip(tmp_path: Path) -> None:
    records = [
        LocalJobSpec(
            job_id="t-1",
            command="echo",
            git_url="file:///r",
            branch="main",
            extra_vars='{"a": "\\"q\\""}',
            timeout_seconds=5,
            secret_names=["k"],
            has_git_token=True,
        ),
        JobStatus(start_time=MOMENT, pid=42),
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


def test_secrets_round_trip_and_never_show_in_a_repr() -> None:
    secrets = JobSecrets(secrets={"api_key": "v\nÿ ✓"}, git_token="tok-S3CRET")
    assert decode_secrets(encode_secrets(secrets)) == secrets
    assert decode_secrets(b"") == JobSecrets()
    assert "tok-S3CRET" not in repr(secrets)
    assert "v\n" not in repr(secrets)


@pytest.mark.parametrize(
    "data",
    [b"{", b"[]", b'{"secrets": {"k": 1}}', b'{"secrets": []}', b'{"git_token": 5}'],
)
def test_malformed_secrets_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"secrets|git_token"):
        decode_secrets(data)


def test_the_private_directory_is_outside_the_job_directory(tmp_path: Path) -> None:
    paths = JobPaths.of(tmp_path, "job-1")
    assert paths.private == tmp_path / ".private" / "job-1"
    for secret_path in (paths.secret_dir, paths.git_token, paths.git_askpass):
        assert paths.private in secret_path.parents
        assert paths.root not in secret_path.parents
