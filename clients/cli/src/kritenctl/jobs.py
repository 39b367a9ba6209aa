"""Running tasks and reading jobs: `run`, `jobs list|get|create|delete|logs|wait`.

`--wait` polls the job (backing off to a read every 2 s) rather than holding the log
stream open: a poll survives a proxy's idle timeout and an api replica's restart, and a
job's end is all it needs. `-f`/`--follow` does hold the stream, since it shows the output.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from kritenctl import paths
from kritenctl.client import Client, expect
from kritenctl.errors import JOB_FAILED, NOT_FOUND, CliError
from kritenctl.inputs import read_raw
from kritenctl.output import Format, emit_data, show_item, show_list, show_message
from kritenctl.state import OutputOption, state_of

FINAL_STATUSES = ("succeeded", "failed", "cancelled", "skipped")
COLUMNS = ("id", "task", "status", "owner", "source", "created_at")
FIRST_POLL_SECONDS = 0.2
LAST_POLL_SECONDS = 2.0
# A job the api has just accepted is stored once the collector has taken its request:
# milliseconds, longer while the broker or the database is slow. Until then it is a 404.
ARRIVAL_GRACE_SECONDS = 30.0

app = typer.Typer(help="Jobs: runs of a task, their status and output.", no_args_is_help=True)

InputOption = Annotated[
    str | None,
    typer.Option(
        "--input",
        "-i",
        help="The job's input: @path (JSON, or YAML sent as JSON), - for standard input,"
        " or the text itself. Sent as the task's EXTRA_VARS",
    ),
]
WaitOption = Annotated[
    bool, typer.Option("--wait", "-w", help="Wait until the job ends; exit 1 unless it succeeded")
]
FollowOption = Annotated[
    bool,
    typer.Option(
        "--follow", "-f", help="Stream the output until the job ends; exit 1 unless it succeeded"
    ),
]
JobArgument = Annotated[str, typer.Argument(metavar="JOB", help="The job id")]


def wait_for(client: Client, job_id: str) -> dict[str, Any]:
    delay = FIRST_POLL_SECONDS
    while True:
        job: dict[str, Any] = client.call(paths.JOB_GET, {"id": job_id})
        if job.get("status") in FINAL_STATUSES:
            return job
        time.sleep(delay)
        delay = min(delay * 1.5, LAST_POLL_SECONDS)


def wait_stored(client: Client, job_id: str) -> dict[str, Any]:
    """The job just created, once the api can read it (a 404 until then)."""
    deadline = time.monotonic() + ARRIVAL_GRACE_SECONDS
    delay = FIRST_POLL_SECONDS
    while True:
        try:
            job: dict[str, Any] = client.call(paths.JOB_GET, {"id": job_id})
            return job
        except CliError as problem:
            if problem.exit_code != NOT_FOUND or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 1.5, LAST_POLL_SECONDS)


def follow_log(client: Client, job_id: str) -> dict[str, Any]:
    """Writes the output as it comes until the job is final; the final job."""
    with client.stream(paths.JOB_LOG, {"id": job_id}, query={"follow": True}) as chunks:
        for chunk in chunks:
            typer.echo(chunk, nl=False)
    # The stream also ends when the credential expires: only a final job is an answer.
    return wait_for(client, job_id)


def require_success(job: dict[str, Any]) -> None:
    status = job.get("status")
    if status != "succeeded":
        reason = f": {job['error']}" if job.get("error") else ""
        raise CliError(f"job {job.get('id')} {status}{reason}", JOB_FAILED)


def _interruptible_wait(
    client: Client, job_id: str, *, follow: bool, just_created: bool = False
) -> dict[str, Any]:
    # Ctrl-C stops the waiting, not the job: say how to go on.
    try:
        if just_created:
            wait_stored(client, job_id)
        return follow_log(client, job_id) if follow else wait_for(client, job_id)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped waiting; job {job_id} goes on", err=True)
        raise


def run_task(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="The task to run")],
    input_: InputOption = None,
    wait: WaitOption = False,
    follow: FollowOption = False,
    output: OutputOption = Format.table,
) -> None:
    """Run a task: start a job with this input; print its id, or with --wait the job."""
    content = read_raw(input_) if input_ is not None else b""
    with state_of(ctx).client() as client:
        answer = expect(client.call(paths.JOB_CREATE, {"task": task}, content=content), "id")
        if not (wait or follow):
            show_message(answer, output)
            return
        # A synchronous task may answer with the finished job itself.
        job = answer if answer.get("status") in FINAL_STATUSES else None
        if job is None:
            job = _interruptible_wait(client, answer["id"], follow=follow, just_created=True)
        elif follow:
            typer.echo(job.get("stdout", ""), nl=False)
    if follow:
        if not emit_data(job, output):
            typer.echo(f"job {job['id']} {job['status']}", err=True)
    else:
        show_item(job, output)
    require_success(job)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option(help="Only this task's jobs")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this user's jobs (a username)")] = None,
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed, cancelled or skipped")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="At most this many")] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="Skip this many first")] = None,
    output: OutputOption = Format.table,
) -> None:
    """List jobs, newest first."""
    query = {"task": task, "owner": owner, "status": status, "limit": limit, "offset": offset}
    with state_of(ctx).client() as client:
        jobs = client.call(paths.JOBS_LIST, query=query)
    show_list(jobs, COLUMNS, output)


@app.command("get")
def get_job(ctx: typer.Context, job: JobArgument, output: OutputOption = Format.table) -> None:
    """Show a job: status, times, exit code, json_data (the output: `jobs logs`)."""
    with state_of(ctx).client() as client:
        show_item(client.call(paths.JOB_GET, {"id": job}), output)


app.command("create", help="Run a task (the same as `kritenctl run`).")(run_task)


@app.command("delete")
def cancel_job(ctx: typer.Context, job: JobArgument, output: OutputOption = Format.table) -> None:
    """Cancel a job: it becomes `cancelled` once its execution has stopped."""
    with state_of(ctx).client() as client:
        show_message(client.call(paths.JOB_CANCEL, {"id": job}), output)


@app.command("logs")
def job_logs(ctx: typer.Context, job: JobArgument, follow: FollowOption = False) -> None:
    """Print a job's output (stdout and stderr interleaved)."""
    with state_of(ctx).client() as client:
        if not follow:
            typer.echo(client.call(paths.JOB_LOG, {"id": job}), nl=False)
            return
        final = _interruptible_wait(client, job, follow=True)
    require_success(final)


@app.command("wait")
def wait_job(ctx: typer.Context, job: JobArgument, output: OutputOption = Format.table) -> None:
    """Wait until a job ends; exit 0 if it succeeded, 1 if it failed, was cancelled
    or skipped."""
    with state_of(ctx).client() as client:
        final = _interruptible_wait(client, job, follow=False)
    show_item(final, output)
    require_success(final)
