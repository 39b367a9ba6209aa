"""The random ids every service stamps deliveries, messages and rows with."""

from __future__ import annotations

import uuid

from kriten_common.ids import random_hex, random_uuid


def test_ids_are_version_4_uuids_in_the_forms_uuid_writes() -> None:
    for _ in range(1000):
        canonical = random_uuid()
        parsed = uuid.UUID(canonical)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == canonical
        digits = random_hex()
        parsed = uuid.UUID(hex=digits)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert parsed.hex == digits


def test_ids_do_not_repeat() -> None:
    made = [random_uuid() for _ in range(10_000)] + [random_hex() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    # Every one of the 122 random bits varies (none stuck by the version and variant).
    values = [uuid.UUID(text).int for text in made[:2000]]
    fixed = (0xF << 76) | (0x3 << 62)
    varying = 0
    for value in values:
        varying |= value ^ values[0]
    assert varying == ((1 << 128) - 1) & ~fixed
