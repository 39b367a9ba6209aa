"""What a request costs before its signature is known to be good.

The Infrahub fallback parses and re-renders the body; it must run only for bodies
Infrahub could send (a small, shallow JSON object with a well-formed v1 digest), never
for whatever an anonymous client posts. No timing: the tests count the parses and
renderings the signature check does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kriten_common.webhook_signing import sign_standard
from kriten_ingress import signatures
from kriten_ingress.json_depth import nesting_exceeds
from kriten_ingress.signatures import (
    INFRAHUB_FALLBACK_MAX_BYTES,
    INFRAHUB_FALLBACK_MAX_DEPTH,
    VerificationFailed,
    verify,
)

SECRET = "infrahub-test-secret"
TS = 1740656629
# A well-formed v1 entry (32 bytes) that signs nothing.
RANDOM_V1 = "v1,ARw42xaAApl/nxRo+iPGYwSaMQaOwMo2eyH5JBRA+bQ="


class CountingJson:
    """Stands in for the `json` module inside `signatures`, counting what it is asked."""

    def __init__(self) -> None:
        self.loads_calls = 0
        self.dumps_calls = 0

    def loads(self, *args: Any, **kwargs: Any) -> Any:
        self.loads_calls += 1
        return json.loads(*args, **kwargs)

    def dumps(self, *args: Any, **kwargs: Any) -> str:
        self.dumps_calls += 1
        return json.dumps(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CountingJson:
    counting = CountingJson()
    monkeypatch.setattr(signatures, "json", counting)
    return counting


def _headers(signature: str) -> dict[str, str]:
    return {"webhook-id": "msg_1", "webhook-timestamp": str(TS), "webhook-signature": signature}


def _reason(body: bytes, signature: str = RANDOM_V1) -> str:
    with pytest.raises(VerificationFailed) as failure:
        verify(
            configured_scheme="auto",
            headers=_headers(signature),
            body=body,
            secrets=[(SECRET, "current")],
            now=TS,
        )
    return failure.value.reason


def _spaced_signed_compact_sent(document: dict[str, Any]) -> tuple[bytes, str]:
    """Infrahub 1.7.0: signs spaced JSON, sends compact; only the fallback accepts it."""
    signed = json.dumps(document).encode()
    sent = json.dumps(document, separators=(",", ":")).encode()
    return sent, sign_standard(SECRET, "msg_1", TS, signed)


def _nested(depth: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"id": "event-1", "data": value}


@pytest.mark.parametrize(
    "body",
    [
        # 1 MiB of an object of deeply nested arrays: what a 1.5 KB gzip inflates to.
        b'{"a":' + b"[" * 900 + b"]" * 900 + b"," + b'"b":[' + b"[[[[[]]]]]," * 100_000 + b"1]}",
        # Small, but deeper than any Infrahub event.
        json.dumps(_nested(INFRAHUB_FALLBACK_MAX_DEPTH + 1)).encode(),
        # Just over the size bound.
        b'{"a":"' + b"x" * INFRAHUB_FALLBACK_MAX_BYTES + b'"}',
    ],
    ids=["large-and-deep", "too-deep", "too-large"],
)
def test_no_parse_before_a_bad_signature_is_refused(counted: CountingJson, body: bytes) -> None:
    assert _reason(body) == "bad signature"
    assert (counted.loads_calls, counted.dumps_calls) == (0, 0)


@pytest.mark.parametrize("signature", ["v1,AAAA", "v1,!!!", "v1," + "A" * 64, "v1,ü"])
def test_no_parse_without_a_well_formed_digest(counted: CountingJson, signature: str) -> None:
    body = json.dumps({"id": "event-1", "data": {"name": "sw-1"}}).encode()
    assert _reason(body, signature) == "bad signature"
    assert (counted.loads_calls, counted.dumps_calls) == (0, 0)


def test_a_raw_match_needs_no_rendering(counted: CountingJson) -> None:
    body = json.dumps({"id": "event-1"}, separators=(",", ":")).encode()
    verified = verify(
        configured_scheme="auto",
        headers=_headers(sign_standard(SECRET, "msg_1", TS, body)),
        body=body,
        secrets=[(SECRET, "current")],
        now=TS,
    )
    assert verified.idempotency_key == "event-1"
    # One parse, after authentication, for the event id; nothing rendered.
    assert (counted.loads_calls, counted.dumps_calls) == (1, 0)


def test_the_fallback_still_accepts_infrahub_up_to_its_bounds() -> None:
    sent, signature = _spaced_signed_compact_sent(_nested(INFRAHUB_FALLBACK_MAX_DEPTH))
    verified = verify(
        configured_scheme="infrahub",
        headers=_headers(signature),
        body=sent,
        secrets=[(SECRET, "current")],
        now=TS,
    )
    assert verified.idempotency_key == "event-1"
    sent, signature = _spaced_signed_compact_sent(_nested(INFRAHUB_FALLBACK_MAX_DEPTH + 1))
    assert _reason(sent, signature) == "bad signature"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"[]", 1),
        (b'{"a":[1,{"b":[]}]}', 4),
        (b"[[],[[]],[]]", 3),
        (b'["[[[[", "]]]]"]', 1),
        (b'["\\"[[[["]', 1),
        (b'["\\\\", [[]]]', 3),
        (b'["\\\\\\"[[", [[]]]', 3),
        (b'{"k\\u005b": "\\\\"}', 1),
        (b"[" * 70, 70),
    ],
)
def test_nesting_depth_from_the_bytes(text: bytes, depth: int) -> None:
    assert not nesting_exceeds(text, depth)
    if depth:
        assert nesting_exceeds(text, depth - 1)


def test_nesting_depth_matches_the_parser_on_real_json() -> None:
    document = {"a": [{"b": ["[", {"c": "]]]"}]}, "\\"], "d": {"e": [[["}"]]]}}
    text = json.dumps(document).encode()
    assert not nesting_exceeds(text, 5)
    assert nesting_exceeds(text, 4)
