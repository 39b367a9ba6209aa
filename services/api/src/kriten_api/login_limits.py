"""Login rate limiting: failed logins per (provider, username) and per client address.

A sliding window: a key with `limit` failures in the last `window` seconds is refused
(`RateLimited`, 429 with Retry-After) until the oldest of them leaves the window. The
check runs before any password work, so a locked username costs no argon2 hash and no
LDAP bind.

Each attempt is counted as a failure from the moment it is admitted (`begin`), and
given back when it succeeds: otherwise a burst of concurrent requests would all pass
the check before the first of them failed. A success clears the username's failures.

State is in memory, per api replica. Memory is bounded: at most `max_entries` keys per
table and `limit` timestamps per key; the least recently failed keys go first.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from kriten_api.settings import ApiSettings
from kriten_common import errors
from kriten_common.client_address import parse_address

Clock = Callable[[], float]
RATE_LIMITED = "too many failed logins; try again later."
# An IPv6 client usually holds a whole /64; counting single addresses would let it rotate.
IPV6_PREFIX = 64
MAX_KEY_LENGTH = 200


class FailureWindow:
    """Failure timestamps per key within a sliding window, bounded in size."""

    def __init__(self, *, limit: int, window: float, max_entries: int) -> None:
        self.limit = limit
        self.window = window
        self.max_entries = max_entries
        # Ordered by the last failure, oldest first, so expired keys collect at the front.
        self._entries: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, key: str, now: float) -> int:
        stamps = self._live(key, now)
        return 0 if stamps is None else len(stamps)

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until `key` may try again, or None when it may now."""
        stamps = self._live(key, now)
        if stamps is None or len(stamps) < self.limit:
            return None
        return stamps[0] + self.window - now

    def add(self, key: str, now: float) -> None:
        stamps = self._entries.get(key)
        if stamps is None:
            stamps = self._entries[key] = deque(maxlen=self.limit)
        else:
            self._entries.move_to_end(key)
        stamps.append(now)
        self._evict(now)

    def discard(self, key: str, stamp: float) -> None:
        """Forgets one failure (an attempt that turned out not to be one)."""
        stamps = self._entries.get(key)
        if stamps is not None and stamp in stamps:
            stamps.remove(stamp)
            if not stamps:
                del self._entries[key]

    def clear(self, key: str) -> None:
        self._entries.pop(key, None)

    def _live(self, key: str, now: float) -> deque[float] | None:
        stamps = self._entries.get(key)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._entries[key]
            return None
        return stamps

    def _evict(self, now: float) -> None:
        while self._entries:
            _key, stamps = next(iter(self._entries.items()))
            expired = not stamps or stamps[-1] <= now - self.window
            if not expired and len(self._entries) <= self.max_entries:
                return
            self._entries.popitem(last=False)


def username_key(provider: str, username: str) -> str:
    # Directories compare names without case, so `Alice` and `alice` share one budget.
    key = f"{provider}\0{username.casefold()}"
    # A digest stands in for a long name, so a megabyte username holds 64 bytes here.
    return key if len(key) <= MAX_KEY_LENGTH else hashlib.sha256(key.encode()).hexdigest()


def address_key(address: str) -> str:
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed) if parsed is not None else address


@dataclass
class LoginAttempt:
    """An admitted attempt, counted as a failure until `succeeded` or `abandoned`."""

    limiter: LoginLimiter
    user: str
    address: str
    stamp: float

    def succeeded(self) -> None:
        self.limiter.usernames.clear(self.user)
        self.limiter.addresses.discard(self.address, self.stamp)

    def abandoned(self) -> None:
        """The attempt proved nothing about the credentials (the directory was down)."""
        self.limiter.usernames.discard(self.user, self.stamp)
        self.limiter.addresses.discard(self.address, self.stamp)


class LoginLimiter:
    def __init__(
        self,
        *,
        per_username: int,
        per_address: int,
        window_seconds: float,
        max_entries: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self.usernames = FailureWindow(
            limit=per_username, window=window_seconds, max_entries=max_entries
        )
        self.addresses = FailureWindow(
            limit=per_address, window=window_seconds, max_entries=max_entries
        )
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> LoginLimiter:
        return cls(
            per_username=settings.login_failures_per_username,
            per_address=settings.login_failures_per_address,
            window_seconds=settings.login_failure_window_seconds,
            max_entries=settings.login_limit_max_entries,
        )

    def begin(self, provider: str, username: str, address: str) -> LoginAttempt:
        """Admits an attempt, or raises `RateLimited` when either key is over its limit."""
        now = self.clock()
        user, client = username_key(provider, username), address_key(address)
        waits = [
            wait
            for wait in (
                self.usernames.retry_after(user, now),
                self.addresses.retry_after(client, now),
            )
            if wait is not None
        ]
        if waits:
            raise errors.RateLimited(RATE_LIMITED, retry_after=max(1, math.ceil(max(waits))))
        self.usernames.add(user, now)
        self.addresses.add(client, now)
        return LoginAttempt(self, user, client, now)
