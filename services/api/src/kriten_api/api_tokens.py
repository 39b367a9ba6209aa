"""API token keys: `kri_` and 36 random alphanumerics, stored only as an HMAC.

The database holds `hash_key(key)`, keyed with the server's token key, so a leaked
table cannot be used to authenticate, and a key is found by an indexed lookup on
its hash rather than by comparing secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

KEY_PREFIX = "kri_"
KEY_LENGTH = 36
_ALPHABET = string.ascii_letters + string.digits
_KEY_PATTERN = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9]{{{KEY_LENGTH}}}")


def new_key() -> str:
    """A fresh key, shown to its owner once."""
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_LENGTH))


def hash_key(key: str, *, server_key: str) -> str:
    """The hex HMAC-SHA256 of `key` under `server_key`: what the database stores."""
    return hmac.new(server_key.encode(), key.encode(), hashlib.sha256).hexdigest()


def looks_like_key(value: str) -> bool:
    """True when `value` has the shape of a key (say nothing of whether it exists)."""
    return _KEY_PATTERN.fullmatch(value) is not None
