"""A kubelet for the fake Kubernetes API server that really runs each pod's task.

For every Job the dispatcher creates in `tests.fake_kube.FakeKube`, it plays the init
container (the clone: the repository is cloned once, locally, beforehand), starts the
task container, runs its `sh -c <command>` as a local process with the container's
`EXTRA_VARS` (after Kubernetes' `$$` → `$` expansion) in a copy of the clone, and
finishes the pod with the real output and exit code. A Job deleted meanwhile
(cancellation) has its process killed and is not finished. So the system test exercises
the real manifests, watch, logs and statuses end to end, with real task output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.fake_kube import FakeKube

NAMESPACE = "kriten"


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kills the process and everything it started (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _expand(value: str) -> str:
    # The only expansion our manifests rely on: `$$` is a literal `$`.
    return value.replace("$$", "$")


class EmulatedKubelet:
    def __init__(self, fake: FakeKube, *, repo_url: str, work: Path) -> None:
        self._fake = fake
        self._work = work
        self._clone = work / "clone"
        subprocess.run(["git", "clone", "-q", repo_url, str(self._clone)], check=True)
        self._seen: set[str] = set()
        self._runs: set[asyncio.Task[None]] = set()
        self._processes: set[asyncio.subprocess.Process] = set()
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stops watching, kills what still runs, and waits for every run to end, so no
        child process or transport outlives the event loop."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for process in self._processes:
            _kill(process)
        await asyncio.gather(*self._runs, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            for namespace, name in list(self._fake.jobs):
                if namespace == NAMESPACE and name not in self._seen:
                    self._seen.add(name)
                    run = asyncio.create_task(self._run(name))
                    self._runs.add(run)
                    run.add_done_callback(self._runs.discard)
            await asyncio.sleep(0.02)

    async def _run(self, job: str) -> None:
        for _ in range(200):
            with contextlib.suppress(KeyError):
                pod = self._fake.pod(job, NAMESPACE)
                break
            await asyncio.sleep(0.01)
        task = _container(pod, "task")
        command = _expand(task["command"][2])
        env = {"PATH": os.environ["PATH"], "HOME": str(self._work)}
        for variable in task.get("env", []):
            if "value" in variable:
                env[variable["name"]] = _expand(variable["value"])
        self._fake.run_init(job, logs="Cloning into '/mnt/repo'...\n", namespace=NAMESPACE)
        self._fake.start_task(job, namespace=NAMESPACE)
        workdir = self._work / job
        shutil.copytree(self._clone, workdir)
        process = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            command,
            cwd=workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # A group of its own, killed whole as a container is: killing `sh` alone left
            # its children holding the output pipe (a cancelled `sleep 120` kept the
            # run, and the test's teardown, waiting two minutes).
            start_new_session=True,
        )
        self._processes.add(process)
        finished = asyncio.create_task(process.communicate())
        try:
            while not finished.done():
                if (NAMESPACE, job) not in self._fake.jobs:  # cancelled: deleted meanwhile
                    _kill(process)
                    await finished
                    return
                await asyncio.sleep(0.02)
        finally:
            self._processes.discard(process)
        output, _ = finished.result()
        if (NAMESPACE, job) not in self._fake.jobs:
            return
        self._fake.finish_pod(
            job,
            exit_code=process.returncode or 0,
            logs={"task": output.decode()},
            namespace=NAMESPACE,
        )
