"""A small fake Kubernetes API server (aiohttp) that the real `kubernetes` client talks to.

It speaks the REST protocol for what Kriten uses, with the API server's own shapes:
`Status` bodies for errors (`AlreadyExists` 409, `NotFound` 404, `Invalid` 422,
`Expired` 410), resource versions, label selectors, chunked newline-delimited watch
streams with `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`/`ERROR` events, list pagination
(`limit`/`continue`), pod logs with `limitBytes` and `follow` (a chunked stream that
carries what the container prints until it stops), merge patches, and bearer tokens.

- Jobs: create (validated against the vendored `batch/v1` Job schema, as the API server
  validates), get, list, delete (with `propagationPolicy`; dependents go with the Job,
  through their `ownerReferences`).
- Secrets: create, get, patch, delete.
- Pods: list, watch, get, patch, delete, log.

It also plays the Job controller and the kubelet: creating a Job creates its pod
(`Pending`), and the test drives the pod with methods of `FakeKube` (`run_init`,
`start_task`, `finish_pod`, `image_pull_error`, `deadline_exceeded`, ...). And it
misbehaves on demand: `set_unavailable()` (503 for everything, watches dropped),
`compact()` (older resource versions get 410), `drop_watches()`, `drop_log_streams()`,
`fail()` (one-off errors on matching requests). It counts what a test may assert on:
Job creations and log streams in flight at once (`max_concurrent_job_creates`,
`max_concurrent_log_follows`), and `hold_job_creates(n)` keeps creations waiting until
`n` are in flight together.

Everything runs on the test's event loop: call the kubelet methods from the test body,
never the blocking client itself (that would block the server too).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import re
import string
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from aiohttp import web

SCHEMA_DIR = Path(__file__).parent / "data" / "kubernetes-json-schema" / "v1.32.0-local-strict"

Json = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now_rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, details: Json | None = None) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def status_response(
    code: int,
    reason: str,
    message: str,
    details: Json | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        status_body(code, reason, message, details), status=code, headers=headers or None
    )


# -- label selectors -------------------------------------------------------------------


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def selector_matches(selector: str | None, labels: Mapping[str, str] | None) -> bool:
    """The label selector grammar: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
    `k notin (a,b)`, joined by commas (all must hold)."""
    labels = labels or {}
    for requirement in _split_selector(selector or ""):
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", requirement):
            key, operator, values = match.groups()
            allowed = {v.strip() for v in values.split(",")}
            inside = labels.get(key) in allowed
            if (operator == "in") != inside:
                return False
        elif "!=" in requirement:
            key, value = requirement.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in requirement:
            key, value = requirement.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches are applied the same way here:
    Kriten only patches maps and whole lists)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- the server ------------------------------------------------------------------------


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    reason: str
    message: str
    times: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodEvent:
    resource_version: int
    kind: str  # ADDED, MODIFIED, DELETED
    namespace: str
    old: Json | None
    new: Json


class _Watcher:
    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.dropped = False


class _Gauge:
    """How many of something are in flight, and the most there ever were."""

    def __init__(self) -> None:
        self.current = 0
        self.max = 0
        self.changed = asyncio.Event()

    def __enter__(self) -> None:
        self.current += 1
        self.max = max(self.max, self.current)
        self.changed.set()

    def __exit__(self, *_: object) -> None:
        self.current -= 1
        self.changed.set()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: str


class FakeKube:
    """The fake API server and the kubelet behind it. `await start()`, then point a
    kubeconfig at `url` (`write_kubeconfig`)."""

    def __init__(
        self,
        *,
        namespaces: Iterable[str] = ("kriten", "default"),
        token: str = "fake-token",
        bookmark_interval: float = 0.5,
        graceful_deletion_seconds: float = 0.0,
    ) -> None:
        self.namespaces = set(namespaces)
        self.token = token
        self.bookmark_interval = bookmark_interval
        # How long a gracefully deleted pod stays (stopped, readable) before it is gone.
        self.graceful_deletion_seconds = graceful_deletion_seconds
        self.jobs: dict[Key, Json] = {}
        self.secrets: dict[Key, Json] = {}
        self.pods: dict[Key, Json] = {}
        self.logs: dict[tuple[str, str, str], bytes] = {}
        self.history: list[PodEvent] = []
        self.requests: list[RecordedRequest] = []
        self.watch_requests = 0
        self._rv = 100
        self._compacted_before = 0
        self._watchers: set[_Watcher] = set()
        # Log streams (follow=true): woken whenever a log or a pod changes.
        self._log_followers: set[_Watcher] = set()
        self._job_creates = _Gauge()
        self._log_follows = _Gauge()
        self._create_hold: tuple[int, float] | None = None
        self._faults: list[_Fault] = []
        self._unavailable = False
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._schemas = {
            kind: jsonschema.Draft202012Validator(
                json.loads((SCHEMA_DIR / f"{kind}.json").read_text())
            )
            for kind in ("job-batch-v1", "secret-v1")
        }

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024**2)
        batch = "/apis/batch/v1/namespaces/{ns}/jobs"
        core = "/api/v1/namespaces/{ns}"
        app.router.add_get("/version", self._version)
        app.router.add_post(batch, self._create_job)
        app.router.add_get(batch, self._list_jobs)
        app.router.add_get(batch + "/{name}", self._get_job)
        app.router.add_delete(batch + "/{name}", self._delete_job)
        app.router.add_post(core + "/secrets", self._create_secret)
        app.router.add_get(core + "/secrets/{name}", self._get_secret)
        app.router.add_patch(core + "/secrets/{name}", self._patch_secret)
        app.router.add_delete(core + "/secrets/{name}", self._delete_secret)
        app.router.add_get(core + "/pods", self._list_pods)
        app.router.add_get(core + "/pods/{name}", self._get_pod)
        app.router.add_patch(core + "/pods/{name}", self._patch_pod)
        app.router.add_delete(core + "/pods/{name}", self._delete_pod)
        app.router.add_get(core + "/pods/{name}/log", self._pod_log)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: Path, *, namespace: str = "kriten") -> Path:
        path.write_text(kubeconfig_yaml(self.url, token=self.token, namespace=namespace))
        return path

    # -- misbehaviour -------------------------------------------------------------------

    def set_unavailable(self, unavailable: bool = True) -> None:
        """While set, every request gets `503 ServiceUnavailable` and open watches end."""
        self._unavailable = unavailable
        if unavailable:
            self.drop_watches()

    def drop_watches(self) -> None:
        """Ends every open watch stream (as a restarting API server or a proxy does)."""
        for watcher in list(self._watchers):
            watcher.dropped = True
            watcher.wake.set()
        self.drop_log_streams()

    def drop_log_streams(self) -> None:
        """Cuts every open log stream (`follow=true`) mid-way, as a dying proxy does."""
        for follower in list(self._log_followers):
            follower.dropped = True
            follower.wake.set()

    def hold_job_creates(self, count: int, *, at_most: float = 10.0) -> None:
        """Job creations wait until `count` of them are in flight at once (or `at_most`
        seconds, so that a client that never gets there fails its assertion instead of
        hanging), then all go on."""
        self._create_hold = (count, at_most)

    @property
    def max_concurrent_job_creates(self) -> int:
        return self._job_creates.max

    @property
    def max_concurrent_log_follows(self) -> int:
        return self._log_follows.max

    @property
    def log_follows_in_flight(self) -> int:
        return self._log_follows.current

    def compact(self) -> None:
        """Forgets the event history: a watch from an older version now gets 410 Gone."""
        self._compacted_before = self._rv
        self.history = [e for e in self.history if e.resource_version >= self._rv]

    def fail(
        self,
        method: str,
        path_pattern: str,
        status: int,
        *,
        reason: str = "InternalError",
        message: str = "injected failure",
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next `times` requests matching `method` and the `path_pattern` regex
        (searched in the path) fail with a Status of `status`."""
        self._faults.append(
            _Fault(
                method.upper(),
                re.compile(path_pattern),
                status,
                reason,
                message,
                times,
                headers or {},
            )
        )

    # -- the kubelet's part -------------------------------------------------------------

    def pod_key(self, job: str, namespace: str = "kriten") -> Key:
        for (ns, name), pod in self.pods.items():
            labels = pod["metadata"].get("labels", {})
            if ns == namespace and labels.get("batch.kubernetes.io/job-name") == job:
                return (ns, name)
        raise KeyError(f"no pod for job {job!r}")

    def pod(self, job: str, namespace: str = "kriten") -> Json:
        return copy.deepcopy(self.pods[self.pod_key(job, namespace)])

    def update_pod(
        self, job: str, change: Callable[[Json], None], namespace: str = "kriten"
    ) -> None:
        """Applies `change` to a copy of the job's pod and stores it (a MODIFIED event)."""
        key = self.pod_key(job, namespace)
        old = self.pods[key]
        new = copy.deepcopy(old)
        change(new)
        self._store_pod(key, old, new, "MODIFIED")

    def _container_names(self, pod: Json) -> tuple[list[str], list[str]]:
        spec = pod["spec"]
        return (
            [c["name"] for c in spec.get("initContainers", [])],
            [c["name"] for c in spec.get("containers", [])],
        )

    def _image_of(self, pod: Json, name: str) -> str:
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            if c["name"] == name:
                return str(c["image"])
        raise KeyError(name)

    def _container_status(self, pod: Json, name: str, state: Json, **extra: Any) -> Json:
        running_or_done = "running" in state or "terminated" in state
        status: Json = {
            "name": name,
            "image": self._image_of(pod, name),
            "imageID": f"docker.io/library/{name}@sha256:{'0' * 64}" if running_or_done else "",
            "ready": "running" in state,
            "restartCount": 0,
            "started": "running" in state,
            "state": state,
        }
        if running_or_done:
            status["containerID"] = f"containerd://{uuid.uuid4().hex}"
        status.update(extra)
        return status

    def _set_status(self, pod: Json, key: str, name: str, status: Json) -> None:
        statuses = [s for s in pod["status"].get(key, []) if s["name"] != name]
        statuses.append(status)
        pod["status"][key] = statuses

    def _schedule(self, pod: Json) -> None:
        pod["spec"].setdefault("nodeName", "fake-node")
        pod["status"].setdefault("startTime", now_rfc3339())
        pod["status"].setdefault("hostIP", "10.0.0.1")
        pod["status"].setdefault("podIP", "10.244.0.10")

    def set_logs(
        self, job: str, container: str, text: str | bytes, namespace: str = "kriten"
    ) -> None:
        _, name = self.pod_key(job, namespace)
        self.logs[(namespace, name, container)] = text.encode() if isinstance(text, str) else text
        self._wake_log_followers()

    def append_logs(
        self, job: str, container: str, text: str | bytes, namespace: str = "kriten"
    ) -> None:
        """The container prints `text` (seen at once by the streams following its log)."""
        _, name = self.pod_key(job, namespace)
        key = (namespace, name, container)
        self.logs[key] = self.logs.get(key, b"") + (
            text.encode() if isinstance(text, str) else text
        )
        self._wake_log_followers()

    def _wake_log_followers(self) -> None:
        for follower in self._log_followers:
            follower.wake.set()

    def run_init(
        self, job: str, *, logs: str = "", exit_code: int = 0, namespace: str = "kriten"
    ) -> None:
        """The init container runs to completion; a non-zero exit fails the pod (the
        restart policy is Never)."""

        def change(pod: Json) -> None:
            self._schedule(pod)
            init_names, task_names = self._container_names(pod)
            started = now_rfc3339()
            for name in init_names:
                terminated = {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": now_rfc3339(),
                    "containerID": f"containerd://{uuid.uuid4().hex}",
                }
                if exit_code != 0 and logs:
                    terminated["message"] = logs[-2048:]
                self._set_status(
                    pod,
                    "initContainerStatuses",
                    name,
                    self._container_status(pod, name, {"terminated": terminated}),
                )
            for name in task_names:
                self._set_status(
                    pod,
                    "containerStatuses",
                    name,
                    self._container_status(pod, name, {"waiting": {"reason": "PodInitializing"}}),
                )
            if exit_code != 0:
                pod["status"]["phase"] = "Failed"
                pod["status"]["conditions"] = [
                    {
                        "type": "Initialized",
                        "status": "False",
                        "reason": "ContainersNotInitialized",
                        "lastTransitionTime": now_rfc3339(),
                    }
                ]

        init_names, _ = self._container_names(self.pods[self.pod_key(job, namespace)])
        for name in init_names:
            self.set_logs(job, name, logs, namespace)
        self.update_pod(job, change, namespace)
        if exit_code != 0:
            self._job_finished(job, namespace, succeeded=False)

    def start_task(self, job: str, *, logs: str = "", namespace: str = "kriten") -> None:
        """The task container starts (after a successful clone, if not run yet)."""
        pod = self.pods[self.pod_key(job, namespace)]
        if not pod["status"].get("initContainerStatuses") and pod["spec"].get("initContainers"):
            self.run_init(job, namespace=namespace)

        def change(pod: Json) -> None:
            self._schedule(pod)
            _, task_names = self._container_names(pod)
            for name in task_names:
                self._set_status(
                    pod,
                    "containerStatuses",
                    name,
                    self._container_status(pod, name, {"running": {"startedAt": now_rfc3339()}}),
                )
            pod["status"]["phase"] = "Running"

        _, task_names = self._container_names(pod)
        for name in task_names:
            self.set_logs(job, name, logs, namespace)
        self.update_pod(job, change, namespace)

    def finish_pod(
        self,
        job: str,
        *,
        exit_code: int = 0,
        logs: Mapping[str, str] | None = None,
        reason: str | None = None,
        namespace: str = "kriten",
    ) -> None:
        """The task ends with `exit_code` (`reason` e.g. `OOMKilled`); `logs` maps
        container names to their whole output. Runs the clone and starts the task first
        if the test did not."""
        logs = dict(logs or {})
        pod = self.pods[self.pod_key(job, namespace)]
        init_names, _ = self._container_names(pod)
        if pod["spec"].get("initContainers") and not pod["status"].get("initContainerStatuses"):
            self.run_init(job, logs=logs.pop(init_names[0], ""), namespace=namespace)
        for name in init_names:
            if name in logs:
                self.set_logs(job, name, logs.pop(name), namespace)
        if pod["status"].get("phase") != "Running":
            self.start_task(job, namespace=namespace)
        for name, text in logs.items():
            self.set_logs(job, name, text, namespace)

        def change(pod: Json) -> None:
            for status in pod["status"].get("containerStatuses", []):
                started = status["state"].get("running", {}).get("startedAt", now_rfc3339())
                status["state"] = {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                        "startedAt": started,
                        "finishedAt": now_rfc3339(),
                        "containerID": status.get("containerID", ""),
                    }
                }
                status["ready"] = False
                status["started"] = False
            pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"

        self.update_pod(job, change, namespace)
        self._job_finished(job, namespace, succeeded=exit_code == 0)

    def image_pull_error(
        self,
        job: str,
        *,
        reason: str = "ImagePullBackOff",
        container: str | None = None,
        age_seconds: float = 0,
        namespace: str = "kriten",
    ) -> None:
        """A container cannot get its image (the task's, unless `container` says). The
        pod stays Pending; `age_seconds` backdates its creation."""

        def change(pod: Json) -> None:
            self._schedule(pod)
            init_names, task_names = self._container_names(pod)
            name = container or task_names[0]
            key = "initContainerStatuses" if name in init_names else "containerStatuses"
            if key == "containerStatuses":
                for init in init_names:
                    self._set_status(
                        pod,
                        "initContainerStatuses",
                        init,
                        self._container_status(
                            pod,
                            init,
                            {
                                "terminated": {
                                    "exitCode": 0,
                                    "reason": "Completed",
                                    "startedAt": now_rfc3339(),
                                    "finishedAt": now_rfc3339(),
                                }
                            },
                        ),
                    )
            image = self._image_of(pod, name)
            message = (
                f'Back-off pulling image "{image}"'
                if reason == "ImagePullBackOff"
                else f'failed to pull and unpack image "{image}": not found'
            )
            self._set_status(
                pod,
                key,
                name,
                self._container_status(
                    pod, name, {"waiting": {"reason": reason, "message": message}}
                ),
            )
            if age_seconds:
                created = datetime.now(UTC) - timedelta(seconds=age_seconds)
                pod["metadata"]["creationTimestamp"] = now_rfc3339(created)

        self.update_pod(job, change, namespace)

    def deadline_exceeded(self, job: str, *, namespace: str = "kriten") -> None:
        """The kubelet enforces `activeDeadlineSeconds`: kills the task, fails the pod."""

        def change(pod: Json) -> None:
            for status in pod["status"].get("containerStatuses", []):
                if "running" in status["state"]:
                    status["state"] = {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "Error",
                            "startedAt": status["state"]["running"]["startedAt"],
                            "finishedAt": now_rfc3339(),
                        }
                    }
            pod["status"]["phase"] = "Failed"
            pod["status"]["reason"] = "DeadlineExceeded"
            pod["status"]["message"] = (
                "Pod was active on the node longer than the specified deadline"
            )

        self.update_pod(job, change, namespace)
        self._job_finished(job, namespace, succeeded=False)

    def expire_job(self, job: str, namespace: str = "kriten") -> None:
        """The TTL controller removes a finished Job, and its pod and Secrets with it."""
        self.delete_job(job, graceful=False, namespace=namespace)

    def delete_job(self, job: str, *, graceful: bool = True, namespace: str = "kriten") -> None:
        """Deletes a Job and its dependents as a client would; `graceful=False` removes
        the pod at once, with no stopped state in between."""
        self._delete_job_now((namespace, job), graceful=graceful)

    def other_activity(self, changes: int = 1) -> None:
        """Other objects in the cluster change: the resource version moves on."""
        for _ in range(changes):
            self._next_rv()

    def _job_finished(self, job: str, namespace: str, *, succeeded: bool) -> None:
        stored = self.jobs.get((namespace, job))
        if stored is None:
            return
        status = stored.setdefault("status", {})
        status["succeeded" if succeeded else "failed"] = 1
        status.pop("active", None)
        if succeeded:
            status["completionTime"] = now_rfc3339()
        kind = "Complete" if succeeded else "Failed"
        status["conditions"] = [
            {
                "type": kind,
                "status": "True",
                "lastProbeTime": now_rfc3339(),
                "lastTransitionTime": now_rfc3339(),
            }
        ]
        stored["metadata"]["resourceVersion"] = self._next_rv()

    # -- storage and events -------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    @property
    def resource_version(self) -> int:
        return self._rv

    def _store_pod(self, key: Key, old: Json | None, new: Json, kind: str) -> None:
        new["metadata"]["resourceVersion"] = self._next_rv()
        if kind == "DELETED":
            self.pods.pop(key, None)
        else:
            self.pods[key] = new
        self.history.append(
            PodEvent(self._rv, kind, key[0], copy.deepcopy(old), copy.deepcopy(new))
        )
        for watcher in self._watchers:
            watcher.wake.set()
        self._wake_log_followers()

    def _new_meta(self, body: Json, namespace: str) -> Json:
        meta: Json = body.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        return meta

    def _create_pod_for(self, job: Json) -> None:
        namespace = job["metadata"]["namespace"]
        job_name = job["metadata"]["name"]
        template = copy.deepcopy(job["spec"]["template"])
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{job_name[:57]}-{suffix}"
        metadata = template.get("metadata", {})
        labels = dict(metadata.get("labels", {}))
        labels.update(
            {
                "batch.kubernetes.io/job-name": job_name,
                "job-name": job_name,
                "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
                "controller-uid": job["metadata"]["uid"],
            }
        )
        spec = template["spec"]
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        for container in spec.get("initContainers", []) + spec["containers"]:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
        pod: Json = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": f"{job_name}-",
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(),
                "labels": labels,
                "annotations": dict(metadata.get("annotations", {})),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": ["batch.kubernetes.io/job-tracking"],
            },
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        }
        self._store_pod((namespace, name), None, pod, "ADDED")

    def _owned_by(self, obj: Json, uid: str) -> bool:
        return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))

    def _delete_pod_now(self, key: Key, *, graceful: bool) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        if graceful and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            # The kubelet's part of a graceful deletion: mark it, stop the containers
            # (SIGTERM: 143), report the pod Failed, then it is removed.
            old = pod
            marked = copy.deepcopy(pod)
            deleted_at = datetime.now(UTC) + timedelta(seconds=30)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339(deleted_at)
            marked["metadata"]["deletionGracePeriodSeconds"] = 30
            self._store_pod(key, old, marked, "MODIFIED")
            stopped = copy.deepcopy(marked)
            for status in stopped["status"].get("containerStatuses", []):
                running = status["state"].get("running")
                if running:
                    status["state"] = {
                        "terminated": {
                            "exitCode": 143,
                            "reason": "Error",
                            "startedAt": running["startedAt"],
                            "finishedAt": now_rfc3339(),
                        }
                    }
            stopped["status"]["phase"] = "Failed"
            self._store_pod(key, marked, stopped, "MODIFIED")
            if self.graceful_deletion_seconds > 0:
                asyncio.get_running_loop().call_later(
                    self.graceful_deletion_seconds, self._remove_pod, key
                )
                return
        self._remove_pod(key)

    def _remove_pod(self, key: Key) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        final = copy.deepcopy(pod)
        final["metadata"]["finalizers"] = []
        final["metadata"].setdefault("deletionTimestamp", now_rfc3339())
        self._store_pod(key, pod, final, "DELETED")

    def _delete_job_now(self, key: Key, *, graceful: bool, orphan: bool = False) -> None:
        job = self.jobs.pop(key, None)
        if job is None:
            return
        uid = job["metadata"]["uid"]
        if orphan:
            return
        for pod_key in [k for k, p in self.pods.items() if self._owned_by(p, uid)]:
            self._delete_pod_now(pod_key, graceful=graceful)
        for secret_key in [k for k, s in self.secrets.items() if self._owned_by(s, uid)]:
            self.secrets.pop(secret_key)

    # -- HTTP ---------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        body = await request.text() if request.can_read_body else ""
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), body)
        )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status_response(401, "Unauthorized", "Unauthorized")
        if self._unavailable:
            return status_response(
                503, "ServiceUnavailable", "the server is currently unable to handle the request"
            )
        for fault in self._faults:
            if (
                fault.times > 0
                and fault.method == request.method
                and fault.path.search(request.path)
            ):
                fault.times -= 1
                return status_response(
                    fault.status, fault.reason, fault.message, headers=fault.headers
                )
        namespace = request.match_info.get("ns")
        if namespace is not None and namespace not in self.namespaces:
            return status_response(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake"})

    async def _json_body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except ValueError as error:
            raise web.HTTPBadRequest(
                text=json.dumps(status_body(400, "BadRequest", f"invalid JSON: {error}")),
                content_type="application/json",
            ) from error

    def _invalid(self, kind: str, name: str, causes: list[str]) -> web.Response:
        return status_response(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: ' + "; ".join(causes),
            {"name": name, "kind": kind, "causes": [{"message": c} for c in causes]},
        )

    def _schema_errors(self, schema: str, body: Json) -> list[str]:
        return [
            f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in self._schemas[schema].iter_errors(body)
        ]

    # Jobs

    async def _create_job(self, request: web.Request) -> web.Response:
        with self._job_creates:
            await self._wait_for_create_hold()
            return await self._do_create_job(request)

    async def _wait_for_create_hold(self) -> None:
        if self._create_hold is None:
            return
        count, at_most = self._create_hold
        gauge = self._job_creates
        deadline = asyncio.get_running_loop().time() + at_most
        while gauge.max < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            gauge.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gauge.changed.wait(), remaining)

    async def _do_create_job(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        body = await self._json_body(request)
        name = str(body.get("metadata", {}).get("name", ""))
        causes = self._schema_errors("job-batch-v1", body)
        if not _DNS_LABEL.match(name) or len(name) > 63:
            causes.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 label")
        if causes:
            return self._invalid("Job.batch", name, causes)
        if (namespace, name) in self.jobs:
            return status_response(
                409,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                {"name": name, "group": "batch", "kind": "jobs"},
            )
        meta = self._new_meta(body, namespace)
        spec = body["spec"]
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}}
        template_labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        template_labels.update(
            {
                "batch.kubernetes.io/controller-uid": meta["uid"],
                "batch.kubernetes.io/job-name": name,
                "controller-uid": meta["uid"],
                "job-name": name,
            }
        )
        body["status"] = {"active": 1, "startTime": now_rfc3339()}
        self.jobs[(namespace, name)] = body
        self._create_pod_for(body)
        return web.json_response(body, status=201)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        selector = request.query.get("labelSelector")
        items = [
            job
            for (ns, _), job in sorted(self.jobs.items())
            if ns == namespace and selector_matches(selector, job["metadata"].get("labels"))
        ]
        return web.json_response(
            {
                "kind": "JobList",
                "apiVersion": "batch/v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _get_job(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        job = self.jobs.get(key)
        if job is None:
            return self._not_found("jobs", key[1], group="batch")
        return web.json_response(job)

    async def _delete_job(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        job = self.jobs.get(key)
        if job is None:
            return self._not_found("jobs", key[1], group="batch")
        options: Json = {}
        if request.can_read_body:
            text = await request.text()
            options = json.loads(text) if text.strip() else {}
        policy = request.query.get("propagationPolicy") or options.get("propagationPolicy")
        # Jobs default to orphaning their pods when no policy is given (batch/v1).
        orphan = policy in (None, "Orphan")
        deleted = copy.deepcopy(job)
        deleted["metadata"]["deletionTimestamp"] = now_rfc3339()
        if policy == "Foreground":
            deleted["metadata"]["finalizers"] = ["foregroundDeletion"]
        self._delete_job_now(key, graceful=True, orphan=orphan)
        return web.json_response(deleted)

    def _not_found(self, resource: str, name: str, *, group: str = "") -> web.Response:
        qualified = f"{resource}.{group}" if group else resource
        return status_response(
            404,
            "NotFound",
            f'{qualified} "{name}" not found',
            {"name": name, "group": group, "kind": resource},
        )

    # Secrets

    async def _create_secret(self, request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        body = await self._json_body(request)
        name = str(body.get("metadata", {}).get("name", ""))
        causes = self._schema_errors("secret-v1", body)
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            causes.append(f"metadata.name: Invalid value: {name!r}")
        if causes:
            return self._invalid("Secret", name, causes)
        if (namespace, name) in self.secrets:
            return status_response(
                409,
                "AlreadyExists",
                f'secrets "{name}" already exists',
                {"name": name, "kind": "secrets"},
            )
        self._new_meta(body, namespace)
        for key, value in body.pop("stringData", {}).items():
            body.setdefault("data", {})[key] = base64.b64encode(value.encode()).decode()
        self.secrets[(namespace, name)] = body
        return web.json_response(body, status=201)

    async def _get_secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        secret = self.secrets.get(key)
        if secret is None:
            return self._not_found("secrets", key[1])
        return web.json_response(secret)

    async def _patch_secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        secret = self.secrets.get(key)
        if secret is None:
            return self._not_found("secrets", key[1])
        patch = await self._json_body(request)
        if not isinstance(patch, dict):
            return status_response(415, "UnsupportedMediaType", "only merge patches here")
        patched = merge_patch(secret, patch)
        if secret.get("immutable") and patched.get("data") != secret.get("data"):
            return self._invalid("Secret", key[1], ["data: Forbidden: field is immutable"])
        patched["metadata"]["resourceVersion"] = self._next_rv()
        self.secrets[key] = patched
        return web.json_response(patched)

    async def _delete_secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if self.secrets.pop(key, None) is None:
            return self._not_found("secrets", key[1])
        return web.json_response({**status_body(200, "", ""), "status": "Success"})

    # Pods

    def _selected_pods(self, namespace: str, selector: str | None) -> list[Json]:
        return [
            pod
            for (ns, _), pod in sorted(self.pods.items())
            if ns == namespace and selector_matches(selector, pod["metadata"].get("labels"))
        ]

    async def _list_pods(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "1"):
            return await self._watch_pods(request)
        namespace = request.match_info["ns"]
        pods = self._selected_pods(namespace, request.query.get("labelSelector"))
        metadata: Json = {"resourceVersion": str(self._rv)}
        token = request.query.get("continue")
        if token:
            try:
                state = json.loads(base64.b64decode(token))
            except ValueError:
                return status_response(400, "BadRequest", "invalid continue token")
            metadata["resourceVersion"] = state["rv"]
            pods = [p for p in pods if p["metadata"]["name"] > state["after"]]
        limit = int(request.query.get("limit") or 0)
        if limit and len(pods) > limit:
            pods = pods[:limit]
            metadata["continue"] = base64.b64encode(
                json.dumps(
                    {
                        "rv": metadata["resourceVersion"],
                        "after": pods[-1]["metadata"]["name"],
                    }
                ).encode()
            ).decode()
            metadata["remainingItemCount"] = (
                len(self._selected_pods(namespace, request.query.get("labelSelector"))) - limit
            )
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": pods}
        )

    async def _watch_pods(self, request: web.Request) -> web.StreamResponse:
        self.watch_requests += 1
        namespace = request.match_info["ns"]
        selector = request.query.get("labelSelector")
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        requested = request.query.get("resourceVersion") or ""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(event: Json) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        if requested not in ("", "0") and int(requested) < self._compacted_before:
            await send(
                {
                    "type": "ERROR",
                    "object": status_body(
                        410,
                        "Expired",
                        f"too old resource version: {requested} ({self._compacted_before})",
                    ),
                }
            )
            return response
        watcher = _Watcher()
        self._watchers.add(watcher)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            if requested in ("", "0"):
                cursor = self._rv
                for pod in self._selected_pods(namespace, selector):
                    await send({"type": "ADDED", "object": pod})
            else:
                cursor = int(requested)
            while not watcher.dropped:
                for event in [e for e in self.history if e.resource_version > cursor]:
                    cursor = event.resource_version
                    if event.namespace != namespace:
                        continue
                    kind = _watch_kind(event, selector)
                    if kind is not None:
                        await send({"type": kind, "object": event.new})
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or watcher.dropped:
                    break
                watcher.wake.clear()
                try:
                    await asyncio.wait_for(
                        watcher.wake.wait(), min(remaining, self.bookmark_interval)
                    )
                except TimeoutError:
                    if bookmarks:
                        cursor = max(cursor, self._rv)
                        await send(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": "Pod",
                                    "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(cursor)},
                                },
                            }
                        )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(watcher)
        if watcher.dropped and request.transport is not None:
            # As a dying server or proxy does: cut the connection, no clean end.
            request.transport.close()
        return response

    async def _get_pod(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        pod = self.pods.get(key)
        if pod is None:
            return self._not_found("pods", key[1])
        return web.json_response(pod)

    async def _patch_pod(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        pod = self.pods.get(key)
        if pod is None:
            return self._not_found("pods", key[1])
        patch = await self._json_body(request)
        if not isinstance(patch, dict):
            return status_response(415, "UnsupportedMediaType", "only merge patches here")
        allowed = {"metadata"}
        if set(patch) - allowed:
            return self._invalid(
                "Pod",
                key[1],
                ["spec: Forbidden: pod updates may not change fields other than metadata here"],
            )
        patched = merge_patch(pod, patch)
        self._store_pod(key, pod, patched, "MODIFIED")
        return web.json_response(self.pods[key])

    async def _delete_pod(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        pod = self.pods.get(key)
        if pod is None:
            return self._not_found("pods", key[1])
        self._delete_pod_now(key, graceful=True)
        return web.json_response(pod)

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["ns"], request.match_info["name"]
        pod = self.pods.get((namespace, name))
        if pod is None:
            return self._not_found("pods", name)
        init_names, task_names = self._container_names(pod)
        container = request.query.get("container")
        if container is None:
            if len(task_names) != 1:
                return status_response(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"{task_names} or one of the init containers: {init_names}",
                )
            container = task_names[0]
        if container not in init_names + task_names:
            return status_response(
                400, "BadRequest", f"container {container} is not valid for pod {name}"
            )
        statuses = {
            s["name"]: s
            for s in pod["status"].get("initContainerStatuses", [])
            + pod["status"].get("containerStatuses", [])
        }
        state = statuses.get(container, {}).get("state", {})
        if "running" not in state and "terminated" not in state:
            reason = state.get("waiting", {}).get("reason", "ContainerCreating")
            return status_response(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {reason}',
            )
        limit = int(request.query.get("limitBytes") or 0) or None
        if request.query.get("follow") in ("true", "1") and "running" in state:
            return await self._follow_log(request, (namespace, name, container), limit)
        data = self.logs.get((namespace, name, container), b"")
        if limit:
            data = data[:limit]
        return web.Response(body=data, content_type="text/plain")

    def _container_running(self, key: tuple[str, str, str]) -> bool:
        pod = self.pods.get(key[:2])
        if pod is None:
            return False
        statuses = pod["status"].get("initContainerStatuses", []) + pod["status"].get(
            "containerStatuses", []
        )
        return any(s["name"] == key[2] and "running" in s.get("state", {}) for s in statuses)

    async def _follow_log(
        self, request: web.Request, key: tuple[str, str, str], limit: int | None
    ) -> web.StreamResponse:
        """What the kubelet does for `follow=true`: the log so far, then each new piece as
        it is printed, until the container stops (or `limitBytes` is reached)."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        follower = _Watcher()
        self._log_followers.add(follower)
        sent = 0
        try:
            with self._log_follows:
                while not follower.dropped:
                    follower.wake.clear()
                    data = self.logs.get(key, b"")
                    end = len(data) if limit is None else min(len(data), limit)
                    if end > sent:
                        await response.write(data[sent:end])
                        sent = end
                    if (limit is not None and sent >= limit) or not self._container_running(key):
                        break
                    # aiohttp does not cancel a handler whose client went away: look.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(follower.wake.wait(), 0.05)
                    if request.transport is None or request.transport.is_closing():
                        break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._log_followers.discard(follower)
        if follower.dropped and request.transport is not None:
            request.transport.close()
        return response


def _watch_kind(event: PodEvent, selector: str | None) -> str | None:
    """What a watcher with `selector` sees of `event`: an object entering the selection
    is ADDED, one leaving it DELETED, as the API server's watch cache reports them."""
    new_in = selector_matches(selector, event.new["metadata"].get("labels"))
    old_in = event.old is not None and selector_matches(
        selector, event.old["metadata"].get("labels")
    )
    if event.kind == "ADDED":
        return "ADDED" if new_in else None
    if event.kind == "DELETED":
        return "DELETED" if old_in or new_in else None
    if old_in and new_in:
        return "MODIFIED"
    if new_in:
        return "ADDED"
    if old_in:
        return "DELETED"
    return None


def kubeconfig_yaml(server: str, *, token: str, namespace: str = "kriten") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
    )
