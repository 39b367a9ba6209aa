"""Task schemas: references stay inside the schema, patterns run on RE2."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema._keywords
import jsonschema._legacy_keywords
import jsonschema._utils
import pytest
from jsonschema import validators

from kriten_common import admission, errors
from kriten_common.task_schemas import (
    check_schema,
    re2_validator_class,
    validate_input,
    validator_for_task,
)

CATASTROPHIC = "^(a+)+$"
DRAFTS = {
    "draft-03": "http://json-schema.org/draft-03/schema#",
    "draft-04": "http://json-schema.org/draft-04/schema#",
    "draft-06": "http://json-schema.org/draft-06/schema#",
    "draft-07": "http://json-schema.org/draft-07/schema#",
    "2019-09": "https://json-schema.org/draft/2019-09/schema",
    "2020-12": "https://json-schema.org/draft/2020-12/schema",
}


class Tripwire:
    """Stands in for a module: any use of it fails the test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute: str) -> Any:
        raise AssertionError(f"{self.name}.{attribute} was used")


@pytest.fixture
def no_python_re(monkeypatch: pytest.MonkeyPatch) -> None:
    """jsonschema's regex-matching keywords use the `re` of these three modules."""
    for module in (jsonschema._keywords, jsonschema._utils, jsonschema._legacy_keywords):
        monkeypatch.setattr(module, "re", Tripwire(f"{module.__name__}.re"))


@pytest.fixture
def no_fetch(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """jsonschema retrieves remote references with `urllib.request.urlopen`."""
    fetched: list[str] = []

    def urlopen(request: Any, *args: Any, **kwargs: Any) -> Any:
        fetched.append(str(getattr(request, "full_url", request)))
        raise AssertionError(f"fetched {request}")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return fetched


def refused(schema: Any) -> str:
    with pytest.raises(errors.InvalidInput) as caught:
        check_schema(schema)
    return caught.value.message


def input_refusal(schema: dict[str, Any], document: Any) -> str:
    with pytest.raises(errors.InvalidInput) as caught:
        validate_input(schema, json.dumps(document))
    return caught.value.message


def test_admission_keeps_its_public_names() -> None:
    assert admission.check_schema is check_schema
    assert admission.validate_input is validate_input


# --- references --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "keyword", "ref", "where"),
    [
        ({"$ref": "http://127.0.0.1:9/x"}, "$ref", "http://127.0.0.1:9/x", ""),
        (
            {"properties": {"a": {"$ref": "file:///etc/passwd"}}},
            "$ref",
            "file:///etc/passwd",
            "properties/a",
        ),
        (
            {"items": {"allOf": [{}, {"$ref": "other.json#/x"}]}},
            "$ref",
            "other.json#/x",
            "items/allOf/1",
        ),
        (
            {"$defs": {"a/b": {"$dynamicRef": "https://example.org/s#meta"}}},
            "$dynamicRef",
            "https://example.org/s#meta",
            "$defs/a~1b",
        ),
        (
            {
                "$schema": DRAFTS["2019-09"],
                "additionalProperties": {"$recursiveRef": "https://example.org/"},
            },
            "$recursiveRef",
            "https://example.org/",
            "additionalProperties",
        ),
        (
            {"$schema": DRAFTS["draft-07"], "definitions": {"x": {"$ref": "//evil.example/x"}}},
            "$ref",
            "//evil.example/x",
            "definitions/x",
        ),
    ],
)
def test_references_out_of_the_schema_are_refused_at_save_naming_the_ref(
    schema: dict[str, Any], keyword: str, ref: str, where: str, no_fetch: list[str]
) -> None:
    message = refused(schema)
    assert f"{keyword} {ref!r}" in message
    assert (f"at '{where}'" in message) if where else (" at '" not in message)
    assert "only references within the schema" in message
    assert no_fetch == []


