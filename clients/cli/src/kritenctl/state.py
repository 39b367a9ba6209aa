"""What the global options decide for every command: the profile, hence whom to call."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

import typer

from kritenctl import config
from kritenctl.client import Client
from kritenctl.output import Format


@dataclass(frozen=True)
class State:
    profile: str

    def client(self) -> Client:
        url, token = config.resolve(
            self.profile,
            url=os.environ.get("KRITENCTL_URL") or None,
            token=os.environ.get("KRITENCTL_TOKEN") or None,
        )
        return Client(url, token)


def state_of(ctx: typer.Context) -> State:
    found = ctx.find_object(State)
    # The root callback always sets it; a command run without it is a programming error.
    assert found is not None, "kritenctl's root callback did not run"
    return found


OutputOption = Annotated[
    Format,
    typer.Option(
        "--output", "-o", help="table for people; json or yaml (the whole objects) for scripts"
    ),
]
