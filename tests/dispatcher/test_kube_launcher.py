"""KubernetesJobLauncher through the real `kubernetes` client, against the fake API server
(or a real cluster with KRITEN_TEST_KUBECONFIG)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes import client

from kriten_common.kube import (
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
    KubernetesSettings,
    load_api_client,
)
from kriten_common.outcomes import PermanentError, RetryableError
from kriten_dispatcher.kube_launcher import KubernetesJobLauncher
from kriten_dispatcher.ports import JobLauncher, JobSpec
from tests.kube_fixtures import KubeTarget, eventually, fake_only, kube, new_job_id

__all__ = ["kube"]

pytestmark = pytest.mark.timeout(60)


def make_spec(**overrides: Any) -> JobSpec:
    values: dict[str, Any] = {
        "job_id": new_job_id("launch"),
        "task": "hello-kriten",
        "owner": "alice",
        "command": "echo hello",
        "image": "busybox:1.36",
        "git_url": "https://github.com/kriten-io/kriten-examples.git",
        "branch": "main",
        "extra_vars": '{"a": 1}',
        "timeout_seconds": 60,
    }
    values.update(overrides)
    return JobSpec(**values)


@pytest_asyncio.fixture
async def launcher(kube: KubeTarget) -> AsyncIterator[KubernetesJobLauncher]:
    launcher = KubernetesJobLauncher(settings=kube.settings())
    try:
        yield launcher
    finally:
        if kube.fake is None:
            await _remove_test_jobs(kube, launcher)
        await launcher.close()


async def _remove_test_jobs(kube: KubeTarget, launcher: KubernetesJobLauncher) -> None:
    """On a real cluster: cancel what these tests launched."""

    def read() -> Any:
        with kube.api_client() as api_client:
            return client.BatchV1Api(api_client).list_namespaced_job(
                kube.namespace, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"
            )

    jobs = await asyncio.to_thread(read)
    for job in jobs.items:
        job_id = (job.metadata.annotations or {}).get("kriten.io/job-id", "")
        if job_id.startswith("launch-"):
            with contextlib.suppress(RetryableError, PermanentError):
                await launcher.cancel(job_id)


async def read_job(kube: KubeTarget, name: str) -> Any:
    def read() -> Any:
        with kube.api_client() as api_client:
            return client.BatchV1Api(api_client).read_namespaced_job(name, kube.namespace)

    return await asyncio.to_thread(read)


async def read_secret(kube: KubeTarget, name: str) -> Any:
    def read() -> Any:
        with kube.api_client() as api_client:
            return client.CoreV1Api(api_client).read_namespaced_secret(name, kube.namespace)

    return await asyncio.to_thread(read)


def test_it_is_a_job_launcher() -> None:
    def accepts(launcher: JobLauncher) -> None: ...

    accepts(KubernetesJobLauncher.__new__(KubernetesJobLauncher))


async def test_launch_creates_the_job(kube: KubeTarget, launcher: KubernetesJobLauncher) -> None:
    spec = make_spec()
    await launcher.launch(spec)
    job = await read_job(kube, spec.job_id)
    assert job.metadata.labels["kriten.io/job-id"] == spec.job_id
    assert job.metadata.annotations["kriten.io/job-id"] == spec.job_id
    assert job.spec.backoff_limit == 0
    assert job.spec.template.spec.containers[0].command == ["sh", "-c", "echo hello"]


async def test_launch_with_token_and_secrets_makes_secrets_owned_by_the_job(
    kube: KubeTarget, launcher: KubernetesJobLauncher
) -> None:
    spec = make_spec(git_token="ghp_launcher_token", secrets={"API_KEY": "s3cret"})
    await launcher.launch(spec)
    job = await read_job(kube, spec.job_id)
    git = await read_secret(kube, f"{spec.job_id}-git")
    env = await read_secret(kube, f"{spec.job_id}-env")
    assert base64.b64decode(git.data["token"]) == b"ghp_launcher_token"
    assert base64.b64decode(env.data["API_KEY"]) == b"s3cret"
    for secret in (git, env):
        (owner,) = secret.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Job", spec.job_id, job.metadata.uid)
    sent = client.ApiClient().sanitize_for_serialization(job)  # type: ignore[no-untyped-call]
    assert "ghp_launcher_token" not in json.dumps(sent)


@fake_only
async def test_nothing_secret_is_sent_in_the_job(
    kube: KubeTarget, launcher: KubernetesJobLauncher
) -> None:
    fake = kube.require_fake
    await launcher.launch(make_spec(git_token="ghp_never_in_a_job", secrets={"K": "never-v"}))
    job_posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/jobs")]
    assert job_posts
    for request in job_posts:
        assert "ghp_never_in_a_job" not in request.body
        assert "never-v" not in request.body


async def test_redelivery_is_success(kube: KubeTarget, launcher: KubernetesJobLauncher) -> None:
    spec = make_spec(git_token="tok", secrets={"K": "v"})
    await launcher.launch(spec)
    first = await read_job(kube, spec.job_id)
    await launcher.launch(spec)
    again = await read_job(kube, spec.job_id)
    assert again.metadata.uid == first.metadata.uid


@fake_only
async def test_redelivery_after_a_crash_between_job_and_secret_ownership(
    kube: KubeTarget, launcher: KubernetesJobLauncher
) -> None:
    fake = kube.require_fake
    spec = make_spec(git_token="tok")
    fake.fail("PATCH", r"/secrets/", 503, reason="ServiceUnavailable", message="etcd leader lost")
    with pytest.raises(RetryableError):
        await launcher.launch(spec)
    assert ("kriten", spec.job_id) in fake.jobs
    await launcher.launch(spec)
    secret = fake.secrets[("kriten", f"{spec.job_id}-git")]
    job = fake.jobs[("kriten", spec.job_id)]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]


@fake_only
async def test_a_name_taken_by_another_job_is_permanent(
    kube: KubeTarget, launcher: KubernetesJobLauncher
) -> None:
    fake = kube.require_fake
    spec = make_spec()
    await launcher.launch(spec)
    fake.jobs[("kriten", spec.job_id)]["metadata"]["annotations"]["kriten.io/job-id"] = "other"
    with pytest.raises(PermanentError, match="exists for another job"):
        await launcher.launch(spec)


async def test_missing_namespace_is_permanent_with_the_api_message(kube: KubeTarget) -> None:
    launcher = KubernetesJobLauncher(settings=kube.settings(namespace="kriten-no-such-ns"))
    try:
        with pytest.raises(PermanentError, match=r'namespaces "kriten-no-such-ns" not found'):
            await launcher.launch(make_spec())
    finally:
        await launcher.close()


@fake_only
async def test_invalid_job_is_permanent_and_secrets_are_removed(
    kube: KubeTarget, launcher: KubernetesJobLauncher
) -> None:
    fake = kube.require_fake
    fake.fail(
        "POST",
        r"/jobs$",
        422,
        reason="Invalid",
        message='Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value',
    )
    spec = make_spec(git_token="tok", secrets={"K": "v"})
    with pytest.raises(PermanentError, match="Required value") as raised:
        await launcher.launch(spec)
    assert "HTTP 422" in str(raised.value)
    assert not [key for key in fake.secrets if key[1].startswith(spec.job_id)]


@fake_only
@pytest.mark.parametrize("status", [401, 403, 400])
async def test_other_client_errors_are_permanent(
    kube: KubeTarget, launcher: KubernetesJobLauncher, status: int
) -> None:
    kube.require_fake.fail("POST", r"/jobs$", status, reason="Forbidden", message="no way")
    with pytest.raises(PermanentError, match="no way"):
        await launcher.launch(make_spec())


async def test_secret_keys_kubernetes_refuses_are_permanent(
    launcher: KubernetesJobLauncher,
) -> None:
    with pytest.raises(PermanentError, match="secret key"):
        await launcher.launch(make_spec(secrets={"not valid": "v"}))


@fake_only
@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (503, "ServiceUnavailable", "the server is currently unable to handle the request"),
        (500, "InternalError", "etcdserver: request timed out"),
        (429, "TooManyRequests", "too many requests"),
        (403, "Forbidden", 'jobs.batch "x" is forbidden: exceeded quota: jobs, requested: count'),
    ],
)
async def test_transient_failures_are_retryable(
    kube: KubeTarget, launcher: KubernetesJobLauncher, status: int, reason: str, message: str
) -> None:
    kube.require_fake.fail("POST", r"/jobs$", status, reason=reason, message=message)
    with pytest.raises(RetryableError) as raised:
        await launcher.launch(make_spec())
    assert message in str(raised.value)
    assert 0 < raised.value.delay <= 0.5


@fake_only
async def test_api_unavailable_then_back(kube: KubeTarget, launcher: KubernetesJobLauncher) -> None:
    fake = kube.require_fake
    spec = make_spec(git_token="tok")
    fake.set_unavailable()
    delays = []
    for _ in range(4):
        with pytest.raises(RetryableError) as raised:
            await launcher.launch(spec)
        delays.append(raised.value.delay)
    # The backoff grows per job (with jitter: each ceiling is twice the last).
    assert delays[-1] > delays[0] / 2
    assert max(delays) <= 0.5
    fake.set_unavailable(False)
    await launcher.launch(spec)
    assert ("kriten", spec.job_id) in fake.jobs


@fake_only
async def test_retry_after_is_honoured(kube: KubeTarget, launcher: KubernetesJobLauncher) -> None:
    kube.require_fake.fail(
        "POST",
        r"/jobs$",
        429,
        reason="TooManyRequests",
        message="slow down",
        headers={"Retry-After": "0.25"},
    )
    with pytest.raises(RetryableError) as raised:
        await launcher.launch(make_spec())
    assert raised.value.delay == 0.25


async def test_connection_refused_is_retryable(kube: KubeTarget, tmp_path: Any) -> None:
    config = tmp_path / "nowhere"
    config.write_text(kube.kubeconfig.read_text().replace(_server_of(kube), "http://127.0.0.1:9"))
    launcher = KubernetesJobLauncher(
        settings=kube.settings(kubeconfig=config, request_timeout_seconds=2.0)
    )
    try:
        with pytest.raises(RetryableError):
            await launcher.launch(make_spec())
    finally:
        await launcher.close()


def _server_of(kube: KubeTarget) -> str:
    for line in kube.kubeconfig.read_text().splitlines():
        if "server:" in line:
            return line.split("server:", 1)[1].strip()
    raise AssertionError("no server in kubeconfig")


async def test_cancel_deletes_the_job(kube: KubeTarget, launcher: KubernetesJobLauncher) -> None:
    spec = make_spec()
    await launcher.launch(spec)
    assert await launcher.cancel(spec.job_id) is True

    async def gone() -> bool:
        try:
            job = await read_job(kube, spec.job_id)
        except client.ApiException as error:
            return bool(error.status == 404)
        # Foreground deletion: the Job may linger, marked, until its pod is gone.
        return job.metadata.deletion_timestamp is not None

    await eventually(gone, timeout=30)


@fake_only
async def test_cancel_is_foreground_and_takes_pod_and_secrets(
    kube: KubeTarget, launcher: KubernetesJobLauncher
) -> None:
    fake = kube.require_fake
    spec = make_spec(git_token="tok", secrets={"K": "v"})
    await launcher.launch(spec)
    fake.start_task(spec.job_id)
    assert await launcher.cancel(spec.job_id) is True
    (delete,) = [r for r in fake.requests if r.method == "DELETE" and "/jobs/" in r.path]
    sent = {**delete.query, **(json.loads(delete.body) if delete.body else {})}
    assert sent["propagationPolicy"] == "Foreground"
    assert ("kriten", spec.job_id) not in fake.jobs
    assert not fake.pods
    assert not fake.secrets


async def test_cancel_of_unknown_job_is_false(launcher: KubernetesJobLauncher) -> None:
    assert await launcher.cancel(new_job_id("missing")) is False


@fake_only
async def test_cancel_while_unavailable_is_retryable(
    kube: KubeTarget, launcher: KubernetesJobLauncher
) -> None:
    kube.require_fake.set_unavailable()
    with pytest.raises(RetryableError):
        await launcher.cancel("any")


async def test_launcher_uses_a_client_it_is_given(kube: KubeTarget) -> None:
    api_client = load_api_client(kube.settings())
    launcher = KubernetesJobLauncher(settings=kube.settings(), api_client=api_client)
    spec = make_spec()
    try:
        await launcher.launch(spec)
        await launcher.close()
        # Not its client to close: still usable.
        api = client.BatchV1Api(api_client)
        job: Any = await asyncio.to_thread(api.read_namespaced_job, spec.job_id, kube.namespace)
        assert job.metadata.name == spec.job_id
    finally:
        if kube.fake is None:
            cleaner = KubernetesJobLauncher(settings=kube.settings())
            await _remove_test_jobs(kube, cleaner)
            await cleaner.close()
        api_client.close()  # type: ignore[no-untyped-call]


async def test_default_kubeconfig_when_none_is_configured(
    kube: KubeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No kubeconfig setting and not in a cluster: the default kubeconfig ($KUBECONFIG)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    settings = kube.settings(kubeconfig=None)
    with load_api_client(settings) as api_client:
        api = client.BatchV1Api(api_client)
        jobs: Any = await asyncio.to_thread(api.list_namespaced_job, kube.namespace, limit=1)
    assert jobs.kind == "JobList"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRITEN_NAMESPACE", "jobs")
    monkeypatch.setenv("KRITEN_KUBECONFIG", "/etc/kriten/kubeconfig")
    monkeypatch.setenv("KRITEN_JOB_TTL_SECONDS_AFTER_FINISHED", "60")
    monkeypatch.setenv("KRITEN_MEMORY_LIMIT", "1Gi")
    monkeypatch.setenv("KRITEN_RUN_AS_NON_ROOT", "false")
    monkeypatch.setenv("KRITEN_UNRELATED", "ignored")
    settings = KubernetesSettings()
    assert settings.namespace == "jobs"
    assert str(settings.kubeconfig) == "/etc/kriten/kubeconfig"
    assert settings.job_ttl_seconds_after_finished == 60
    assert settings.memory_limit == "1Gi"
    assert settings.run_as_non_root is False
    assert settings.git_image == "alpine/git:2.45.2"


@fake_only
async def test_launches_run_concurrently_up_to_the_configured_concurrency(
    kube: KubeTarget, caplog: pytest.LogCaptureFixture
) -> None:
    # More than asyncio's default thread pool (min(32, cpus + 4)) and the client's
    # default connection pool (cpus * 5) on a small machine.
    count = 40
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    fake = kube.require_fake
    fake.hold_job_creates(count)
    launcher = KubernetesJobLauncher(settings=kube.settings(), concurrency=count)
    try:
        await asyncio.gather(*(launcher.launch(make_spec()) for _ in range(count)))
    finally:
        await launcher.close()
    assert fake.max_concurrent_job_creates == count
    assert len(fake.jobs) == count
    # The connection pool is as large: no connection was opened only to be thrown away.
    assert "Connection pool is full" not in caplog.text


@fake_only
async def test_concurrency_bounds_the_launches_in_flight(kube: KubeTarget) -> None:
    fake = kube.require_fake
    launcher = KubernetesJobLauncher(settings=kube.settings(), concurrency=3)
    fake.hold_job_creates(3)
    try:
        await asyncio.gather(*(launcher.launch(make_spec()) for _ in range(12)))
    finally:
        await launcher.close()
    assert fake.max_concurrent_job_creates == 3
    assert len(fake.jobs) == 12


def test_concurrency_must_be_positive() -> None:
    with client.ApiClient() as api_client, pytest.raises(ValueError, match="concurrency"):
        KubernetesJobLauncher(settings=KubernetesSettings(), api_client=api_client, concurrency=0)
