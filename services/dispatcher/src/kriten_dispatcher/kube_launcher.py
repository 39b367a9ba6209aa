"""The `JobLauncher` of the Kubernetes executor: one `batch/v1` Job (and its Secrets) per job.

Launching, in order: create the job's Secrets (git token, runner secrets), create the
Job, then make the Secrets belong to the Job (ownerReferences) so they go when it goes.
Every step is idempotent, so a redelivered request walks the same path and succeeds:
`AlreadyExists` for an object of the same job id counts as created.

Errors: 408, 429, 5xx, a quota that is full, and connection failures are transient
(`TransientError`, with a delay that grows per job, or the server's `Retry-After`;
the consumer backs off without using an attempt);
any other 4xx is permanent (`PermanentError` carrying the API server's message), and the
Secrets made for a Job that could not be created are then removed.

The official client blocks, so every call runs in a worker thread: a pool of the
launcher's own, `concurrency` threads (the dispatcher's prefetch), since asyncio's default
pool (min(32, cpus + 4) threads) would cap how many launches are in flight. The client's
connection pool is made as large, so no call waits for a connection or opens one that is
thrown away afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kriten_common.kube import (
    ANNOTATION_CANCEL_REQUESTED,
    ANNOTATION_JOB_ID,
    CANCEL_REQUESTED_VALUE,
    KubernetesSettings,
    job_name,
    job_selector,
    load_api_client,
)
from kriten_common.logging import get_logger
from kriten_common.outcomes import PermanentError, RetryableError, TransientError
from kriten_dispatcher.kube_manifest import (
    build_job_manifest,
    build_job_secrets,
    env_secret_name,
    git_secret_name,
    owner_reference_patch,
)
from kriten_dispatcher.ports import JobSpec

log = get_logger(__name__)

# How many jobs' retry counts are remembered for the backoff; older ones start over.
_MAX_TRACKED_ATTEMPTS = 10_000
_TRANSIENT_4XX = frozenset({408, 429})
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)
# The dispatcher's default prefetch: how many launches it has in flight at most.
DEFAULT_CONCURRENCY = 32


def api_message(error: ApiException) -> str:
    """The API server's own explanation (the `message` of its Status body), else the
    HTTP reason."""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            return body[:500]
        if isinstance(status, dict) and isinstance(status.get("message"), str):
            return str(status["message"])
    return str(error.reason or f"HTTP {error.status}")


def api_reason(error: ApiException) -> str | None:
    """The machine-readable `reason` of the Status body (`AlreadyExists`, `NotFound`...)."""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            return None
        if isinstance(status, dict) and isinstance(status.get("reason"), str):
            return str(status["reason"])
    return None


def is_transient(error: ApiException) -> bool:
    status = int(error.status or 0)
    if status == 0 or status >= 500 or status in _TRANSIENT_4XX:
        return True
    # A full ResourceQuota is a 403, but it frees up as other jobs finish.
    return status == 403 and "exceeded quota" in api_message(error)


def _retry_after(error: ApiException) -> float | None:
    headers = error.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class KubernetesJobLauncher:
    """Runs each job as a Kubernetes Job in `settings.namespace`."""

    def __init__(
        self,
        *,
        settings: KubernetesSettings,
        api_client: client.ApiClient | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        """`concurrency`: API calls in flight at once; the consumer's prefetch, so that
        every message it holds can be launched without waiting for a thread. A given
        `api_client` is used as it is (its connection pool is the caller's choice)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._settings = settings
        self._owns_client = api_client is None
        self._api_client = (
            api_client
            if api_client is not None
            else load_api_client(settings, connection_pool_maxsize=concurrency)
        )
        self._threads = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="kriten-kube-launch"
        )
        self._batch = client.BatchV1Api(self._api_client)
        self._core = client.CoreV1Api(self._api_client)
        self._attempts: OrderedDict[str, int] = OrderedDict()

    async def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._settings.request_timeout_seconds)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._threads, functools.partial(function, *args, **kwargs)
        )

    def _retry_delay(self, job_id: str, error: ApiException | None = None) -> float:
        attempt = self._attempts.pop(job_id, 0) + 1
        self._attempts[job_id] = attempt
        while len(self._attempts) > _MAX_TRACKED_ATTEMPTS:
            self._attempts.popitem(last=False)
        server_hint = _retry_after(error) if error is not None else None
        if server_hint is not None:
            return min(server_hint, self._settings.backoff_max_seconds)
        ceiling = min(
            self._settings.backoff_max_seconds,
            self._settings.backoff_initial_seconds * 2.0 ** (attempt - 1),
        )
        # Jitter keeps many jobs that failed together from retrying together.
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311 - not for security

    def _failure(self, job_id: str, action: str, error: BaseException) -> Exception:
        if isinstance(error, ApiException):
            message = f"{action}: {api_message(error)} (HTTP {error.status})"
            if is_transient(error):
                return TransientError(message, delay=self._retry_delay(job_id, error))
            return PermanentError(message)
        return TransientError(f"{action}: {error}", delay=self._retry_delay(job_id))

    async def launch(self, spec: JobSpec) -> None:
        settings = self._settings
        try:
            secrets = build_job_secrets(spec, settings=settings)
        except ValueError as error:
            raise PermanentError(str(error)) from error
        secret_names = [secret["metadata"]["name"] for secret in secrets]
        manifest = build_job_manifest(
            spec,
            settings=settings,
            token_secret_name=git_secret_name(spec.job_id) if spec.git_token else None,
            secrets_secret_name=env_secret_name(spec.job_id) if spec.secrets else None,
        )
        name = manifest["metadata"]["name"]
        action = "create secret"
        try:
            for secret in secrets:
                await self._create_secret(secret)
            action = "create job"
            uid = await self._create_job(spec.job_id, manifest)
            action = "attach secrets to job"
            for secret_name in secret_names:
                await self._call(
                    self._core.patch_namespaced_secret,
                    secret_name,
                    settings.namespace,
                    owner_reference_patch(job=name, job_uid=uid),
                )
        except (ApiException, *_TRANSPORT_ERRORS) as error:
            failure = self._failure(spec.job_id, action, error)
            if isinstance(failure, PermanentError) and action != "attach secrets to job":
                await self._delete_secrets(secret_names)
            log.warning(
                "kubernetes launch failed",
                job_id=spec.job_id,
                job=name,
                action=action,
                error=str(failure),
                retry=isinstance(failure, RetryableError),
            )
            raise failure from error
        self._attempts.pop(spec.job_id, None)
        log.info("kubernetes_job_launched", job_id=spec.job_id, job=name)

    async def _create_secret(self, secret: dict[str, Any]) -> None:
        try:
            await self._call(
                self._core.create_namespaced_secret,
                self._settings.namespace,
                client.V1Secret.from_dict(secret),
            )
        except ApiException as error:
            # Made by an earlier delivery of the same job: its content is the same.
            if error.status == 409 and api_reason(error) == "AlreadyExists":
                return
            raise

    async def _create_job(self, job_id: str, manifest: dict[str, Any]) -> str:
        """Creates the Job (or finds the one an earlier delivery created); returns its uid."""
        namespace = self._settings.namespace
        name = manifest["metadata"]["name"]
        try:
            created = await self._call(
                self._batch.create_namespaced_job, namespace, client.V1Job.from_dict(manifest)
            )
            return str(created.metadata.uid)
        except ApiException as error:
            if not (error.status == 409 and api_reason(error) == "AlreadyExists"):
                raise
        existing = await self._call(self._batch.read_namespaced_job, name, namespace)
        annotations = existing.metadata.annotations or {}
        if annotations.get(ANNOTATION_JOB_ID) != job_id:
            raise PermanentError(
                f"create job: a Job named {name!r} exists for another job "
                f"({annotations.get(ANNOTATION_JOB_ID)!r})"
            )
        log.info("kubernetes_job_already_exists", job_id=job_id, job=name)
        return str(existing.metadata.uid)

    async def _delete_secrets(self, names: list[str]) -> None:
        for name in names:
            try:
                await self._call(
                    self._core.delete_namespaced_secret, name, self._settings.namespace
                )
            except (ApiException, *_TRANSPORT_ERRORS) as error:
                # Labelled with the job, so a sweep can still find it; nothing more to do.
                log.warning("kubernetes_secret_removal_failed", secret=name, error=str(error))

    async def cancel(self, job_id: str) -> bool:
        """Deletes the Job in the foreground: its pod is stopped before the Job goes. The
        job's Secrets go with it (they belong to the Job).

        The job's pods are marked `kriten.io/cancel-requested` first, so the collector
        records the job `cancelled` (a pod deleted without the mark is a failure), and
        again after the delete, for a pod the Job controller made in between."""
        name = job_name(job_id)
        await self._mark_cancelled(job_id)
        try:
            await self._call(
                self._batch.delete_namespaced_job,
                name,
                self._settings.namespace,
                propagation_policy="Foreground",
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise self._failure(job_id, "delete job", error) from error
        except _TRANSPORT_ERRORS as error:
            raise self._failure(job_id, "delete job", error) from error
        await self._mark_cancelled(job_id)
        log.info("kubernetes_job_deleted", job_id=job_id, job=name)
        return True

    async def _mark_cancelled(self, job_id: str) -> None:
        """Annotates every pod of `job_id` not yet marked as cancelled by request. Best
        effort: the cancel is the Job's deletion, which must not wait on this; an unmarked
        pod only makes the job recorded failed ("execution vanished") instead of cancelled."""
        body = {"metadata": {"annotations": {ANNOTATION_CANCEL_REQUESTED: CANCEL_REQUESTED_VALUE}}}
        try:
            pods = await self._call(
                self._core.list_namespaced_pod,
                self._settings.namespace,
                label_selector=job_selector(job_id),
            )
            for pod in pods.items:
                annotations = pod.metadata.annotations or {}
                if annotations.get(ANNOTATION_JOB_ID) != job_id:
                    continue  # labels are lossy: another job's pod
                if annotations.get(ANNOTATION_CANCEL_REQUESTED) == CANCEL_REQUESTED_VALUE:
                    continue
                try:
                    await self._call(
                        self._core.patch_namespaced_pod,
                        pod.metadata.name,
                        self._settings.namespace,
                        body,
                    )
                except ApiException as error:
                    if error.status != 404:  # 404: gone meanwhile
                        raise
        except (ApiException, *_TRANSPORT_ERRORS) as error:
            log.warning("kubernetes_pod_cancel_mark_failed", job_id=job_id, error=str(error))

    async def start(self) -> None:
        # Kubernetes supervises its Jobs itself: nothing to take charge of.
        return None

    async def close(self) -> None:
        # Calls still running end within their request timeout; nothing waits for them.
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            await asyncio.to_thread(self._api_client.close)
