"""What a command reads: `@file` (JSON or YAML), `-` for standard input, or the text
itself; and `--set field=value` pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from kritenctl.errors import USAGE, CliError

YAML_SUFFIXES = (".yaml", ".yml")


def _source(argument: str) -> tuple[str, bytes]:
    """(where it came from, its bytes) for `@path`, `path`, `-`/`@-` or inline text."""
    if argument in ("-", "@-"):
        return "standard input", sys.stdin.buffer.read()
    name = argument[1:] if argument.startswith("@") else argument
    path = Path(name).expanduser()
    if argument.startswith("@") or _is_file(path):
        try:
            return str(path), path.read_bytes()
        except OSError as problem:
            raise CliError(f"cannot read {path}: {problem.strerror}", USAGE) from None
    return "the argument", argument.encode()


def read_raw(argument: str) -> bytes:
    """A job's input: sent byte for byte as the task will see it, except that a YAML file
    is sent as the JSON it means (EXTRA_VARS is JSON to every Kriten task)."""
    where, data = _source(argument)
    if where.endswith(YAML_SUFFIXES):
        return json.dumps(_parse(where, data)).encode()
    return data


def read_document(argument: str) -> Any:
    """A JSON or YAML document (YAML is a superset of JSON, so one parser reads both)."""
    where, data = _source(argument)
    return _parse(where, data)


def _parse(where: str, data: bytes) -> Any:
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as problem:
        first_line = str(problem).splitlines()[0] if str(problem) else "invalid"
        raise CliError(f"{where} is not valid JSON or YAML: {first_line}", USAGE) from None


def read_object(argument: str) -> dict[str, Any]:
    document = read_document(argument)
    if not isinstance(document, dict):
        raise CliError(f"{argument}: expected an object of fields", USAGE)
    return document


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`field=value` pairs; a value that parses as JSON is taken as that (`enabled=false`,
    `timeout_seconds=60`, `groups=["ops"]`), any other as a string."""
    fields: dict[str, Any] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not name:
            raise CliError(f"--set {assignment!r}: expected FIELD=VALUE", USAGE)
        try:
            fields[name] = json.loads(value)
        except ValueError:
            fields[name] = value
    return fields


def _is_file(path: Path) -> bool:
    """Whether `path` names a file; inline JSON longer than a file name can be (or with
    a NUL) is not one, rather than an `OSError`."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
