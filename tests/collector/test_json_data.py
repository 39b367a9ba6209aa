"""json_data extraction: the block between the first two `^JSON` lines, per API.md."""

from __future__ import annotations

from typing import Any

import pytest

from kriten_collector.json_data import extract_json_data

FAILED = {"error": "failed to parse JSON"}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("", None),
        ("no markers at all\n", None),
        ("^JSON\n", None),
        ('^JSON\n{"a": 1}\n', None),
        ('before\n{"a": 1}\n^JSON', None),
        # The marker must be the whole line.
        ('x ^JSON\n{"a": 1}\n^JSON x\n', None),
        ('^JSONX\n{"a": 1}\n^JSON\n', None),
    ],
)
def test_without_a_marker_pair_there_is_no_json_data(output: str, expected: None) -> None:
    assert extract_json_data(output) is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('^JSON\n{"a": 1}\n^JSON\n', {"a": 1}),
        # The closing marker is the very end of the output, without a newline.
        ('^JSON\n{"a": 1}\n^JSON', {"a": 1}),
        ('log\nmore log\n^JSON\n{"a": [1, 2]}\n^JSON\ntrailing\n', {"a": [1, 2]}),
        # Escaped quotes inside strings survive (Kriten's Go code broke them).
        ('^JSON\n{"a": "say \\"hi\\""}\n^JSON\n', {"a": 'say "hi"'}),
        # Pretty-printed over several lines.
        ('^JSON\n{\n  "a": {\n    "b": true\n  }\n}\n^JSON\n', {"a": {"b": True}}),
        # CRLF line ends, and whitespace around the markers.
        ('^JSON\r\n{"a": 1}\r\n^JSON\r\n', {"a": 1}),
        ('  ^JSON \n{"a": 1}\n\t^JSON\n', {"a": 1}),
        # Only the first pair counts.
        ('^JSON\n{"a": 1}\n^JSON\n^JSON\n{"b": 2}\n^JSON\n', {"a": 1}),
        ('^JSON\n{"u": "h\\u00e9 ✓ \\u2028 😀"}\n^JSON\n', {"u": "hé ✓ \u2028 😀"}),
        # A raw U+2028 inside a string is valid JSON and not a line break here.
        ('^JSON\n{"u": "a\u2028b"}\n^JSON\n', {"u": "a\u2028b"}),
        ("^JSON\n{}\n^JSON\n", {}),
    ],
)
def test_object_between_markers(output: str, expected: dict[str, Any]) -> None:
    assert extract_json_data(output) == expected


def test_a_string_wrapped_over_lines_parses_once_newlines_are_removed() -> None:
    output = '^JSON\n{"message": "a long line that some\nthing wrapped", "n": 1}\n^JSON\n'

    assert extract_json_data(output) == {"message": "a long line that something wrapped", "n": 1}


def test_a_string_wrapped_over_crlf_lines_parses_too() -> None:
    output = '^JSON\r\n{"message": "wrapped\r\nhere"}\r\n^JSON\r\n'

    assert extract_json_data(output) == {"message": "wrappedhere"}


@pytest.mark.parametrize(
    "block",
    [
        "not json",
        '{"a": 1',
        "{'a': 1}",
        "",
        # Valid JSON, but not an object: json_data is an object or null.
        "[1, 2, 3]",
        '"a string"',
        "42",
        "null",
        # Not JSON at all, though Python's json would take them.
        '{"a": NaN}',
        '{"a": Infinity}',
        # Deep nesting must not crash the collector.
        "[" * 100_000 + "]" * 100_000,
        '{"n": ' + "9" * 10_000 + "}",
    ],
)
def test_unparseable_block_is_an_error_object(block: str) -> None:
    assert extract_json_data(f"^JSON\n{block}\n^JSON\n") == FAILED


def test_the_error_object_is_a_fresh_dict() -> None:
    first = extract_json_data("^JSON\nbad\n^JSON\n")
    assert first is not None
    first["mutated"] = True

    assert extract_json_data("^JSON\nbad\n^JSON\n") == FAILED
