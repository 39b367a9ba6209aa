"""Login rate limiting: per (provider, username) and per client address, and the rule
that decides the client address behind trusted proxies.

The limiter and the address rule are tested directly (a fake clock, no waiting); the
HTTP tests drive `POST /login` on the real app with local users.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kriten_api import passwords
from kriten_api.login_limits import RATE_LIMITED, LoginLimiter, address_key
from kriten_api.settings import ApiSettings
from kriten_common import errors
from kriten_common.client_address import (
    client_address,
    forwarded_hops,
    parse_address,
    parse_networks,
)
from tests.api.conftest import ApiClient, BuildApi

MakeApi = Callable[..., Awaitable[ApiClient]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, **overrides: Any) -> LoginLimiter:
    values: dict[str, Any] = {
        "per_username": 5,
        "per_address": 20,
        "window_seconds": 300.0,
        "max_entries": 1000,
    }
    return LoginLimiter(**{**values, **overrides}, clock=clock)


def fail(limits: LoginLimiter, username: str, address: str = "192.0.2.1", times: int = 1) -> None:
    for _ in range(times):
        limits.begin("local", username, address)  # admitted, then never succeeds


# --- the limiter ----------------------------------------------------------------------


def test_the_sixth_failure_is_refused_until_the_window_moves_on() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    for _ in range(5):
        fail(limits, "alice")
        clock.now += 10
    with pytest.raises(errors.RateLimited) as refused:
        limits.begin("local", "alice", "192.0.2.1")
    # The oldest failure (at 1000) leaves the window at 1300; it is now 1050.
    assert refused.value.retry_after == 250
    clock.now = 1300.0
    limits.begin("local", "alice", "192.0.2.1").succeeded()


def test_usernames_share_a_budget_across_case_but_not_across_providers() -> None:
    limits = limiter(FakeClock())
    fail(limits, "Alice", times=5)
    with pytest.raises(errors.RateLimited):
        limits.begin("local", "alice", "192.0.2.9")
    limits.begin("active_directory", "alice", "192.0.2.9")


def test_success_resets_the_username_and_returns_its_address_slot() -> None:
    clock = FakeClock()
    limits = limiter(clock, per_address=6)
    fail(limits, "alice", times=4)
    limits.begin("local", "alice", "192.0.2.1").succeeded()
    assert limits.usernames.count("local\0alice", clock.now) == 0
    # Four failures stay on the address; the success is not one of them.
    assert limits.addresses.count("192.0.2.1", clock.now) == 4
    fail(limits, "alice", times=2)
    with pytest.raises(errors.RateLimited):
        limits.begin("local", "bob", "192.0.2.1")


def test_an_abandoned_attempt_is_not_a_failure() -> None:
    limits = limiter(FakeClock())
    for _ in range(10):
        limits.begin("local", "alice", "192.0.2.1").abandoned()
    assert len(limits.usernames) == 0
    assert len(limits.addresses) == 0


def test_admitted_attempts_count_before_they_finish() -> None:
    # A burst of concurrent attempts: none has failed yet when the sixth arrives.
    limits = limiter(FakeClock())
    pending = [limits.begin("local", "alice", "192.0.2.1") for _ in range(5)]
    with pytest.raises(errors.RateLimited):
        limits.begin("local", "alice", "192.0.2.1")
    assert len(pending) == 5


def test_memory_is_bounded_and_expired_entries_are_evicted() -> None:
    clock = FakeClock()
    limits = limiter(clock, max_entries=100, per_address=10**9)
    for number in range(1000):
        fail(limits, f"user-{number}")
    assert len(limits.usernames) == 100
    clock.now += 301
    fail(limits, "late")
    assert len(limits.usernames) == 1


def test_ipv6_clients_are_counted_per_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    limits = limiter(FakeClock(), per_address=3, per_username=10)
    for number in range(3):
        fail(limits, f"u{number}", address=f"2001:db8::{number + 1}")
    with pytest.raises(errors.RateLimited):
        limits.begin("local", "other", "2001:db8::ffff")


# --- the client address rule ----------------------------------------------------------

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # An untrusted peer's X-Forwarded-For is the client's own claim: ignored.
        ("198.51.100.7", ["203.0.113.1"], "198.51.100.7"),
        # Behind one trusted proxy: the hop it appended.
        ("10.0.0.2", ["203.0.113.1"], "203.0.113.1"),
        # Hops the client wrote itself (left of the first untrusted one) are not believed.
        ("10.0.0.2", ["1.1.1.1", "203.0.113.1", "10.0.0.9"], "203.0.113.1"),
        ("127.0.0.1", ["203.0.113.1, 10.1.1.1", "10.2.2.2"], "203.0.113.1"),
        # Every hop trusted: the request began at the leftmost.
        ("10.0.0.2", ["10.0.0.3", "10.0.0.4"], "10.0.0.3"),
        ("10.0.0.2", [], "10.0.0.2"),
        # A trusted proxy that wrote no address: the proxy itself is the client.
        ("10.0.0.2", ["unknown"], "10.0.0.2"),
        # Ports and IPv4-mapped addresses normalise.
        ("10.0.0.2", ["203.0.113.1:4711"], "203.0.113.1"),
        ("10.0.0.2", ["[2001:db8::1]:4711"], "2001:db8::1"),
        ("::ffff:10.0.0.2", ["203.0.113.1"], "203.0.113.1"),
        (None, ["203.0.113.1"], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded_hops(forwarded), TRUSTED) == expected


def test_client_address_helpers() -> None:
    assert parse_address("not-an-ip") is None
    assert parse_address("::ffff:192.0.2.1") == ipaddress.IPv4Address("192.0.2.1")
    assert forwarded_hops(["a, b", " c ,"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="not an IP network"):
        parse_networks(["10.0.0.0/8", "nope"])


# --- over HTTP ------------------------------------------------------------------------


@pytest.fixture
def make_api(api_settings: ApiSettings, build_api: BuildApi) -> MakeApi:
    async def make(**overrides: Any) -> ApiClient:
        settings = ApiSettings(**{**dict(api_settings), **overrides})
        return await build_api(settings)

    return make


async def attempt(
    api: ApiClient, username: str, password: str, forwarded_for: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = await api.post(
        "/api/v1/login",
        json={"username": username, "password": password, "provider": "local"},
        headers=headers,
    )
    return response.status, await response.json(), dict(response.headers)


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_sixth_failure_is_429_before_any_password_work(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api()
    verified: list[str] = []
    real_verify = passwords.verify_password_async

    async def counting_verify(password_hash: str, password: str) -> bool:
        verified.append(password)
        return await real_verify(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password_async", counting_verify)
    for number in range(5):
        status, body, _ = await attempt(api, "root", f"wrong-{number}")
        assert (status, body) == (401, {"error": "invalid credentials."})
    status, body, headers = await attempt(api, "root", "root")  # even the right password
    assert status == 429
    assert body == {"error": RATE_LIMITED}
    assert 290 <= int(headers["Retry-After"]) <= 300
    assert len(verified) == 5  # the refused attempt cost no argon2 work


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_other_usernames_from_the_address_pass_until_the_address_limit(
    make_api: MakeApi,
) -> None:
    api = await make_api(login_failures_per_address=8)
    for _ in range(5):
        assert (await attempt(api, "root", "wrong"))[0] == 401
    assert (await attempt(api, "root", "wrong"))[0] == 429
    # Same address, another name: still answered, until the address has 8 failures.
    for number in range(3):
        assert (await attempt(api, f"someone-{number}", "wrong"))[0] == 401
    status, _, headers = await attempt(api, "someone-else", "wrong")
    assert status == 429
    assert int(headers["Retry-After"]) > 0


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_success_resets_the_username_count(make_api: MakeApi) -> None:
    api = await make_api()
    for _ in range(4):
        assert (await attempt(api, "root", "wrong"))[0] == 401
    assert (await attempt(api, "root", "root"))[0] == 200
    for _ in range(4):
        assert (await attempt(api, "root", "wrong"))[0] == 401
    assert (await attempt(api, "root", "root"))[0] == 200


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("trusted", [True, False])
async def test_x_forwarded_for_is_honoured_only_from_trusted_proxies(
    make_api: MakeApi, trusted: bool
) -> None:
    # The test client connects from 127.0.0.1: trusted as a proxy, or not.
    proxies = "127.0.0.1/32" if trusted else ""
    api = await make_api(
        login_failures_per_address=3, login_failures_per_username=100, trusted_proxies=proxies
    )
    for number in range(3):
        assert (await attempt(api, f"u{number}", "wrong", "203.0.113.1"))[0] == 401
    assert (await attempt(api, "u9", "wrong", "203.0.113.1"))[0] == 429
    # Another client behind the proxy has its own budget, only if the proxy is believed.
    status = (await attempt(api, "u9", "wrong", "203.0.113.2"))[0]
    assert status == (401 if trusted else 429)
    # A client-supplied hop left of the proxy's is never believed.
    status = (await attempt(api, "u9", "wrong", "203.0.113.2, 203.0.113.1"))[0]
    assert status == 429


def test_long_usernames_take_bounded_memory() -> None:
    limits = limiter(FakeClock())
    fail(limits, "x" * 1_000_000, times=5)
    assert all(len(key) <= 200 for key in limits.usernames._entries)
    with pytest.raises(errors.RateLimited):
        limits.begin("local", "X" * 1_000_000, "192.0.2.1")
