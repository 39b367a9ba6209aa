"""Webhook to finished job: how long a signed delivery takes to become a stored result.

Runs the development mode (`python -m kriten_launcher`: the four services in one
process, SQLite, the local executor) on the machine's RabbitMQ, sends NetBox-signed
deliveries one at a time, and measures from the request to the job's `succeeded` as the
API reports it. Baseline, measured in the same run: the same work done directly (a
`git clone` of the same repository and the same command), which no executor can beat.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from kriten_common.webhook_signing import sign_netbox

AMQP_URL = os.environ.get("KRITEN_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
COMMAND = "python examples/hello-kriten/hello-kriten.py"
HELLO = Path(__file__).resolve().parents[1] / "examples" / "hello-kriten" / "hello-kriten.py"
SECRET = "benchmark-secret-0123456789"


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / "examples" / "hello-kriten").mkdir(parents=True)
    shutil.copy(HELLO, repo / "examples" / "hello-kriten" / "hello-kriten.py")
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@kriten.invalid"]
    for command in (["init", "-q", "-b", "main"], ["add", "."], [*identity, "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=repo, check=True)
    return repo


def direct_run(repo: Path, work: Path, body: bytes) -> float:
    """The floor: clone and run the task directly, as the executor must at least do."""
    target = work / uuid.uuid4().hex
    started = time.perf_counter()
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(target)], check=True
    )
    subprocess.run(
        ["sh", "-c", COMMAND],
        cwd=target,
        env={"PATH": os.environ["PATH"], "EXTRA_VARS": body.decode()},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def through_kriten(
    session: aiohttp.ClientSession, base: str, run_url: str, body: bytes
) -> float:
    started = time.perf_counter()
    headers = {"X-Hook-Signature": sign_netbox(SECRET, body)}
    async with session.post(run_url, data=body, headers=headers) as response:
        job_id = (await response.json())["id"]
    while True:
        async with session.get(f"{base}/api/v1/jobs/{job_id}") as response:
            if response.status == 200 and (await response.json())["status"] == "succeeded":
                return time.perf_counter() - started
        await asyncio.sleep(0.01)


def summary(name: str, seconds: list[float], floor: float) -> str:
    p50 = statistics.median(seconds)
    p95 = sorted(seconds)[int(len(seconds) * 0.95) - 1]
    return f"{name:<34}{p50 * 1000:>10.0f}{p95 * 1000:>10.0f}{p50 / floor:>10.2f}"


async def main(samples: int = 20) -> None:
    with tempfile.TemporaryDirectory(prefix="kriten-bench-") as tmp:
        work = Path(tmp)
        repo = make_repo(work)
        bodies = [
            json.dumps({"event": "updated", "data": {"id": i}}).encode() for i in range(samples)
        ]
        direct = [direct_run(repo, work, body) for body in bodies]
        port = 18500
        env = {
            **os.environ,
            "KRITEN_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'kriten.db'}",
            "KRITEN_AMQP_URL": AMQP_URL,
            "KRITEN_AMQP_PREFIX": f"kriten-bench-{uuid.uuid4().hex[:8]}",
            "KRITEN_JOBS_DIR": str(work / "jobs"),
            "KRITEN_PORT": str(port),
            "KRITEN_LOG_LEVEL": "warning",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "kriten_launcher"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        jar = aiohttp.CookieJar(unsafe=True)
        try:
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                for _ in range(300):
                    try:
                        async with session.get(f"{base}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                login = {"username": "root", "password": "root", "provider": "local"}
                await session.post(f"{base}/api/v1/login", json=login)
                runner = {"name": "python", "gitURL": f"file://{repo}", "branch": "main"}
                await session.post(f"{base}/api/v1/runners", json=runner)
                task = {"name": "hello-kriten", "runner": "python", "command": COMMAND}
                await session.post(f"{base}/api/v1/tasks", json=task)
                async with session.post(
                    f"{base}/api/v1/webhooks", json={"task": "hello-kriten", "secret": SECRET}
                ) as response:
                    run_url = (await response.json())["url"]
                await through_kriten(session, base, run_url, b'{"warm": "up"}')
                kriten = [await through_kriten(session, base, run_url, body) for body in bodies]
        finally:
            process.terminate()
            process.wait(timeout=30)
    floor = statistics.median(direct)
    print(f"\nwebhook to finished job (development mode, local executor), {samples} deliveries")
    print(f"{'path':<34}{'p50 ms':>10}{'p95 ms':>10}{'vs direct':>10}")
    print(summary("direct clone + run (baseline)", direct, floor))
    print(summary("webhook → job succeeded (Kriten)", kriten, floor))
