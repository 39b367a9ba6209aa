"""The request and answer bodies of `/webhooks`, and the rules of their fields that need
no database: a secret's length, the schemes, a filter the ingress may evaluate on every
delivery, and the per-webhook limits."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kriten_api.fields import MASK
from kriten_api.schemas import In, Out, Timestamp
from kriten_api.secret_rotation import check_grace
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Webhook
from kriten_common.filter_expressions import InvalidExpression, check_expression
from kriten_common.webhook_schemes import CONFIGURED_SCHEMES, MAX_BODY_BYTES

SCHEMES = tuple(CONFIGURED_SCHEMES)
MIN_SECRET_LENGTH = 8
MAX_FILTER_LENGTH = 2048
MAX_RATE_PER_SECOND = 1_000_000.0
MAX_ALLOWED_SOURCES = 256
# The keys of `WebhookPublic.model_validate`'s context: the run URL (from the request),
# the secret to show (the mask unless it was just set) and a create's or rotate's warnings.
URL, SECRET, WARNINGS = "url", "secret", "warnings"


def check_secret(value: Any) -> Any:
    """A secret given (null: one is generated) is at least `MIN_SECRET_LENGTH` long."""
    if value is not None and (not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH):
        raise errors.InvalidInput(f"secret must be at least {MIN_SECRET_LENGTH} characters")
    return value


def check_filter(value: Any) -> str | None:
    """A JMESPath expression the ingress may evaluate on every delivery, or None for no
    filter (400 otherwise): it compiles, stays small and calls only the functions that
    cannot amplify a body (`kriten_common.filter_expressions`)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise errors.InvalidInput("filter must be a string (a JMESPath expression)")
    if len(value) > MAX_FILTER_LENGTH:
        raise errors.InvalidInput(f"filter must be at most {MAX_FILTER_LENGTH} characters")
    try:
        check_expression(value)
    except InvalidExpression as problem:
        raise errors.InvalidInput(f"filter {problem}") from None
    return value


def check_allowed_sources(value: Any) -> list[str] | None:
    """CIDRs (or addresses), normalised; an empty list means no restriction."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidInput("allowed_sources must be a list of CIDRs")
    if len(value) > MAX_ALLOWED_SOURCES:
        raise errors.InvalidInput(
            f"allowed_sources must have at most {MAX_ALLOWED_SOURCES} entries"
        )
    networks = []
    for entry in value:
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise errors.InvalidInput(
                f"allowed_sources: {entry!r} is not an IP address or CIDR"
            ) from None
    return networks or None


class WebhookPublic(Out):
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
    previous_secret_expires_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    warnings: list[str] | None = Field(default=None, description="Only on create and rotate")

    @model_validator(mode="before")
    @classmethod
    def _shown_row(cls, row: Any, info: ValidationInfo) -> Any:
        """A row as it is shown, with what the row does not hold from the context (`URL`,
        `SECRET`, `WARNINGS`). The previous secret's expiry is shown only while it still
        verifies; `warnings` only when there are some."""
        if not isinstance(row, Webhook):
            return row
        context = info.context or {}
        expires = row.previous_secret_expires_at
        shown = {
            "id": row.id,
            "owner": row.owner_id,
            "secret": context.get(SECRET, MASK),
            "description": row.description,
            "task": row.task,
            "scheme": row.scheme,
            "filter": row.filter,
            "enabled": row.enabled,
            "url": context[URL],
            "max_body_bytes": row.max_body_bytes,
            "rate_limit_per_second": row.rate_limit_per_second,
            "allowed_sources": row.allowed_sources,
            "previous_secret_expires_at": (
                expires if expires is not None and expires > utcnow() else None
            ),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
        if context.get(WARNINGS):
            shown["warnings"] = context[WARNINGS]
        return shown


class WebhookBase(In):
    """The fields a create and an update share. A null `description` is empty, a null or
    empty `scheme` is `auto`, a null or empty `filter` is none, an empty
    `allowed_sources` is no restriction."""

    answer = WebhookPublic
    # Set by create (and rotate); an update leaves it as it is.
    secret: str | None = Field(default=None, description="Generated when not given")
    description: str | None = None
    scheme: str | None = Field(default=None, description="auto, infrahub, standard, netbox, github")
    filter: str | None = Field(default=None, description="A JMESPath expression")
    enabled: bool | None = None
    max_body_bytes: int | None = None
    rate_limit_per_second: float | None = None
    allowed_sources: list[str] | None = None

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("scheme", mode="before")
    @classmethod
    def _known_scheme(cls, value: Any) -> Any:
        scheme = value or "auto"
        if scheme not in SCHEMES:
            raise errors.InvalidInput(f"scheme must be one of {', '.join(SCHEMES)}")
        return scheme

    @field_validator("filter", mode="before")
    @classmethod
    def _safe_filter(cls, value: Any) -> str | None:
        return check_filter(value)

    @field_validator("enabled")
    @classmethod
    def _enabled_given(cls, value: bool | None) -> bool:
        if value is None:
            raise errors.InvalidInput("enabled must be a boolean")
        return value

    @field_validator("max_body_bytes")
    @classmethod
    def _body_limit(cls, value: int | None) -> int | None:
        # The ingress refuses any body declared larger than this before looking a webhook up.
        if value is not None and not 1 <= value <= MAX_BODY_BYTES:
            raise errors.InvalidInput(f"max_body_bytes must be between 1 and {MAX_BODY_BYTES}")
        return value

    @field_validator("rate_limit_per_second")
    @classmethod
    def _rate_limit(cls, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            raise errors.InvalidInput("rate_limit_per_second must be a number")
        if not 0 < value <= MAX_RATE_PER_SECOND:
            raise errors.InvalidInput(
                f"rate_limit_per_second must be above 0 and at most {MAX_RATE_PER_SECOND:g}"
            )
        return value

    @field_validator("allowed_sources", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> list[str] | None:
        return check_allowed_sources(value)


class WebhookCreate(WebhookBase):
    task: str = Field(description="Required on create")

    @field_validator("task", mode="before")
    @classmethod
    def _task_given(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise errors.InvalidInput("task is required")
        return value

    @field_validator("secret", mode="before")
    @classmethod
    def _secret_length(cls, value: Any) -> Any:
        return check_secret(value)


class WebhookUpdate(WebhookBase):
    """A merge: only the fields given change."""

    task: str | None = Field(default=None, description="Another task: needs jobs:write on it")

    @field_validator("task")
    @classmethod
    def _task_not_null(cls, value: str | None) -> str:
        if value is None:
            raise errors.InvalidInput("task must be a string")
        return value


class WebhookRotate(In):
    secret: str | None = Field(default=None, description="Generated when not given")
    grace_seconds: int | None = Field(
        default=None, description="How long the previous secret keeps verifying"
    )

    @field_validator("secret", mode="before")
    @classmethod
    def _secret_length(cls, value: Any) -> Any:
        return check_secret(value)

    @field_validator("grace_seconds")
    @classmethod
    def _grace_range(cls, value: int | None) -> int | None:
        return check_grace(value)
