"""How each webhook sender signs (see SIGNATURES.md): the keys, the MACs, and the header
values a sender would send. The ingress verifies with these; the api's test endpoint and
the tests sign with them, so both sides share one definition of every scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac

WHSEC_PREFIX = "whsec_"
GITHUB_PREFIX = "sha256="


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks key: `whsec_` + base64, else the secret's own bytes."""
    if secret.startswith(WHSEC_PREFIX):
        # Not validate=True: the Standard Webhooks reference libraries decode leniently,
        # and a stricter decode would fail to match what such a sender signs with.
        key = base64.b64decode(secret[len(WHSEC_PREFIX) :])
    else:
        # Infrahub's shared key is a plain string used as-is.
        key = secret.encode("utf-8")
    if not key:
        raise ValueError("empty signing key")
    return key


def plain_key(secret: str) -> bytes:
    """NetBox's and GitHub's key: the secret's UTF-8 bytes."""
    key = secret.encode("utf-8")
    if not key:
        raise ValueError("empty signing key")
    return key


def standard_mac(key: bytes, webhook_id: str, timestamp: str) -> hmac.HMAC:
    """The Standard Webhooks MAC, fed with `id.timestamp.`; the caller adds the body."""
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode(), hashlib.sha256)


def sign_standard(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value a Standard Webhooks (or Infrahub) sender would send."""
    mac = standard_mac(standard_key(secret), webhook_id, str(timestamp))
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def sign_netbox(secret: str, body: bytes) -> str:
    """The `X-Hook-Signature` value NetBox (or Nautobot) would send."""
    return hmac.new(plain_key(secret), body, hashlib.sha512).hexdigest()


def sign_github(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub would send."""
    return GITHUB_PREFIX + hmac.new(plain_key(secret), body, hashlib.sha256).hexdigest()
