"""Password hashing: argon2id, verification that never raises, a dummy of equal cost."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type, extract_parameters

from kriten_api.passwords import (
    DUMMY_HASH,
    hash_password,
    hash_password_async,
    needs_rehash,
    verify_dummy,
    verify_dummy_async,
    verify_password,
    verify_password_async,
)

# The hashing itself: at production's costs, not the other tests' cheap ones.
pytestmark = pytest.mark.production_password_costs


def test_a_hash_verifies_its_password_only() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "correct horse ")
    assert not verify_password(hashed, "")


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_unicode_passwords() -> None:
    hashed = hash_password("pässwörd 🔑")
    assert verify_password(hashed, "pässwörd 🔑")
    assert not verify_password(hashed, "passwort 🔑")


@pytest.mark.parametrize(
    "bad_hash",
    [
        "",
        "plain text",
        "$2b$12$abcdefghijklmnopqrstuuKyFqLg0kAoVjG7eTqC1w3rM8n0LQm2e",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA",
        "$argon2id$v=19$m=65536,t=3,p=4$!!!$???",
        "$argon2id$v=19$m=x,t=y,p=z$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    ],
)
def test_a_bad_hash_is_a_mismatch_not_an_error(bad_hash: str) -> None:
    assert not verify_password(bad_hash, "anything")
    assert needs_rehash(bad_hash)


def test_a_hash_made_with_other_costs_needs_a_rehash() -> None:
    weaker = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert verify_password(weaker, "pw")
    assert needs_rehash(weaker)
    assert not needs_rehash(hash_password("pw"))


def test_the_dummy_costs_what_a_real_check_costs() -> None:
    # Same algorithm and parameters means the same work, so an unknown username
    # takes as long to refuse as a wrong password.
    dummy = extract_parameters(DUMMY_HASH)
    assert dummy == extract_parameters(hash_password("x"))
    assert dummy.type is Type.ID
    assert not needs_rehash(DUMMY_HASH)


def test_the_dummy_never_verifies() -> None:
    assert verify_dummy("") is False
    assert verify_dummy("root") is False


async def test_the_async_wrappers() -> None:
    hashed = await hash_password_async("pw")
    assert await verify_password_async(hashed, "pw")
    assert not await verify_password_async(hashed, "wrong")
    assert not await verify_password_async("garbage", "pw")
    assert await verify_dummy_async("pw") is False
