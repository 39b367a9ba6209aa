"""API token keys: their shape, their randomness and their keyed hash."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from kriten_api.api_tokens import hash_key, looks_like_key, new_key


def test_a_new_key_has_the_documented_shape() -> None:
    key = new_key()
    assert key.startswith("kri_")
    assert len(key) == 4 + 36
    assert key[4:].isascii()
    assert key[4:].isalnum()
    assert looks_like_key(key)


def test_keys_do_not_repeat() -> None:
    keys = {new_key() for _ in range(1000)}
    assert len(keys) == 1000
    # Every alphanumeric should turn up across 36,000 characters.
    assert len({c for k in keys for c in k[4:]}) == 62


@pytest.mark.parametrize(
    "value",
    [
        "",
        "kri_",
        "kri_" + "a" * 35,
        "kri_" + "a" * 37,
        "KRI_" + "a" * 36,
        "kri-" + "a" * 36,
        "kri_" + "a" * 35 + "-",
        "kri_" + "a" * 35 + "é",
        "kri_" + "a" * 36 + "\n",
        " kri_" + "a" * 36,
        "Bearer kri_" + "a" * 36,
    ],
)
def test_other_strings_do_not_look_like_keys(value: str) -> None:
    assert not looks_like_key(value)


def test_the_hash_is_hex_hmac_sha256_under_the_server_key() -> None:
    # RFC 4231, test case 2.
    assert hash_key("what do ya want for nothing?", server_key="Jefe") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    key = new_key()
    expected = hmac.new(b"server", key.encode(), hashlib.sha256).hexdigest()
    assert hash_key(key, server_key="server") == expected


def test_the_hash_depends_on_the_server_key() -> None:
    key = new_key()
    assert hash_key(key, server_key="one") == hash_key(key, server_key="one")
    assert hash_key(key, server_key="one") != hash_key(key, server_key="two")
    assert hash_key(key, server_key="one") != hash_key(new_key(), server_key="one")
