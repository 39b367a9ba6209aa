"""What the run endpoint needs to know of a webhook, read from the database and kept
for `config_cache_seconds` so a burst of deliveries costs one read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Task, User, Webhook, utcnow
from kriten_common.rbac import Principal, load_permissions
from kriten_ingress.signatures import SecretMatch


@dataclass(frozen=True)
class WebhookConfig:
    webhook_id: str
    scheme: str
    task: Task | None
    owner: Principal | None
    secrets: tuple[tuple[str, SecretMatch], ...] = field(repr=False)


class WebhookConfigs:
    """A read-through cache of enabled webhooks' configuration (absent ones too)."""

    def __init__(self, sessions: SessionFactory, box: SecretBox, ttl_seconds: float) -> None:
        self._sessions = sessions
        self._box = box
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, WebhookConfig | None]] = {}

    async def get(self, webhook_id: str) -> WebhookConfig | None:
        now = time.monotonic()
        cached = self._entries.get(webhook_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        config = await self._load(webhook_id)
        if len(self._entries) > 10_000:
            self._entries.clear()  # bounded memory under a scan of random ids
        self._entries[webhook_id] = (now + self._ttl, config)
        return config

    async def _load(self, webhook_id: str) -> WebhookConfig | None:
        async with self._sessions() as session:
            hook = await session.get(Webhook, webhook_id)
            if hook is None or not hook.enabled:
                return None
            task = await session.get(Task, hook.task)
            user = await session.get(User, hook.owner_id)
            owner = None
            if user is not None:
                owner = Principal(
                    user_id=user.id,
                    username=user.username,
                    provider=user.provider,
                    permissions=await load_permissions(session, user.id),
                )
        secrets: list[tuple[str, SecretMatch]] = [
            (self._box.decrypt(hook.secret_encrypted), "current")
        ]
        expires = hook.previous_secret_expires_at
        if hook.previous_secret_encrypted and expires is not None and expires > utcnow():
            secrets.append((self._box.decrypt(hook.previous_secret_encrypted), "previous"))
        return WebhookConfig(
            webhook_id=hook.id, scheme=hook.scheme, task=task, owner=owner, secrets=tuple(secrets)
        )
