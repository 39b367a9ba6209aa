"""The webhook commands beyond list/get/create/update/delete: the delivery log,
redelivery, test deliveries and secret rotation."""

from __future__ import annotations

from typing import Annotated

import typer

from kritenctl import paths
from kritenctl.inputs import read_document
from kritenctl.output import Format, show_item, show_list
from kritenctl.state import OutputOption, state_of

DELIVERY_COLUMNS = ("id", "received_at", "scheme", "outcome", "reason", "job_id")
WebhookArgument = Annotated[str, typer.Argument(metavar="WEBHOOK", help="The webhook's id")]
DeliveryArgument = Annotated[str, typer.Argument(metavar="DELIVERY", help="The delivery's id")]


def deliveries(
    ctx: typer.Context,
    webhook: WebhookArgument,
    delivery: Annotated[
        str | None, typer.Argument(metavar="[DELIVERY]", help="Show this one, with its body")
    ] = None,
    outcome: Annotated[
        str | None, typer.Option(help="Only: accepted, duplicate, filtered or rejected")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="At most this many")] = None,
    output: OutputOption = Format.table,
) -> None:
    """A webhook's delivery log, newest first; or one delivery."""
    with state_of(ctx).client() as client:
        if delivery is not None:
            found = client.call(paths.DELIVERY_GET, {"id": webhook, "delivery_id": delivery})
            show_item(found, output)
            return
        query = {"outcome": outcome, "limit": limit}
        found = client.call(paths.DELIVERIES_LIST, {"id": webhook}, query=query)
    show_list(found, DELIVERY_COLUMNS, output)


def redeliver(
    ctx: typer.Context,
    webhook: WebhookArgument,
    delivery: DeliveryArgument,
    output: OutputOption = Format.table,
) -> None:
    """Run an accepted delivery's stored body again, as a new job."""
    with state_of(ctx).client() as client:
        answer = client.call(paths.DELIVERY_REDELIVER, {"id": webhook, "delivery_id": delivery})
    show_item(answer, output)


def send_test(
    ctx: typer.Context,
    webhook: WebhookArgument,
    body: Annotated[
        str | None,
        typer.Option(
            "--body",
            help="The event to send (@path, - or the JSON itself); else a sample event",
        ),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Send a signed test delivery through the run endpoint; show its answer."""
    request = {"body": read_document(body)} if body is not None else None
    with state_of(ctx).client() as client:
        answer = client.call(paths.WEBHOOK_TEST, {"id": webhook}, body=request)
    show_item(answer, output)


def rotate(
    ctx: typer.Context,
    webhook: WebhookArgument,
    secret: Annotated[
        str | None, typer.Option(help="The new secret; else one is generated")
    ] = None,
    grace_seconds: Annotated[
        int | None,
        typer.Option(min=0, help="How long the old secret still verifies (api default: 86400)"),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Give a webhook a new secret and show it (the only time it is shown)."""
    request = {"secret": secret, "grace_seconds": grace_seconds}
    chosen = {k: v for k, v in request.items() if v is not None}
    with state_of(ctx).client() as client:
        answer = client.call(paths.WEBHOOK_ROTATE, {"id": webhook}, body=chosen or None)
    show_item(answer, output)


def add_commands(app: typer.Typer) -> None:
    app.command("deliveries")(deliveries)
    app.command("redeliver")(redeliver)
    app.command("test")(send_test)
    app.command("rotate")(rotate)
