"""`kriten-init-secrets [DIRECTORY]`: the production secrets, generated once.

What lets `docker compose up` start on a fresh clone: compose's `init` service runs it
before the services start, on a volume the services then mount read-only and read
through `KRITEN_<NAME>_FILE` (see `kriten_common.settings.SecretFiles`). Each secret is a
file named after its setting, mode 0600, written only when it is not there yet: a second
run, or a secret put there by hand, is never overwritten. The values are random, so
production mode's refusal of the development defaults still holds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.fernet import Fernet

DEFAULT_DIRECTORY = Path("/var/lib/kriten/secrets")

# File name → how a fresh value is made. The file names are the settings' names, so
# `KRITEN_JWT_KEY_FILE=<directory>/jwt_key`, and so on.
GENERATORS: dict[str, Callable[[], str]] = {
    "jwt_key": lambda: secrets.token_urlsafe(48),
    "token_key": lambda: secrets.token_urlsafe(48),
    "encryption_keys": lambda: Fernet.generate_key().decode("ascii"),
    "root_password": lambda: secrets.token_urlsafe(18),
}


def write_once(path: Path, value: str) -> bool:
    """Writes `value` to `path` (mode 0600) unless the file exists; whether it wrote.

    The value goes to a temporary file first, then is linked into place, which fails if
    the name was taken meanwhile: never a half-written secret, never an overwritten one.
    """
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(value + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return True


def init_secrets(directory: Path) -> dict[str, bool]:
    """Every secret in `directory`, generated where missing: {file name: generated now}."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = {name: write_once(directory / name, make()) for name, make in GENERATORS.items()}
    if any(written.values()):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kriten-init-secrets",
        description="Generates Kriten's secrets into a directory, once; never overwrites.",
    )
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIRECTORY)
    arguments = parser.parse_args(argv)
    os.umask(0o077)
    try:
        written = init_secrets(arguments.directory)
    except OSError as problem:
        print(f"kriten-init-secrets: {arguments.directory}: {problem}", file=sys.stderr)
        sys.exit(1)
    for name, generated in written.items():
        state = "generated" if generated else "kept"
        print(f"kriten-init-secrets: {state} {arguments.directory / name}")


if __name__ == "__main__":
    main()
