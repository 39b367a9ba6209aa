"""Task input schemas: checked when a task is saved, used when a job is requested.

The one place for both, so the rules at save and at use cannot drift apart. Two rules
on top of JSON Schema, because the schemas are written by users and the inputs by anyone
who can start a job or send a webhook:

* **References stay inside the schema.** `$ref`, `$dynamicRef` and `$recursiveRef` must
  be fragments (`#/$defs/site`, `#anchor`). jsonschema's default resolver follows
  `http://…` and `file://…` references with urllib: from inside the event loop, without
  a timeout, and with what it fetched quoted back in the 400 message (a local-file
  read and SSRF for anyone allowed to save a task). Saving such a schema is refused;
  and validation resolves against a registry that retrieves nothing, so a schema stored
  some other way (written to the database directly, or saved before this check) is
  answered 400 at job time, never with a fetch.
* **Patterns are RE2.** `pattern` and `patternProperties` (and `additionalProperties` /
  `unevaluatedProperties`, which reuse the `patternProperties` regexes) match with
  google-re2, whose time is linear in the input. Python's backtracking `re`, which
  jsonschema uses, takes exponential time on patterns such as `^(a+)+$`, and the input
  is the sender's choice: one request would freeze the service. RE2 has no
  backreferences and no lookaround; a pattern it cannot compile is refused at save,
  naming the field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import re2
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import FormatChecker, ValidationError, validators
from jsonschema import exceptions as schema_errors
from jsonschema.protocols import Validator

from kriten_common import errors

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")

# Where subschemas live, for the checks at save: the union over drafts 3 to 2020-12 (a
# keyword one draft does not know is not applied by that draft's validator, so walking
# it as well costs a needless check at worst). Values that are data, not schemas
# (`const`, `enum`, `default`, `examples`), are not walked: a `$ref` key inside them is
# not a reference.
_SCHEMA_OR_SCHEMAS = frozenset(
    {
        "additionalItems",
        "additionalProperties",
        "allOf",
        "anyOf",
        "contains",
        "contentSchema",
        "disallow",
        "else",
        "extends",
        "if",
        "items",
        "not",
        "oneOf",
        "prefixItems",
        "propertyNames",
        "then",
        "type",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_SCHEMA_MAPS = frozenset(
    {"$defs", "definitions", "dependencies", "dependentSchemas", "patternProperties", "properties"}
)

# RE2's defaults (UTF-8, 8 MiB per regex, which also bounds pattern size), without the
# log line RE2 writes to stderr for each pattern it refuses: a refused pattern is the
# client's mistake, answered with a 400, not an event for the service's log.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

_SHOWN_LENGTH = 120


class UnusableSchema(Exception):
    """A stored schema that cannot be applied (an unsupported pattern, say)."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."


def _pointer(path: str, token: object) -> str:
    escaped = str(token).replace("~", "~0").replace("/", "~1")
    return f"{path}/{escaped}" if path else escaped


def _at(path: str) -> str:
    return f" at '{path}'" if path else ""


