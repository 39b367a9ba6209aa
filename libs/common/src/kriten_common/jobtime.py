"""Kriten's job time format: Go's `time.UnixDate` (`Mon Jun 30 21:11:56 UTC 2025`)."""

from __future__ import annotations

from datetime import UTC, datetime


def format_unix_date(moment: datetime) -> str:
    """Go's UnixDate layout `Mon Jan _2 15:04:05 MST 2006`: the day is space-padded."""
    utc = moment.astimezone(UTC)
    return f"{utc:%a %b} {utc.day:>2} {utc:%H:%M:%S} UTC {utc.year}"
