"""`list`, `get`, `create`, `update` and `delete` for each resource of `resources`.

The commands are made from each resource's description rather than written nine times;
a resource's field options (`--git-url`, `--runner`, …) become real options of its
`create` and `update`, with their own `--help`, by giving the command function a
signature that names them (typer reads options from the signature).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from kritenctl.errors import USAGE, CliError
from kritenctl.inputs import parse_assignments, read_object
from kritenctl.output import Format, show_item, show_list, show_message
from kritenctl.resources import FieldOption, Resource
from kritenctl.state import OutputOption, state_of

FileOption = Annotated[
    str | None,
    typer.Option(
        "--file",
        "-f",
        help="The fields as JSON or YAML: @path, a path, or - for standard input",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="FIELD=VALUE (VALUE as JSON when it parses); repeatable"),
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=0, help="At most this many")]
OffsetOption = Annotated[int | None, typer.Option("--offset", min=0, help="Skip this many first")]


def _option_parameter(option: FieldOption) -> inspect.Parameter:
    flag = option.flag
    if option.kind is bool:
        flag = f"{option.flag}/--no-{option.flag.removeprefix('--')}"
    # A type chosen at run time: typer reads it from the signature, mypy cannot check it.
    kind: Any = option.kind | None
    info = typer.Option(flag, help=option.help, show_default=False)
    annotation = Annotated[kind, info]
    return inspect.Parameter(
        option.parameter, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def _with_options(
    function: Callable[..., None], options: Sequence[inspect.Parameter]
) -> Callable[..., None]:
    """`function` under a signature that also names `options`, which it gets in its
    `**options`."""
    own = [
        p
        for p in inspect.signature(function, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    parameters = own + list(options)

    def command(**arguments: Any) -> None:
        function(**arguments)

    command.__name__ = function.__name__
    command.__doc__ = function.__doc__
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def _fields(resource: Resource, given: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for option in resource.fields:
        value = given.get(option.parameter)
        if value is not None and value != []:
            fields[option.field] = value
    return fields


def _body(
    resource: Resource, file: str | None, assignments: list[str] | None, given: dict[str, Any]
) -> dict[str, Any]:
    """The file's fields, then the field options, then `--set`: the later wins."""
    body = read_object(file) if file else {}
    body.update(_fields(resource, given))
    body.update(parse_assignments(assignments or []))
    return body


def _list(resource: Resource) -> Callable[..., None]:
    def list_items(
        ctx: typer.Context,
        limit: LimitOption = None,
        offset: OffsetOption = None,
        output: OutputOption = Format.table,
        **given: Any,
    ) -> None:
        route = resource.routes.list_all if given.pop("all", False) else resource.routes.list
        assert route is not None  # `--all` exists only where the route does
        query: dict[str, Any] = {"limit": limit, "offset": offset}
        query.update({f.field: given.get(f.parameter) for f in resource.filters})
        with state_of(ctx).client() as client:
            items = client.call(route, query=query)
        show_list(items, resource.columns, output)

    options = [_option_parameter(f) for f in resource.filters]
    if resource.routes.list_all is not None:
        options.append(
            inspect.Parameter(
                "all",
                inspect.Parameter.KEYWORD_ONLY,
                default=False,
                annotation=Annotated[bool, typer.Option("--all", help=resource.all_help)],
            )
        )
    command = _with_options(list_items, options)
    command.__doc__ = f"List {resource.command}."
    return command


def _key_argument(resource: Resource) -> Any:
    return Annotated[str, typer.Argument(metavar=resource.key.upper(), show_default=False)]


def _get(resource: Resource) -> Callable[..., None]:
    def get_item(ctx: typer.Context, key: str, output: OutputOption = Format.table) -> None:
        with state_of(ctx).client() as client:
            item = client.call(resource.routes.get, {resource.key: key})
        show_item(item, output)

    return _keyed(get_item, resource, f"Show one of the {resource.command}, every field.")


def _create(resource: Resource) -> Callable[..., None]:
    def create_item(
        ctx: typer.Context,
        file: FileOption = None,
        set_: SetOption = None,
        output: OutputOption = Format.table,
        **given: Any,
    ) -> None:
        body = _body(resource, file, set_, given)
        with state_of(ctx).client() as client:
            item = client.call(resource.routes.create, body=body)
        show_item(item, output)

    command = _with_options(create_item, [_option_parameter(f) for f in resource.fields])
    command.__doc__ = f"Create one of the {resource.command}, from a file and/or options."
    return command


def _update(resource: Resource) -> Callable[..., None]:
    def update_item(
        ctx: typer.Context,
        key: str,
        file: FileOption = None,
        set_: SetOption = None,
        output: OutputOption = Format.table,
        **given: Any,
    ) -> None:
        body = _body(resource, file, set_, given)
        if not body:
            raise CliError("nothing to change: give --file, field options or --set", USAGE)
        with state_of(ctx).client() as client:
            item = client.call(resource.routes.update, {resource.key: key}, body=body)
        show_item(item, output)

    fields = [_option_parameter(f) for f in resource.fields]
    return _keyed(
        update_item,
        resource,
        f"Change fields of one of the {resource.command}; the others keep their value.",
        fields,
    )


def _delete(resource: Resource) -> Callable[..., None]:
    def delete_item(ctx: typer.Context, key: str, output: OutputOption = Format.table) -> None:
        with state_of(ctx).client() as client:
            answer = client.call(resource.routes.delete, {resource.key: key})
        show_message(answer, output)

    return _keyed(delete_item, resource, f"Delete one of the {resource.command}.")


def _keyed(
    function: Callable[..., None],
    resource: Resource,
    doc: str,
    options: Sequence[inspect.Parameter] = (),
) -> Callable[..., None]:
    """`function` with its `key` argument shown as the resource's key (NAME, ID)."""
    command = _with_options(function, options)
    signature: inspect.Signature = command.__signature__  # type: ignore[attr-defined]
    parameters = [
        p.replace(annotation=_key_argument(resource)) if p.name == "key" else p
        for p in signature.parameters.values()
    ]
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = doc
    return command


def resource_app(resource: Resource) -> typer.Typer:
    app = typer.Typer(help=resource.help, no_args_is_help=True)
    app.command("list")(_list(resource))
    app.command("get")(_get(resource))
    app.command("create")(_create(resource))
    app.command("update")(_update(resource))
    app.command("delete")(_delete(resource))
    return app
