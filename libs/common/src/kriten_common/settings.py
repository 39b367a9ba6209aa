"""Typed settings shared by every service, read from `KRITEN_*` environment variables.

Each service's `main()` builds its own settings class (a subclass of `CommonSettings`)
once and passes it down; nothing reads the environment anywhere else.

Every secret setting (a `SecretStr`) can also be read from a file: `KRITEN_<NAME>_FILE`
names it, and its content, without the trailing newline, is the value (Docker and
Kubernetes secrets mounted as files, the secrets compose generates; see `SecretFiles`).
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from kriten_common.client_address import IPNetwork, parse_networks

DEVELOPMENT_ENCRYPTION_KEY = "ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcHJvZHVjdGlvbiE="


class ConfigurationError(Exception):
    """The configuration cannot run (a missing production secret, say)."""


FILE_SUFFIX = "_FILE"


def is_secret(field: FieldInfo) -> bool:
    """Whether the setting is a secret: a `SecretStr`, optional or not."""
    annotation = field.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return SecretStr in typing.get_args(annotation)
    return annotation is SecretStr


def variable_of(name: str, field: FieldInfo, prefix: str) -> str:
    """The environment variable a setting is read from (its first alias, if it has any)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((choice for choice in alias.choices if isinstance(choice, str)), None)
    if isinstance(alias, str):
        return alias.upper()
    return f"{prefix}{name}".upper()


class SecretFiles(PydanticBaseSettingsSource):
    """Secret settings read from the files `KRITEN_<NAME>_FILE` name.

    The value is the file's content without its trailing newline (`echo secret > file`
    writes one). An unreadable or empty file, or a setting given both as a variable and
    as a file, is a `ConfigurationError`: which one was meant cannot be guessed.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: `__call__` below reads every secret at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix") or "")
        environment = {key.upper(): value for key, value in os.environ.items()}
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if not is_secret(field):
                continue
            variable = variable_of(name, field, prefix)
            path = environment.get(variable + FILE_SUFFIX)
            if not path:
                continue
            if environment.get(variable):
                raise ConfigurationError(
                    f"both {variable} and {variable}{FILE_SUFFIX} are set; set one of them"
                )
            values[name] = read_secret_file(Path(path), variable + FILE_SUFFIX)
        return values


def read_secret_file(path: Path, variable: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        reason = getattr(problem, "strerror", None) or str(problem)
        raise ConfigurationError(f"{variable}: cannot read {path}: {reason}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigurationError(f"{variable}: {path} is empty")
    return value


class CommonSettings(BaseSettings):
    """What every service needs: where the broker and database are, and how to log."""

    model_config = SettingsConfigDict(env_prefix="KRITEN_", extra="ignore")

    env: Literal["development", "production"] = "development"
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Names the exchange and every queue, so test runs can share one broker.
    amqp_prefix: str = "kriten"
    database_url: SecretStr = SecretStr("sqlite+aiosqlite:///var/kriten.db")
    # Fernet keys, comma-separated, newest first: the first encrypts, all decrypt.
    encryption_keys: SecretStr = SecretStr(DEVELOPMENT_ENCRYPTION_KEY)
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    host: str = "127.0.0.1"
    port: int = 8080
    # Where the local executor keeps one directory per job (dispatcher writes, collector reads).
    jobs_dir: Path = Path("var/jobs")
    executor: Literal["local", "kubernetes"] = "local"
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    # Peers whose X-Forwarded-For is believed (comma-separated CIDRs); none by default.
    # The api (login limits) and the ingress (allow-lists) read the client address with
    # the same rule (kriten_common.client_address).
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    # Networks completion callbacks may reach although they are not public (loopback,
    # private ranges: SSRF); none by default. The api checks a URL's literal address
    # when a task is saved, the collector every resolved address before it connects.
    callback_allowed_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    # Most events per published message (group commit); 1 publishes each event alone.
    publish_max_batch: int = Field(default=100, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            SecretFiles(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @field_validator("trusted_proxies", "callback_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_networks(value.split(","))
        return value

    def production_problems(self) -> list[str]:
        """Names the settings that still hold a development default; empty when none."""
        problems = []
        if self.encryption_keys.get_secret_value() == DEVELOPMENT_ENCRYPTION_KEY:
            problems.append("KRITEN_ENCRYPTION_KEYS")
        return problems

    def check_production(self) -> None:
        if self.env == "production" and (problems := self.production_problems()):
            raise ConfigurationError(
                "production mode refuses development defaults; set " + ", ".join(problems)
            )
