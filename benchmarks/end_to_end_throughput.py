"""End-to-end throughput of the four services with the local executor, proving or
disproving three targets, each against figures measured in the same run:

- rate: N signed NetBox deliveries of a trivial task (command `true` in a one-file git
  repository) complete at >= 0.8x the rate of a plain asyncio loop doing the same work
  directly at the same concurrency (`baseline_job`: the executor's checkout and command);
- CPU: the four services together use <= 10 ms of CPU per job (their own user + system
  time from /proc/<pid>/stat; the job processes they start, reaped or not, are excluded);
- memory: every service's RSS is flat (within noise) from the second to the last batch.

Beside those, where the CPU goes per job, for the baseline and for Kriten: the job
processes (the baseline's children; the dispatcher's reaped wrappers with their `cp` and
command), the four services, RabbitMQ (`beam.smp`) and PostgreSQL (`postgres`). The run is
CPU-bound on a small machine, so the rate cannot exceed the cores over Kriten's CPU per
job: the report prints that ceiling as a ratio to the baseline's rate, which tells a slow
path from a full machine.

The services run as separate processes (`python -m kriten_<name>`) on a fresh PostgreSQL
database (`kriten_bench_<random>`, dropped at the end) and the machine's RabbitMQ under a
unique `KRITEN_AMQP_PREFIX` (its exchange and queues deleted at the end), with the
dispatcher's prefetch set to --concurrency. Per batch, the N deliveries are sent with 64
concurrent requests, then the database is polled until all N jobs are final; the rate is N
over the time from the first send to the last job's `completion_time`. A batch that stops
making progress for --stall-timeout seconds aborts the run.

The baseline runs before and after the Kriten batches (after a short unmeasured warm-up);
the rate target compares the median batch with the mean of the two, and the printed
min-max ratio is the worst batch against the best baseline and the other way round. RSS
counts as flat when no service grew by more than max(2 MiB, 2%) from batch 2 to the last.

Usage: `python -m benchmarks.end_to_end_throughput [--jobs 2000] [--batches 3]
[--concurrency 16]` (also part of `make bench`, with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks._system import (
    AMQP_URL,
    ProcessSample,
    Service,
    cpu_seconds_of_programs,
    delete_broker_objects,
    make_one_file_repo,
    postgres_database,
    prepare_webhook,
    running_services,
    unique_prefix,
)
from kriten_common.db.engine import create_engine
from kriten_common.webhook_signing import sign_netbox

SECRET = "benchmark-secret-0123456789"
TASK_COMMAND = "true"
SERVICES = ("api", "ingress", "dispatcher", "collector")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
SEND_CONCURRENCY = 64
POLL_SECONDS = 0.3
# After the last job is final, before CPU and RSS are read: lets the services finish the
# work that follows a job's completion (acknowledgements, events), which is theirs too.
SETTLE_SECONDS = 1.0
# Targets.
RATE_TARGET = 0.8
CPU_TARGET_MS = 10.0
RSS_NOISE_BYTES = 2 * 1024 * 1024
RSS_NOISE_FRACTION = 0.02
# Command names of the broker's and the database's processes, for their CPU per job.
BROKER_PROGRAMS = ("beam.smp",)
DATABASE_PROGRAMS = ("postgres",)
MIB = 1024 * 1024


class BenchmarkError(RuntimeError):
    """The run cannot give figures (a batch stalled, a service died, a delivery refused)."""


# --- Baseline ------------------------------------------------------------------------


def make_template(repo: Path, template: Path) -> None:
    """The per-commit template checkout the executor makes once."""
    subprocess.run(["git", "clone", "-q", f"file://{repo}", str(template)], check=True)


async def baseline_job(template: Path, job_dir: Path) -> int:
    """One job done directly, as the local executor does it: copy the template checkout
    into the job's directory and run the command there, in one `sh` wrapper process.
    Swap this (and `make_template`) if the executor's checkout changes."""
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        'cp -a -- "$1" "$2" && cd "$2" && sh -c "$3"',
        "kriten-job",
        str(template),
        str(job_dir / "repo"),
        TASK_COMMAND,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return await process.wait()


