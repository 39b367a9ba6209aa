"""The run form of a task, from its input schema: one field per property.

A task's schema is a JSON Schema object (`kriten_common.task_schemas`). Properties of a
simple type (string, integer, number, boolean, or an `enum`) become inputs of that type;
anything else (objects, arrays, references, combinations) becomes a small JSON editor of
its own. A schema that is not an object with properties, or a task without one, gets a
single JSON editor for the whole input (`form_fields` answers None). The form only
helps: the API validates the input against the schema, and its message is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SIMPLE_TYPES = ("string", "integer", "number", "boolean")


@dataclass(frozen=True)
class FormField:
    """One input of the form. `kind` is a simple type, `enum`, or `json`; `default` and
    `choices` are text as the input holds it (an enum's choices are JSON texts, so a
    number stays a number)."""

    name: str
    kind: str
    label: str
    description: str
    required: bool
    default: str
    choices: tuple[tuple[str, str], ...] = ()
    minimum: str = ""
    maximum: str = ""


def form_fields(schema: Any) -> list[FormField] | None:
    """The form's fields, in the schema's order; None for a single JSON editor."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return None
    if not schema["properties"]:
        return None
    required = schema.get("required")
    required_names = (
        {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()
    )
    return [
        _field(name, spec if isinstance(spec, dict) else {}, required=name in required_names)
        for name, spec in schema["properties"].items()
    ]


def _field(name: str, spec: dict[str, Any], *, required: bool) -> FormField:
    label = spec.get("title") if isinstance(spec.get("title"), str) else name
    description = spec.get("description") if isinstance(spec.get("description"), str) else ""
    kind = _kind(spec)
    default = spec.get("default")
    common: dict[str, Any] = {
        "name": name,
        "label": label,
        "description": description,
        "required": required,
    }
    if kind == "enum":
        choices = tuple((json.dumps(value), _text(value)) for value in spec["enum"])
        chosen = json.dumps(default) if "default" in spec else ""
        return FormField(kind=kind, default=chosen, choices=choices, **common)
    if kind == "json":
        shown = json.dumps(default, indent=2) if "default" in spec else ""
        return FormField(kind=kind, default=shown, **common)
    return FormField(
        kind=kind,
        default="" if default is None else _text(default),
        minimum=_bound(spec.get("minimum")),
        maximum=_bound(spec.get("maximum")),
        **common,
    )


def _kind(spec: dict[str, Any]) -> str:
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return "enum"
    declared = spec.get("type")
    if isinstance(declared, list):
        # ["string", "null"]: the field's type is the one that is not null.
        others = [t for t in declared if t != "null"]
        declared = others[0] if len(others) == 1 else None
    return declared if declared in SIMPLE_TYPES else "json"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _bound(value: Any) -> str:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return json.dumps(value) if is_number else ""
