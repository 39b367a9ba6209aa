"""Completion callbacks: what a task's `callbacks` may hold, which addresses they may
reach, and how each call is signed (Standard Webhooks, as a sender).

The api checks a task's callbacks when it saves them (`check_callbacks`, then
`refused_literal` with the operator's allowance); the collector checks every address a
callback's host resolves to just before it connects (`address_allowed`), since a name
that resolved to a public address at save time may resolve to a private one later.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from kriten_common import errors
from kriten_common.client_address import IPAddress, IPNetwork
from kriten_common.webhook_signing import WHSEC_PREFIX, sign_standard

# Mirrors `messages.FinalStatus`: the statuses a job ends in, hence the events.
EVENTS = ("succeeded", "failed", "cancelled")
MAX_CALLBACKS = 10
MAX_URL_LENGTH = 2048


def check_callbacks(value: Any) -> list[dict[str, Any]]:
    """A task's `callbacks` in their stored form (`[{"url", "events"}]`), or
    `errors.InvalidInput` naming what is wrong. Events default to every final status."""
    if not isinstance(value, list):
        raise errors.InvalidInput("callbacks must be a list")
    if len(value) > MAX_CALLBACKS:
        raise errors.InvalidInput(f"callbacks must have at most {MAX_CALLBACKS} entries")
    checked: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        where = f"callbacks[{index}]"
        if not isinstance(entry, dict):
            raise errors.InvalidInput(f"{where} must be a JSON object")
        unknown = set(entry) - {"url", "events"}
        if unknown:
            raise errors.InvalidInput(f"{where}: unknown field {sorted(unknown)[0]!r}")
        url = check_url(entry.get("url"), where=f"{where}.url")
        events = entry.get("events", list(EVENTS))
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) and e in EVENTS for e in events)
        ):
            raise errors.InvalidInput(
                f"{where}.events must be a non-empty list of {', '.join(EVENTS)}"
            )
        if any(c["url"] == url for c in checked):
            # The URL identifies a callback in its delivery log and its webhook-id.
            raise errors.InvalidInput(f"{where}.url is given twice")
        checked.append({"url": url, "events": sorted(set(events), key=EVENTS.index)})
    return checked


def check_url(value: Any, *, where: str = "url") -> str:
    """An absolute http(s) URL without credentials, within `MAX_URL_LENGTH`."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput(f"{where} is required")
    if len(value) > MAX_URL_LENGTH:
        raise errors.InvalidInput(f"{where} must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise errors.InvalidInput(f"{where} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidInput(f"{where} must be an absolute http or https URL")
    if parts.username is not None or parts.password is not None:
        # It would be stored and shown in clear; the signature is the credential.
        raise errors.InvalidInput(f"{where} must not hold credentials")
    if any(ord(c) <= 32 for c in value):
        raise errors.InvalidInput(f"{where} must not contain spaces or control characters")
    return value


def address_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """Whether a callback may connect to `address`: a public one, or one the operator
    allows (`KRITEN_CALLBACK_ALLOWED_NETWORKS`). Loopback, private, link-local,
    unique-local, multicast, reserved and unspecified addresses are refused otherwise:
    a callback URL is chosen by whoever may edit a task, and must not reach what only
    the collector's network can (SSRF)."""
    embedded = _embedded_ipv4(address)
    if any(a in network for network in allowed for a in (address, embedded)):
        return True
    return embedded.is_global and not embedded.is_multicast


# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway or host may reach.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (mapped `::ffff:a.b.c.d`, compatible
    `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`), judged as that
    address: `64:ff9b::a9fe:a9fe` reaches 169.254.169.254 through a NAT64 gateway, though
    Python calls it global."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    # (`::` and `::1` are IPv6's own unspecified and loopback addresses.)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def literal_address(host: str) -> IPAddress | None:
    """The host of a URL as an IP address, or None when it is a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def refused_literal(url: str, allowed: Sequence[IPNetwork]) -> str | None:
    """Why `url` is refused at save time (its host an address not allowed), else None.
    A host name is checked when it is resolved, at send time."""
    address = literal_address(urlsplit(url).hostname or "")
    if address is not None and not address_allowed(address, allowed):
        return f"callback URL {url!r} targets a non-public address"
    return None


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return WHSEC_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def webhook_id(job_id: str, url: str) -> str:
    """The `webhook-id` of a job's call to one callback: the same on every attempt, so a
    receiver can tell a retry from a new event."""
    digest = hashlib.sha256(f"{job_id}\n{url}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def signed_headers(
    *, secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers of one call, signed with every secret given (the
    current one, and the previous one during a rotation's grace: a receiver accepts the
    call when any signature matches, so it may switch secrets at its own pace)."""
    signatures = " ".join(sign_standard(s, message_id, timestamp, body) for s in secrets_)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }


def shown_url(url: str) -> str:
    """A callback URL as logs and those who may not change it see it: without its query,
    which may hold the receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
