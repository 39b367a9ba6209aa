"""Bodies and headers as real senders send them, re-signed with a test's secret.

- NetBox 4.7: a device update, the default body (spaced JSON as `json.dumps` writes it)
  with `snapshots` and the `request` object; the older shape carried `username` and
  `request_id` at the top level instead.
- Infrahub 1.11: the compact event of a node update, with `data.changelog`; the event
  `id` is stable across retries while `webhook-id` and the timestamp are new on each.
  Current Infrahub signs its JSON with non-ASCII escaped but sends raw UTF-8.

Other test modules import the builders; the tests here pin their shapes.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from kriten_common.webhook_signing import sign_netbox, sign_standard
from kriten_ingress.signatures import verify


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def netbox_device_update(
    *, name: str = "sw-access-01", status: str = "active", legacy: bool = False
) -> dict[str, Any]:
    """What NetBox sends for `dcim.device` updated (`legacy`: the pre-4.x top level)."""
    request_id = str(uuid.uuid4())
    device = {
        "id": 42,
        "url": "/api/dcim/devices/42/",
        "display": name,
        "name": name,
        "device_type": {"id": 3, "manufacturer": {"id": 1, "name": "Arista"}, "model": "7050SX"},
        "role": {"id": 2, "name": "Access switch", "slug": "access-switch"},
        "tenant": None,
        "platform": {"id": 1, "name": "EOS", "slug": "eos"},
        "serial": "JPE12345678",
        "site": {"id": 4, "name": "Zürich 1", "slug": "zurich-1"},
        "status": {"value": status, "label": status.capitalize()},
        "primary_ip4": {"id": 9, "address": "192.0.2.10/24", "family": {"value": 4}},
        "custom_fields": {},
        "tags": [{"id": 1, "name": "kriten", "slug": "kriten"}],
        "created": "2026-03-01T09:00:00.000000Z",
        "last_updated": iso_now(),
    }
    before = {"name": name, "status": "planned", "serial": "JPE12345678", "tags": ["kriten"]}
    after = {"name": name, "status": status, "serial": "JPE12345678", "tags": ["kriten"]}
    body: dict[str, Any] = {
        "event": "updated",
        "timestamp": iso_now(),
        "object_type": "dcim.device",
    }
    if legacy:
        body.update(username="admin", request_id=request_id)
    body.update(
        data=device,
        snapshots={"prechange": before, "postchange": after},
    )
    if not legacy:
        body["request"] = {
            "id": request_id,
            "method": "PATCH",
            "path": "/api/dcim/devices/42/",
            "user": "admin",
        }
    return body


def netbox_wire(body: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    # NetBox serialises with json.dumps' defaults: spaces after separators, ASCII escapes.
    raw = json.dumps(body).encode()
    return raw, {"Content-Type": "application/json", "X-Hook-Signature": sign_netbox(secret, raw)}


def infrahub_node_update(
    *, event_id: str | None = None, description: str = "Zürich core"
) -> dict[str, Any]:
    """Infrahub 1.11's body for `infrahub.node.updated` (a standard webhook)."""
    node_id = "18a1b2c3-0000-4000-8000-000000000042"
    return {
        "data": {
            "kind": "DcimDevice",
            "node_id": node_id,
            "action": "updated",
            "changelog": {
                "node_id": node_id,
                "node_kind": "DcimDevice",
                "display_label": "sw-core-01",
                "attributes": {
                    "description": {
                        "name": "description",
                        "kind": "Text",
                        "value": description,
                        "value_previous": "core",
                        "value_update_status": "updated",
                        "properties": {},
                    }
                },
                "relationships": {},
            },
            "fields": ["description"],
        },
        "id": event_id or str(uuid.uuid4()),
        "branch": "main",
        "account_id": "18a1b2c3-0000-4000-8000-00000000acc1",
        "occured_at": iso_now(),
        "event": "infrahub.node.updated",
    }


def infrahub_wire(
    body: dict[str, Any], secret: str, *, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Sent as raw UTF-8 compact JSON, signed over the ASCII-escaped rendering (current
    Infrahub), with a new webhook-id and timestamp on every send."""
    signed = json.dumps(body, separators=(",", ":")).encode()
    sent = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if at is None else at
    return sent, {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secret, message_id, timestamp, signed),
    }


SECRET = "a-test-secret-of-some-length"


def test_netbox_47_body_is_spaced_with_snapshots_and_verifies() -> None:
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    assert b'"event": "updated"' in raw
    parsed = json.loads(raw)
    assert parsed["snapshots"]["postchange"]["status"] == "active"
    assert "request" in parsed
    assert "username" not in parsed
    verified = verify(
        configured_scheme="auto",
        headers=headers,
        body=raw,
        secrets=[(SECRET, "current")],
        now=time.time(),
    )
    assert verified.scheme == "netbox"


def test_legacy_netbox_body_carries_username_and_request_id() -> None:
    parsed = json.loads(netbox_wire(netbox_device_update(legacy=True), SECRET)[0])
    assert parsed["username"] == "admin"
    assert "request_id" in parsed
    assert "request" not in parsed


def test_infrahub_body_is_compact_utf8_signed_escaped_and_verifies() -> None:
    body = infrahub_node_update(event_id="ev-1")
    raw, headers = infrahub_wire(body, SECRET)
    assert "Zürich".encode() in raw
    assert b", " not in raw
    assert json.loads(raw)["data"]["changelog"]["attributes"]["description"]["value"] == (
        "Zürich core"
    )
    verified = verify(
        configured_scheme="infrahub",
        headers=headers,
        body=raw,
        secrets=[(SECRET, "current")],
        now=time.time(),
    )
    assert verified.idempotency_key == "ev-1"