def test_a_ref_key_in_data_is_not_a_reference() -> None:
    check_schema(
        {
            "properties": {"a": {"const": {"$ref": "http://example.org/"}}},
            "default": {"$ref": "file:///etc/passwd"},
            "examples": [{"pattern": "(?=x)"}],
        }
    )


def test_local_references_resolve(no_fetch: list[str]) -> None:
    schema = {
        "$id": "https://example.org/site.schema.json",  # a name, never fetched
        "$defs": {"site": {"type": "string", "minLength": 2}, "anchored": {"$anchor": "n"}},
        "properties": {
            "site": {"$ref": "#/$defs/site"},
            "sites": {"type": "array", "items": {"$ref": "#/$defs/site"}},
            "n": {"allOf": [{"$ref": "#n"}, {"type": "integer"}]},
        },
    }
    check_schema(schema)
    validate_input(schema, '{"site": "ab", "sites": ["cd"], "n": 1}')
    assert "at 'sites/0'" in input_refusal(schema, {"sites": ["x"]})
    assert "at 'n'" in input_refusal(schema, {"n": "x"})
    draft7 = {
        "$schema": DRAFTS["draft-07"],
        "definitions": {"site": {"type": "string"}},
        "properties": {"site": {"$ref": "#/definitions/site"}},
    }
    check_schema(draft7)
    assert "is not of type 'string'" in input_refusal(draft7, {"site": 1})
    assert no_fetch == []


def test_a_stored_remote_ref_is_refused_at_job_time_without_a_fetch(
    tmp_path: Path, no_fetch: list[str]
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "integer", "description": "SECRET-CONTENT"}')
    for ref in (secret.as_uri(), "http://127.0.0.1:9/x", "file:///etc/passwd"):
        schema = {"properties": {"a": {"$ref": ref}}}
        message = input_refusal(schema, {"a": "x"})
        assert message.startswith("task schema cannot be used: ")
        assert repr(ref) in message
        assert "SECRET-CONTENT" not in message
        assert "root:" not in message
    assert no_fetch == []