@dataclass(frozen=True)
class BaselineRun:
    per_second: float
    # The job processes' CPU time (this process's reaped children), per job.
    job_cpu_ms: float


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_baseline(
    template: Path, root: Path, jobs: int, concurrency: int, timeout: float = 600
) -> BaselineRun:
    """A plain asyncio loop running `jobs` baseline jobs, `concurrency` at a time, each in
    a fresh directory: its rate and its job processes' CPU per job."""
    root.mkdir(parents=True)
    indexes = iter(range(jobs))
    failures: list[int] = []

    async def worker() -> None:
        for index in indexes:
            job_dir = root / str(index)
            job_dir.mkdir()
            if code := await baseline_job(template, job_dir):
                failures.append(code)

    started, children_before = time.perf_counter(), children_cpu_seconds()
    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
    except TimeoutError:
        raise BenchmarkError(f"baseline: timed out after {timeout:.0f} s") from None
    elapsed = time.perf_counter() - started
    job_cpu = children_cpu_seconds() - children_before
    await asyncio.to_thread(shutil.rmtree, root, True)
    if failures:
        raise BenchmarkError(f"baseline: {len(failures)} jobs failed (exit {failures[0]})")
    return BaselineRun(jobs / elapsed, job_cpu * 1000 / jobs)


# --- Kriten --------------------------------------------------------------------------


@dataclass
class Batch:
    index: int
    jobs: int
    send_seconds: float = 0.0
    per_second: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    rss_bytes: dict[str, int] = field(default_factory=dict)
    # The dispatcher's reaped job wrappers (their `cp` and command included), RabbitMQ's
    # and PostgreSQL's processes.
    job_cpu_seconds: float = 0.0
    broker_cpu_seconds: float = 0.0
    database_cpu_seconds: float = 0.0


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


async def send(
    session: aiohttp.ClientSession, run_url: str, label: str, jobs: int
) -> tuple[float, float, list[str]]:
    """Sends `jobs` signed deliveries, SEND_CONCURRENCY at a time; returns the wall-clock
    time of the first send, the seconds sending took, and the accepted job ids."""
    ids: list[str] = []
    indexes = iter(range(jobs))
    nonce = uuid.uuid4().hex  # unique bodies: job ids derive from them

    async def worker() -> None:
        for index in indexes:
            data = {"id": index, "batch": label, "nonce": nonce}
            body = json.dumps({"event": "updated", "model": "device", "data": data}).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Hook-Signature": sign_netbox(SECRET, body),
            }
            async with session.post(run_url, data=body, headers=headers) as response:
                answer = await response.text()
                if response.status != 202:
                    raise BenchmarkError(f"{label}: delivery answered {response.status}: {answer}")
            parsed = json.loads(answer)
            if parsed.get("status") != "accepted":
                raise BenchmarkError(f"{label}: delivery not accepted: {answer}")
            ids.append(parsed["id"])

    first_send = time.time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(SEND_CONCURRENCY, jobs))))
    return first_send, time.perf_counter() - started, ids


async def count_by_status(engine: AsyncEngine, ids: list[str]) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT status, count(*) AS n FROM jobs WHERE id = ANY(:ids) GROUP BY status"),
            {"ids": ids},
        )
        return {row.status: row.n for row in rows}


async def wait_final(
    engine: AsyncEngine,
    ids: list[str],
    services: dict[str, Service],
    label: str,
    stall_timeout: float,
) -> dict[str, int]:
    """Polls until every job in `ids` is final; raises BenchmarkError when none became
    final for `stall_timeout` seconds or a service exited."""
    best = -1
    progressed = time.monotonic()
    while True:
        counts = await count_by_status(engine, ids)
        final = sum(counts.get(status, 0) for status in FINAL_STATUSES)
        if final >= len(ids):
            return counts
        for service in services.values():
            service.check_alive()
        now = time.monotonic()
        if final > best:
            best, progressed = final, now
        elif now - progressed > stall_timeout:
            raise BenchmarkError(
                f"{label}: timed out: no job became final for {stall_timeout:.0f} s "
                f"({final}/{len(ids)} final; rows by status: {counts or 'none yet'})"
            )
        await asyncio.sleep(POLL_SECONDS)


async def job_figures(engine: AsyncEngine, ids: list[str], first_send: float, batch: Batch) -> None:
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT status, created_at, completion_time, error FROM jobs "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        ).all()
    completions = [as_utc(row.completion_time) for row in rows if row.completion_time]
    if not completions:
        raise BenchmarkError(f"batch {batch.index}: no job has a completion time")
    batch.per_second = batch.jobs / (max(completions).timestamp() - first_send)
    latencies = sorted(
        (as_utc(row.completion_time) - as_utc(row.created_at)).total_seconds() * 1000
        for row in rows
        if row.completion_time
    )
    batch.p50_ms = statistics.median(latencies)
    batch.p99_ms = percentile(latencies, 0.99)
    batch.first_error = next((row.error for row in rows if row.status != "succeeded"), None)


