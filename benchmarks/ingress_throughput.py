"""Ingress throughput and latency, as ratios against baselines measured in the same run.

Servers, each its own process on this machine:
- `bare handler`: a minimal aiohttp app doing what any webhook receiver must: read the
  body, check its NetBox signature (HMAC-SHA512 over the raw bytes), `json.loads` it and
  answer 202. It publishes nothing: the ratio against it is what Kriten's admission,
  delivery log and confirmed publish cost on top of the unavoidable work.
- `ingress`: `python -m kriten_ingress` on the machine's RabbitMQ (a temporary exchange
  and queues, removed afterwards) and an SQLite database prepared here; every 202 means
  the job request is confirmed on disk by RabbitMQ.

Per round: closed-loop peak (`--concurrency` workers sending back to back) of the bare
handler, of the ingress, and of `GET /healthz` on the ingress (the cost of HTTP alone),
measured in alternating slices (`--slices`) so that other work on the machine weighs on
each alike;
then an open-loop run against the ingress at half of that round's ingress peak: requests
are scheduled at fixed intervals (`--arrivals poisson` for exponential gaps) and each
latency is measured from the request's *scheduled* send time, so a stall delays the
clock of every request behind it (no coordinated omission). Once per run, the ingress
with group commit off (`KRITEN_PUBLISH_MAX_BATCH=1`) for comparison.

The load generator runs in this process and shares the machine's cores with the
servers, so compare the ratios printed, never absolute figures across runs. Usage:
`python -m benchmarks.ingress_throughput [--rounds N] [--requests N] [--concurrency C]
[--slices N] [--open-seconds S] [--arrivals fixed|poisson] [--no-unbatched]` (`make bench` runs it
with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
from aiohttp import web
from sqlmodel import select

from kriten_api.bootstrap import ensure_builtins
from kriten_api.migrate import upgrade_database
from kriten_common.amqp import Topology, delete_topology
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import Runner, Task, User, Webhook
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_common.webhook_signing import plain_key, sign_netbox

SECRET = "benchmark-secret-0123456789"
AMQP_URL = os.environ.get("KRITEN_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RUN_PATH = "/api/v1/webhooks/run"
# Every body is distinct across the whole run: the ingress treats an identical NetBox
# body as a retry (a duplicate), which would skip the publish being measured.
_serial = itertools.count()


@dataclass
class Closed:
    """A closed-loop run: its rate is the server's peak under that concurrency."""

    per_second: float
    p50_ms: float
    p99_ms: float


@dataclass
class Opened:
    """An open-loop run at a fixed offered rate; latencies from the scheduled time."""

    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def signed_requests(count: int) -> list[tuple[bytes, dict[str, str]]]:
    """Bodies and headers made before the clock starts, so signing costs the client
    nothing while it measures."""
    made = []
    for _ in range(count):
        body = json.dumps({"event": "updated", "data": {"id": next(_serial)}}).encode()
        made.append((body, {"X-Hook-Signature": sign_netbox(SECRET, body)}))
    return made


# --- the bare handler (its own process: `--serve-bare PORT`) ---


