"""A webhook's `filter`: a JMESPath expression on the parsed body that decides whether the
delivery runs a job. Pure functions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult


@dataclass(frozen=True)
class Filter:
    expression: str
    compiled: ParsedResult | None  # None: the stored expression does not compile


def compile_filter(expression: str | None) -> Filter | None:
    if not expression:
        return None
    try:
        return Filter(expression, jmespath.compile(expression))
    except JMESPathError:
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
    """None when the delivery passes the filter, else the reason for the delivery log."""
    if flt is None:
        return None
    if flt.compiled is None:
        return "invalid filter expression"
    try:
        document = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        return "body is not JSON (the webhook has a filter)"
    try:
        result = flt.compiled.search(document)
    except JMESPathError as problem:
        # A type error in a function call, say: the expression cannot hold.
        return f"filter failed: {problem}"[:200]
    except RecursionError:
        return "filter failed: body nested too deeply"
    return None if is_truthy(result) else "filter did not match"
