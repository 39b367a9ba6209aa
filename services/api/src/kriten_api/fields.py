"""Checks of request body fields that several resources share."""

from __future__ import annotations

import re
from typing import Any

from kriten_common import errors

DNS_1123 = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
MASK = "************"


def check_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not DNS_1123.match(value):
        raise errors.InvalidInput(
            f"{field} must be a DNS-1123 name: lowercase alphanumerics, '-' and '.',"
            " at most 63 characters"
        )
    return value


def same_name(body: dict[str, Any], name: str) -> None:
    """Updates use the URL's name; a different name in the body is refused, not obeyed."""
    if "name" in body and body["name"] != name:
        raise errors.InvalidInput("name cannot be changed (it is taken from the URL)")


def optional_strings(value: Any, message: str) -> Any:
    """`value` when it is null or a list of strings; else a 400 with `message`."""
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(item, str) for item in value)
    ):
        raise errors.InvalidInput(message)
    return value
