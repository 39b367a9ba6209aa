"""Explicit consumer outcomes: a handler returns normally (ack), or raises one of these."""

from __future__ import annotations


class RetryableError(Exception):
    """Try the event again later, after about `delay` seconds (a transient failure)."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """The event can never succeed: dead-letter it and record the reason."""
