"""Kriten's job time format, and secrets encryption with key rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kriten_common.crypto import SecretBox
from kriten_common.jobtime import format_unix_date


def test_go_unix_date_format() -> None:
    assert format_unix_date(datetime(2025, 6, 30, 21, 11, 56, tzinfo=UTC)) == (
        "Mon Jun 30 21:11:56 UTC 2025"
    )
    # Go's `_2`: a single-digit day is space-padded.
    assert (
        format_unix_date(datetime(2025, 7, 1, 9, 5, 3, tzinfo=UTC))
        == "Tue Jul  1 09:05:03 UTC 2025"
    )
    plus_two = timezone(timedelta(hours=2))
    assert format_unix_date(datetime(2025, 7, 1, 1, 0, 0, tzinfo=plus_two)) == (
        "Mon Jun 30 23:00:00 UTC 2025"
    )


def test_secret_box_round_trip_hides_plaintext() -> None:
    box = SecretBox("first-key")
    token = box.encrypt("supersecret")
    assert "supersecret" not in token
    assert box.decrypt(token) == "supersecret"
    assert box.decrypt_map(box.encrypt_map({"a": "1"})) == {"a": "1"}
    assert box.decrypt_map(None) == {}


def test_key_rotation_keeps_old_secrets_readable() -> None:
    old = SecretBox("old-key")
    token = old.encrypt("s")
    rotated = SecretBox("new-key,old-key")
    assert rotated.decrypt(token) == "s"
    renewed = rotated.rotate(token)
    assert SecretBox("new-key").decrypt(renewed) == "s"
    with pytest.raises(ValueError, match="no configured key"):
        SecretBox("new-key").decrypt(token)
