"""Random ids: version-4 UUIDs, as text, made without building a `uuid.UUID`.

Every delivery needs several (its delivery id, the correlation id of its request, the
message id of each event): `str(uuid.uuid4())` costs 3-4 µs, most of it the `UUID`
object; these cost the randomness (`os.urandom`, as `uuid4` reads) and the formatting.
"""

from __future__ import annotations

import os


def _random_uuid_bytes() -> bytearray:
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw


def random_hex() -> str:
    """A new UUID4 as 32 hex digits (`uuid.uuid4().hex`)."""
    return _random_uuid_bytes().hex()


def random_uuid() -> str:
    """A new UUID4 in its canonical form (`str(uuid.uuid4())`)."""
    digits = _random_uuid_bytes().hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
