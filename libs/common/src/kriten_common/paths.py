"""The URL paths more than one service knows: Kriten's, so clients and senders keep them."""

API_BASE = "/api/v1"
"""Every api route is under it."""

RUN_PREFIX = f"{API_BASE}/webhooks/run"
"""Senders post to `RUN_PREFIX/{webhook_id}`: the ingress's one route, also listed (and
audited as such) by the api."""
