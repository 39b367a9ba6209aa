"""Admission: authorization, schema validation and job ids, without I/O."""

from __future__ import annotations

import pytest

from kriten_common import errors
from kriten_common.admission import (
    SUFFIX_ALPHABET,
    admit,
    check_schema,
    derived_suffix,
    job_id_for,
)
from kriten_common.db.models import Task
from kriten_common.rbac import Permission, Principal

TASK = Task(name="hello-kriten", runner="python", command="python hello.py")
SCHEMA_TASK = Task(
    name="typed",
    runner="python",
    command="true",
    schema_={
        "type": "object",
        "properties": {"count": {"type": "integer"}},
        "required": ["count"],
    },
)


def principal(*permissions: Permission) -> Principal:
    return Principal(
        user_id="u-1", username="alice", provider="local", permissions=frozenset(permissions)
    )


RUNNER = principal(Permission("jobs", ("hello-kriten", "typed"), "write"))


def test_admitted_request_carries_the_input_exactly() -> None:
    raw = '{"a": "x\\"y", "é": [1, 2]}\n'.encode()
    event = admit(principal=RUNNER, task=TASK, raw_input=raw, source="api")
    assert event.input == raw.decode()
    assert (event.task, event.owner, event.owner_id, event.source) == (
        "hello-kriten",
        "alice",
        "u-1",
        "api",
    )
    assert event.job_id.startswith("hello-kriten-")


@pytest.mark.parametrize(
    "permissions",
    [
        (),
        (Permission("jobs", ("hello-kriten",), "read"),),
        (Permission("jobs", ("other",), "write"),),
        (Permission("tasks", ("*",), "write"),),
    ],
)
def test_without_jobs_write_on_the_task_is_forbidden(permissions: tuple[Permission, ...]) -> None:
    with pytest.raises(errors.Forbidden):
        admit(principal=principal(*permissions), task=TASK, raw_input=b"{}", source="api")


@pytest.mark.parametrize(
    "grant", [Permission("jobs", ("*",), "write"), Permission("*", ("*",), "write")]
)
def test_wildcards_allow(grant: Permission) -> None:
    admit(principal=principal(grant), task=TASK, raw_input=b"", source="api")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "must be a JSON object"),
        (b"[1]", "must be a JSON object"),
        (b"{bad", "must be a JSON object"),
        (b"{}", "'count' is a required property"),
        (b'{"count": "3"}', "at 'count': '3' is not of type 'integer'"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_input_failing_the_schema_names_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message):
        admit(principal=RUNNER, task=SCHEMA_TASK, raw_input=raw, source="api")


def test_input_satisfying_the_schema_is_admitted() -> None:
    event = admit(principal=RUNNER, task=SCHEMA_TASK, raw_input=b'{"count": 3}', source="api")
    assert event.input == '{"count": 3}'


def test_invalid_schema_is_refused() -> None:
    with pytest.raises(errors.InvalidInput, match="not a valid JSON Schema"):
        check_schema({"type": "no-such-type"})
    with pytest.raises(errors.InvalidInput):
        check_schema(["not", "an", "object"])
    check_schema({"type": "object"})


def test_same_idempotency_key_gives_the_same_job_id() -> None:
    first = admit(
        principal=RUNNER, task=TASK, raw_input=b"{}", source="webhook", idempotency_key="w:k"
    )
    again = admit(
        principal=RUNNER, task=TASK, raw_input=b"{}", source="webhook", idempotency_key="w:k"
    )
    other = admit(
        principal=RUNNER, task=TASK, raw_input=b"{}", source="webhook", idempotency_key="w:j"
    )
    assert first.job_id == again.job_id != other.job_id


def test_random_job_ids_differ_and_use_the_kubernetes_alphabet() -> None:
    ids = {
        admit(principal=RUNNER, task=TASK, raw_input=b"", source="api").job_id for _ in range(50)
    }
    assert len(ids) == 50
    for job_id in ids:
        suffix = job_id.removeprefix("hello-kriten-")
        assert len(suffix) == 10
        assert set(suffix) <= set(SUFFIX_ALPHABET)


def test_job_id_of_a_long_task_is_a_valid_kubernetes_name() -> None:
    task = "a" * 61 + ".b"
    job_id = job_id_for(task, derived_suffix("k"))
    assert len(job_id) <= 63
    assert job_id[-11:] == "-" + derived_suffix("k")
    assert job_id_for("hello-kriten", "abc") == "hello-kriten-abc"
