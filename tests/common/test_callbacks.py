"""Completion callbacks without I/O: what a task's `callbacks` may hold, which addresses
they may reach, and their signature, which the ingress's Standard Webhooks verifier (the
receiving side of the same scheme) must accept."""

from __future__ import annotations

import ipaddress

import pytest

from kriten_common import errors
from kriten_common.callbacks import (
    MAX_CALLBACKS,
    address_allowed,
    check_callbacks,
    new_secret,
    refused_literal,
    signed_headers,
    webhook_id,
)
from kriten_common.client_address import parse_networks
from kriten_ingress.signatures import VerificationFailed, verify
from tests.ingress.test_signatures import B3, S1_ID, S1_SECRET, S1_SIG, S1_TS


def test_the_signature_is_the_standard_webhooks_vector() -> None:
    headers = signed_headers(secrets_=[S1_SECRET], message_id=S1_ID, timestamp=S1_TS, body=B3)
    assert headers["webhook-signature"] == S1_SIG
    assert headers["webhook-id"] == S1_ID
    assert headers["webhook-timestamp"] == str(S1_TS)


def test_the_ingress_verifier_accepts_what_a_callback_signs() -> None:
    secret, body = new_secret(), b'{"type":"job.succeeded","id":"t-1"}'
    headers = signed_headers(
        secrets_=[secret], message_id="msg_1", timestamp=1_700_000_000, body=body
    )
    verified = verify(
        configured_scheme="standard",
        headers=headers,
        body=body,
        secrets=[(secret, "current")],
        now=1_700_000_000,
    )
    assert verified.scheme == "standard"
    with pytest.raises(VerificationFailed):
        verify(
            configured_scheme="standard",
            headers=headers,
            body=body + b" ",
            secrets=[(secret, "current")],
            now=1_700_000_000,
        )


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new, body = new_secret(), new_secret(), b"{}"
    headers = signed_headers(secrets_=[new, old], message_id="msg_2", timestamp=10, body=body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        verify(
            configured_scheme="standard",
            headers=headers,
            body=body,
            secrets=[(secret, "current")],
            now=10,
        )


def test_a_new_secret_is_a_whsec_key_of_32_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert secret != new_secret()


def test_the_webhook_id_is_stable_per_job_and_url() -> None:
    assert webhook_id("t-1", "https://a.example/") == webhook_id("t-1", "https://a.example/")
    assert webhook_id("t-1", "https://a.example/") != webhook_id("t-2", "https://a.example/")
    assert webhook_id("t-1", "https://a.example/") != webhook_id("t-1", "https://b.example/")


def test_callbacks_are_stored_with_their_events_defaulting_to_every_final_status() -> None:
    assert check_callbacks(
        [{"url": "https://a.example/hook"}, {"url": "http://b.example", "events": ["failed"]}]
    ) == [
        {"url": "https://a.example/hook", "events": ["succeeded", "failed", "cancelled"]},
        {"url": "http://b.example", "events": ["failed"]},
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://a.example", "callbacks must be a list"),
        ([{"url": "ftp://a.example/"}], "absolute http or https URL"),
        ([{"url": "/relative"}], "absolute http or https URL"),
        ([{"url": "https://user:pw@a.example/"}], "must not hold credentials"),
        ([{"url": "https://a.example/" + "a" * 3000}], "at most 2048"),
        ([{"url": "https://a.example/", "events": ["queued"]}], "events must be"),
        ([{"url": "https://a.example/", "events": []}], "events must be"),
        ([{"url": "https://a.example/", "secret": "x"}], "unknown field"),
        ([{"url": "https://a.example/"}, {"url": "https://a.example/"}], "given twice"),
        ([{"url": f"https://a.example/{n}"} for n in range(MAX_CALLBACKS + 1)], "at most 10"),
    ],
)
def test_bad_callbacks_are_refused_naming_the_problem(value: object, message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message):
        check_callbacks(value)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "224.0.0.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        # IPv4 addresses carried in IPv6 ones (NAT64, IPv4-compatible, 6to4).
        "64:ff9b::a9fe:a9fe",
        "::7f00:1",
        "2002:a01:203::1",
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not address_allowed(ip, ())
    allowed = parse_networks(
        [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "0.0.0.0/32",
            "224.0.0.0/4",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
            "100.64.0.0/10",
        ]
    )
    assert address_allowed(ip, allowed)


def test_public_addresses_are_allowed() -> None:
    assert address_allowed(ipaddress.ip_address("93.184.216.34"), ())
    assert address_allowed(ipaddress.ip_address("2606:2800:220:1::1"), ())
    assert address_allowed(ipaddress.ip_address("64:ff9b::5db8:d822"), ())


def test_at_save_time_only_literal_addresses_are_judged() -> None:
    assert refused_literal("http://127.0.0.1:8080/hook", ()) is not None
    assert refused_literal("http://[::1]/hook", ()) is not None
    assert refused_literal("http://127.0.0.1:8080/hook", parse_networks(["127.0.0.0/8"])) is None
    # A name is resolved when the call is made (and checked then).
    assert refused_literal("http://localhost/hook", ()) is None
    assert refused_literal("https://93.184.216.34/hook", ()) is None