def _re2_reason(problem: Exception) -> str:
    reason = problem.args[0] if problem.args else problem
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re2._Regexp[str]:
    """The RE2 regex for a schema pattern; raises `re2.error` when RE2 cannot compile it."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _regex(pattern: object) -> re2._Regexp[str]:
    """`compile_pattern` for the keywords at validation time, where a bad pattern means
    a schema stored without the checks at save."""
    if not isinstance(pattern, str):
        raise UnusableSchema(f"pattern {_shown(pattern)} is not a string")
    try:
        return compile_pattern(pattern)
    except re2.error as problem:
        raise UnusableSchema(
            f"pattern {_shown(pattern)} is not supported (RE2): {_re2_reason(problem)}"
        ) from None


# The keywords that match regexes, as in jsonschema 4.26 (`_keywords`, `_utils`,
# `_legacy_keywords`) with `re.search` replaced by RE2. They take the validator untyped
# because they use its private resolver, as jsonschema's own keywords do.

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError]]


def _pattern(
    validator: Any, pattern: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = _regex(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_keys(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterator[str]:
    properties = schema.get("properties", {})
    regexes = [_regex(pattern) for pattern in schema.get("patternProperties", {})]
    for key in instance:
        if key not in properties and not any(regex.search(key) for regex in regexes):
            yield key


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = set(_additional_keys(instance, schema))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            joined, verb = _extras(sorted(extras, key=str))
            yield ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


def _extras(extras: list[Any]) -> tuple[str, str]:
    return ", ".join(repr(extra) for extra in extras), "was" if len(extras) == 1 else "were"


def _is_valid(found: Iterable[ValidationError]) -> bool:
    return next(iter(found), None) is None


def _evaluated_keys(
    validator: Any, instance: Mapping[str, Any], schema: Any, *, draft2019: bool
) -> list[str]:
    """The instance's keys evaluated by `schema` (jsonschema's
    `find_evaluated_property_keys_by_schema`, 2020-12 or 2019-09 flavour)."""
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []

    def under(resolved: Any) -> list[str]:
        return _evaluated_keys(
            validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
            instance,
            resolved.contents,
            draft2019=draft2019,
        )

    if (ref := schema.get("$ref")) is not None:
        keys += under(validator._resolver.lookup(ref))
    if draft2019:
        if "$recursiveRef" in schema:
            keys += under(referencing.jsonschema.lookup_recursive_ref(validator._resolver))
        for keyword in ("properties", "additionalProperties", "unevaluatedProperties"):
            if keyword in schema:
                value = schema[keyword]
                if validator.is_type(value, "boolean") and value:
                    keys += instance.keys()
                elif validator.is_type(value, "object"):
                    keys += [key for key in value if key in instance]
    else:
        if (dynamic := schema.get("$dynamicRef")) is not None:
            keys += under(validator._resolver.lookup(dynamic))
        properties = schema.get("properties")
        if validator.is_type(properties, "object"):
            keys += properties.keys() & instance.keys()
        for keyword in ("additionalProperties", "unevaluatedProperties"):
            if (subschema := schema.get(keyword)) is not None:
                keys += [
                    key
                    for key, value in instance.items()
                    if _is_valid(validator.descend(value, subschema))
                ]

    if "patternProperties" in schema:
        regexes = [_regex(pattern) for pattern in schema["patternProperties"]]
        keys += [key for key in instance for regex in regexes if regex.search(key)]
    if "dependentSchemas" in schema:
        for key, subschema in schema["dependentSchemas"].items():
            if key in instance:
                keys += _evaluated_keys(validator, instance, subschema, draft2019=draft2019)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _is_valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema, draft2019=draft2019)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"], draft2019=draft2019)
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"], draft2019=draft2019)
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"], draft2019=draft2019)
    return keys


def _unevaluated_properties(*, draft2019: bool) -> Keyword:
    def keyword(
        validator: Any, unevaluated: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        evaluated = _evaluated_keys(validator, instance, schema, draft2019=draft2019)
        failing = [
            key
            for key in instance
            if key not in evaluated
            and not _is_valid(validator.descend(instance[key], unevaluated, path=key))
        ]
        if not failing:
            return
        if unevaluated is False:
            joined, verb = _extras(sorted(failing, key=str))
            yield ValidationError(
                f"Unevaluated properties are not allowed ({joined} {verb} unexpected)"
            )
        else:
            joined, verb = _extras(failing)
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({joined} {verb} unevaluated and invalid)"
            )

    return keyword


@functools.cache
def re2_validator_class(base: type[Validator]) -> type[Validator]:
    """`base` (a draft's validator class) with every regex-matching keyword on RE2."""
    overrides: dict[str, Keyword] = {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    }
    if "unevaluatedProperties" in base.VALIDATORS:
        # Draft 2019-09 is the draft with `$recursiveRef`; its evaluated keys differ.
        overrides["unevaluatedProperties"] = _unevaluated_properties(
            draft2019="$recursiveRef" in base.VALIDATORS
        )
    # `extend` without a version: the new class is not registered for any `$schema`, so
    # other users of jsonschema in the process keep the stock validators.
    extended: type[Validator] = validators.extend(base, overrides)  # type: ignore[no-untyped-call]
    return extended


# Validation resolves references against this registry (jsonschema adds the drafts'
# meta-schemas, in memory): an empty `Registry` has no resources and its retrieve raises
# `NoSuchResource`, so a reference out of the schema is unresolvable, with no network or
# file access.
LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry()


@functools.cache
def _meta_validator(base: type[Validator]) -> Validator:
    """The validator of the draft's meta-schema, with the draft's format checks minus
    `regex`: that one compiles the schema's patterns with Python's `re`, whose syntax is
    not RE2's; `_check_safety` compiles them with RE2 instead and names the field."""
    checker = FormatChecker(formats=())
    checker.checkers = {
        name: check for name, check in base.FORMAT_CHECKER.checkers.items() if name != "regex"
    }
    meta_class = validators.validator_for(base.META_SCHEMA, default=base)
    return meta_class(base.META_SCHEMA, format_checker=checker)


def _subschemas(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every subschema that is an object, with its JSON Pointer (no leading slash)."""
    pending: list[tuple[str, Any]] = [("", schema)]
    while pending:  # a loop, not recursion: nesting depth is the client's choice
        path, current = pending.pop()
        if not isinstance(current, Mapping):
            continue
        yield path, current
        for keyword, value in current.items():
            here = _pointer(path, keyword)
            if keyword in _SCHEMA_MAPS and isinstance(value, Mapping):
                pending += [(_pointer(here, name), sub) for name, sub in value.items()]
            elif keyword in _SCHEMA_OR_SCHEMAS:
                if isinstance(value, list):
                    pending += [(_pointer(here, index), sub) for index, sub in enumerate(value)]
                else:
                    pending.append((here, value))


def _check_safety(schema: Mapping[str, Any]) -> None:
    """Raises `InvalidInput` for a reference out of the schema or a pattern RE2 refuses.

    `$id` may be anything (json-schema.org's examples carry `https://` ids): it names the
    document, it is never fetched, and with fragment-only references every reference
    resolves inside the resource that declares the id.
    """
    for path, subschema in _subschemas(schema):
        for keyword in REFERENCE_KEYWORDS:
            if keyword not in subschema:
                continue
            ref = subschema[keyword]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise errors.InvalidInput(
                    f"schema {keyword} {_shown(ref)}{_at(path)} is not allowed: only "
                    "references within the schema ('#/$defs/...', '#anchor') are supported"
                )
        patterns: list[tuple[str, object]] = []
        if "pattern" in subschema:
            patterns.append((_pointer(path, "pattern"), subschema["pattern"]))
        if isinstance(properties := subschema.get("patternProperties"), Mapping):
            here = _pointer(path, "patternProperties")
            patterns += [(_pointer(here, key), key) for key in properties]
        for where, pattern in patterns:
            if not isinstance(pattern, str):
                raise errors.InvalidInput(f"schema pattern{_at(where)} must be a string")
            try:
                compile_pattern(pattern)
            except re2.error as problem:
                raise errors.InvalidInput(
                    f"schema pattern {_shown(pattern)}{_at(where)} is not supported: "
                    f"{_re2_reason(problem)} (patterns use RE2 syntax: no backreferences, "
                    "no lookahead or lookbehind)"
                ) from None


def check_schema(schema: Any) -> None:
    """Raises `InvalidInput` when `schema` is not a JSON Schema this service will apply."""
    if not isinstance(schema, dict):
        raise errors.InvalidInput("schema must be a JSON object")
    if not isinstance(schema.get("$schema", ""), str):
        raise errors.InvalidInput("schema $schema must be a string")
    # As `check_schema` of the draft's validator (the first error), with the format
    # checks of `_meta_validator`.
    meta = _meta_validator(validators.validator_for(schema))
    problem = next(iter(meta.iter_errors(schema)), None)
    if problem is not None:
        raise errors.InvalidInput(f"schema is not a valid JSON Schema: {problem.message}")
    _check_safety(schema)


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    # The checks at save again: a stored schema may predate them or bypass the api.
    check_schema(schema)
    cls = re2_validator_class(validators.validator_for(schema))
    return cls(schema, registry=LOCAL_ONLY)


def validator_for_task(schema: dict[str, Any]) -> Validator:
    """The validator for a stored task schema; `InvalidInput` when it cannot be used."""
    try:
        return _validator(json.dumps(schema, sort_keys=True))
    except errors.InvalidInput as problem:
        raise errors.InvalidInput(f"task schema cannot be used: {problem.message}") from None


def _reference(problem: referencing.exceptions.Unresolvable) -> str:
    """The reference that failed, as written. Not the exception's own text: that may
    quote the whole schema."""
    # jsonschema wraps referencing's error; the original is the cause.
    cause = problem.__cause__
    original = cause if isinstance(cause, referencing.exceptions.Unresolvable) else problem
    if isinstance(original, referencing.exceptions.PointerToNowhere):
        return f"#{original.ref}"
    if isinstance(original, referencing.exceptions.NoSuchAnchor):
        return f"#{original.anchor}"
    return original.ref


def validate_input(schema: dict[str, Any] | None, raw_input: str) -> None:
    """Raises `InvalidInput` with the validation message when the input fails the schema,
    or with the reason when the stored schema cannot be applied (never a 500, never a
    fetch)."""
    if not schema:
        return
    try:
        document = json.loads(raw_input) if raw_input.strip() else None
    except (ValueError, RecursionError):  # also a >4300-digit int, or nesting too deep
        raise errors.InvalidInput("input must be a JSON object (the task has a schema)") from None
    if not isinstance(document, dict):
        raise errors.InvalidInput("input must be a JSON object (the task has a schema)")
    validator = validator_for_task(schema)
    try:
        error = schema_errors.best_match(validator.iter_errors(document))
    except referencing.exceptions.Unresolvable as problem:
        raise errors.InvalidInput(
            f"task schema cannot be used: reference {_shown(_reference(problem))} "
            "cannot be resolved"
        ) from None
    except schema_errors.UnknownType as problem:
        raise errors.InvalidInput(
            f"task schema cannot be used: unknown type {_shown(problem.type)}"
        ) from None
    except UnusableSchema as problem:
        raise errors.InvalidInput(f"task schema cannot be used: {problem}") from None
    except RecursionError:
        # A recursive schema (`"items": {"$ref": "#"}`) follows the input as deep as it goes.
        raise errors.InvalidInput("input is nested too deeply for the task schema") from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        at = f" at '{where}'" if where else ""
        raise errors.InvalidInput(f"input does not match the task schema{at}: {error.message}")
