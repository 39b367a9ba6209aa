"""Rotating a secret with a grace: the rule shared by webhook secrets (which verify
deliveries) and task callback secrets (which sign calls). The new secret is shown once;
the current one goes on working beside it for `grace_seconds`, so the other side can
switch at its own pace, or stops at once with 0."""

from __future__ import annotations

from datetime import datetime, timedelta

from kriten_common import errors
from kriten_common.clock import utcnow

DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 30 * 86_400


def check_grace(value: int | None) -> int | None:
    """A request's `grace_seconds`, or a 400 outside 0 to 30 days."""
    if value is not None and not 0 <= value <= MAX_GRACE_SECONDS:
        raise errors.InvalidInput(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}")
    return value


def previous_secret(
    current_encrypted: str | None, grace_seconds: int | None
) -> tuple[str | None, datetime | None]:
    """What a rotation keeps of the current secret: it and its expiry, or nothing."""
    grace = DEFAULT_GRACE_SECONDS if grace_seconds is None else grace_seconds
    if grace > 0 and current_encrypted is not None:
        return current_encrypted, utcnow() + timedelta(seconds=grace)
    return None, None
