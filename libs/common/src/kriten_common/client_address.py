"""Who the client is, when reverse proxies stand between it and the service.

The rule, shared by every service that rate limits by address: the TCP peer is the
client unless the peer is a trusted proxy. Then `X-Forwarded-For` is read from the
right, skipping trusted hops, and the first untrusted hop is the client. Hops left of
that one were written by the client itself and are never believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or bare addresses) as networks; `ValueError` names the first bad one."""
    networks = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {text!r}") from None
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An address from a peer name or a forwarded hop, or None when it is not one.

    Some proxies write a port (`1.2.3.4:5678`, `[::1]:5678`) or an IPv6 zone; an
    IPv4-mapped IPv6 address is the IPv4 address, so both spellings share one bucket.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress | None, trusted: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in trusted)


def forwarded_hops(header_values: Iterable[str]) -> list[str]:
    """The hops of every `X-Forwarded-For` header, in order (repeated headers join)."""
    return [hop.strip() for value in header_values for hop in value.split(",") if hop.strip()]


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> str:
    """The client's address as text; `forwarded_for` is the hops, leftmost first.

    `peer` None (a Unix socket) or unparseable is returned as `"unknown"`, so such
    callers share one rate limit bucket rather than escaping it.
    """
    peer_address = parse_address(peer) if peer else None
    if peer_address is None:
        return "unknown"
    if not _trusted(peer_address, trusted):
        return str(peer_address)
    nearest = peer_address
    for hop in reversed(forwarded_for):
        address = parse_address(hop)
        if address is None:
            # A trusted proxy wrote something that is no address (`unknown`, say): the
            # proxy that passed it on is the last party whose word is known.
            return str(nearest)
        if not _trusted(address, trusted):
            return str(address)
        nearest = address
    # Every hop is a trusted proxy: the request started at the leftmost one.
    return str(nearest)
