"""Regenerates the vendored schemas here from the `kubernetes-validate` wheel.

Usage: `pip download --no-deps -d /tmp/kv kubernetes-validate==1.37.0`, unzip the wheel,
then `python vendor.py <unzipped>/kubernetes_validate/kubernetes-json-schema/v1.32.0-local-strict`.
Each kind's schema is made self-contained: the definitions it reaches (transitively) are
copied under its own `$defs`, references are rewritten to point there, and descriptions are
dropped to keep the files small. Nothing else is changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KINDS = ("job-batch-v1", "secret-v1", "pod-v1")
_REF_PREFIX = "/api/_definitions.json#/$defs/"


def _rewrite(node: Any, found: set[str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            if key == "$ref" and isinstance(value, str):
                name = value.removeprefix(_REF_PREFIX).removeprefix("#/$defs/")
                found.add(name)
                out[key] = f"#/$defs/{name}"
            else:
                out[key] = _rewrite(value, found)
        return out
    if isinstance(node, list):
        return [_rewrite(item, found) for item in node]
    return node


def vendor(source: Path, target: Path) -> None:
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    for kind in KINDS:
        found: set[str] = set()
        root = _rewrite(json.loads((source / f"{kind}.json").read_text()), found)
        defs: dict[str, Any] = {}
        pending = set(found)
        while pending:
            name = pending.pop()
            more: set[str] = set()
            defs[name] = _rewrite(definitions[name], more)
            pending |= more - defs.keys()
        root["$defs"] = dict(sorted(defs.items()))
        (target / f"{kind}.json").write_text(json.dumps(root, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    vendor(Path(sys.argv[1]), Path(__file__).parent / "v1.32.0-local-strict")