def samples(services: dict[str, Service]) -> dict[str, ProcessSample]:
    return {name: service.sample() for name, service in services.items()}


async def run_batch(
    index: int,
    session: aiohttp.ClientSession,
    engine: AsyncEngine,
    run_url: str,
    services: dict[str, Service],
    args: argparse.Namespace,
) -> Batch:
    batch = Batch(index, args.jobs)
    before = samples(services)
    broker_before = cpu_seconds_of_programs(BROKER_PROGRAMS)
    database_before = cpu_seconds_of_programs(DATABASE_PROGRAMS)
    first_send, batch.send_seconds, ids = await send(session, run_url, f"batch {index}", args.jobs)
    batch.statuses = await wait_final(engine, ids, services, f"batch {index}", args.stall_timeout)
    await job_figures(engine, ids, first_send, batch)
    await asyncio.sleep(SETTLE_SECONDS)
    after = samples(services)
    batch.broker_cpu_seconds = cpu_seconds_of_programs(BROKER_PROGRAMS) - broker_before
    batch.database_cpu_seconds = cpu_seconds_of_programs(DATABASE_PROGRAMS) - database_before
    for name in services:
        batch.cpu_seconds[name] = after[name].cpu_seconds - before[name].cpu_seconds
        batch.rss_bytes[name] = after[name].rss_bytes
    batch.job_cpu_seconds = (
        after["dispatcher"].children_cpu_seconds - before["dispatcher"].children_cpu_seconds
    )
    failed = batch.jobs - batch.statuses.get("succeeded", 0)
    print(
        f"  batch {index}: {batch.per_second:.2f} jobs/s, sent in {batch.send_seconds:.1f} s, "
        f"p50 {batch.p50_ms:.0f} ms, p99 {batch.p99_ms:.0f} ms"
        + (f", {failed} not succeeded: {batch.first_error}" if failed else ""),
        flush=True,
    )
    return batch


async def through_kriten(repo: Path, work: Path, args: argparse.Namespace) -> list[Batch]:
    prefix = unique_prefix()
    try:
        async with postgres_database() as database_url:
            hook_id = await prepare_webhook(
                database_url, git_url=f"file://{repo}", command=TASK_COMMAND, secret=SECRET
            )
            env = {
                "KRITEN_DATABASE_URL": database_url,
                "KRITEN_AMQP_URL": AMQP_URL,
                "KRITEN_AMQP_PREFIX": prefix,
                "KRITEN_EXECUTOR": "local",
                "KRITEN_JOBS_DIR": str(work / "jobs"),
                "KRITEN_LOG_LEVEL": "warning",
                "KRITEN_LOG_FORMAT": "json",
                # A stop at the end need not wait for long: nothing is in flight by then.
                "KRITEN_SHUTDOWN_GRACE_SECONDS": "5",
            }
            per_service = {"dispatcher": {"KRITEN_PREFETCH": str(args.concurrency)}}
            starting = time.perf_counter()
            async with running_services(env, work, SERVICES, per_service) as services:
                print(f"  services ready in {time.perf_counter() - starting:.1f} s", flush=True)
                engine = create_engine(database_url)
                connector = aiohttp.TCPConnector(limit=SEND_CONCURRENCY)
                timeout = aiohttp.ClientTimeout(total=60)
                try:
                    async with aiohttp.ClientSession(
                        connector=connector, timeout=timeout
                    ) as session:
                        run_url = f"{services['ingress'].url}/api/v1/webhooks/run/{hook_id}"
                        return await measure(session, engine, run_url, services, args)
                except Exception:
                    for name, service in services.items():
                        if service.log_tail().strip():
                            print(
                                f"--- {name} log (tail) ---\n{service.log_tail(2000)}",
                                file=sys.stderr,
                            )
                    raise
                finally:
                    await engine.dispose()
    finally:
        try:
            await delete_broker_objects(prefix)
        except Exception as exc:  # clean-up must not hide the real error
            print(f"could not delete broker objects of {prefix}: {exc}", file=sys.stderr)


async def measure(
    session: aiohttp.ClientSession,
    engine: AsyncEngine,
    run_url: str,
    services: dict[str, Service],
    args: argparse.Namespace,
) -> list[Batch]:
    # Warm-up: proves the whole path works before the measured batches, and fills caches.
    warm = min(args.concurrency, args.jobs, 10)
    _, _, ids = await send(session, run_url, "warm-up", warm)
    await wait_final(engine, ids, services, "warm-up", args.stall_timeout)
    return [
        await run_batch(index, session, engine, run_url, services, args)
        for index in range(1, args.batches + 1)
    ]


