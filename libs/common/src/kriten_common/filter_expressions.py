"""Webhook filters: which JMESPath expressions may be saved, and a budgeted evaluation.

A filter runs on every delivery inside the ingress's event loop, and JMESPath lets a
short expression amplify a small body: `[@,@]` doubles a value without copying it, and a
function that serialises or compares the result (`to_string`, `contains`, `==`) then does
exponential work. A 262-character chain of `to_string([@,@])` on a 100-byte body costs
seconds and hundreds of megabytes. Two defences, kept here so that the api (which refuses
expressions when they are saved) and the ingress (which evaluates them) agree:

- `check_expression`, at save time: the expression compiles, stays small (syntax-tree
  nodes and depth) and calls only `ALLOWED_FUNCTIONS`, which inspect values without
  building strings or lists out of whole documents.
- `search`, at delivery time: evaluation against a budget of work units, raising
  `OverBudget` once it is spent. Every node evaluated costs a unit, and so does every
  element an operation has to walk, copy or compare, charged before the work is done.
  This also holds for expressions stored before the allow-list existed, and for the
  amplification still possible without functions (multi-select lists piped into
  themselves, then flattened or compared).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.functions import Functions
from jmespath.parser import ParsedResult
from jmespath.visitor import Options, TreeInterpreter

if TYPE_CHECKING:
    from jmespath.visitor import _TreeNode

__all__ = [
    "ALLOWED_FUNCTIONS",
    "DEFAULT_BUDGET",
    "MAX_DEPTH",
    "MAX_NODES",
    "InvalidExpression",
    "OverBudget",
    "check_expression",
    "compile_expression",
    "search",
]

# Functions that test or measure a value. Left out: those that build strings or lists
# from whole values (to_string, join, to_array, map, merge, reverse, sort, sort_by,
# max_by, min_by), which a filter does not need and which amplify.
ALLOWED_FUNCTIONS = frozenset(
    {
        "abs",
        "avg",
        "ceil",
        "contains",
        "ends_with",
        "floor",
        "keys",
        "length",
        "max",
        "min",
        "not_null",
        "starts_with",
        "sum",
        "to_number",
        "type",
        "values",
    }
)
# `object_type == 'dcim.device' && snapshots.postchange.status == 'active'` has 9 nodes;
# a filter needing more than 100 is better written as several webhooks.
MAX_NODES = 100
# The interpreter recurses once per level, two or three Python frames each, on top of
# the request handler's stack.
MAX_DEPTH = 50
# About 10 ms of evaluation on one core. A unit is one node evaluated on one value, or one element
# walked, copied or compared; a real filter on a real body uses tens to a few hundred.
DEFAULT_BUDGET = 10_000
# Rendering this many bytes of a string (json.dumps, with escapes) costs about one node's
# evaluation; comparing or searching them costs less, so this errs on the safe side.
_STRING_BYTES_PER_UNIT = 64

# Functions whose work does not depend on their arguments' size.
_FREE_FUNCTIONS = frozenset({"length", "not_null", "to_array", "type"})
# Functions whose work is linear in their arguments' top level (elements, keys or
# characters), never in what those elements contain. Every other function (contains,
# join, max, sort, to_string, ...) compares or renders nested values and pays for
# walking its arguments in full.
_SHALLOW_FUNCTIONS = frozenset(
    {
        "abs",
        "ceil",
        "ends_with",
        "floor",
        "keys",
        "map",
        "merge",
        "reverse",
        "starts_with",
        "to_number",
        "values",
    }
)


class InvalidExpression(ValueError):
    """The expression may not be saved as a filter; the message says why."""


class OverBudget(Exception):
    """Evaluating the filter would cost more than its budget."""


def compile_expression(text: str) -> ParsedResult:
    """The compiled expression, or `InvalidExpression` (never another exception).

    The parser recurses once per nested parenthesis or bracket, so a 2 KB expression
    can exhaust the stack; that is an invalid expression too.
    """
    try:
        return jmespath.compile(text)
    except JMESPathError as problem:
        detail = " ".join(str(problem).split())
        raise InvalidExpression(f"is not a valid JMESPath expression: {detail}") from None
    except RecursionError:
        raise InvalidExpression("is not a valid JMESPath expression: nested too deeply") from None


def check_expression(
    text: str, *, allowed: frozenset[str] = ALLOWED_FUNCTIONS, role: str = "filters"
) -> ParsedResult:
    """The compiled expression if it may be saved as a filter, else `InvalidExpression`.

    `allowed` widens the functions for other roles (a task's concurrency key), named
    `role` in the refusal; the size limits and the evaluation budget stay the same."""
    compiled = compile_expression(text)
    nodes = 0
    pending: list[tuple[Any, int]] = [(compiled.parsed, 1)]
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InvalidExpression(f"is too complex: more than {MAX_NODES} terms")
        if depth > MAX_DEPTH:
            raise InvalidExpression(f"is too complex: nested more than {MAX_DEPTH} levels")
        if node["type"] == "function_expression" and node["value"] not in allowed:
            names = ", ".join(sorted(allowed))
            raise InvalidExpression(
                f"uses {node['value']}(), which {role} may not call (allowed: {names})"
            )
        # A slice's children are its bounds (numbers), not nodes.
        pending.extend((child, depth + 1) for child in node["children"] if isinstance(child, dict))
    return compiled


def search(compiled: ParsedResult, document: Any, *, budget: int = DEFAULT_BUDGET) -> Any:
    """The expression's value on `document`, or `OverBudget` once `budget` units are spent.

    JMESPath's own errors (a function given the wrong type, say) propagate unchanged.
    """
    return _BudgetedInterpreter(budget).visit(compiled.parsed, document)


def _top_weight(value: Any) -> int:
    """Units for work linear in the value's top level."""
    if isinstance(value, list | dict):
        return 1 + len(value)
    if isinstance(value, str):
        return 1 + len(value) // _STRING_BYTES_PER_UNIT
    return 1


def deep_weight(value: Any, ceiling: int) -> int:
    """Units for walking the whole value; stops counting once past `ceiling`.

    Iterative and bounded by the ceiling, so a value whose tree is exponentially larger
    than its memory (a list holding the same list twice, n times over) costs no more than
    the budget that is left.
    """
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        total += _top_weight(item)
        if total > ceiling:
            return total
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return total


class _BudgetedInterpreter(TreeInterpreter):
    """JMESPath's interpreter, charging each step to a budget before doing it."""

    def __init__(self, budget: int) -> None:
        self._calls = Functions()
        super().__init__(Options(custom_functions=self._calls))
        self._left = budget
        self._methods: dict[str, Callable[..., Any]] = {}
        # An instance attribute shadows the class's table, which visit_comparator reads.
        self.COMPARATOR_FUNC = {  # type: ignore[misc]
            name: self._charged_comparison(compare)
            for name, compare in TreeInterpreter.COMPARATOR_FUNC.items()
        }

    def _charge(self, units: int) -> None:
        self._left -= units
        if self._left < 0:
            raise OverBudget

    def _charge_deep(self, value: Any) -> None:
        self._charge(deep_weight(value, self._left))

    def visit(self, node: _TreeNode, *args: Any, **kwargs: Any) -> Any:
        # Visitor.visit inlined: this runs once per node and element, and the budget's
        # worth of calls should cost what the plain interpreter's would.
        self._left -= 1
        if self._left < 0:
            raise OverBudget
        kind = node["type"]
        method = self._methods.get(kind)
        if method is None:
            method = self._methods[kind] = getattr(self, f"visit_{kind}", self.default_visit)
        return method(node, *args, **kwargs)

    def _charged_comparison(self, compare: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def charged(left: Any, right: Any) -> Any:
            if isinstance(left, str) and isinstance(right, str):
                self._charge(_top_weight(min(left, right, key=len)))
            elif (
                type(left) is type(right)
                and isinstance(left, list | dict)
                and len(left) == len(right)
            ):
                # Python compares lists and dicts element by element only when their
                # lengths are equal, and then no further than the left side goes.
                self._charge_deep(left)
            return compare(left, right)

        return charged

    def visit_function_expression(self, node: _TreeNode, value: Any) -> Any:
        name = node["value"]
        args = [self.visit(child, value) for child in node["children"]]
        if name not in _FREE_FUNCTIONS:
            for arg in args:
                if name in _SHALLOW_FUNCTIONS:
                    self._charge(_top_weight(arg))
                else:
                    self._charge_deep(arg)
        result = self._calls.call_function(name, args)
        self._charge(_top_weight(result))
        return result

    def visit_flatten(self, node: _TreeNode, value: Any) -> Any:
        base = self.visit(node["children"][0], value)
        if not isinstance(base, list):
            return None
        self._charge(len(base))
        self._charge(sum(len(element) for element in base if isinstance(element, list)))
        merged: list[Any] = []
        for element in base:
            if isinstance(element, list):
                merged.extend(element)
            else:
                merged.append(element)
        return merged

    def visit_slice(self, node: _TreeNode, value: Any) -> Any:
        if not isinstance(value, list):
            return None
        bounds = slice(*cast(list[int | None], node["children"]))
        self._charge(len(range(*bounds.indices(len(value)))))
        return value[bounds]
