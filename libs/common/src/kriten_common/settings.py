"""Typed settings shared by every service, read from `KRITEN_*` environment variables.

Each service's `main()` builds its own settings class (a subclass of `CommonSettings`)
once and passes it down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kriten_common.client_address import IPNetwork, parse_networks

DEVELOPMENT_ENCRYPTION_KEY = "ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcHJvZHVjdGlvbiE="


class ConfigurationError(Exception):
    """The configuration cannot run (a missing production secret, say)."""


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
    # Most events per published message (group commit); 1 publishes each event alone.
    publish_max_batch: int = Field(default=100, ge=1)

    @field_validator("trusted_proxies", mode="before")
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
