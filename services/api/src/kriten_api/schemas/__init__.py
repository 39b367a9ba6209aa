"""The api's request and response bodies, as Pydantic models: the base classes and the
shared bodies here, each resource's in a module of its own beside this one.

The handlers build every JSON answer through these models (`dump`) and the OpenAPI
document (`kriten_api.openapi`) is generated from the same classes, so what the document
says and what is served cannot drift apart. Field names are Kriten's, aliases included
(`gitURL`), because its clients read and send them unchanged.

Timestamps are strings, not `datetime`: the handlers have always answered with
`isoformat()` (`+00:00`, not Pydantic's `Z`), and clients compare them as text.

Request bodies go through `accepted_fields` first (`read_body` does both steps): its keys
are matched to the model's fields as Go's `encoding/json` binds them for Kriten (the exact
name first, then any case: `giturl` is `gitURL`), and a key that is no field is a 400
naming it, so an update never answers 200 while ignoring what it was sent. The fields of
the resource's answer (`answer`) are accepted too, and left to the handler to ignore:
Kriten's clients send back whole objects, read-only fields included. Most handlers keep
their own checks, which give field-specific messages and merge rules no model expresses;
`validate` is the type check in front of them, so no value of a wrong type reaches the
code behind.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, RootModel, ValidationError

from kriten_common import errors

# The answers' base, time format and JSON dump are shared with the collector (a job's
# answer is its callbacks' body): defined once there, re-exported here.
from kriten_common.answers import Out as Out
from kriten_common.answers import Timestamp as Timestamp
from kriten_common.answers import dump as dump
from kriten_common.http import read_json_object

Model = TypeVar("Model", bound=BaseModel)


def _document_accepted_fields(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The request body's JSON Schema as `accepted_fields` enforces it: no other fields;
    the answer's fields are listed as read-only (accepted, and ignored)."""
    schema["additionalProperties"] = False
    properties = schema.setdefault("properties", {})
    answer = getattr(model, "answer", None)
    if answer is not None:
        answer_schema = answer.model_json_schema(by_alias=True, mode="serialization")
        for name, field_schema in answer_schema.get("properties", {}).items():
            if name not in properties and "$ref" not in str(field_schema):
                properties[name] = {**field_schema, "readOnly": True}
    for name in getattr(model, "other_names", ()):
        properties.setdefault(name, {"description": "Another name Kriten took for a field"})
    schema["description"] = (
        f"{schema.get('description', '')}\n\nField names match in any case (`giturl` is"
        " `gitURL`); a field that is not listed here is refused (400)."
    ).strip()


class In(BaseModel):
    # Extras are refused by `accepted_fields`, which knows the answer's fields and the
    # other names; the model itself only checks the types of its own fields.
    model_config = ConfigDict(
        validate_by_name=True,
        validate_by_alias=True,
        extra="allow",
        json_schema_extra=_document_accepted_fields,
    )
    # The resource's answer, whose fields a client may send back with the rest.
    answer: ClassVar[type[Out] | None] = None
    # Other names Kriten took for a field, which the handler reads as they are.
    other_names: ClassVar[tuple[str, ...]] = ()


def _names(model: type[BaseModel]) -> list[str]:
    """A model's field names as they appear in JSON (the alias where there is one)."""
    return [info.alias or name for name, info in model.model_fields.items()]


@cache
def _accepted_names(model: type[In]) -> tuple[frozenset[str], dict[str, str]]:
    """The names a body of `model` may use as they are, and by case-folded name."""
    # The model's own names last, so that they win a case-folded match.
    names = [*(_names(model.answer) if model.answer else []), *model.other_names, *_names(model)]
    return frozenset(names), {name.casefold(): name for name in names}


def accepted_fields(model: type[In], body: dict[str, Any]) -> dict[str, Any]:
    """`body` with each key under its canonical name: an exact match first, then the
    field of any case (as Go's `encoding/json` binds Kriten's bodies). A key that matches
    no field, or one field given under two spellings, is a 400."""
    exact, folded = _accepted_names(model)
    fields: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in body.items():
        name = key if key in exact else folded.get(key.casefold())
        if name is None:
            unknown.append(key)
        elif name in fields:
            raise errors.InvalidInput(f"{name} is given twice, as {spelled[name]!r} and {key!r}")
        else:
            fields[name], spelled[name] = value, key
    if unknown:
        listed = ", ".join(repr(key[:100]) for key in unknown[:10])
        raise errors.InvalidInput(f"unknown field{'s' if len(unknown) > 1 else ''}: {listed}")
    return fields


async def read_body(request: web.Request, model: type[In]) -> dict[str, Any]:
    """The request's JSON object, its keys as `accepted_fields` gives them."""
    return accepted_fields(model, await read_json_object(request))


# Pydantic's error types, in the words the handlers' own checks have always used.
PHRASES = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "dict_type": "must be a JSON object",
    "list_type": "must be a list",
}


def validate(model: type[Model], body: Any) -> Model:
    """`body` as `model` (strictly: no "5" for 5), or a 400 naming the first wrong field.

    A field validator that finds a value wrong raises `errors.InvalidInput` with its own
    message (Pydantic lets any other exception than ValueError through unchanged), so
    the rules that lived in handlers keep their words when they move into a model."""
    try:
        return model.model_validate(body, strict=True)
    except ValidationError as problem:
        first = problem.errors()[0]
        location = [str(part) for part in first["loc"]]
        if not location:
            raise errors.InvalidInput("request body must be a JSON object") from None
        phrase = PHRASES.get(first["type"]) if len(location) == 1 else None
        if phrase is None:
            raise errors.InvalidInput(f"{'.'.join(location)}: {first['msg'].lower()}") from None
        raise errors.InvalidInput(f"{location[0]} {phrase}") from None


# --- shared ---


class ErrorOut(Out):
    """Every 4xx and 5xx answer."""

    error: str


class MessageOut(Out):
    msg: str


class DeletedOut(Out):
    """The answer to a delete (and to other actions on one item)."""

    msg: str
    id: str


class AnyJson(RootModel[Any]):
    """Any JSON value."""


class JsonSchemaOut(RootModel[dict[str, Any] | None]):
    """A task's JSON Schema for its input, or null when it has none."""


class JsonObjectIn(RootModel[dict[str, Any]]):
    """A JSON object (here, a JSON Schema for a task's input)."""
