"""A webhook's `filter`: a JMESPath expression on the parsed body that decides whether the
delivery runs a job. Pure functions.

Evaluation is budgeted (`kriten_common.filter_expressions`): an expression that would
take more than a few milliseconds on a body refuses that delivery instead of holding up
the event loop, whatever was stored in the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from kriten_common.filter_expressions import (
    InvalidExpression,
    OverBudget,
    compile_expression,
    search,
)

FILTER_OVER_BUDGET = "filter over budget"


@dataclass(frozen=True)
class Filter:
    expression: str
    compiled: ParsedResult | None  # None: the stored expression does not compile


class FilterRefused(Exception):
    """The filter could not be evaluated on this body within its budget.

    Unlike a filter that does not match, this refuses the delivery: nothing says whether
    the sender meant it to run.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def compile_filter(expression: str | None) -> Filter | None:
    if not expression:
        return None
    try:
        return Filter(expression, compile_expression(expression))
    except InvalidExpression:
        # The api refuses invalid expressions; one that got into the database anyway
        # must not run jobs the user meant to filter out, so it filters everything.
        return Filter(expression, None)


def is_truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, "" , [] and {} are false; every number is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return bool(value)
    return True


def filter_rejection(flt: Filter | None, body: bytes) -> str | None:
    """None when the delivery passes the filter, else the reason for the delivery log.

    Raises `FilterRefused` when the expression is over its budget on this body.
    """
    if flt is None:
        return None
    if flt.compiled is None:
        return "invalid filter expression"
    try:
        document = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and integers over Python's 4300 digits.
        return "body is not JSON (the webhook has a filter)"
    try:
        result = search(flt.compiled, document)
    except OverBudget:
        raise FilterRefused(FILTER_OVER_BUDGET) from None
    except JMESPathError as problem:
        # A type error in a function call, say: the expression cannot hold.
        return f"filter failed: {problem}"[:200]
    except RecursionError:
        return "filter failed: body nested too deeply"
    return None if is_truthy(result) else "filter did not match"
