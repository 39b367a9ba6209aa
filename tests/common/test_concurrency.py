"""Concurrency keys: which expressions and policies a task may save, and the key value
admission computes (once) from a job's input."""

from __future__ import annotations

import json

import pytest

from kriten_common import errors
from kriten_common.concurrency import check_key_expression, check_policy, key_value

NETBOX = '{"model": "device", "data": {"id": 7, "name": "sw-1"}}'


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("data.id", "7"),
        ("data.name", "sw-1"),
        ("join(':', [model, to_string(data.id)])", "device:7"),
        ("data", '{"id":7,"name":"sw-1"}'),
        ("data.missing", None),
    ],
)
def test_key_values(expression: str, expected: str | None) -> None:
    assert check_key_expression(expression) == expression
    assert key_value(expression, NETBOX) == expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("data.[", "not a valid JMESPath expression"),
        ("sort(data)", r"sort\(\), which concurrency keys may not call"),
        (" || ".join(["a"] * 101), "too complex"),
        ("a" * 1025, "at most 1024 characters"),
        (7, "must be a string"),
    ],
)
def test_refused_expressions(expression: object, problem: str) -> None:
    with pytest.raises(errors.InvalidInput, match=problem):
        check_key_expression(expression)


def test_no_key() -> None:
    assert check_key_expression(None) is None
    assert check_key_expression("") is None


def test_policies() -> None:
    assert [check_policy(p) for p in ("queue", "replace", "skip", None)] == [
        "queue",
        "replace",
        "skip",
        None,
    ]
    with pytest.raises(errors.InvalidInput, match="one of queue, replace, skip"):
        check_policy("latest")


def test_evaluation_is_budgeted() -> None:
    # Doubling a value with each step: over budget long before it is built.
    doubling = " | ".join(["to_string([@,@])"] * 20)
    assert check_key_expression(doubling) == doubling
    with pytest.raises(errors.InvalidInput, match="over budget"):
        key_value(doubling, '"' + "x" * 100 + '"')


def test_a_value_larger_than_any_key_is_refused_before_it_is_written() -> None:
    # Sixteen steps that each share the value four times: a tree of 4^16 leaves in a few
    # bytes of memory, that `json.dumps` would write out for ever.
    quadrupling = " | ".join(["[@,@,@,@]"] * 16)
    assert check_key_expression(quadrupling) == quadrupling
    with pytest.raises(errors.InvalidInput, match="longer than 255"):
        key_value(quadrupling, '{"a": 1}')
    # The deepest input `json.loads` takes here, one level deeper once in the key: more
    # than `json.dumps` can write. Refused, not a RecursionError (a 500).
    with pytest.raises(errors.InvalidInput, match="longer than 255"):
        key_value("[@, @]", _deepest_json_accepted())


def _deepest_json_accepted() -> str:
    depth = 1
    while True:
        try:
            json.loads("[" * (depth + 1) + "]" * (depth + 1))
        except RecursionError:
            return "[" * depth + "]" * depth
        depth += 1


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("not json", "input must be JSON"),
        ('{"data": {"id": "' + "x" * 300 + '"}}', "longer than 255"),
        ('{"data": {"id": 1}}', "could not be evaluated"),
        # Text no database column takes: refused at admission rather than a 500 on insert.
        ('{"data": {"id": "a\\u0000b"}}', "not valid text"),
        ('{"data": {"id": "\\ud800"}}', "not valid text"),
    ],
)
def test_inputs_without_a_usable_key_are_refused(document: str, problem: str) -> None:
    expression = "data.id" if "could not" not in problem else "starts_with(data.id, 'a')"
    with pytest.raises(errors.InvalidInput, match=problem):
        key_value(expression, document)
