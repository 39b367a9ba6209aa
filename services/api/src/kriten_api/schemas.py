"""The api's request and response bodies, as Pydantic models.

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
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from kriten_common import errors
from kriten_common.http import read_json_object

Model = TypeVar("Model", bound=BaseModel)


class Out(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)


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


def dump(model: BaseModel) -> Any:
    """The JSON value of an answer. Unset optional fields are left out, not null: some
    answers carry a field only sometimes (a job's `start_time`, a create's `key`)."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


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
    """`body` as `model` (strictly: no "5" for 5), or a 400 naming the first wrong field."""
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


# --- login ---


class LoginIn(In):
    username: str
    password: str
    provider: str | None = Field(default="local", description="local or active_directory")


class TokenOut(Out):
    token: str = Field(description="A JWT, also set as the `token` cookie")


# --- runners ---


class RunnerOut(Out):
    name: str
    image: str
    git_url: str = Field(alias="gitURL")
    branch: str
    token: str = Field(description="Masked when set, empty when not")
    secret: dict[str, str] = Field(description="The secret keys, with masked values")
    created_at: str
    updated_at: str


class RunnerIn(In):
    answer = RunnerOut
    name: str | None = Field(default=None, description="A DNS-1123 name; only on create")
    image: str | None = None
    git_url: str | None = Field(default=None, alias="gitURL", description="Required on create")
    branch: str | None = None
    token: str | None = Field(default=None, description="The mask keeps it, empty clears it")
    secret: dict[str, str] | None = Field(
        default=None, description="Merged: an empty value deletes a key, the mask keeps it"
    )


class SecretsOut(RootModel[dict[str, str]]):
    """A runner's secret keys, with masked values."""


class SecretsIn(RootModel[dict[str, str]]):
    """Keys to merge into the secrets: an empty value deletes a key, the mask keeps it."""


class SecretKeysIn(RootModel[list[str] | dict[str, Any]]):
    """The keys to delete: an array of names, or an object whose keys are used."""


# --- tasks ---


class TaskOut(Out):
    name: str
    runner: str
    command: str
    synchronous: bool
    schema_: dict[str, Any] | None = Field(alias="schema")
    timeout_seconds: int | None
    description: str
    created_at: str
    updated_at: str


class TaskIn(In):
    answer = TaskOut
    name: str | None = Field(default=None, description="A DNS-1123 name; only on create")
    runner: str | None = Field(default=None, description="Required on create")
    command: str | None = Field(default=None, description="Required on create")
    synchronous: bool | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    timeout_seconds: int | None = Field(default=None, description="A positive integer")
    description: str | None = None


# --- jobs ---


class JobSummaryOut(Out):
    """A job in a list: without its output. Times are in Go's `time.UnixDate` format, as
    Kriten gives them, under both of Kriten's names for them: `start_time` and
    `completion_time` (Kriten 0.5) and `startTime` and `completionTime` (Kriten 0.4, which
    clients such as kriten-netbox still read); each pair has the same value."""

    id: str
    owner: str
    start_time: str | None = Field(default=None, description="Only once started")
    completion_time: str | None = Field(default=None, description="Only once finished")
    start_time_v04: str | None = Field(
        default=None, alias="startTime", description="`start_time`, under Kriten 0.4's name"
    )
    completion_time_v04: str | None = Field(
        default=None,
        alias="completionTime",
        description="`completion_time`, under Kriten 0.4's name",
    )
    failed: int
    completed: int
    task: str
    status: str
    source: str
    webhook_id: str | None
    delivery_id: str | None
    exit_code: int | None
    error: str | None
    created_at: str


class JobOut(JobSummaryOut):
    """A job, with its output."""

    stdout: str
    json_data: Any


class JobAcceptedOut(Out):
    msg: str
    id: str
    status: str | None = Field(default=None, description="`accepted`, for a redelivery")


class CreateJobOut(RootModel[JobOut | JobAcceptedOut]):
    """The finished job (a synchronous task done in time), else the new job's id."""


# --- webhooks and deliveries ---


class WebhookOut(Out):
    id: str
    owner: str
    secret: str = Field(description="Shown once, by create and rotate; masked otherwise")
    description: str
    task: str
    scheme: str
    filter: str | None
    enabled: bool
    url: str
    max_body_bytes: int | None
    rate_limit_per_second: float | None
    allowed_sources: list[str] | None
    previous_secret_expires_at: str | None
    created_at: str
    updated_at: str
    warnings: list[str] | None = Field(default=None, description="Only on create and rotate")


class WebhookIn(In):
    answer = WebhookOut
    task: str | None = Field(default=None, description="Required on create")
    secret: str | None = Field(default=None, description="Generated when not given")
    description: str | None = None
    scheme: str | None = Field(default=None, description="auto, infrahub, standard, netbox, github")
    filter: str | None = Field(default=None, description="A JMESPath expression")
    enabled: bool | None = None
    max_body_bytes: int | None = None
    rate_limit_per_second: float | None = None
    allowed_sources: list[str] | None = None


