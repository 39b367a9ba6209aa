"""What a webhook may be configured with, shared by the api (which checks a webhook's
settings) and the ingress (which enforces them)."""

from __future__ import annotations

from typing import Literal

Scheme = Literal["standard", "netbox", "github"]
"""The signatures the ingress verifies."""

CONFIGURED_SCHEMES: dict[str, Scheme | None] = {
    "auto": None,  # whichever of the three the delivery's headers show
    "infrahub": "standard",  # Infrahub signs as Standard Webhooks do
    "standard": "standard",
    "netbox": "netbox",
    "github": "github",
}
"""A webhook's `scheme` setting, and the signature it requires (None: any)."""

MAX_BODY_BYTES = 64 * 1024 * 1024
"""No webhook body is read past this, whatever a webhook's own `max_body_bytes` says."""
