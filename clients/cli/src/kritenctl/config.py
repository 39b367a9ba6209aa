"""Profiles: which api to talk to and the token to show it, kept in the user's config dir.

The file is `$XDG_CONFIG_HOME/kritenctl/config.yaml` (platformdirs' user config dir:
`~/.config/kritenctl/` on Linux), or the file `KRITENCTL_CONFIG` names::

    profiles:
      default:
        url: http://127.0.0.1:8080
        username: root
        token: kri_…        # an API token's key: it is a credential
        token_id: 6f1c…     # so `logout` can delete it on the server

It holds credentials, so it is written mode 0600 in a directory of mode 0700, through a
new file renamed into place: never readable by others, not even for a moment, and never
half written. Which profile: `--profile`, else `KRITENCTL_PROFILE`, else `default`.
`KRITENCTL_URL` and `KRITENCTL_TOKEN` override the profile's (CI needs no file at all).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from kritenctl.errors import AUTH, USAGE, CliError

DEFAULT_PROFILE = "default"
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


@dataclass(frozen=True)
class Profile:
    url: str
    token: str
    username: str = ""
    token_id: str = ""


def config_path() -> Path:
    configured = os.environ.get("KRITENCTL_CONFIG")
    if configured:
        return Path(configured)
    return Path(platformdirs.user_config_dir("kritenctl", appauthor=False)) / "config.yaml"


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as problem:
        raise CliError(f"cannot read {path}: {problem.strerror}", USAGE) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise CliError(f"{path} is not valid YAML", USAGE) from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles", {}), dict):
        raise CliError(f"{path}: expected a mapping with `profiles`", USAGE)
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if path.parent.name == "kritenctl":
        # Ours alone: tighten it even when it existed before (mkdir's mode is not applied
        # then). A directory KRITENCTL_CONFIG points into is the user's to decide.
        path.parent.chmod(DIRECTORY_MODE)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    # O_EXCL with the mode: the file is 0600 from its first byte, whatever the umask.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def load_profile(name: str) -> Profile | None:
    entry = _read(config_path()).get("profiles", {}).get(name)
    if not isinstance(entry, dict):
        return None
    return Profile(
        url=str(entry.get("url", "")),
        token=str(entry.get("token", "")),
        username=str(entry.get("username", "")),
        token_id=str(entry.get("token_id", "")),
    )


def save_profile(name: str, profile: Profile) -> Path:
    path = config_path()
    data = _read(path)
    data.setdefault("profiles", {})[name] = asdict(profile)
    _write(path, data)
    return path


def remove_profile(name: str) -> bool:
    path = config_path()
    data = _read(path)
    if name not in data.get("profiles", {}):
        return False
    del data["profiles"][name]
    _write(path, data)
    return True


def profile_names() -> list[str]:
    return sorted(_read(config_path()).get("profiles", {}))


def resolve(
    profile_name: str, *, url: str | None = None, token: str | None = None
) -> tuple[str, str]:
    """The URL and token to use: explicit values (options, `KRITENCTL_URL`/`_TOKEN`)
    first, the profile's for what they leave out."""
    profile = load_profile(profile_name) if not (url and token) else None
    url = url or (profile.url if profile else "")
    token = token or (profile.token if profile else "")
    if not url or not token:
        raise CliError(
            f"not logged in (profile {profile_name!r}): run `kritenctl login`, or set"
            " KRITENCTL_URL and KRITENCTL_TOKEN",
            AUTH,
        )
    return url.rstrip("/"), token
