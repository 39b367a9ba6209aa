"""The `kritenctl` command tree, its global options, and the one place errors are shown."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from kritenctl import __version__, jobs, session, webhook_actions
from kritenctl.config import DEFAULT_PROFILE
from kritenctl.crud import resource_app
from kritenctl.errors import INTERRUPTED, CliError
from kritenctl.resources import RESOURCES
from kritenctl.state import State


class KritenctlGroup(TyperGroup):
    """Every command runs inside this group's `invoke`: a `CliError` becomes one line on
    standard error and its exit code, never a traceback."""

    # `ctx: Any`: typer's Context class lives in its private, vendored click.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as problem:
            typer.echo(f"kritenctl: {problem.message}", err=True)
            raise typer.Exit(problem.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None


app = typer.Typer(
    cls=KritenctlGroup,
    name="kritenctl",
    help="The command-line client of Kriten's REST API. Start with `kritenctl login`.",
    no_args_is_help=True,
    # A traceback's locals could hold a token: never print them.
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"kritenctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            envvar="KRITENCTL_PROFILE",
            help="The profile (api URL and token) to use",
        ),
    ] = DEFAULT_PROFILE,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit"
        ),
    ] = False,
) -> None:
    """Global options; `KRITENCTL_URL` and `KRITENCTL_TOKEN` override the profile's."""
    ctx.obj = State(profile=profile)


app.command("login")(session.login)
app.command("logout")(session.logout)
app.command("profiles")(session.profiles)
app.command("run")(jobs.run_task)
app.add_typer(jobs.app, name="jobs")
for _resource in RESOURCES:
    _group = resource_app(_resource)
    if _resource.command == "webhooks":
        webhook_actions.add_commands(_group)
    app.add_typer(_group, name=_resource.command)
