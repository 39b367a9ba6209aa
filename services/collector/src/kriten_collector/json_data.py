"""`json_data` extraction: the JSON object a task prints between two `^JSON` lines.

Per the API contract: take the text between the first marker line and the next one, parse
it as a JSON object; failing that, parse it again with the line breaks removed (which
mends a long line that something wrapped); failing that, `{"error": "failed to parse
JSON"}`. Without a pair of markers there is no json_data (None). Odd output is never an
error of the job, so this never raises.

Decisions beyond the contract:
- A marker is a line that is `^JSON` once surrounding whitespace (including the `\\r` of
  a CRLF line end) is stripped.
- Valid JSON that is not an object (an array, a string, `null`) is reported as a parse
  failure: the contract and Kriten's Go implementation, which decodes into a map, both
  promise an object, and clients index json_data by key.
- `NaN` and `Infinity` are refused: they are not JSON, and PostgreSQL's JSONB and most
  clients reject them.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "^JSON"
PARSE_ERROR: dict[str, Any] = {"error": "failed to parse JSON"}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _block(output: str) -> str | None:
    """The text between the first two marker lines, or None without a pair."""
    start: int | None = None
    # split("\n"), not splitlines(): U+2028 and friends may sit inside JSON strings.
    lines = output.split("\n")
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        if start is None:
            start = index
        else:
            return "\n".join(lines[start + 1 : index])
    return None


def extract_json_data(output: str) -> dict[str, Any] | None:
    """The task's json_data from its output (see the module docstring)."""
    try:
        block = _block(output)
        if block is None:
            return None
        parsed = _parse_object(block)
        if parsed is None:
            parsed = _parse_object(block.replace("\r", "").replace("\n", ""))
    except Exception:
        # Defence in depth for the promise above; the parsing itself catches what it can.
        return dict(PARSE_ERROR)
    return parsed if parsed is not None else dict(PARSE_ERROR)
