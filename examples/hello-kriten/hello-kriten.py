"""Kriten's hello-world task: echoes its input and its runner's secrets as json_data."""

import json
import os
import sys


def main() -> None:
    raw = os.environ.get("EXTRA_VARS", "")
    try:
        extra_vars = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        extra_vars = raw
    secrets = {}
    secret_dir = os.environ.get("KRITEN_SECRETS_DIR", "/etc/secret")
    if os.path.isdir(secret_dir):
        for name in sorted(os.listdir(secret_dir)):
            path = os.path.join(secret_dir, name)
            if os.path.isfile(path) and not name.startswith("."):
                with open(path, encoding="utf-8") as handle:
                    secrets[name] = handle.read()
    print("Hello from Kriten!")
    print("^JSON")
    print(json.dumps({"extra_vars": extra_vars, "secrets": secrets}))
    print("^JSON")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