class RotateIn(In):
    secret: str | None = Field(default=None, description="Generated when not given")
    grace_seconds: int | None = Field(
        default=None, description="How long the previous secret keeps verifying"
    )


class TestDeliveryIn(In):
    body: Any = Field(default=None, description="The event to send; a sample when absent")


class DeliveryOut(Out):
    id: str
    webhook_id: str
    received_at: str
    scheme: str | None
    outcome: str
    reason: str | None
    source: str | None
    idempotency_key: str | None
    job_id: str | None
    size: int
    secret_matched: str | None
    headers: dict[str, str]
    body: str | None = Field(default=None, description="Not in lists; only kept when accepted")


# --- API tokens ---


class ApiTokenOut(Out):
    id: str
    owner: str
    description: str
    enabled: bool
    expires: str | None
    created_at: str
    updated_at: str
    key: str | None = Field(default=None, description="Only in the create answer")


class ApiTokenIn(In):
    answer = ApiTokenOut
    description: str | None = None
    enabled: bool | None = None
    expires: str | None = Field(default=None, description="RFC 3339 with an offset; null: never")


# --- cronjobs ---


class CronJobOut(Out):
    name: str
    owner: str
    task: str
    schedule: str
    disable: bool
    extra_vars: dict[str, Any]
    created_at: str
    updated_at: str


class CronJobIn(In):
    answer = CronJobOut
    name: str | None = Field(default=None, description="A DNS-1123 name; only on create")
    task: str | None = Field(default=None, description="Required on create")
    schedule: str | None = Field(default=None, description="5-field cron, UTC; required on create")
    disable: bool | None = None
    extra_vars: dict[str, Any] | None = None


# --- users, groups, roles, bindings ---


class UserOut(Out):
    id: str
    username: str
    provider: str
    groups: list[str] = Field(description="Group ids")
    created_at: str
    updated_at: str


class UserIn(In):
    answer = UserOut
    other_names = ("name",)
    username: str | None = Field(default=None, description="Required on create (or `name`)")
    password: str | None = Field(default=None, description="Write-only; local users only")
    provider: str | None = None
    groups: list[str] | None = Field(default=None, description="Group ids or names")


class GroupOut(Out):
    id: str
    name: str
    provider: str
    users: list[str] = Field(description="Member user ids")
    created_at: str
    updated_at: str


class GroupIn(In):
    answer = GroupOut
    name: str | None = Field(default=None, description="Required on create")
    provider: str | None = None
    users: list[str] | None = Field(default=None, description="Member user ids")


class MemberOut(Out):
    """A group of a user, or a user of a group."""

    id: str
    name: str
    provider: str


class MemberIn(In):
    answer = MemberOut
    other_names = ("username",)
    name: str | None = Field(default=None, description="The username (or `username`)")
    provider: str | None = None


class MembersIn(RootModel[list[MemberIn]]):
    """Users to add to, or remove from, a group."""


class RoleOut(Out):
    id: str
    name: str
    resource: str
    resource_ids: list[str]
    access: str
    created_at: str
    updated_at: str


class RoleIn(In):
    answer = RoleOut
    other_names = ("resource_names",)
    name: str | None = Field(default=None, description="Required on create")
    resource: str | None = None
    resource_ids: list[str] | None = Field(default=None, description="Also `resource_names`")
    access: str | None = Field(default=None, description="read or write")


class RoleBindingOut(Out):
    id: str
    name: str
    role_name: str
    role_id: str
    subject_kind: str
    subject_provider: str
    subject_name: str
    subject_id: str
    created_at: str
    updated_at: str


class RoleBindingIn(In):
    answer = RoleBindingOut
    name: str | None = Field(default=None, description="Required on create")
    role_name: str | None = Field(default=None, description="Required on create")
    subject_kind: str | None = Field(default=None, description="groups or users")
    subject_provider: str | None = None
    subject_name: str | None = Field(default=None, description="Required on create")


class AuditLogOut(Out):
    id: str
    user_id: str | None
    username: str
    provider: str
    event_type: str
    event_category: str
    event_target: str | None
    status: str
    detail: str | None
    created_at: str


# --- dead letters ---


class DeadLetterOut(Out):
    id: str = Field(description="The message_id, or for a message without one a hash of it")
    message_id: str | None
    routing_key: str | None = Field(description="The event type (AMQP `type`)")
    queue: str | None = Field(description="The work queue that gave up on it")
    reason: str | None
    job_id: str | None
    correlation_id: str | None
    dead_lettered_at: str | None = Field(description="When known (RabbitMQ's own dead letters)")
    size: int = Field(description="The message body's size in bytes")
    replayable: bool = Field(description="Whether it can go back to its work queue")
    headers: dict[str, Any] | None = Field(default=None, description="Not in lists")
    events: list[dict[str, Any]] | None = Field(
        default=None, description="Not in lists; the decoded events, when they decode"
    )
    body: str | None = Field(default=None, description="Not in lists; only when undecodable")
    decode_error: str | None = Field(default=None, description="Not in lists")
