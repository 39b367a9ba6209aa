"""Kubernetes for tests: the fake API server, or a real cluster.

Test modules import what they use from here explicitly (`from tests.kube_fixtures import
kube`). Without `KRITEN_TEST_KUBECONFIG`, `kube` starts `tests.fake_kube.FakeKube` on
127.0.0.1 at a random port and writes a kubeconfig for it, so the real `kubernetes`
client talks to it. With `KRITEN_TEST_KUBECONFIG=/path/to/kubeconfig` (kind, k3s...), the
same tests run against that cluster, in `KRITEN_TEST_NAMESPACE` (default `kriten-test`,
which must exist); tests that script the kubelet need the fake and are skipped there
(`fake_only`).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from kriten_common.kube import KubernetesSettings, load_api_client
from tests.fake_kube import FakeKube

REAL_KUBECONFIG = os.environ.get("KRITEN_TEST_KUBECONFIG") or None
REAL_NAMESPACE = os.environ.get("KRITEN_TEST_NAMESPACE", "kriten-test")

fake_only = pytest.mark.skipif(
    REAL_KUBECONFIG is not None,
    reason="drives pods through their phases: needs the fake API server",
)


@dataclass
class KubeTarget:
    """Where a test's Kubernetes is: a kubeconfig, a namespace, and the fake when it is one."""

    kubeconfig: Path
    namespace: str
    fake: FakeKube | None

    def settings(self, **overrides: Any) -> KubernetesSettings:
        """Settings for this target; fast backoffs and short timeouts, so nothing waits
        long."""
        values: dict[str, Any] = {
            "namespace": self.namespace,
            "kubeconfig": self.kubeconfig,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.5,
            "request_timeout_seconds": 10.0,
            "watch_timeout_seconds": 30,
            "job_ttl_seconds_after_finished": 600,
            # A tiny image that is everywhere, for a real cluster.
            "git_image": "alpine/git:2.45.2",
        }
        values.update(overrides)
        return KubernetesSettings(**values)

    def api_client(self, **overrides: Any) -> Any:
        return load_api_client(self.settings(**overrides))

    @property
    def require_fake(self) -> FakeKube:
        if self.fake is None:
            pytest.skip("needs the fake API server")
        return self.fake


def new_job_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Polls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest_asyncio.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeTarget]:
    if REAL_KUBECONFIG is not None:
        yield KubeTarget(Path(REAL_KUBECONFIG), REAL_NAMESPACE, None)
        return
    fake = FakeKube(bookmark_interval=0.2)
    await fake.start()
    try:
        yield KubeTarget(fake.write_kubeconfig(tmp_path / "kubeconfig"), "kriten", fake)
    finally:
        await fake.stop()
