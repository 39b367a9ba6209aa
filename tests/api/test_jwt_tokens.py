"""Session JWTs: what is accepted (HS256, unexpired, complete) and revocation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kriten_api.jwt_tokens import (
    CLOCK_SKEW,
    Claims,
    decode_token,
    is_revoked,
    issue_token,
    purge_expired,
    revoke,
)
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import RevokedToken
from kriten_common.errors import NotAuthenticated

KEY = "a-test-key-long-enough-for-every-hmac-algorithm-even-hs512-0123456789"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
T0 = int(NOW.timestamp())


def issue(now: datetime | float = NOW, ttl: int = 3600, key: str = KEY) -> tuple[str, Claims]:
    return issue_token(
        key=key, user_id="u-1", username="alice", provider="local", ttl_seconds=ttl, now=now
    )


def payload(**changes: Any) -> dict[str, Any]:
    claims = {
        "username": "alice",
        "user_id": "u-1",
        "provider": "local",
        "exp": T0 + 60,
        "iat": T0,
        "jti": "0" * 32,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, as an attacker would."""
    sig = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return f"{b64(header)}.{b64(body)}.{sig}"


def refused(token: str, *, key: str = KEY, now: datetime | float = NOW) -> None:
    with pytest.raises(NotAuthenticated) as caught:
        decode_token(token, key=key, now=now)
    assert caught.value.message == "invalid token."
    # Nothing about the reason travels with the error.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


def test_a_token_decodes_to_the_claims_it_was_issued_with() -> None:
    token, claims = issue()
    assert decode_token(token, key=KEY, now=NOW) == claims
    assert (claims.username, claims.user_id, claims.provider) == ("alice", "u-1", "local")
    assert (claims.iat, claims.exp) == (T0, T0 + 3600)
    assert claims.expires_at == NOW + timedelta(hours=1)
    assert re.fullmatch(r"[0-9a-f]{32}", claims.jti)


def test_the_token_carries_exactly_the_documented_claims() -> None:
    token, _ = issue()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    body = jwt.decode(token, options={"verify_signature": False})
    assert set(body) == {"username", "user_id", "provider", "exp", "iat", "jti", "epoch"}


def test_a_token_without_an_epoch_is_epoch_zero_and_a_bad_epoch_is_invalid() -> None:
    token, claims = issue()
    body = jwt.decode(token, options={"verify_signature": False})
    legacy = {k: v for k, v in body.items() if k != "epoch"}
    assert decode_token(jwt.encode(legacy, KEY, algorithm="HS256"), key=KEY, now=NOW) == claims
    for bad in ("1", 1.5, True, None):
        token = jwt.encode({**body, "epoch": bad}, KEY, algorithm="HS256")
        with pytest.raises(NotAuthenticated):
            decode_token(token, key=KEY, now=NOW)


def test_now_may_be_seconds_since_the_epoch() -> None:
    token, claims = issue(now=T0 + 0.75)
    assert claims.iat == T0
    assert decode_token(token, key=KEY, now=float(T0 + 10)) == claims


def test_every_token_has_its_own_jti() -> None:
    assert issue()[1].jti != issue()[1].jti


def test_the_claims_are_frozen() -> None:
    _, claims = issue()
    with pytest.raises(AttributeError):
        claims.user_id = "someone else"  # type: ignore[misc]


def test_an_expired_token_is_refused() -> None:
    token, _ = issue(ttl=60)
    decode_token(token, key=KEY, now=NOW + timedelta(seconds=59))
    refused(token, now=NOW + timedelta(seconds=60))
    refused(token, now=NOW + timedelta(days=1))


def test_a_token_signed_with_another_key_is_refused() -> None:
    token, _ = issue(key="another-key-that-is-long-enough-for-hs256")
    refused(token)


def test_a_tampered_token_is_refused() -> None:
    token, _ = issue()
    header, _body, signature = token.split(".")
    refused(f"{header}.{b64(payload(username='root'))}.{signature}")


def test_alg_none_is_refused() -> None:
    refused(forged({"alg": "none", "typ": "JWT"}, payload()))
    refused(forged({"alg": "None", "typ": "JWT"}, payload()))


def test_hs512_is_refused_even_with_the_right_key() -> None:
    refused(jwt.encode(payload(), KEY, algorithm="HS512"))


def test_rs256_is_refused() -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(jwt.encode(payload(), private_key, algorithm="RS256"))


def test_hs256_signature_under_a_mislabelled_header_is_refused() -> None:
    header = {"alg": "HS384", "typ": "JWT"}
    signing_input = f"{b64(header)}.{b64(payload())}".encode()
    signature = hmac.new(KEY.encode(), signing_input, hashlib.sha256).digest()
    refused(forged(header, payload(), signature))


@pytest.mark.parametrize("missing", ["exp", "iat", "jti", "username", "user_id", "provider"])
def test_a_token_without_a_required_claim_is_refused(missing: str) -> None:
    refused(jwt.encode(payload(**{missing: None}), KEY, algorithm="HS256"))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": str(T0 + 60)},
        {"exp": True},
        {"exp": float(T0 + 60)},
        {"iat": "yesterday"},
        {"jti": 42},
        {"username": ["alice"]},
        {"user_id": ""},
    ],
)
def test_a_claim_of_the_wrong_type_is_refused(changes: dict[str, Any]) -> None:
    refused(jwt.encode(payload(**changes), KEY, algorithm="HS256"))


@pytest.mark.parametrize(
    "token", ["", "x", "a.b.c", "a.b", "....", "é.é.é", "Bearer x.y.z", "\x00.\x00.\x00"]
)
def test_garbage_is_refused(token: str) -> None:
    refused(token)


async def test_a_revoked_jti_is_revoked_until_purged(db_sessions: SessionFactory) -> None:
    _, old = issue(now=NOW - timedelta(hours=2), ttl=3600)
    _, current = issue()
    async with db_sessions() as session:
        assert not await is_revoked(session, current.jti)
        await revoke(session, old)
        await revoke(session, current)
        await revoke(session, current)  # logging out twice is not an error
    async with db_sessions() as session:
        assert await is_revoked(session, old.jti)
        assert await is_revoked(session, current.jti)
        assert not await is_revoked(session, "f" * 32)

        # `old` expired an hour ago: its row goes, but only once clocks can agree.
        assert await purge_expired(session, old.expires_at + CLOCK_SKEW - timedelta(seconds=1)) == 0
        assert await purge_expired(session, NOW) == 1
        assert not await is_revoked(session, old.jti)
        assert await is_revoked(session, current.jti)
        assert await purge_expired(session, NOW.timestamp()) == 0


async def test_revoke_keeps_the_expiry_in_utc(db_sessions: SessionFactory) -> None:
    _, claims = issue()
    async with db_sessions() as session:
        await revoke(session, claims)
    async with db_sessions() as session:
        row = await session.get(RevokedToken, claims.jti)
        assert row is not None
        assert row.expires_at == claims.expires_at
        assert row.expires_at.tzinfo is not None
