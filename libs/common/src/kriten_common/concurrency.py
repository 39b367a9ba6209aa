"""Concurrency keys: a task's `concurrency_key` (a JMESPath expression on the job input)
and `concurrency_policy`, checked when the task is saved and evaluated once, at admission.

Jobs whose key values are equal run one at a time (docs/concurrency.md); the dispatcher's
gate (`kriten_dispatcher.key_gate`) enforces it. The expression goes through the webhook
filters' machinery (`kriten_common.filter_expressions`): the same size limits at save and
the same evaluation budget, with two more functions allowed, `join` and `to_string`,
since a key is often built from several fields (`join(':', [model, to_string(data.id)])`);
the budget still bounds what they can amplify.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from jmespath.exceptions import JMESPathError

from kriten_common import errors
from kriten_common.filter_expressions import (
    ALLOWED_FUNCTIONS,
    InvalidExpression,
    OverBudget,
    check_expression,
    compile_expression,
    deep_weight,
    search,
)
from kriten_common.messages import ConcurrencyPolicy

POLICIES: tuple[str, ...] = get_args(ConcurrencyPolicy)
DEFAULT_POLICY: ConcurrencyPolicy = "queue"
KEY_FUNCTIONS = ALLOWED_FUNCTIONS | {"join", "to_string"}
MAX_EXPRESSION_LENGTH = 1024
# A key value is stored on the job and indexed in the dispatcher's gate.
MAX_KEY_LENGTH = 255


def check_key_expression(value: Any) -> str | None:
    """The expression to save, None for no key; `InvalidInput` (400) says why not."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise errors.InvalidInput("concurrency_key must be a string (a JMESPath expression)")
    if len(value) > MAX_EXPRESSION_LENGTH:
        raise errors.InvalidInput(
            f"concurrency_key must be at most {MAX_EXPRESSION_LENGTH} characters"
        )
    try:
        check_expression(value, allowed=KEY_FUNCTIONS, role="concurrency keys")
    except InvalidExpression as problem:
        raise errors.InvalidInput(f"concurrency_key {problem}") from None
    return value


def check_policy(value: Any) -> ConcurrencyPolicy | None:
    """The policy to save (None: the default, `queue`)."""
    if value is None:
        return None
    if value not in POLICIES:
        raise errors.InvalidInput(f"concurrency_policy must be one of {', '.join(POLICIES)}")
    policy: ConcurrencyPolicy = value
    return policy


def key_value(expression: str, input_text: str) -> str | None:
    """The key of a job whose input is `input_text`; None when the expression gives null
    (the job has no key and runs beside any other). A string is the key as it is; any
    other value is its compact JSON. Raises `InvalidInput` when the input is not JSON,
    the evaluation fails or is over budget, or the key is too long: a job whose key
    cannot be known is refused rather than run unordered."""
    try:
        document = json.loads(input_text) if input_text.strip() else None
    except (ValueError, RecursionError):
        raise errors.InvalidInput("input must be JSON (the task has a concurrency key)") from None
    try:
        result = search(compile_expression(expression), document)
    except (InvalidExpression, JMESPathError, OverBudget) as problem:
        detail = "over budget" if isinstance(problem, OverBudget) else str(problem)
        raise errors.InvalidInput(f"concurrency key could not be evaluated: {detail}") from None
    if result is None:
        return None
    # Measured before it is written out: a few steps of the expression can build a
    # value whose tree is exponentially larger than its memory ([@,@] | [@,@] | ...),
    # and a deep one (the input nested a thousand levels) that `json.dumps` cannot
    # write at all. Each unit of weight is at least one character of its JSON.
    if deep_weight(result, 2 * MAX_KEY_LENGTH) > 2 * MAX_KEY_LENGTH:
        raise errors.InvalidInput(f"concurrency key is longer than {MAX_KEY_LENGTH} characters")
    key = result if isinstance(result, str) else json.dumps(result, separators=(",", ":"))
    if len(key) > MAX_KEY_LENGTH:
        raise errors.InvalidInput(f"concurrency key is longer than {MAX_KEY_LENGTH} characters")
    # JSON escapes can make a string no database text column takes (`\u0000`, a lone
    # surrogate `\ud800`): refused here, not left to fail the job's insert (a 500).
    if "\x00" in key or (not key.isascii() and _unencodable(key)):
        raise errors.InvalidInput("concurrency key is not valid text (NUL or a lone surrogate)")
    return key


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
