"""Explicit consumer outcomes: a handler returns normally (ack), or raises one of these."""

from __future__ import annotations


class RetryableError(Exception):
    """Try the event again later, after about `delay` seconds. Each retry uses one of the
    event's attempts: for conditions that should clear soon or not at all (a cancellation
    whose job is not launched yet), after which the event is dead-lettered."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class Waiting(RetryableError):
    """Not yet, and not a failure: try again after about `delay` seconds without using an
    attempt, however long it lasts (a job waiting its turn for a busy concurrency key,
    which is busy as long as the job before it runs)."""


class TransientError(RetryableError):
    """A dependency is unavailable (the database, the broker, the Kubernetes API): retry
    with a growing backoff for as long as it lasts, without using an attempt, since the
    event itself is fine and an outage must not end it."""


class PermanentError(Exception):
    """The event can never succeed: dead-letter it and record the reason."""