def test_the_stock_validator_would_have_read_the_file(tmp_path: Path) -> None:
    """The control for the test above: what the registry-less default does."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "integer", "description": "SECRET-CONTENT"}')
    schema = {"properties": {"a": {"$ref": secret.as_uri()}}}
    with pytest.warns(DeprecationWarning, match="remote"):
        error = jsonschema.exceptions.best_match(
            validators.Draft202012Validator(schema).iter_errors({"a": "x"})
        )
    assert error is not None
    assert "is not of type 'integer'" in error.message


@pytest.mark.parametrize(
    ("schema", "ref"),
    [
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "#/$defs/missing"),
        ({"properties": {"a": {"$ref": "#missing"}}}, "#missing"),
    ],
)
def test_an_unresolvable_local_ref_is_a_400_at_job_time(
    schema: dict[str, Any], ref: str, no_fetch: list[str]
) -> None:
    check_schema(schema)  # resolution is checked when it is used
    message = input_refusal(schema, {"a": 1})
    assert message == f"task schema cannot be used: reference {ref!r} cannot be resolved"
    assert no_fetch == []


def test_a_stored_schema_that_is_not_a_schema_is_a_400_at_job_time() -> None:
    message = input_refusal({"properties": {"a": {"type": "no-such-type"}}}, {"a": 1})
    assert message.startswith("task schema cannot be used: schema is not a valid JSON Schema")


# --- patterns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"properties": {"name": {"pattern": r"^(a)\1$"}}}, "properties/name/pattern"),
        ({"properties": {"name": {"pattern": "^(?=a)"}}}, "properties/name/pattern"),
        ({"prefixItems": [{"pattern": "(?<!a)b"}]}, "prefixItems/0/pattern"),
        ({"patternProperties": {"^(?!x)": {}}}, "patternProperties/^(?!x)"),
        ({"$defs": {"d": {"pattern": "a{1001}"}}}, "$defs/d/pattern"),
    ],
)
def test_patterns_re2_cannot_compile_are_refused_at_save_naming_the_field(
    schema: dict[str, Any], where: str
) -> None:
    message = refused(schema)
    assert message.startswith("schema pattern ")
    assert f"at '{where}'" in message
    assert "RE2" in message


def test_patterns_are_checked_with_re2_not_python_re() -> None:
    # `\p{L}` is RE2 (and ECMA-262 with the u flag); Python's `re` refuses it.
    schema = {"properties": {"name": {"pattern": r"^\p{L}+$"}}}
    check_schema(schema)
    validate_input(schema, '{"name": "Zoë"}')
    assert "does not match" in input_refusal(schema, {"name": "Zoë1"})


def test_invalid_schemas_are_still_refused() -> None:
    assert "not a valid JSON Schema" in refused({"type": 5})
    assert "not a valid JSON Schema" in refused({"pattern": 5})
    assert refused({"$schema": {"x": 1}}) == "schema $schema must be a string"


@pytest.mark.parametrize("draft", sorted(DRAFTS))
def test_every_draft_matches_regexes_with_re2(draft: str) -> None:
    cls = re2_validator_class(validators.validator_for({"$schema": DRAFTS[draft]}))
    stock_functions = {
        jsonschema._keywords.pattern,
        jsonschema._keywords.patternProperties,
        jsonschema._keywords.additionalProperties,
        jsonschema._keywords.unevaluatedProperties,
        jsonschema._legacy_keywords.unevaluatedProperties_draft2019,
    }
    assert not stock_functions & set(cls.VALIDATORS.values())
    for keyword in ("pattern", "patternProperties", "additionalProperties"):
        assert cls.VALIDATORS[keyword].__module__ == "kriten_common.task_schemas"


def test_the_catastrophic_pattern_never_reaches_python_re(no_python_re: None) -> None:
    schema = {
        "properties": {"name": {"pattern": CATASTROPHIC}},
        "patternProperties": {CATASTROPHIC: {"type": "string"}},
        "additionalProperties": False,
        "unevaluatedProperties": False,
    }
    evil = "a" * 40 + "!"
    validate_input(schema, json.dumps({"name": "a" * 40}))
    assert "does not match" in input_refusal(schema, {"name": evil})
    assert "do not match any of the regexes" in input_refusal(schema, {evil: "x", "b!": "y"})


def test_the_catastrophic_pattern_finishes_promptly() -> None:
    """2^40 backtracking steps with Python's `re`; RE2 answers in microseconds. The join
    timeout is generous: it only tells "finishes" from "runs for hours"."""
    schema = {"properties": {"name": {"pattern": CATASTROPHIC}}}
    outcome: list[str] = []

    def run() -> None:
        try:
            validate_input(schema, json.dumps({"name": "a" * 40 + "!"}))
            outcome.append("valid")
        except errors.InvalidInput as problem:
            outcome.append(problem.message)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert "does not match" in outcome[0]


# The keywords re-implemented on RE2 behave as jsonschema's own on patterns both engines
# read alike.
SAME_AS_STOCK: list[tuple[dict[str, Any], Any]] = [
    ({"pattern": "^a+$"}, "aaa"),
    ({"pattern": "^a+$"}, "aab"),
    ({"pattern": "b"}, "abc"),  # a search, not a full match
    ({"pattern": "^a"}, 5),
    ({"patternProperties": {"^x": {"type": "integer"}}}, {"xa": 1, "b": "s"}),
    ({"patternProperties": {"^x": {"type": "integer"}}}, {"xa": "s"}),
    ({"patternProperties": {"^x": {}, "y$": {}}, "additionalProperties": False}, {"xa": 1}),
    ({"patternProperties": {"^x": {}, "y$": {}}, "additionalProperties": False}, {"ay": 1}),
    ({"patternProperties": {"^x": {}}, "additionalProperties": False}, {"b": 1}),
    (
        {"properties": {"b": {}}, "patternProperties": {"^x": {}}, "additionalProperties": False},
        {"b": 1, "xz": 2},
    ),
    ({"patternProperties": {"^x": {}}, "additionalProperties": {"type": "string"}}, {"b": 1}),
    ({"patternProperties": {"^x": {}}, "additionalProperties": {"type": "string"}}, {"b": "s"}),
    ({"additionalProperties": False}, {"b": 1}),
    ({"additionalProperties": False}, {}),
    ({"patternProperties": {"^x": {}}, "unevaluatedProperties": False}, {"xa": 1}),
    ({"patternProperties": {"^x": {}}, "unevaluatedProperties": False}, {"xa": 1, "b": 2}),
    (
        {"allOf": [{"patternProperties": {"^x": {}}}], "unevaluatedProperties": False},
        {"xa": 1},
    ),
    (
        {
            "anyOf": [{"patternProperties": {"^x": {"type": "string"}}}, {"required": ["b"]}],
            "unevaluatedProperties": False,
        },
        {"xa": 1, "b": 2},
    ),
    (
        {
            "if": {"properties": {"kind": {"const": "a"}}},
            "then": {"patternProperties": {"^a_": {}}},
            "else": {"patternProperties": {"^b_": {}}},
            "properties": {"kind": {}},
            "unevaluatedProperties": False,
        },
        {"kind": "a", "a_1": 1},
    ),
    (
        {
            "if": {"properties": {"kind": {"const": "a"}}},
            "then": {"patternProperties": {"^a_": {}}},
            "else": {"patternProperties": {"^b_": {}}},
            "properties": {"kind": {}},
            "unevaluatedProperties": False,
        },
        {"kind": "b", "a_1": 1},
    ),
    (
        {
            "$defs": {"x": {"patternProperties": {"^x": {}}}},
            "$ref": "#/$defs/x",
            "unevaluatedProperties": {"type": "integer"},
        },
        {"xa": "s", "b": 1},
    ),
    (
        {
            "$defs": {"x": {"patternProperties": {"^x": {}}}},
            "$ref": "#/$defs/x",
            "unevaluatedProperties": {"type": "integer"},
        },
        {"xa": "s", "b": "s"},
    ),
    (
        {
            "dependentSchemas": {"a": {"patternProperties": {"^x": {}}}},
            "properties": {"a": {}},
            "unevaluatedProperties": False,
        },
        {"a": 1, "xb": 2},
    ),
    (
        {"properties": {"a": {}}, "additionalProperties": True, "unevaluatedProperties": False},
        {"a": 1, "z": 2},
    ),
]


@pytest.mark.parametrize("draft", ["draft-07", "2019-09", "2020-12"])
@pytest.mark.parametrize(("schema", "instance"), SAME_AS_STOCK)
def test_re2_keywords_agree_with_jsonschema(
    draft: str, schema: dict[str, Any], instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = {"$schema": DRAFTS[draft], **schema}
    stock_class = validators.validator_for(schema)
    stock = sorted(e.message for e in stock_class(schema).iter_errors(instance))
    for module in (jsonschema._keywords, jsonschema._utils, jsonschema._legacy_keywords):
        monkeypatch.setattr(module, "re", Tripwire(f"{module.__name__}.re"))
    ours = sorted(e.message for e in validator_for_task(schema).iter_errors(instance))
    assert ours == stock


def test_input_deeper_than_a_recursive_schema_can_follow_is_a_400() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/tree"}},
        "$defs": {"tree": {"type": "array", "items": {"$ref": "#/$defs/tree"}}},
    }
    deep = '{"a": ' + "[" * 900 + "]" * 900 + "}"
    with pytest.raises(errors.InvalidInput, match="nested too deeply"):
        validate_input(schema, deep)
