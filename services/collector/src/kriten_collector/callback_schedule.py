"""When a failed completion callback is tried again: after `first` seconds, then 30 s,
2 min, 10 min, and every hour after that, until the attempts run out
(`KRITEN_CALLBACK_MAX_ATTEMPTS`, 30 by default: about a day). Pure, so the schedule is
tested without a broker; the consumer's delay queues (`kriten_common.backoff`) round each
delay up to the nearest level they have."""

from __future__ import annotations

LATER_DELAYS_SECONDS = (30.0, 120.0, 600.0, 3600.0)


def retry_delay(attempt: int, *, first: float) -> float:
    """The wait after failed attempt number `attempt` (1 for the first call)."""
    if attempt <= 1:
        return first
    later = LATER_DELAYS_SECONDS[min(attempt - 2, len(LATER_DELAYS_SECONDS) - 1)]
    # A first delay set longer than the schedule's next step does not shorten the waits.
    return max(later, first)


def total_seconds(attempts: int, *, first: float) -> float:
    """How long after the first attempt the last one of `attempts` is made (roughly: the
    delay queues round up)."""
    return sum(retry_delay(n, first=first) for n in range(1, attempts))
