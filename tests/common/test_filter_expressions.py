"""Webhook filter expressions: what may be saved, and evaluation that stops at its budget.

No timing: the budget is counted in units of work, so every test says how many units an
expression may use and checks that evaluation stops (or finishes) within them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jmespath
import pytest

from kriten_common.filter_expressions import (
    ALLOWED_FUNCTIONS,
    DEFAULT_BUDGET,
    InvalidExpression,
    OverBudget,
    check_expression,
    compile_expression,
    search,
)

BODY = json.loads(
    '{"event": "updated", "object_type": "dcim.device", "data": {"id": 7, "name": "sw-1",'
    ' "tags": ["core", "lab"]}, "snapshots": {"postchange": {"status": "active"}}}'
)
# The reported attack: each step doubles the value and renders it as a string.
AMPLIFIER = " | ".join(["to_string([@,@])"] * 16)
# The same doubling without any function: a value 2**30 elements wide in 30 lists.
DOUBLED = "(" + " | ".join(["[@,@]"] * 30) + ")"


def _search(expression: str, document: Any, budget: int = DEFAULT_BUDGET) -> Any:
    return search(compile_expression(expression), document, budget=budget)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("object_type == 'dcim.device' && snapshots.postchange.status == 'active'", True),
        ("event == 'created'", False),
        ("contains(data.tags, 'lab')", True),
        ("length(data.tags)", 2),
        ("data.tags[?starts_with(@, 'c')]", ["core"]),
        ("keys(data)", ["id", "name", "tags"]),
        ("data.tags[1:]", ["lab"]),
        ("[data.tags, data.tags][]", ["core", "lab", "core", "lab"]),
        ("max(data.tags)", "lab"),
    ],
)
def test_budgeted_search_agrees_with_jmespath(expression: str, expected: Any) -> None:
    assert _search(expression, BODY) == expected == jmespath.search(expression, BODY)


@pytest.mark.parametrize(
    "expression",
    [
        AMPLIFIER,
        DOUBLED + " == " + DOUBLED,
        "contains(" + DOUBLED + ", `1`)",
        DOUBLED + "[][][][][][][][][][][][][][][][][][][][]",
        "length(" + DOUBLED + "[][][][][][][][][][][][][][][][][][][][])",
        "join(',', [a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a])",
    ],
    ids=["to_string-chain", "deep-equality", "deep-contains", "flatten", "flatten-length", "join"],
)
def test_amplification_stops_at_the_budget(expression: str) -> None:
    # Unbudgeted, each of these does 2**16 to 2**30 steps on a 100-byte body.
    with pytest.raises(OverBudget):
        _search(expression, {**BODY, "a": "x" * 100_000})


def test_the_budget_counts_elements_visited() -> None:
    document = {"items": [{"x": n} for n in range(100)]}
    # A unit for each element's `x`, one for `items` and one for the projection.
    assert _search("items[*].x", document, budget=102) == list(range(100))
    with pytest.raises(OverBudget):
        _search("items[*].x", document, budget=101)


def test_comparisons_pay_for_what_they_walk() -> None:
    document = {"a": list(range(5000)), "b": list(range(5000)), "c": [0]}
    # A unit per element and one for each list's length, before Python compares.
    assert _search("a == b", document, budget=11_000) is True
    with pytest.raises(OverBudget):
        _search("a == b", document, budget=9_000)
    # Lists of different lengths are unequal at once and cost nothing to compare.
    assert _search("a == c", document, budget=3) is False


def test_large_strings_cost_by_size() -> None:
    document = {"s": "x" * 64_000}
    assert _search("length(s)", document, budget=10) == 64_000
    with pytest.raises(OverBudget):
        _search("contains(s, 'y')", document, budget=500)


def test_functions_and_errors_pass_through() -> None:
    with pytest.raises(jmespath.exceptions.JMESPathTypeError):
        _search("length(`5`)", BODY)


@pytest.mark.parametrize(
    "expression",
    [
        "object_type == 'dcim.device' && snapshots.postchange.status == 'active'",
        "contains(data.fields, 'description')",
        "branch == 'main'",
        "length(commits[?starts_with(message, 'deploy')]) > `0`",
        "to_number(data.id) >= `5` && type(data) == 'object'",
    ],
)
def test_ordinary_filters_may_be_saved(expression: str) -> None:
    check_expression(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (AMPLIFIER, "uses to_string()"),
        ("join(',', data.tags)", "uses join()"),
        ("map(&name, data)", "uses map()"),
        ("sort_by(data, &name)", "uses sort_by()"),
        ("length(to_array(@))", "uses to_array()"),
        ("merge(@, @)", "uses merge()"),
        ("reverse(data.tags)", "uses reverse()"),
        (" || ".join(f"a{n} == `{n}`" for n in range(40)), "more than 100 terms"),
        ("(" * 1000 + "event" + ")" * 1000, "nested too deeply"),
        ("event ==", "is not a valid JMESPath expression"),
    ],
)
def test_unsafe_filters_may_not_be_saved(expression: str, message: str) -> None:
    with pytest.raises(InvalidExpression, match=re.escape(message)):
        check_expression(expression)


def test_every_allowed_function_exists() -> None:
    table = jmespath.functions.Functions.FUNCTION_TABLE  # type: ignore[attr-defined]
    assert set(ALLOWED_FUNCTIONS) <= set(table)
