"""The request and answer bodies of `/api_tokens`, and the rules of an expiry that need no
database (whether it is in the future depends on the token: see the handler)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from kriten_api.schemas import In, Out, Timestamp
from kriten_common import errors


def parse_expires(value: Any) -> datetime | None:
    """An RFC 3339 timestamp with its offset, in UTC; None (never) for null."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.InvalidInput("expires must be an RFC 3339 timestamp or null")
    try:
        expires = datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidInput("expires must be an RFC 3339 timestamp or null") from None
    if expires.tzinfo is None:
        # A zone-less time would be read in the server's zone, which the client cannot know.
        raise errors.InvalidInput("expires must include a UTC offset (e.g. 2030-01-01T00:00:00Z)")
    try:
        return expires.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-14:00 is a valid timestamp whose UTC time is in year 10000,
        # past what `datetime` can hold (and 0001-01-01T00:00:00+01:00 is before year 1).
        raise errors.InvalidInput("expires must fall within the years 1 to 9999 in UTC") from None


class ApiTokenPublic(Out):
    id: str
    owner: str = Field(validation_alias="owner_id")
    description: str
    enabled: bool
    expires: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    key: str | None = Field(default=None, description="Only in the create answer")


class ApiTokenBase(In):
    """The fields a create and an update share; a null `description` is empty. The
    token's `id`, `owner` and `key` (its answer's) are the server's: a create ignores
    them, an update refuses a change to them."""

    answer = ApiTokenPublic
    description: str | None = None
    enabled: bool | None = None
    expires: datetime | None = Field(
        default=None, description="RFC 3339 with an offset; null: never"
    )

    @field_validator("enabled")
    @classmethod
    def _enabled_given(cls, value: bool | None) -> bool:
        if value is None:
            raise errors.InvalidInput("enabled must be a boolean")
        return value

    @field_validator("expires", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> datetime | None:
        return parse_expires(value)


class ApiTokenCreate(ApiTokenBase):
    """A token for the caller: every field may be left out."""


class ApiTokenUpdate(ApiTokenBase):
    """A merge: only the fields given change."""
