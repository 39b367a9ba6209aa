"""The run endpoint against bodies and replays built to hurt it, over real HTTP with real
PostgreSQL and RabbitMQ: compression bombs and deep nesting before authentication,
filters that amplify, JSON Python cannot read, GitHub replays, and what `/metrics` shows.

No timing: cost is asserted by counting parses, renderings and evaluation steps.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from typing import Any

import pytest

from kriten_common.webhook_signing import sign_github, sign_netbox, sign_standard
from kriten_ingress import signatures
from kriten_ingress.filters import FILTER_OVER_BUDGET
from kriten_ingress.metrics import webhook_label
from kriten_ingress.run_endpoint import FILTER_REFUSED
from tests.ingress import test_run_endpoint
from tests.ingress.test_run_endpoint import RUN, SECRET, World, deliveries, requests
from tests.ingress.test_unauthenticated_cost import CountingJson

pytestmark = pytest.mark.integration
world = test_run_endpoint.world  # the fixture: an ingress on a fresh database and broker

# A well-formed v1 entry (32 bytes) that signs nothing.
RANDOM_V1 = "v1,ARw42xaAApl/nxRo+iPGYwSaMQaOwMo2eyH5JBRA+bQ="
# The reported filter: 262 characters, 1.3 s and 270 MB per delivery on a 100-byte body.
AMPLIFIER = " | ".join(["to_string([@,@])"] * 16)


def _standard_headers(body: bytes, *, signature: str | None = None) -> dict[str, str]:
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature or sign_standard(SECRET, message_id, timestamp, body),
    }


def _netbox_headers(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hook-Signature": sign_netbox(SECRET, body)}


# --- before authentication ---


async def test_gzip_of_nested_arrays_with_a_random_signature_is_refused_unparsed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = await world.webhook()
    client = await world.ingress()
    # 1 MiB of nested arrays in an object, about 1.5 KB on the wire.
    inflated = b'{"a":[' + b"[[[[[[[[[[]]]]]]]]]]," * 49_000 + b"1]}"
    assert len(inflated) <= 1024 * 1024
    compressed = gzip.compress(inflated)
    assert len(compressed) < 4096
    counting = CountingJson()
    monkeypatch.setattr(signatures, "json", counting)
    headers = {**_standard_headers(inflated, signature=RANDOM_V1), "Content-Encoding": "gzip"}
    response = await client.post(RUN + hook, data=compressed, headers=headers)
    assert response.status == 401
    # Refused on one HMAC of the raw bytes: nothing parsed, nothing re-serialised.
    assert (counting.loads_calls, counting.dumps_calls) == (0, 0)
    # The ingress still answers.
    assert (await client.get("/healthz")).status == 200
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 1)
    (logged,) = deliveries(events)
    assert (logged.reason, logged.size) == ("bad signature", len(inflated))


async def test_a_compression_bomb_is_refused_at_the_decompressed_cap(world: World) -> None:
    hook = await world.webhook(max_body_bytes=64 * 1024)
    client = await world.ingress()
    bomb = gzip.compress(b" " * (16 * 1024 * 1024))
    assert len(bomb) < 64 * 1024  # the declared length alone would pass the cap
    headers = {**_netbox_headers(b"{}"), "Content-Encoding": "gzip"}
    response = await client.post(RUN + hook, data=bomb, headers=headers)
    assert response.status == 413
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 1)
    assert [d.reason for d in deliveries(events)] == ["too large"]


# --- filters ---


async def test_an_amplifying_filter_already_stored_is_refused_within_its_budget(
    world: World,
) -> None:
    # Stored directly: the api refuses this expression now, older rows may still have it.
    hook = await world.webhook(filter=AMPLIFIER)
    client = await world.ingress()
    body = json.dumps({"event": "updated", "data": {"id": 7, "name": "sw-1"}}).encode()
    response = await client.post(RUN + hook, data=body, headers=_netbox_headers(body))
    assert response.status == 400
    assert await response.json() == {"error": FILTER_REFUSED}
    assert (await client.get("/healthz")).status == 200
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 1)
    assert not requests(events)
    (logged,) = deliveries(events)
    assert (logged.outcome, logged.reason) == ("rejected", FILTER_OVER_BUDGET)


# --- JSON Python cannot read ---

DEEP_VALID = b'{"device": ' + b"[" * 5000 + b"]" * 5000 + b"}"
DEEP_BROKEN = b'{"device": ' + b"[" * 100_000
HUGE_INTEGER = b'{"device": ' + b"7" * 5000 + b"}"


@pytest.mark.parametrize("sign", ["netbox", "standard"])
async def test_unreadable_json_is_never_a_500(world: World, sign: str) -> None:
    hooks = {
        "plain": await world.webhook(),
        "filtered": await world.webhook(filter="device != 'x'"),
        "schema": await world.webhook(task="typed"),
    }
    client = await world.ingress()
    answers: dict[tuple[str, str], int] = {}
    for kind, hook in hooks.items():
        for name, body in [("deep", DEEP_VALID), ("broken", DEEP_BROKEN), ("int", HUGE_INTEGER)]:
            headers = _netbox_headers(body) if sign == "netbox" else _standard_headers(body)
            response = await client.post(RUN + hook, data=body, headers=headers)
            answers[kind, name] = response.status
            assert response.status in (202, 400), (kind, name, await response.text())
    # Without a schema the body is the job's input exactly as sent; with one, a body the
    # schema cannot even read is the sender's error.
    assert {answers["plain", name] for name in ("deep", "broken", "int")} == {202}
    assert {answers["schema", name] for name in ("deep", "broken", "int")} == {400}
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 9)
    assert len(deliveries(events)) == 9
    assert sorted(e.input.encode() for e in requests(events)) == sorted(
        [DEEP_VALID, DEEP_BROKEN, HUGE_INTEGER]
    )


# --- GitHub ---


async def test_github_replay_under_a_new_delivery_id_is_a_duplicate(world: World) -> None:
    hook = await world.webhook(scheme="github")
    client = await world.ingress()
    body = json.dumps({"ref": "refs/heads/main", "after": "4f2a9c1"}).encode()
    signed = {"Content-Type": "application/json", "X-Hub-Signature-256": sign_github(SECRET, body)}
    answers: list[dict[str, Any]] = []
    for delivery in (str(uuid.uuid4()), str(uuid.uuid4())):
        response = await client.post(
            RUN + hook, data=body, headers={**signed, "X-GitHub-Delivery": delivery}
        )
        assert response.status == 202
        answers.append(await response.json())
    first, replay = answers
    assert (first["status"], replay["status"]) == ("accepted", "duplicate")
    assert first["id"] == replay["id"]
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    assert len(requests(events)) == 1


# --- metrics ---


async def test_metrics_never_name_a_webhook(world: World) -> None:
    hook = await world.webhook(scheme="netbox")
    client = await world.ingress()
    body = json.dumps({"event": "updated"}).encode()
    assert (await client.post(RUN + hook, data=body, headers=_netbox_headers(body))).status == 202
    text = await (await client.get("/metrics")).text()
    assert hook not in text
    assert f'webhook="{webhook_label(hook)}"' in text
    assert len(webhook_label(hook)) == 12
