"""Password hashing for local users: argon2id through argon2-cffi.

Hashing and verifying take tens of milliseconds of CPU on purpose; from a request
handler use the `*_async` wrappers, which run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import Parameters, PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, with the library's current recommended costs

DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(32))
"""A hash of a random password nobody knows, with the same costs as real hashes."""


def use_parameters(parameters: Parameters) -> None:
    """Hashes with `parameters` from now on (the dummy hash included). Only the tests call
    this, with argon2's cheapest costs: at full cost the hashing of every login and
    start-up dominates their run time. Production keeps the defaults above."""
    global _hasher, DUMMY_HASH
    _hasher = PasswordHasher.from_parameters(parameters)
    DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(32))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches `password_hash`; False for anything else.

    A malformed or empty hash, or input of the wrong type, is a failed login, never
    an exception that could turn into a 500.
    """
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError, TypeError, ValueError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's (or is invalid)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, TypeError, ValueError):
        return True


def verify_dummy(password: str) -> bool:
    """Spend as long as `verify_password` would, then fail.

    Called for unknown users so that the time a login takes does not reveal
    whether the username exists.
    """
    verify_password(DUMMY_HASH, password)
    return False


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)


async def verify_dummy_async(password: str) -> bool:
    return await asyncio.to_thread(verify_dummy, password)
