"""Encryption of secrets at rest (webhook secrets, runner tokens and secrets).

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`, with MultiFernet so keys rotate:
the first configured key encrypts, every key decrypts; `rotate()` re-encrypts under the
newest key.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    def __init__(self, keys: str) -> None:
        fernets = [Fernet(_as_fernet_key(k.strip())) for k in keys.split(",") if k.strip()]
        if not fernets:
            raise ValueError("at least one encryption key is required")
        self._box = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._box.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._box.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("cannot decrypt: no configured key matches") from None

    def rotate(self, token: str) -> str:
        return self._box.rotate(token.encode()).decode()

    def encrypt_map(self, values: dict[str, str]) -> str:
        return self.encrypt(json.dumps(values, sort_keys=True))

    def decrypt_map(self, token: str | None) -> dict[str, str]:
        if not token:
            return {}
        loaded: dict[str, str] = json.loads(self.decrypt(token))
        return loaded


def _as_fernet_key(key: str) -> bytes:
    """Accepts a Fernet key (32 url-safe base64 bytes) or any passphrase, stretched by SHA-256."""
    try:
        if len(base64.urlsafe_b64decode(key.encode())) == 32:
            return key.encode()
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())