# --- Report --------------------------------------------------------------------------


def mark(holds: bool) -> str:
    return "✓" if holds else "✗"


def report_pipeline_cpu(
    baseline_runs: list[BaselineRun], batches: list[Batch], services_ms: float
) -> None:
    """Where the CPU goes per job, and the rate ratio that leaves on a CPU-bound machine."""
    total_jobs = sum(b.jobs for b in batches)

    def per_job(seconds: float) -> float:
        return seconds * 1000 / total_jobs

    baseline_jobs_ms = statistics.mean(run.job_cpu_ms for run in baseline_runs)
    jobs_ms = per_job(sum(b.job_cpu_seconds for b in batches))
    broker_ms = per_job(sum(b.broker_cpu_seconds for b in batches))
    database_ms = per_job(sum(b.database_cpu_seconds for b in batches))
    kriten_ms = jobs_ms + services_ms + broker_ms + database_ms
    print("\nCPU ms/job, the whole pipeline (all batches)")
    print(f"{'':<28}{'baseline':>10}{'Kriten':>10}")
    print(f"{'job processes (cp + sh)':<28}{baseline_jobs_ms:>10.2f}{jobs_ms:>10.2f}")
    for label, value in (
        ("the four services", services_ms),
        ("RabbitMQ (beam.smp)", broker_ms),
        ("PostgreSQL (postgres)", database_ms),
    ):
        print(f"{label:<28}{'-':>10}{value:>10.2f}")
    print(f"{'total':<28}{baseline_jobs_ms:>10.2f}{kriten_ms:>10.2f}")
    # All cores busy: the most jobs a second that Kriten's CPU per job allows, and the
    # CPU per job that 0.8x the measured baseline rate would allow.
    cores = os.cpu_count() or 1
    baseline_rate = statistics.mean(run.per_second for run in baseline_runs)
    ceiling = cores * 1000 / kriten_ms / baseline_rate
    budget = cores * 1000 / (RATE_TARGET * baseline_rate) - jobs_ms
    print(
        f"with all {cores} cores busy, Kriten's CPU/job allows at most {ceiling:.2f}x the "
        f"baseline's rate; {RATE_TARGET}x would leave {budget:.2f} ms/job for the services, "
        f"the broker and the database together (they use {kriten_ms - jobs_ms:.2f})"
    )


