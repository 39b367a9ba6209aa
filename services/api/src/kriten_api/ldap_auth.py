"""The `active_directory` login provider: search-then-bind against LDAP over TLS.

A service account (or an anonymous bind) searches `KRITEN_LDAP_BASE_DN` with
`KRITEN_LDAP_USER_FILTER`, the typed username escaped first, so `*` or `)(` in a
username cannot widen the filter. Exactly one entry must match; then its DN is bound
with the typed password. The connection is TLS (ldaps:// or StartTLS) with the
certificate and host name verified, unless plaintext was allowed for development.

ldap3 is synchronous: `authenticate` runs the whole exchange in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.utils.conv import escape_filter_chars
from pydantic import SecretStr

from kriten_api.settings import ApiSettings
from kriten_common.logging import get_logger

log = get_logger(__name__)

PROVIDER = "active_directory"
MAX_USERNAME_LENGTH = 256
# Bind results that say the server, not the credentials, is the problem.
UNAVAILABLE_RESULTS = frozenset({3, 51, 52})  # timeLimitExceeded, busy, unavailable
# Search results that answer the question: success, and sizeLimitExceeded (two matches).
SEARCH_ANSWERED = frozenset({0, 4})


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, TLS failure, service account refused)."""


@dataclass(frozen=True)
class LdapConfig:
    host: str
    port: int | None
    use_ssl: bool
    starttls: bool
    ca_file: str | None
    bind_dn: str | None
    bind_password: SecretStr | None
    base_dn: str
    user_filter: str
    username_attribute: str
    timeout: float

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> LdapConfig | None:
        """The provider's configuration, or None when LDAP is not configured."""
        if settings.ldap_url is None:
            return None
        url = urlsplit(settings.ldap_url)
        return cls(
            host=url.hostname or "localhost",
            port=url.port,
            use_ssl=url.scheme.lower() == "ldaps",
            starttls=settings.ldap_starttls,
            ca_file=str(settings.ldap_ca_file) if settings.ldap_ca_file else None,
            bind_dn=settings.ldap_bind_dn or None,
            bind_password=settings.ldap_bind_password,
            base_dn=settings.ldap_base_dn,
            user_filter=settings.ldap_user_filter,
            username_attribute=settings.ldap_username_attribute,
            timeout=settings.ldap_timeout_seconds,
        )


def user_filter(template: str, username: str) -> str:
    """The search filter for `username`, escaped per RFC 4515."""
    # replace, not str.format: a template may hold other braces, and the escaped
    # value must be inserted once, never re-read as a template.
    return template.replace("{username}", escape_filter_chars(username))


def prepared_password(password: str) -> bytes | None:
    """The password as the bind will send it, or None when it cannot be a password.

    An empty simple-bind password is an *unauthenticated* bind, which Active Directory
    answers with success. ldap3 refuses an empty string, but SASLprep (RFC 4013) maps
    some characters to nothing, so a non-empty password can still become empty on the
    wire: check what is sent, and send exactly that (bytes go out unchanged).
    """
    if not password:
        return None
    try:
        prepared: bytes = validate_simple_password(password)
    except LDAPException:
        return None  # prohibited characters: no account can have this password
    return prepared or None


def _server(config: LdapConfig) -> ldap3.Server:
    tls = None
    if config.use_ssl or config.starttls:
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=config.ca_file,
            sni=config.host,
        )
    return ldap3.Server(
        config.host,
        port=config.port,
        use_ssl=config.use_ssl,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=config.timeout,
    )


def _open(config: LdapConfig) -> ldap3.Connection:
    """A connection, over TLS unless plaintext was allowed, bound as the service account."""
    password = config.bind_password.get_secret_value() if config.bind_password else None
    connection = ldap3.Connection(
        _server(config),
        user=config.bind_dn,
        password=password,
        # Whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer.
        receive_timeout=max(1, math.ceil(config.timeout)),
        raise_exceptions=False,
        # A referral could send the password to another server, perhaps in clear text.
        auto_referrals=False,
        read_only=True,
    )
    try:
        connection.open()
        if config.starttls and not connection.start_tls():
            raise DirectoryUnavailable("StartTLS was not started")
        if not connection.bind():
            log.error("ldap_service_bind_failed", result=connection.result.get("description"))
            raise DirectoryUnavailable("the service account's bind was refused")
    except BaseException:
        _close(connection)
        raise
    return connection


def _close(connection: ldap3.Connection) -> None:
    # Closing a broken connection must not hide why it broke.
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()


def _first(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _bind_as(connection: ldap3.Connection, dn: str, password: bytes) -> bool:
    if connection.rebind(user=dn, password=password):
        return True
    if connection.result.get("result") in UNAVAILABLE_RESULTS:
        raise DirectoryUnavailable(f"bind failed: {connection.result.get('description')}")
    return False


def authenticate_sync(config: LdapConfig, username: str, password: str) -> str | None:
    """The user's Kriten username when the directory accepts the credentials, else None.

    Raises `DirectoryUnavailable` when the directory cannot be asked; never lets an
    empty (unauthenticated) bind through.
    """
    prepared = prepared_password(password)
    if prepared is None or not username or len(username) > MAX_USERNAME_LENGTH:
        return None
    try:
        connection = _open(config)
        try:
            return _search_and_bind(connection, config, username, prepared)
        finally:
            _close(connection)
    except (LDAPException, OSError) as problem:
        raise DirectoryUnavailable(f"{type(problem).__name__}: {problem}") from problem


def _search_and_bind(
    connection: ldap3.Connection, config: LdapConfig, username: str, password: bytes
) -> str | None:
    found = connection.search(
        search_base=config.base_dn,
        search_filter=user_filter(config.user_filter, username),
        search_scope=ldap3.SUBTREE,
        attributes=[config.username_attribute],
        # Two are enough to tell "exactly one" from "ambiguous".
        size_limit=2,
        time_limit=max(1, int(config.timeout)),
    )
    result = connection.result.get("result")
    if not found and result not in SEARCH_ANSWERED:
        # A wrong base DN or missing rights would otherwise fail every login as a 401,
        # hiding the misconfiguration from the operator.
        raise DirectoryUnavailable(f"search failed: {connection.result.get('description')}")
    entries = [item for item in (connection.response or []) if item.get("type") == "searchResEntry"]
    if len(entries) != 1:
        if len(entries) > 1 or result == 4:
            log.warning("ldap_ambiguous_user", username=username)
        # Bind a DN that does not exist, so unknown users take about as long as known ones.
        nobody = f"cn=kriten-no-such-user-{secrets.token_hex(8)}"
        _bind_as(connection, f"{nobody},{config.base_dn}" if config.base_dn else nobody, password)
        return None
    entry = entries[0]
    if not _bind_as(connection, entry["dn"], password):
        return None
    attributes = entry.get("attributes") or {}
    return _first(attributes.get(config.username_attribute)) or username


async def authenticate(config: LdapConfig, username: str, password: str) -> str | None:
    return await asyncio.to_thread(authenticate_sync, config, username, password)
