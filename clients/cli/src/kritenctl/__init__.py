"""kritenctl: the command-line client of Kriten's REST API (HTTP only; see docs/cli.md)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kritenctl")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0.0.0"
