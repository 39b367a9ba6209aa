"""Ingress throughput: signed webhook deliveries answered 202 (each one confirmed on disk
by RabbitMQ) per second, as ratios against baselines measured in the same run.

- `http floor`: `GET /healthz` on the same server under the same load, the cost of HTTP
  alone; no webhook endpoint can beat it.
- `one message per event`: the ingress with group commit off (`KRITEN_PUBLISH_MAX_BATCH=1`),
  each delivery its own confirmed message.
- `group commit`: the default.

The ingress runs as its own process (`python -m kriten_ingress`) on the machine's
RabbitMQ, with a temporary exchange and queues removed afterwards, and an SQLite
database prepared here. The load generator runs in this process. Usage:
`python -m benchmarks [--requests N] [--concurrency C]` (`make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
from sqlmodel import select

from kriten_api.bootstrap import ensure_builtins
from kriten_api.migrate import upgrade_database
from kriten_common.amqp import Topology, delete_topology
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import Runner, Task, User, Webhook
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_common.webhook_signing import sign_netbox

SECRET = "benchmark-secret-0123456789"
AMQP_URL = os.environ.get("KRITEN_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass
class Result:
    name: str
    per_second: float
    p50_ms: float
    p99_ms: float


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
        "KRITEN_LOG_LEVEL": "warning",
        # Long enough that the benchmark measures the request path, not database reads.
        "KRITEN_CONFIG_CACHE_SECONDS": "600",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kriten_ingress"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"ingress at {url} did not become ready")


async def load(
    name: str, method: str, url: str, requests: int, concurrency: int, signed: bool, expect: int
) -> Result:
    latencies: list[float] = []
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for index in counter:
                body = json.dumps({"event": "updated", "data": {"id": index}}).encode()
                headers = {"X-Hook-Signature": sign_netbox(SECRET, body)} if signed else {}
                started = time.perf_counter()
                async with session.request(
                    method, url, data=body if signed else None, headers=headers
                ) as response:
                    await response.read()
                    if response.status != expect:
                        raise RuntimeError(f"{name}: answer {response.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        name,
        requests / elapsed,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99) - 1] * 1000,
    )


async def run_one(
    label: str,
    max_batch: int,
    database_url: str,
    hook_id: str,
    args: argparse.Namespace,
    work: Path,
) -> list[Result]:
    prefix = f"kriten-bench-{uuid.uuid4().hex[:8]}"
    port = 18000 + max_batch % 1000
    process = start_ingress(
        database_url, prefix, port, max_batch, work / f"ingress-{max_batch}.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        run_url = f"{base}/api/v1/webhooks/run/{hook_id}"
        # Warm up: caches, connections, the broker's queues.
        await load("warm-up", "POST", run_url, 200, args.concurrency, True, 202)
        results = []
        if max_batch != 1:
            results.append(
                await load(
                    "http floor (GET /healthz)",
                    "GET",
                    f"{base}/healthz",
                    args.requests,
                    args.concurrency,
                    False,
                    200,
                )
            )
        results.append(
            await load(label, "POST", run_url, args.requests, args.concurrency, True, 202)
        )
        return results
    finally:
        process.terminate()
        process.wait(timeout=30)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await delete_topology(await connection.channel(), Topology(prefix))


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kriten-bench-") as tmp:
        work = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
        hook_id = await prepare_database(database_url)
        results = await run_one(
            "webhook, group commit (default)", 100, database_url, hook_id, args, work
        )
        results += await run_one(
            "webhook, one message per event", 1, database_url, hook_id, args, work
        )
    floor = results[0].per_second
    single = results[2].per_second
    load_line = f"{args.requests} requests, {args.concurrency} concurrent"
    print(f"\ningress throughput: {load_line}, {os.cpu_count()} cores")
    columns = ("req/s", "p50 ms", "p99 ms", "vs floor", "vs 1/msg")
    print(f"{'scenario':<36}" + "".join(f"{c:>10}" for c in columns))
    for r in results:
        figures = (r.per_second, r.p50_ms, r.p99_ms, r.per_second / floor, r.per_second / single)
        print(f"{r.name:<36}" + "".join(f"{f:>10.2f}" for f in figures))
