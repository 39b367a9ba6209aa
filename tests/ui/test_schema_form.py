"""The run form from a task's schema, and the console's time format: pure functions."""

from __future__ import annotations

import pytest

from kriten_api.ui.rendering import pretty_input, when
from kriten_api.ui.schema_form import FormField, form_fields


def test_each_simple_property_becomes_an_input_of_its_type() -> None:
    schema = {
        "type": "object",
        "properties": {
            "device": {"type": "string", "title": "Device", "description": "As in NetBox"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5, "default": 1},
            "ratio": {"type": ["number", "null"]},
            "dry_run": {"type": "boolean", "default": True},
            "mode": {"enum": ["check", 2], "default": 2},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
            "nested": {"$ref": "#/$defs/x"},
        },
        "required": ["device", "mode"],
    }
    fields = {field.name: field for field in form_fields(schema) or []}
    assert list(fields) == ["device", "retries", "ratio", "dry_run", "mode", "tags", "nested"]
    assert fields["device"] == FormField(
        name="device",
        kind="string",
        label="Device",
        description="As in NetBox",
        required=True,
        default="",
    )
    assert (fields["retries"].kind, fields["retries"].default) == ("integer", "1")
    assert (fields["retries"].minimum, fields["retries"].maximum) == ("0", "5")
    assert fields["ratio"].kind == "number"
    assert (fields["dry_run"].kind, fields["dry_run"].default) == ("boolean", "true")
    # An enum's choices are JSON, so 2 stays a number when sent.
    assert fields["mode"].choices == (('"check"', "check"), ("2", "2"))
    assert (fields["mode"].default, fields["mode"].required) == ("2", True)
    assert (fields["tags"].kind, fields["tags"].default) == ("json", '[\n  "a"\n]')
    assert fields["nested"].kind == "json"


@pytest.mark.parametrize(
    "schema",
    [None, {}, {"type": "object"}, {"type": "object", "properties": {}}, {"type": "array"}],
)
def test_a_task_without_properties_gets_a_json_editor(schema: object) -> None:
    assert form_fields(schema) is None


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("2025-06-30T21:11:56.123+00:00", "2025-06-30 21:11:56"),
        ("2025-06-30T23:11:56+02:00", "2025-06-30 21:11:56"),
        ("Mon Jun 30 21:11:56 UTC 2025", "2025-06-30 21:11:56"),
        ("Tue Jul  1 01:02:03 UTC 2025", "2025-07-01 01:02:03"),
        (None, ""),
        ("not a time", "not a time"),
    ],
)
def test_times_are_shown_in_one_format(given: str | None, shown: str) -> None:
    assert when(given) == shown


def test_an_input_is_indented_when_it_is_json_and_kept_as_is_otherwise() -> None:
    assert pretty_input('{"a":1}') == '{\n  "a": 1\n}'
    assert pretty_input("plain text <b>") == "plain text <b>"
    # What `json.loads` cannot take without an exception other than ValueError (a job
    # page that was a 500 for everyone): shown as it was given.
    deep = "[" * 100_000
    assert pretty_input(deep) == deep
    huge = "1" * 5000
    assert pretty_input(huge) == huge
