"""Per-webhook limits of the run endpoint: token buckets and the source allow-list.
Pure; callers pass the clock in. The client's address itself is
`kriten_common.client_address`'s, the rule every service shares."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from kriten_common.client_address import IPNetwork, parse_address


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; starts full."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = now

    @property
    def rate(self) -> float:
        return self._rate

    def rescale(self, rate: float, burst: float, now: float) -> None:
        """A new rate and burst, keeping the bucket as full as it was, proportionally: a
        replica's share changes when replicas come and go, and a bucket refilled to the
        brim at each change would let a burst through every time."""
        self._refill(now)
        fullness = self._tokens / self._burst if self._burst > 0 else 1.0
        self._rate = rate
        self._burst = burst
        self._tokens = fullness * burst

    def take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def seconds_until_token(self, now: float) -> float:
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        if self._rate <= 0:
            return math.inf
        return (1.0 - self._tokens) / self._rate

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now


class Buckets:
    """One token bucket per key, the least recently used dropped beyond `max_keys`.

    A bucket is rescaled when its rate changes (the webhook was reconfigured, or the
    number of replicas sharing it changed).
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def bucket(self, key: str, *, rate: float, burst: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(rate, burst, now)
            self._buckets[key] = bucket
        elif bucket.rate != rate:
            bucket.rescale(rate, burst, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return bucket


def replica_rate(rate_per_second: float, replicas: int) -> tuple[float, float]:
    """This replica's share of a webhook's rate, and its burst (one second's worth, ≥ 1)."""
    rate = rate_per_second / max(1, replicas)
    return rate, max(1.0, rate)


def retry_after_seconds(wait: float) -> int:
    """A whole number of seconds for `Retry-After`, never 0 (which invites a busy loop)."""
    if math.isinf(wait):
        return 3600
    return max(1, math.ceil(wait))


def source_allowed(address: str | None, allowed: Sequence[IPNetwork]) -> bool:
    parsed = parse_address(address) if address else None
    return parsed is not None and any(parsed in network for network in allowed)
