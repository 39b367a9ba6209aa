"""The request and answer bodies of `/runners` and their secrets."""

from __future__ import annotations

from typing import Any

from pydantic import Field, RootModel

from kriten_api.schemas import In, Out


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
