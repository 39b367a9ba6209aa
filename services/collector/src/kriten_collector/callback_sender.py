"""One HTTP call to a completion callback, and the guard on where it may connect.

Every address a callback's host resolves to is checked just before the connection is
made (`GuardedResolver`), not only when the task was saved: a name may resolve to a
private address later (DNS rebinding). An IP literal never reaches the resolver, so it is
checked here too. Redirects are not followed (the next hop would escape the check), and
the response body is not kept: only its status, how long the call took, and why it failed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from kriten_common.callbacks import address_allowed, literal_address
from kriten_common.client_address import IPNetwork, parse_address

# Read and dropped, so a connection can be reused without draining a huge answer.
MAX_RESPONSE_BYTES = 4096
# The longest error an attempt stores in the delivery log (and logs).
MAX_ERROR_CHARS = 500


class RefusedAddress(OSError):
    """The callback's host is (or resolves to) an address callbacks may not reach."""


class GuardedResolver(AbstractResolver):
    """The default resolver, refusing a host when any of its addresses is not allowed
    (all of them, not just the first: the connector may try each in turn)."""

    def __init__(self, allowed: tuple[IPNetwork, ...], inner: AbstractResolver | None = None):
        self._allowed = allowed
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = parse_address(result["host"])
            if address is None or not address_allowed(address, self._allowed):
                raise RefusedAddress(f"{host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def new_session(allowed: tuple[IPNetwork, ...]) -> aiohttp.ClientSession:
    """The session every callback goes through. No proxy from the environment: a proxy
    would resolve the name itself, past the guard."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allowed), limit=100)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


@dataclass(frozen=True)
class CallOutcome:
    status_code: int | None
    latency_ms: int
    error: str | None
    # Refused before any connection: retrying would be refused again.
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def call(
    session: aiohttp.ClientSession,
    *,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeout_seconds: float,
    allowed: tuple[IPNetwork, ...],
) -> CallOutcome:
    """POSTs `body` to `url`; never raises for what the receiver or the network does."""
    started = time.perf_counter()

    def outcome(status: int | None, error: str | None, *, refused: bool = False) -> CallOutcome:
        elapsed = round((time.perf_counter() - started) * 1000)
        return CallOutcome(status, elapsed, error, refused)

    literal = literal_address(urlsplit(url).hostname or "")
    if literal is not None and not address_allowed(literal, allowed):
        return outcome(None, "address not allowed (non-public)", refused=True)
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        ) as response:
            await response.content.read(MAX_RESPONSE_BYTES)
            return outcome(response.status, None if response.status < 300 else _reason(response))
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        return outcome(None, f"no answer within {timeout_seconds:g} s")
    except aiohttp.ClientConnectorError as problem:
        if isinstance(problem.os_error, RefusedAddress):
            return outcome(None, "address not allowed (non-public)", refused=True)
        return outcome(None, f"cannot connect: {problem.os_error.strerror or problem}")
    except aiohttp.ClientResponseError as problem:
        # Its text names the URL, whose query may hold the receiver's token (logged).
        return outcome(None, f"{type(problem).__name__}: {problem.message}"[:MAX_ERROR_CHARS])
    except aiohttp.InvalidURL:
        return outcome(None, "invalid URL")
    except (aiohttp.ClientError, OSError) as problem:
        return outcome(None, f"{type(problem).__name__}: {problem}"[:MAX_ERROR_CHARS])


def _reason(response: Any) -> str:
    # The reason phrase is the receiver's to choose: bounded, as every stored error.
    return f"HTTP {response.status} {response.reason or ''}".strip()[:MAX_ERROR_CHARS]
