"""What the run endpoint needs to know of a webhook, cached so a request does no database
query in the common case.

An entry is marked invalidated when the api announces a change (`config.changed`, which
the app subscribes `WebhookConfigs.on_event` to), and read again after `ttl_seconds`
regardless, as a safety net for a lost event; while the subscription is down the TTL is
capped at one second, so a rotated or deleted secret stops working within a second either
way.

While the database is unreachable, entries past their TTL are still answered from
(stale-if-error, up to `stale_seconds` after they were read): the job request is durable
in RabbitMQ, so the database is not needed to accept it. An invalidated entry is not: a
rotated or deleted secret stops working during the outage too, and that webhook is
answered 503 until its new configuration can be read.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from kriten_common import errors
from kriten_common.client_address import IPNetwork, parse_networks
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Task, Webhook
from kriten_common.logging import get_logger, without_ids
from kriten_common.messages import ConfigChanged, Event
from kriten_common.rbac import Principal, load_principal
from kriten_ingress.filters import Filter, compile_filter
from kriten_ingress.metrics import IngressMetrics
from kriten_ingress.signatures import SecretMatch

log = get_logger(__name__)
CacheResult = Literal["hit", "stale", "miss", "unavailable"]
CACHE_RESULTS: tuple[CacheResult, ...] = get_args(CacheResult)
UNSUBSCRIBED_TTL_SECONDS = 1.0
# Longer than a healthy read by far; short enough that a sender (GitHub waits 10 s) still
# gets an answer when the database hangs rather than refuses.
READ_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class WebhookConfig:
    webhook_id: str
    scheme: str
    task: Task | None
    owner: Principal | None
    secret: str = field(repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    # Unix time after which the previous secret no longer verifies.
    previous_expires_at: float | None = None
    filter: Filter | None = None
    max_body_bytes: int | None = None
    rate_limit_per_second: float | None = None
    allowed_sources: tuple[IPNetwork, ...] | None = None

    def secrets(self, now: float) -> tuple[tuple[str, SecretMatch], ...]:
        """The secrets that verify at `now` (Unix time): current first, then previous."""
        if (
            self.previous_secret
            and self.previous_expires_at is not None
            and now < self.previous_expires_at
        ):
            return ((self.secret, "current"), (self.previous_secret, "previous"))
        return ((self.secret, "current"),)


@dataclass(slots=True)
class _Entry:
    # Clock time the read started: a change committed after it may be missing from it.
    loaded_at: float
    # None: no such webhook, or it is disabled (the negative cache).
    config: WebhookConfig | None
    # A `config.changed` said this entry is wrong: never answered from again, even while
    # the database is unreachable. Kept (rather than dropped) so that the next lookup
    # knows the difference between "changed, unreadable" and "stale, still ours to use".
    invalidated: bool = False


class WebhookConfigs:
    """A read-through cache of enabled webhooks' configuration (absent ones too).

    Stale-if-error: when the database cannot be read, an entry past its TTL is still
    answered from for up to `stale_seconds` after it was read, provided no
    `config.changed` invalidated it and the subscription that would have delivered one
    is up. Anything else (an unknown id, an invalidated entry, an entry too old, or any
    entry while the subscription is down) raises `errors.Unavailable`: the sender is
    told to retry rather than being answered from a configuration that may be revoked.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        box: SecretBox,
        ttl_seconds: float,
        *,
        stale_seconds: float = 0.0,
        metrics: IngressMetrics | None = None,
        max_entries: int = 10_000,
        read_timeout_seconds: float = READ_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._ttl = ttl_seconds
        self._stale = stale_seconds
        self._metrics = metrics
        # One child per result, looked up once: `labels()` takes a lock and hashes, too
        # much for every delivery.
        self._lookups = (
            {}
            if metrics is None
            else {result: metrics.config_cache.labels(result) for result in CACHE_RESULTS}
        )
        self._max_entries = max_entries
        self._read_timeout = read_timeout_seconds
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[WebhookConfig | None]] = {}
        # Bumped by every invalidation: a load that started before one must not store
        # what it read, which may predate the change.
        self._generation = 0
        # Whether the last database read failed. While it did, a usable stale entry is
        # answered at once (one read in the background finds out when the database is
        # back) so that a database that hangs does not add its timeout to every request.
        self.database_failing = False
        self.subscribed: Callable[[], bool] = lambda: False

    def _current_ttl(self) -> float:
        if self.subscribed():
            return self._ttl
        return min(self._ttl, UNSUBSCRIBED_TTL_SECONDS)

    async def get(self, webhook_id: str) -> WebhookConfig | None:
        """The webhook's configuration, None when it does not exist or is disabled;
        `errors.Unavailable` when it cannot be read and no usable copy is cached."""
        entry = self._entries.get(webhook_id)
        if entry is not None:
            self._entries.move_to_end(webhook_id)
            if not entry.invalidated and entry.loaded_at + self._current_ttl() > self._clock():
                self._count("hit")
                return entry.config
        if self.database_failing and self._usable_stale(entry):
            assert entry is not None
            self._refresh(webhook_id)
            self._count("stale")
            return entry.config
        try:
            config = await asyncio.shield(self._refresh(webhook_id))
        except errors.Unavailable:
            # Looked up again: an invalidation may have arrived during the read.
            entry = self._entries.get(webhook_id)
            if not self._usable_stale(entry):
                self._count("unavailable")
                raise
            assert entry is not None
            self._count("stale")
            return entry.config
        self._count("miss")
        return config

    def _usable_stale(self, entry: _Entry | None) -> bool:
        # Without the subscription an invalidation could have been missed, and an entry
        # is only as trustworthy as the invalidations that would have reached it.
        return (
            entry is not None
            and not entry.invalidated
            and self._clock() - entry.loaded_at < self._stale
            and self.subscribed()
        )

    def _refresh(self, webhook_id: str) -> asyncio.Future[WebhookConfig | None]:
        loading = self._loading.get(webhook_id)
        # A finished read whose done-callback has not run yet is not one to wait for.
        if loading is None or loading.done():
            # One database read however many requests for this webhook arrive meanwhile.
            # Shared by every request for this webhook: none of the first one's ids.
            loading = asyncio.create_task(self._load_and_store(webhook_id), context=without_ids())
            self._loading[webhook_id] = loading
            loading.add_done_callback(lambda done: self._loaded(webhook_id, done))
        return loading

    def _loaded(self, webhook_id: str, done: asyncio.Future[WebhookConfig | None]) -> None:
        if self._loading.get(webhook_id) is done:
            del self._loading[webhook_id]
        if not done.cancelled():
            done.exception()  # marks it retrieved when no request is left waiting

    def _count(self, result: CacheResult) -> None:
        counter = self._lookups.get(result)
        if counter is not None:
            counter.inc()

    async def _load_and_store(self, webhook_id: str) -> WebhookConfig | None:
        generation = self._generation
        started = self._clock()
        try:
            # Bounded: a database that drops packets would otherwise hold the request
            # (and every request waiting on this read) for the driver's connect timeout.
            async with asyncio.timeout(self._read_timeout):
                config = await self._load(webhook_id)
        except asyncio.CancelledError:
            raise
        except Exception as problem:
            if not self.database_failing:
                log.warning(
                    "webhook_config_unavailable",
                    webhook_id=webhook_id,
                    error=str(problem) or type(problem).__name__,
                )
            self.database_failing = True
            if self._metrics is not None:
                self._metrics.config_read_failures.inc()
            raise errors.Unavailable("webhook configuration unavailable") from None
        if self.database_failing:
            log.info("webhook_config_readable_again")
        self.database_failing = False
        if generation == self._generation:
            self._entries[webhook_id] = _Entry(started, config)
            self._entries.move_to_end(webhook_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)  # bounded under a scan of random ids
        return config

    def invalidate(self, webhook_id: str | None = None) -> None:
        """Marks one webhook's entry, or every entry, as no longer to be answered from."""
        self._generation += 1
        if webhook_id is None:
            for entry in self._entries.values():
                _mark(entry)
            self._loading.clear()
        else:
            known = self._entries.get(webhook_id)
            if known is not None:
                _mark(known)
            self._loading.pop(webhook_id, None)

    async def close(self) -> None:
        """Cancels reads still running (background refreshes), before the engine goes."""
        pending = list(self._loading.values())
        for loading in pending:
            loading.cancel()
        if pending:
            await asyncio.wait(pending)

    async def on_event(self, event: Event) -> None:
        """Handler for `config.changed`."""
        if not isinstance(event, ConfigChanged):
            return
        if event.kind == "webhook":
            self.invalidate(event.name)
        else:
            # A task, a user or a role: which webhooks it touches is not worth working
            # out for such rare events; the next request of each reads again.
            self.invalidate()
        log.debug("webhook_config_invalidated", kind=event.kind, name=event.name)

    async def _load(self, webhook_id: str) -> WebhookConfig | None:
        async with self._sessions() as session:
            hook = await session.get(Webhook, webhook_id)
            if hook is None or not hook.enabled:
                return None
            task = await session.get(Task, hook.task)
            owner = await load_principal(session, hook.owner_id)
        previous = None
        expires = hook.previous_secret_expires_at
        if hook.previous_secret_encrypted and expires is not None:
            previous = self._box.decrypt(hook.previous_secret_encrypted)
        return WebhookConfig(
            webhook_id=hook.id,
            scheme=hook.scheme,
            task=task,
            owner=owner,
            secret=self._box.decrypt(hook.secret_encrypted),
            previous_secret=previous,
            previous_expires_at=expires.timestamp() if expires is not None else None,
            filter=compile_filter(hook.filter),
            max_body_bytes=hook.max_body_bytes,
            rate_limit_per_second=hook.rate_limit_per_second,
            allowed_sources=_networks(hook.allowed_sources),
        )


def _mark(entry: _Entry) -> None:
    entry.invalidated = True
    entry.config = None  # never answered from again; no reason to keep its secrets


def _networks(sources: list[str] | None) -> tuple[IPNetwork, ...] | None:
    if sources is None:
        return None
    try:
        return parse_networks(sources)
    except ValueError:
        # The api validates the list; an entry that slipped past must close the door,
        # not open it, so a broken list admits nobody.
        return ()