def report(
    args: argparse.Namespace, baseline_runs: list[BaselineRun], batches: list[Batch]
) -> None:
    baselines = [run.per_second for run in baseline_runs]
    base_low, base_high = min(baselines), max(baselines)
    base_mean = statistics.mean(baselines)
    rates = [b.per_second for b in batches]
    median_rate = statistics.median(rates)
    ratio = median_rate / base_mean
    print(
        f"\nend-to-end throughput: {args.jobs} jobs x {args.batches} batches, concurrency "
        f"{args.concurrency}, local executor, PostgreSQL, {os.cpu_count()} cores"
    )
    print(
        f"baseline (asyncio loop; per job: cp -a template + sh -c {TASK_COMMAND!r}): "
        f"{base_low:.1f}-{base_high:.1f} jobs/s (before: {baselines[0]:.1f}, "
        f"after: {baselines[-1]:.1f})"
    )
    print(
        f"\n{'batch':<10}{'jobs/s':>10}{'vs base':>10}{'send s':>10}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}"
    )
    for b in batches:
        failed = b.jobs - b.statuses.get("succeeded", 0)
        print(
            f"{b.index:<10}{b.per_second:>10.2f}{b.per_second / base_mean:>10.3f}"
            f"{b.send_seconds:>10.1f}{b.p50_ms:>10.0f}{b.p99_ms:>10.0f}{failed:>8}"
        )
    print(
        f"{'min-max':<10}{f'{min(rates):.2f}-{max(rates):.2f}':>10}"
        f"{f'{min(rates) / base_high:.2f}-{max(rates) / base_low:.2f}':>10}"
    )

    print("\nCPU ms/job (each service's own utime+stime; job processes excluded)")
    header = "".join(f"{f'batch {b.index}':>10}" for b in batches)
    print(f"{'service':<12}{header}{'all':>10}")
    total_jobs = sum(b.jobs for b in batches)
    per_service_all: dict[str, float] = {}
    for name in [*SERVICES, "total"]:
        cells = []
        for b in batches:
            seconds = sum(b.cpu_seconds.values()) if name == "total" else b.cpu_seconds[name]
            cells.append(seconds * 1000 / b.jobs)
        spent = sum(
            sum(b.cpu_seconds.values()) if name == "total" else b.cpu_seconds[name] for b in batches
        )
        per_service_all[name] = spent * 1000 / total_jobs
        print(
            f"{name:<12}"
            + "".join(f"{c:>10.2f}" for c in cells)
            + f"{per_service_all[name]:>10.2f}"
        )

    report_pipeline_cpu(baseline_runs, batches, per_service_all["total"])

    rss_holds: bool | None = None
    print("\nRSS MiB after each batch")
    if len(batches) >= 3:
        second, last = batches[1], batches[-1]
        span = f"{second.index}→{last.index}"
        jobs_between = sum(b.jobs for b in batches[2:])
        print(f"{'service':<12}{header}{f'Δ {span} MiB':>14}{'Δ B/job':>10}{'flat':>6}")
        rss_holds = True
        for name in SERVICES:
            delta = last.rss_bytes[name] - second.rss_bytes[name]
            noise = max(RSS_NOISE_BYTES, RSS_NOISE_FRACTION * second.rss_bytes[name])
            flat = delta <= noise
            rss_holds = rss_holds and flat
            rss_cells = "".join(f"{b.rss_bytes[name] / MIB:>10.1f}" for b in batches)
            print(
                f"{name:<12}{rss_cells}{delta / MIB:>14.2f}"
                f"{delta / jobs_between:>10.0f}{mark(flat):>6}"
            )
    else:
        print(f"{'service':<12}{header}")
        for name in SERVICES:
            print(f"{name:<12}" + "".join(f"{b.rss_bytes[name] / MIB:>10.1f}" for b in batches))

    not_succeeded = sum(b.jobs - b.statuses.get("succeeded", 0) for b in batches)
    print("\ntargets")
    print(
        f"{mark(ratio >= RATE_TARGET)} rate >= {RATE_TARGET}x baseline: {ratio:.3f}x "
        f"(median batch {median_rate:.2f} / mean baseline {base_mean:.2f} jobs/s)"
        + (f"; but {not_succeeded} jobs did not succeed" if not_succeeded else "")
    )
    total_cpu = per_service_all["total"]
    print(
        f"{mark(total_cpu <= CPU_TARGET_MS)} CPU <= {CPU_TARGET_MS:.0f} ms/job: "
        f"{total_cpu:.2f} ms/job (all four services)"
    )
    if rss_holds is None:
        print("- RSS flat: needs --batches 3 or more")
    else:
        print(
            f"{mark(rss_holds)} RSS flat from batch 2 to {batches[-1].index} (every service "
            f"grew <= max({RSS_NOISE_BYTES // MIB} MiB, {RSS_NOISE_FRACTION:.0%}))"
        )


# --- Main ----------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kriten-bench-e2e-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        repo = make_one_file_repo(work)
        template = work / "template"
        make_template(repo, template)
        print(f"baseline before ({args.jobs} jobs)...", flush=True)
        # Warm-up (page cache, the first fork of sh and cp), not measured.
        await run_baseline(template, work / "baseline-warm-up", args.concurrency, args.concurrency)
        before = await run_baseline(template, work / "baseline-before", args.jobs, args.concurrency)
        print(f"  {before.per_second:.1f} jobs/s\nKriten ({args.batches} batches)...", flush=True)
        batches = await through_kriten(repo, work, args)
        print("baseline after...", flush=True)
        after = await run_baseline(template, work / "baseline-after", args.jobs, args.concurrency)
        print(f"  {after.per_second:.1f} jobs/s", flush=True)
    report(args, [before, after], batches)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end_throughput")
    parser.add_argument("--jobs", type=int, default=2000, help="deliveries per batch")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="dispatcher prefetch")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=60.0,
        help="abort when no job became final for this many seconds",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.batches < 1 or args.concurrency < 1:
        parser.error("--jobs, --batches and --concurrency must be positive")
    return args


async def main(argv: list[str] | None = None) -> None:
    await run(parse(argv))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except RuntimeError as error:  # BenchmarkError, or a service that did not start
        sys.exit(f"end_to_end_throughput: {error}")
    except KeyboardInterrupt:
        sys.exit("end_to_end_throughput: interrupted (services, database and queues removed)")
