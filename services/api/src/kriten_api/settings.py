"""The api service's settings."""

from __future__ import annotations

from pydantic import Field, SecretStr

from kriten_common.service import production_secret_problems
from kriten_common.settings import CommonSettings

# Development defaults, refused in production (see production_problems).
DEVELOPMENT_JWT_KEY = "development-jwt-key-not-for-production"
DEVELOPMENT_TOKEN_KEY = "development-token-key-not-for-production"  # noqa: S105
DEVELOPMENT_ROOT_PASSWORD = "root"  # noqa: S105


class ApiSettings(CommonSettings):
    jwt_key: SecretStr = SecretStr(DEVELOPMENT_JWT_KEY)
    # HMAC key under which API token keys are stored.
    token_key: SecretStr = SecretStr(DEVELOPMENT_TOKEN_KEY)
    root_password: SecretStr = SecretStr(DEVELOPMENT_ROOT_PASSWORD)
    jwt_ttl_seconds: int = Field(default=3600, gt=0)
    sync_timeout: float = Field(default=20.0, ge=0)
    # The base URL users reach, for the webhook `url` field; else taken from the request.
    public_url: str | None = None
    # Force the cookie's Secure flag; by default it is set when the request came over HTTPS.
    cookie_secure: bool | None = None
    migrate_on_start: bool = True
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    def production_problems(self) -> list[str]:
        return super().production_problems() + production_secret_problems(
            self,
            {
                "jwt_key": DEVELOPMENT_JWT_KEY,
                "token_key": DEVELOPMENT_TOKEN_KEY,
                "root_password": DEVELOPMENT_ROOT_PASSWORD,
            },
        )
