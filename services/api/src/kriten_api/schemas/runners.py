"""The request and answer bodies of `/runners` and their secrets, and the rules of a
runner's git URL that need no database: credentials in it are refused, and masked in rows
stored before they were; `git_origin` is where a clone connects, which the handler compares
to keep a token from following the URL to another host."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, RootModel, ValidationInfo, field_validator, model_validator

from kriten_api.fields import MASK, check_name
from kriten_api.schemas import In, Out, Timestamp
from kriten_common import errors
from kriten_common.crypto import SecretBox
from kriten_common.db.models import Runner
from kriten_common.local_jobs import is_valid_secret_name

# Schemes whose URLs name a login user as a matter of course (`ssh://git@host/...`): the
# user name is no secret there, a password still is.
USER_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
CREDENTIALS_IN_URL = (
    "gitURL must not contain credentials (user:password@): give the token in the `token`"
    " field, which is stored encrypted and never shown"
)
# The key of `RunnerPublic.model_validate`'s context that holds the app's SecretBox.
BOX = "box"


def _split_authority(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, host[:port], rest) of a `scheme://` URL, None for other forms
    (local paths, scp-like `git@host:path`). By hand rather than `urlsplit`, which raises
    on some malformed hosts: masking must work on any stored value."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    return scheme.lower(), userinfo if at else "", host, tail


def has_credentials(url: str) -> bool:
    """A password, or (except for ssh, where it is the login) a user name: a token is often
    given as the user name alone (`https://<token>@github.com/...`)."""
    parts = _split_authority(url)
    if parts is None:
        return False
    scheme, userinfo, _, _ = parts
    return ":" in userinfo or (bool(userinfo) and scheme not in USER_SCHEMES)


def masked_git_url(url: str) -> str:
    """The URL with the credentials `has_credentials` finds masked, for rows stored before
    they were refused (the user name of an ssh URL is kept)."""
    parts = _split_authority(url)
    if parts is None or not parts[1]:
        return url
    scheme, userinfo, host, tail = parts
    user, colon, _ = userinfo.partition(":")
    if colon:
        userinfo = f"{user}:{MASK}"
    elif scheme not in USER_SCHEMES:
        userinfo = MASK
    return f"{url.partition('://')[0]}://{userinfo}@{host}{tail}"


def git_origin(url: str) -> tuple[str, str, int | None]:
    """Where a clone of `url` connects: scheme, host and port (the default port spelled
    out, so `https://h` and `https://h:443` are one origin). Local paths have none."""
    parts = _split_authority(url)
    if parts is None:
        head = url.split("/", 1)[0]
        if ":" in head and not url.startswith((".", "/")):
            # scp-like `[user@]host:path`: ssh to host.
            return "ssh", head.rpartition("@")[2].split(":", 1)[0].lower(), 22
        return "file", "", None
    scheme, _, host, _ = parts
    try:
        split = urlsplit(f"{scheme}://{host}")
        port = split.port or DEFAULT_PORTS.get(scheme)
        hostname = split.hostname or ""
    except ValueError:
        # A malformed host or port: compared as written, so any change counts as a move.
        return scheme, host.lower(), None
    return scheme, hostname.lower(), port


def check_secret_keys(secrets: dict[str, str]) -> dict[str, str]:
    """Refused here rather than when a job launches: every key becomes a file name and an
    environment variable, under Kubernetes' rules for Secret keys. A key given to be
    deleted (an empty value) is not checked: a bad one may be stored from before."""
    for key, value in secrets.items():
        if value != "" and not is_valid_secret_name(key):
            raise errors.InvalidInput(
                f"secret key {key!r} is invalid: use letters, digits, '.', '-' and '_'"
            )
    return secrets


class RunnerPublic(Out):
    """A runner as any reader sees it: its token and secret values never shown."""

    name: str
    image: str
    git_url: str = Field(alias="gitURL")
    branch: str
    token: str = Field(description="Masked when set, empty when not")
    secret: dict[str, str] = Field(description="The secret keys, with masked values")
    created_at: Timestamp
    updated_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _masked_row(cls, row: Any, info: ValidationInfo) -> Any:
        """A row as it is shown: the row holds the token and secrets encrypted, and the
        secret keys are read with the SecretBox given as `context={BOX: box}`."""
        if not isinstance(row, Runner):
            return row
        box: SecretBox = (info.context or {})[BOX]
        return {
            "name": row.name,
            "image": row.image,
            "gitURL": masked_git_url(row.git_url),
            "branch": row.branch,
            "token": MASK if row.token_encrypted else "",
            "secret": dict.fromkeys(box.decrypt_map(row.secrets_encrypted), MASK),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }


class RunnerBase(In):
    """The fields a create and an update share. A null `image` is empty, a null `branch`
    is `main`, a null `token` clears it and a null `secret` changes nothing."""

    answer = RunnerPublic
    # First: fields are validated in order, and a bad name is the first thing to tell.
    name: str | None = Field(
        default=None, description="A DNS-1123 name on create; an update takes it from the URL"
    )
    image: str | None = None
    git_url: str | None = Field(default=None, alias="gitURL")
    branch: str | None = None
    token: str | None = Field(default=None, description="The mask keeps it, empty clears it")
    secret: dict[str, str] | None = Field(
        default=None, description="Merged: an empty value deletes a key, the mask keeps it"
    )

    @field_validator("git_url", mode="before")
    @classmethod
    def _git_url_given(cls, value: Any) -> Any:
        # Before the type check: null and "" are "required", as a missing gitURL is.
        if value is None or value == "":
            raise errors.InvalidInput("gitURL is required")
        return value

    @field_validator("git_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # `runners:read` shows the URL: a token belongs in `token`, stored encrypted.
        if has_credentials(value):
            raise errors.InvalidInput(CREDENTIALS_IN_URL)
        return value

    @field_validator("secret")
    @classmethod
    def _secret_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_secret_keys(value)


class RunnerCreate(RunnerBase):
    name: str = Field(description="A DNS-1123 name")
    git_url: str = Field(alias="gitURL")

    @field_validator("name", mode="before")
    @classmethod
    def _dns_name(cls, value: Any) -> str:
        return check_name(value)


class RunnerUpdate(RunnerBase):
    """A merge: only the fields given change."""


class SecretsOut(RootModel[dict[str, str]]):
    """A runner's secret keys, with masked values."""


class SecretsIn(RootModel[dict[str, str]]):
    """Keys to merge into the secrets: an empty value deletes a key, the mask keeps it."""


class SecretKeysIn(RootModel[list[str] | dict[str, Any]]):
    """The keys to delete: an array of names, or an object whose keys are used."""
