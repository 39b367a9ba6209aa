"""Session tokens: HS256 JWTs issued at login, and their revocation at logout.

A token carries `username`, `user_id`, `provider`, `exp`, `iat`, `jti` and `epoch`
(the user's session epoch when it was issued). Only HS256 is accepted and `exp` is
required. Every failure to decode is the same `NotAuthenticated("invalid token.")`, so
a caller learns nothing about why. Logout stores the token's `jti` in `revoked_tokens`
until the token would have expired anyway; `purge_expired` removes the rows that no
longer matter. Raising a user's epoch (`end_sessions`) revokes all their tokens at once.

Tokens issued before epochs existed carry no `epoch` claim: they are read as epoch 0,
every user's epoch until it is first raised, so an upgrade logs nobody out, and the
first "log out everywhere" or password change ends them like any other.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_common.db.models import RevokedToken, User
from kriten_common.errors import NotAuthenticated

ALGORITHM = "HS256"
INVALID_TOKEN = "invalid token."  # noqa: S105 (a message, not a credential)
CLOCK_SKEW = timedelta(minutes=5)
"""How far apart the replicas' clocks may be; revocations outlive their tokens by this."""
_REQUIRED_CLAIMS = ("username", "user_id", "provider", "exp", "iat", "jti")
EPOCH_CLAIM = "epoch"


@dataclass(frozen=True)
class Claims:
    """The claims of a token, as in the JWT: times are whole seconds since the epoch."""

    username: str
    user_id: str
    provider: str
    exp: int
    iat: int
    jti: str
    epoch: int = 0

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)


Instant = datetime | float
"""An aware datetime, or seconds since the epoch (`time.time()`)."""


def _epoch(now: Instant) -> int:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("naive datetime")
        return int(now.timestamp())
    return int(now)


def issue_token(
    *,
    key: str,
    user_id: str,
    username: str,
    provider: str,
    ttl_seconds: int,
    now: Instant,
    epoch: int = 0,
) -> tuple[str, Claims]:
    """A signed token for the user, valid for `ttl_seconds` from `now`."""
    iat = _epoch(now)
    claims = Claims(
        username=username,
        user_id=user_id,
        provider=provider,
        exp=iat + ttl_seconds,
        iat=iat,
        jti=uuid.uuid4().hex,
        epoch=epoch,
    )
    return jwt.encode(dataclasses.asdict(claims), key, algorithm=ALGORITHM), claims


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_token(token: str, *, key: str, now: Instant) -> Claims:
    """The claims of a valid, unexpired token; `NotAuthenticated` for anything else."""
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            # Time is checked below against the caller's `now`, not the wall clock.
            options={"require": list(_REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
        )
    except (jwt.PyJWTError, TypeError, ValueError):
        raise NotAuthenticated(INVALID_TOKEN) from None
    exp, iat = payload["exp"], payload["iat"]
    strings = [payload[name] for name in ("username", "user_id", "provider", "jti")]
    if not (_is_int(exp) and _is_int(iat) and all(isinstance(s, str) and s for s in strings)):
        raise NotAuthenticated(INVALID_TOKEN)
    if _epoch(now) >= exp:
        raise NotAuthenticated(INVALID_TOKEN)
    session_epoch = payload.get(EPOCH_CLAIM, 0)
    if not _is_int(session_epoch):
        raise NotAuthenticated(INVALID_TOKEN)
    return Claims(
        username=payload["username"],
        user_id=payload["user_id"],
        provider=payload["provider"],
        exp=exp,
        iat=iat,
        jti=payload["jti"],
        epoch=session_epoch,
    )


async def end_sessions(session: AsyncSession, user_id: str) -> None:
    """Revokes every login token of the user, on every replica; the caller commits.

    One UPDATE adding 1, not a read and a write: two concurrent ends both count.
    """
    await session.exec(
        update(User)
        .where(col(User.id) == user_id)
        .values(session_epoch=col(User.session_epoch) + 1)
    )


async def revoke(session: AsyncSession, claims: Claims) -> None:
    """Refuse `claims.jti` from now until it expires; commits. Revoking twice is fine."""
    values = {"jti": claims.jti, "expires_at": claims.expires_at}
    connection = await session.connection()
    # ON CONFLICT DO NOTHING rather than catching IntegrityError, whose rollback would
    # also throw away anything else pending in the caller's session.
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    await session.exec(insert(RevokedToken).values(values).on_conflict_do_nothing())
    await session.commit()


async def is_revoked(session: AsyncSession, jti: str) -> bool:
    found = await session.exec(select(RevokedToken.jti).where(RevokedToken.jti == jti))
    return found.first() is not None


async def purge_expired(session: AsyncSession, now: Instant) -> int:
    """Delete revocations of tokens expired for `CLOCK_SKEW` by `now`; commits; the count."""
    # Kept a while past exp: a replica whose clock runs behind still accepts the
    # token until its own clock reaches exp, so it must still find the revocation.
    cutoff = datetime.fromtimestamp(_epoch(now), UTC) - CLOCK_SKEW
    result = await session.exec(delete(RevokedToken).where(col(RevokedToken.expires_at) <= cutoff))
    await session.commit()
    return result.rowcount
