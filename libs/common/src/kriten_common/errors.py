"""Domain errors. They know nothing of HTTP; `kriten_common.http` maps them to statuses."""

from __future__ import annotations


class KritenError(Exception):
    """Base of every error a user may see; `message` is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(KritenError):
    """Malformed or invalid input; the message names the field."""


class NotAuthenticated(KritenError):
    """No valid credentials."""


class Forbidden(KritenError):
    """Authenticated but not allowed."""


class NotFound(KritenError):
    """The resource does not exist (or the caller may not know that it does)."""


class Conflict(KritenError):
    """A duplicate name, or a resource still referenced."""


class PayloadTooLarge(KritenError):
    """The body is over the configured cap."""


class UnsupportedMediaType(KritenError):
    """JSON was required."""


class RateLimited(KritenError):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(KritenError):
    """A dependency (the broker, the database) is unavailable; the client should retry."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


FORBIDDEN_MESSAGE = "unauthorized - user cannot access resource"
BUILTIN_MESSAGE = "cannot modify builtin resource"
