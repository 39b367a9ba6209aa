"""What hostile input costs, as ratios against an honest request measured in the same run.

- Signature check: `verify` on an unsigned 1 MiB body of nested arrays (what a 1.5 KB
  gzip inflates to), and on an unsigned 64 KiB JSON object (the largest body the
  Infrahub fallback still re-renders), each against a bad-signature 1 KiB NetBox body.
- Filters: the amplifying chain of `to_string([@,@])` (refused at save since; this is
  the budget that still protects the ingress from one stored before) against an
  ordinary filter, on the same 100-byte body.

CPU time per call, median of repeated runs, in this process: no services needed.
Usage: `python -m benchmarks.hostile_requests` (also part of `make bench`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import jmespath

from kriten_common.filter_expressions import OverBudget, search
from kriten_common.webhook_signing import sign_standard
from kriten_ingress.signatures import VerificationFailed, verify

SECRET = "benchmark-secret-0123456789"
NOW = 1_740_656_629
RANDOM_V1 = "v1,ARw42xaAApl/nxRo+iPGYwSaMQaOwMo2eyH5JBRA+bQ="
STANDARD_HEADERS = {
    "webhook-id": "msg_1",
    "webhook-timestamp": str(NOW),
    "webhook-signature": RANDOM_V1,
}
NETBOX_HEADERS = {"X-Hook-Signature": "0" * 128}
SMALL_BODY = b'{"event": "updated", "data": {"id": 7, "name": "sw-1"}}'


def cpu_seconds(call: Callable[[], object], repeat: int) -> float:
    """The median CPU time of one call."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        call()
        times.append(time.process_time() - started)
    return statistics.median(times)


def refused(headers: dict[str, str], body: bytes) -> Callable[[], object]:
    def call() -> object:
        try:
            return verify(
                configured_scheme="auto",
                headers=headers,
                body=body,
                secrets=[(SECRET, "current")],
                now=NOW,
            )
        except VerificationFailed as failure:
            return failure.reason

    return call


def filtered(expression: str, document: object) -> Callable[[], object]:
    compiled = jmespath.compile(expression)

    def call() -> object:
        try:
            return search(compiled, document)
        except OverBudget:
            return None

    return call


def main() -> None:
    honest_body = json.dumps({"data": "x" * 1000}).encode()
    nested = b"[" * (512 * 1024) + b"]" * (512 * 1024)
    wide = json.dumps({"data": [f"sw-{i:06d}" for i in range(6500)]}).encode()[: 64 * 1024 - 2]
    wide = wide[: wide.rindex(b",")] + b"]}"
    # A correctly signed body checks that the fallback still works on what it re-renders.
    signed = sign_standard(SECRET, "msg_1", NOW, wide)
    assert refused({**STANDARD_HEADERS, "webhook-signature": signed}, wide)() is not None

    baseline = cpu_seconds(refused(NETBOX_HEADERS, honest_body), 200)
    unsigned = STANDARD_HEADERS
    rows = [
        ("bad signature, 1 KiB NetBox body (baseline)", baseline),
        ("bad signature, 1 MiB nested arrays", cpu_seconds(refused(unsigned, nested), 20)),
        ("bad signature, 64 KiB object (fallback)", cpu_seconds(refused(unsigned, wide), 20)),
    ]
    document = json.loads(SMALL_BODY)
    attack = "to_string([@,@])" + " | to_string([@,@])" * 15
    filter_baseline = cpu_seconds(filtered("event == 'updated'", document), 500)
    filter_rows = [
        ("filter `event == 'updated'` (baseline)", filter_baseline),
        ("filter 16 x to_string([@,@]) (over budget)", cpu_seconds(filtered(attack, document), 20)),
    ]
    print("\nHostile requests: CPU per request, ratio to the honest baseline")
    print(f"{'case':<48} {'ms':>9} {'ratio':>8}")
    for name, seconds in rows:
        print(f"{name:<48} {seconds * 1000:>9.3f} {seconds / baseline:>7.1f}x")
    for name, seconds in filter_rows:
        print(f"{name:<48} {seconds * 1000:>9.3f} {seconds / filter_baseline:>7.1f}x")


if __name__ == "__main__":
    main()
