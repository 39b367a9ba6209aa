"""The api service's settings."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from kriten_common.service import production_secret_problems
from kriten_common.settings import CommonSettings, ConfigurationError

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
    # Where `POST /webhooks/{id}/test` sends its signed sample (the ingress's base URL);
    # by default the address this api serves on, which is right in development mode,
    # where the api and the ingress share one port.
    ingress_url: str | None = None

    # Active Directory (or any LDAP server): the `active_directory` login provider exists
    # only when ldap_url is set. See docs/authentication.md.
    ldap_url: str | None = None
    ldap_starttls: bool = False
    # Lets ldap:// run without StartTLS (passwords in clear text): development only.
    ldap_allow_plaintext: bool = False
    # CA bundle that signs the server's certificate; else the system's trust store.
    ldap_ca_file: FilePath | None = None
    # The service account that searches for users; unset searches anonymously.
    ldap_bind_dn: str | None = None
    ldap_bind_password: SecretStr | None = None
    ldap_base_dn: str = ""
    ldap_user_filter: str = "(sAMAccountName={username})"
    # The entry's attribute that names the Kriten user, so `Alice` and `alice` (the same
    # account to a case-insensitive directory) are one user; the typed name if absent.
    ldap_username_attribute: str = "sAMAccountName"
    ldap_timeout_seconds: float = Field(default=5.0, gt=0)

    # Failed logins allowed per window, in memory per replica (docs/authentication.md).
    login_failures_per_username: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_seconds: float = Field(default=300.0, gt=0)
    # Most usernames and addresses remembered each; the least recently failed go first.
    login_limit_max_entries: int = Field(default=50_000, ge=1)

    # The audit log (docs/rbac.md): rows older than this many days are deleted, hourly;
    # 0 keeps them forever.
    audit_retention_days: float = Field(default=90, ge=0)
    # Rows of unidentified callers (401s, failed logins) kept per category and minute,
    # per replica; the rest are counted, not written, so nobody can fill the table.
    audit_anonymous_per_minute: float = Field(default=60.0, gt=0)

    @field_validator("ldap_url")
    @classmethod
    def _ldap_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None  # KRITEN_LDAP_URL= (empty) turns the provider off
        if urlsplit(value).scheme.lower() not in ("ldap", "ldaps"):
            raise ValueError("KRITEN_LDAP_URL must be an ldap:// or ldaps:// URL")
        return value

    @model_validator(mode="after")
    def _ldap_consistent(self) -> ApiSettings:
        # ConfigurationError, not ValueError: pydantic would print every raw input,
        # secrets included, beside a ValueError raised here.
        if self.ldap_url is None:
            return self
        scheme = urlsplit(self.ldap_url).scheme.lower()
        if scheme == "ldaps" and self.ldap_starttls:
            raise ConfigurationError(
                "KRITEN_LDAP_STARTTLS is for ldap:// URLs; ldaps:// is TLS already"
            )
        if scheme == "ldap" and not self.ldap_starttls and not self.ldap_allow_plaintext:
            raise ConfigurationError(
                "ldap:// sends passwords in clear text: set KRITEN_LDAP_STARTTLS=true, "
                "use ldaps://, or (development only) KRITEN_LDAP_ALLOW_PLAINTEXT=true"
            )
        if "{username}" not in self.ldap_user_filter:
            raise ConfigurationError("KRITEN_LDAP_USER_FILTER must contain {username}")
        if self.ldap_bind_dn and self.ldap_bind_password is None:
            raise ConfigurationError("KRITEN_LDAP_BIND_DN needs KRITEN_LDAP_BIND_PASSWORD")
        return self

    @property
    def ldap_plaintext(self) -> bool:
        """True when LDAP passwords would cross the network unencrypted."""
        if self.ldap_url is None:
            return False
        return urlsplit(self.ldap_url).scheme.lower() == "ldap" and not self.ldap_starttls

    def production_problems(self) -> list[str]:
        problems = super().production_problems() + production_secret_problems(
            self,
            {
                "jwt_key": DEVELOPMENT_JWT_KEY,
                "token_key": DEVELOPMENT_TOKEN_KEY,
                "root_password": DEVELOPMENT_ROOT_PASSWORD,
            },
        )
        if self.ldap_plaintext:
            problems.append("KRITEN_LDAP_STARTTLS=true (or an ldaps:// KRITEN_LDAP_URL)")
        return problems
