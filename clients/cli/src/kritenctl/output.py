"""How answers are shown: a table of chosen columns for people (`-o table`, the default),
the whole object as JSON or YAML for scripts (`-o json`, `-o yaml`)."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

# Kept out of a job's table: the output has its own command (`jobs logs`) and can be
# long; the camel-case times repeat the snake-case ones (Kriten 0.4's names).
HIDDEN_IN_TABLES = frozenset({"stdout", "startTime", "completionTime"})
# Not a terminal (a pipe, a file): no wrapping at all, so each item stays on one line.
UNWRAPPED_WIDTH = 4096


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def _print(table: Table) -> None:
    # A console per call, not at import: it must write to the stdout of the moment (a
    # test runner swaps it).
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=UNWRAPPED_WIDTH)
    with console.capture() as captured:
        console.print(table)
    # Without the padding rich gives the last column, so lines end where their text does.
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value).rstrip("\n")


def emit_data(data: Any, fmt: Format) -> bool:
    """Writes `data` whole for `-o json`/`yaml`; False for `table`, which is the caller's."""
    if fmt is Format.json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return True
    if fmt is Format.yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
        return True
    return False


def show_list(items: list[dict[str, Any]], columns: Sequence[str], fmt: Format) -> None:
    if emit_data(items, fmt):
        return
    if not items:
        typer.echo("nothing found", err=True)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        # The first column names the item: whole, to copy into the next command.
        table.add_column(column.upper(), overflow="fold", no_wrap=index == 0)
    for item in items:
        table.add_row(*(cell(item.get(column)) for column in columns))
    _print(table)


def show_item(item: Any, fmt: Format) -> None:
    """One object, as field/value rows: every field, since a `get` is asked for all."""
    if emit_data(item, fmt):
        return
    if not isinstance(item, dict):
        typer.echo(cell(item))
        return
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in item.items():
        if key not in HIDDEN_IN_TABLES:
            table.add_row(key, cell(value))
    _print(table)


def show_message(answer: Any, fmt: Format) -> None:
    """An answer such as `{"msg": "runner deleted successfully", "id": "python"}`."""
    if emit_data(answer, fmt):
        return
    if isinstance(answer, dict) and "msg" in answer:
        suffix = f": {answer['id']}" if answer.get("id") else ""
        typer.echo(f"{answer['msg']}{suffix}")
        return
    show_item(answer, fmt)
