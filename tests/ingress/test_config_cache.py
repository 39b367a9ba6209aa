"""The configuration cache's stale-if-error rules, without I/O: the database read is
replaced by a function the test controls (the real read is covered by
`test_database_outage.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kriten_common import errors
from kriten_common.crypto import SecretBox
from kriten_common.messages import ConfigChanged
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_ingress.webhook_config import WebhookConfig, WebhookConfigs


class Configs(WebhookConfigs):
    def __init__(self, **options: Any) -> None:
        self.now = 0.0
        self.down = False
        self.hang = False
        self.reads = 0
        super().__init__(
            None,  # type: ignore[arg-type]  # never used: _load is replaced
            SecretBox(DEVELOPMENT_ENCRYPTION_KEY),
            10.0,
            stale_seconds=900.0,
            clock=lambda: self.now,
            **options,
        )
        self.subscribed = lambda: True

    async def _load(self, webhook_id: str) -> WebhookConfig | None:
        self.reads += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.down:
            raise ConnectionRefusedError("database down")
        if webhook_id.startswith("unknown"):
            return None
        return WebhookConfig(
            webhook_id=webhook_id, scheme="auto", task=None, owner=None, secret="s"
        )


async def _outage(configs: Configs, *ids: str) -> None:
    for webhook_id in ids:
        await configs.get(webhook_id)
    configs.down = True
    configs.now += 11.0  # past the TTL


async def test_stale_entries_serve_and_negative_ones_too() -> None:
    configs = Configs()
    await _outage(configs, "a", "unknown-1")
    config = await configs.get("a")
    assert config is not None
    assert config.webhook_id == "a"
    assert await configs.get("unknown-1") is None  # still a 404, as when last read
    with pytest.raises(errors.Unavailable):
        await configs.get("never-seen")


async def test_invalidated_entry_is_unavailable_until_read_again() -> None:
    configs = Configs()
    await _outage(configs, "a", "b")
    await configs.on_event(ConfigChanged(kind="webhook", name="a"))
    with pytest.raises(errors.Unavailable) as raised:
        await configs.get("a")
    assert raised.value.retry_after > 0
    assert await configs.get("b") is not None
    configs.down = False
    assert await configs.get("a") is not None


async def test_a_change_of_task_user_or_role_invalidates_every_entry() -> None:
    configs = Configs()
    await _outage(configs, "a", "b")
    await configs.on_event(ConfigChanged(kind="user", name="someone"))
    for webhook_id in ("a", "b"):
        with pytest.raises(errors.Unavailable):
            await configs.get(webhook_id)


async def test_nothing_stale_while_the_subscription_is_down() -> None:
    # An invalidation could have been missed; with the broker down nothing can be
    # published anyway, so refusing costs nothing.
    configs = Configs()
    await _outage(configs, "a")
    configs.subscribed = lambda: False
    with pytest.raises(errors.Unavailable):
        await configs.get("a")


async def test_staleness_is_bounded() -> None:
    configs = Configs()
    await _outage(configs, "a")
    configs.now += 880.0
    assert await configs.get("a") is not None
    configs.now += 10.0  # 901 s after the read
    with pytest.raises(errors.Unavailable):
        await configs.get("a")


async def test_entry_dropped_for_size_is_unknown_during_an_outage() -> None:
    configs = Configs(max_entries=2)
    await _outage(configs, "a", "b", "c")
    with pytest.raises(errors.Unavailable):
        await configs.get("a")
    assert await configs.get("c") is not None


async def test_a_hanging_database_delays_only_the_first_request() -> None:
    configs = Configs(read_timeout_seconds=0.05)
    await _outage(configs, "a")
    configs.hang = True
    assert await configs.get("a") is not None  # waited for the read to time out
    reads = configs.reads
    # Known failing: answered at once from the stale entry, one read in the background.
    async with asyncio.timeout(0.01):
        for _ in range(5):
            assert await configs.get("a") is not None
    await asyncio.sleep(0)  # lets the background read start
    assert configs.reads == reads + 1
    await configs.close()
