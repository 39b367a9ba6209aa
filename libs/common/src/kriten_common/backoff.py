"""The retry schedule of consumers: which delay queue a failed event goes to, and when.

Two counters travel in the message headers. `x-kriten-attempt` counts failures that use
an attempt (bugs, `RetryableError`); after `max_attempts` the event is dead-lettered.
`x-kriten-backoff` counts consecutive transient failures (a dependency down); they never
end the event, they only make it wait longer: 1 s, 5 s, 30 s, then 120 s for as long as
the outage lasts. The longer levels (10 minutes, an hour) serve retries that ask for them
(`RetryableError(delay=...)`): a completion callback whose receiver is down is retried
for about a day (`kriten_collector.callback_schedule`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

ATTEMPT_HEADER = "x-kriten-attempt"
BACKOFF_HEADER = "x-kriten-backoff"
# One delay queue per level: a quorum queue expires per-message TTLs only at its head, so
# a single queue with per-message delays would hold a short delay behind a long one.
RETRY_DELAYS_SECONDS = (1, 5, 30, 120, 600, 3600)
# The levels a transient streak climbs: an outage is waited out at most 120 s at a time,
# so work resumes soon after the dependency is back.
TRANSIENT_DELAYS_SECONDS = RETRY_DELAYS_SECONDS[:4]
# The levels are fixed TTLs, so jitter is a short random wait before the event enters
# its delay queue: events that failed together (a whole prefetch window when the
# database went away) then come back spread out rather than as one burst. Kept small
# because the message is held unacked, and shutdown waits for it, meanwhile.
JITTER_FRACTION = 0.1
JITTER_MAX_SECONDS = 2.0


def header_count(headers: Mapping[str, Any] | None, name: str, default: int) -> int:
    value = (headers or {}).get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def delay_level(seconds: float) -> int:
    """The shortest delay queue that waits at least `seconds` (the longest one at most)."""
    return next((d for d in RETRY_DELAYS_SECONDS if d >= seconds), RETRY_DELAYS_SECONDS[-1])


def transient_level(step: int, hint: float = 0.0) -> int:
    """The delay queue for the `step`-th consecutive transient failure (0 for the first):
    the schedule's level, or a longer one when the failure asked for it (Retry-After)."""
    levels = TRANSIENT_DELAYS_SECONDS
    scheduled = levels[min(max(step, 0), len(levels) - 1)]
    return max(scheduled, delay_level(hint)) if hint > scheduled else scheduled


def jitter_seconds(level: int) -> float:
    return random.uniform(0, min(JITTER_MAX_SECONDS, level * JITTER_FRACTION))  # noqa: S311 - not for security