def bare_app() -> web.Application:
    key = plain_key(SECRET)

    async def run(request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get("X-Hook-Signature", "")
        expected = hmac.new(key, body, hashlib.sha512).hexdigest()
        if not hmac.compare_digest(given, expected):
            return web.json_response({"error": "webhook authentication failed."}, status=401)
        json.loads(body)
        return web.json_response({"msg": "accepted", "status": "accepted"}, status=202)

    app = web.Application()
    app.router.add_post(RUN_PATH + "/{webhook_id}", run)
    return app


def start_bare(port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ingress_throughput", "--serve-bare", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


# --- the ingress ---


async def prepare_database(url: str) -> str:
    """A migrated database with root, a task and a webhook; returns the webhook id."""
    await upgrade_database(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    await ensure_builtins(sessions, root_password="bench")
    box = SecretBox(DEVELOPMENT_ENCRYPTION_KEY)
    async with sessions() as session:
        root = (await session.exec(select(User).where(User.username == "root"))).one()
        session.add(Runner(name="python", git_url="file:///nonexistent"))
        await session.commit()
        session.add(Task(name="bench", runner="python", command="true"))
        await session.commit()
        hook = Webhook(owner_id=root.id, task="bench", secret_encrypted=box.encrypt(SECRET))
        session.add(hook)
        await session.commit()
        hook_id = hook.id
    await engine.dispose()
    return hook_id


def start_ingress(
    database_url: str, prefix: str, port: int, max_batch: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KRITEN_DATABASE_URL": database_url,
        "KRITEN_AMQP_URL": AMQP_URL,
        "KRITEN_AMQP_PREFIX": prefix,
        "KRITEN_PORT": str(port),
        "KRITEN_PUBLISH_MAX_BATCH": str(max_batch),
        # The default level, as operators run it.
        "KRITEN_LOG_LEVEL": "info",
        # Long enough that the benchmark measures the request path, not database reads.
        "KRITEN_CONFIG_CACHE_SECONDS": "600",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kriten_ingress"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


# --- load ---


async def closed_loop(url: str, requests: int, concurrency: int, *, post: bool) -> Closed:
    """`concurrency` workers, each sending its next request as soon as one is answered."""
    work: Iterator[tuple[bytes, dict[str, str]]] = iter(signed_requests(requests))
    latencies: list[float] = []
    expect = 202 if post else 200
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for body, headers in work:
                started = time.perf_counter()
                if post:
                    request = session.post(url, data=body, headers=headers)
                else:
                    request = session.get(url)
                async with request as response:
                    await response.read()
                    if response.status != expect:
                        raise RuntimeError(f"{url}: answer {response.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Closed(
        requests / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    )


async def open_loop(url: str, rate: float, seconds: float, *, poisson: bool) -> Opened:
    """Requests sent at scheduled times whatever happens to earlier ones; each latency
    runs from its scheduled time to its 202."""
    count = max(1, int(rate * seconds))
    work = signed_requests(count)
    gaps = random.Random(7)
    latencies: list[float] = []
    failures: list[int] = []
    # Unbounded connections: a full pool would queue requests in the client and hide
    # the server's latency (or, worse, add the client's).
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(scheduled: float, body: bytes, headers: dict[str, str]) -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 202:
                    failures.append(response.status)
            latencies.append(time.perf_counter() - scheduled)

        loop = asyncio.get_running_loop()
        sent: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.05
        scheduled = start
        for body, headers in work:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(send(scheduled, body, headers))
            sent.add(task)
            task.add_done_callback(sent.discard)
            scheduled += gaps.expovariate(rate) if poisson else 1 / rate
        while sent:
            await asyncio.wait(set(sent))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{url}: {len(failures)} answers other than 202: {failures[:5]}")
    latencies.sort()
    return Opened(
        rate,
        count / elapsed,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
    )


# --- the run ---


@dataclass
class Round:
    bare: Closed
    ingress: Closed
    floor: Closed
    half: Opened


async def interleaved(targets: list[tuple[str, bool]], args: argparse.Namespace) -> list[Closed]:
    """Closed-loop peaks of several servers, measured in alternating slices so that a
    burst of other work on the machine weighs on each of them alike."""
    per_slice = max(args.concurrency, args.requests // args.slices)
    runs: list[list[Closed]] = [[] for _ in targets]
    for number in range(args.slices):
        # Rotated, so no server is always the one measured right after another.
        order = [(number + i) % len(targets) for i in range(len(targets))]
        for index in order:
            url, post = targets[index]
            runs[index].append(await closed_loop(url, per_slice, args.concurrency, post=post))
    return [_combined(slices, per_slice) for slices in runs]


def _combined(slices: list[Closed], per_slice: int) -> Closed:
    """One figure for several slices: the rate over their summed time, and the slices'
    worst percentiles (their latencies are not kept)."""
    seconds = sum(per_slice / s.per_second for s in slices)
    return Closed(
        per_slice * len(slices) / seconds,
        statistics.median(s.p50_ms for s in slices),
        max(s.p99_ms for s in slices),
    )


async def measure_round(
    bare_url: str, run_url: str, healthz_url: str, args: argparse.Namespace
) -> Round:
    bare, ingress, floor = await interleaved(
        [(bare_url, True), (run_url, True), (healthz_url, False)], args
    )
    half = await open_loop(
        run_url, ingress.per_second / 2, args.open_seconds, poisson=args.arrivals == "poisson"
    )
    return Round(bare, ingress, floor, half)


async def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    await asyncio.to_thread(process.wait, 30)


async def unbatched(
    database_url: str, hook_id: str, args: argparse.Namespace, work: Path
) -> Closed:
    """The ingress with group commit off: each delivery its own confirmed message."""
    prefix = f"kriten-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    process = start_ingress(database_url, prefix, port, 1, work / "ingress-1.log")
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"{base}/readyz")
        run_url = f"{base}{RUN_PATH}/{hook_id}"
        await closed_loop(run_url, 200, args.concurrency, post=True)
        return await closed_loop(run_url, args.requests, args.concurrency, post=True)
    finally:
        await stop(process)
        await drop_topology(prefix)


async def drop_topology(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        await delete_topology(await connection.channel(), Topology(prefix))


def spread(values: list[float], digits: int = 2) -> str:
    """`median (min-max)` of one figure over the rounds."""
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2]
    return f"{middle:.{digits}f} ({ordered[0]:.{digits}f}-{ordered[-1]:.{digits}f})"


def report(rounds: list[Round], single: Closed | None, args: argparse.Namespace) -> None:
    load_line = f"{args.requests} requests, {args.concurrency} concurrent"
    print(
        f"\ningress throughput: {len(rounds)} rounds; closed loop {load_line}; open loop"
        f" {args.open_seconds:g} s of {args.arrivals} arrivals at half the ingress peak;"
        f" {os.cpu_count()} cores"
    )
    print(
        f"{'round':<7}{'bare/s':>9}{'ingress/s':>11}{'healthz/s':>11}{'vs bare':>9}"
        f"{'vs http':>9}{'open/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    )
    for number, r in enumerate(rounds, 1):
        print(
            f"{number:<7}{r.bare.per_second:>9.0f}{r.ingress.per_second:>11.0f}"
            f"{r.floor.per_second:>11.0f}{r.ingress.per_second / r.bare.per_second:>9.2f}"
            f"{r.ingress.per_second / r.floor.per_second:>9.2f}{r.half.offered:>9.0f}"
            f"{r.half.p50_ms:>9.1f}{r.half.p99_ms:>9.1f}"
        )
    print("median (min-max) over rounds:")
    print(
        "  ingress / bare handler, closed-loop peak:  "
        + spread([r.ingress.per_second / r.bare.per_second for r in rounds])
    )
    print(
        "  ingress / GET /healthz, closed-loop peak:  "
        + spread([r.ingress.per_second / r.floor.per_second for r in rounds])
    )
    print(
        "  time-to-202 at half peak, p50 ms:          " + spread([r.half.p50_ms for r in rounds], 1)
    )
    print(
        "  time-to-202 at half peak, p99 ms:          " + spread([r.half.p99_ms for r in rounds], 1)
    )
    print(
        "  closed-loop p99 ms (ingress | bare):       "
        + spread([r.ingress.p99_ms for r in rounds], 1)
        + " | "
        + spread([r.bare.p99_ms for r in rounds], 1)
    )
    if single is not None:
        last = rounds[-1].ingress.per_second
        print(
            f"  group commit / one message per event:     {last / single.per_second:.2f}"
            f" ({single.per_second:.0f} req/s unbatched, after the rounds)"
        )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingress_throughput")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="per closed-loop run")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop workers")
    parser.add_argument(
        "--slices", type=int, default=4, help="alternating slices per closed-loop peak"
    )
    parser.add_argument("--open-seconds", type=float, default=5.0)
    parser.add_argument("--arrivals", choices=("fixed", "poisson"), default="fixed")
    parser.add_argument("--no-unbatched", dest="unbatched", action="store_false")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kriten-bench-") as tmp:
        work = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
        hook_id = await prepare_database(database_url)
        prefix = f"kriten-bench-{uuid.uuid4().hex[:8]}"
        ingress_port, bare_port = free_port(), free_port()
        ingress = start_ingress(database_url, prefix, ingress_port, 100, work / "ingress.log")
        bare = start_bare(bare_port, work / "bare.log")
        base = f"http://127.0.0.1:{ingress_port}"
        run_url = f"{base}{RUN_PATH}/{hook_id}"
        bare_url = f"http://127.0.0.1:{bare_port}{RUN_PATH}/{hook_id}"
        rounds = []
        try:
            await wait_ready(f"{base}/readyz")
            await wait_ready(f"http://127.0.0.1:{bare_port}/")
            # Warm up: caches, connections, the broker's queues.
            await closed_loop(run_url, 300, args.concurrency, post=True)
            await closed_loop(bare_url, 300, args.concurrency, post=True)
            for _ in range(args.rounds):
                rounds.append(await measure_round(bare_url, run_url, f"{base}/healthz", args))
        finally:
            await stop(ingress)
            await stop(bare)
            await drop_topology(prefix)
        single = await unbatched(database_url, hook_id, args, work) if args.unbatched else None
    report(rounds, single, args)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        # asyncio's loop, as the services run (uvloop did not measurably pay there).
        web.run_app(
            bare_app(), host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None
        )
    else:
        asyncio.run(main())
