"""The `JobObserver` of the Kubernetes executor: list, then watch, Kriten's pods.

How it keeps up:

- It lists the pods selected by `kriten_common.kube.POD_SELECTOR` (Kriten's, not yet
  collected) page by page, reports what each shows, then watches from the list's
  `resourceVersion` with bookmarks, advancing that version with every event it has
  handled. A watch that ends is resumed from there; `410 Gone` (history compacted past
  it) starts a new list; errors and disconnects are retried with exponential backoff.
- The first list is the reconciliation: every pod that finished while nobody watched is
  reported then, and a list after a `410` reports what happened in the gap, including a
  job whose pod vanished: `cancelled` when Kriten's cancel deleted it (the dispatcher
  marks the pod first), else `failed`, "execution vanished".
- `missing(job_ids)` is the collector's reconciliation of the jobs table: a job with no
  pod at all (deleted while nobody watched and past its Job's TTL, or never created).
- "Forgotten" is durable on the pod itself: `forget(job_id)` labels its pod
  `kriten.io/collected=true`, which the selector excludes, so neither a relist nor a
  restarted collector reports it again (nor even transfers it). A final update not yet
  forgotten is reported again after a restart: delivery is at least once.
- Memory stays bounded: pods are read as plain JSON one page or one event at a time and
  never kept; only job ids (and pod names) of pods not yet final, or reported but not yet
  forgotten, are remembered. Logs are read with a byte limit.
- Live output: while a pod runs, its log is followed (`kube_log_follower`) and its output
  so far is reported as a `running` update with `output`, at most once per
  `progress_interval` and only when it grew, so `log?follow=true` shows it live. At most
  `max_followed_pods` pods are followed at once (a thread and a connection each); the
  others are followed as slots free up. A follow ends when its pod ends (the final
  update then reads the logs as before) or the job is forgotten.

The official client blocks; list, log and patch calls run in worker threads, and the
watch stream is read line by line on a dedicated thread (the loop awaits each line), so
the loop never blocks and a slow consumer holds the stream back instead of queueing it.
`close()` shuts the stream's socket down, which wakes that thread, and waits for it.
`kubernetes.watch.Watch` is not used: with `deserialize=False` it fails on `ERROR`
events, and with deserialization it builds a model object for every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kriten_collector.kube_log_follower import PodLogFollower
from kriten_collector.kube_pod_status import (
    PodView,
    assemble_output,
    assess,
    cancel_requested,
    is_collected,
    pod_job_id,
    vanished,
)
from kriten_collector.ports import ExecutionUpdate
from kriten_common.kube import (
    COLLECTED_VALUE,
    LABEL_COLLECTED,
    POD_SELECTOR,
    KubernetesSettings,
    job_selector,
    load_api_client,
)
from kriten_common.logging import get_logger

log = get_logger(__name__)

_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)
# A watch that ends this soon without an event is treated as a failure (backoff), so a
# server or proxy that closes at once cannot make the observer spin.
_MIN_HEALTHY_WATCH_SECONDS = 1.0
_FORGET_ATTEMPTS = 3
NO_POD_ERROR = "execution vanished: the job has no pod (deleted, or never created)"


class _Expired(Exception):
    """The resourceVersion we asked for is gone from the server's history: relist."""


class _Backoff:
    def __init__(self, initial: float, ceiling: float) -> None:
        self._initial = initial
        self._ceiling = ceiling
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        self._attempt += 1
        delay = min(self._ceiling, self._initial * 2.0 ** (self._attempt - 1))
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security


def _iter_lines(response: Any) -> Iterator[bytes]:
    """Newline-delimited records of a chunked response, as they arrive."""
    buffer = bytearray()
    for chunk in response.stream(amt=None, decode_content=False):
        buffer.extend(chunk)
        while (end := buffer.find(b"\n")) != -1:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.strip():
                yield line
    if buffer.strip():
        yield bytes(buffer)


def _interrupt(response: Any) -> None:
    """Wakes a thread blocked reading `response` (it then sees the end of the stream)."""
    with contextlib.suppress(ValueError, RuntimeError, OSError):
        response.shutdown()


def _close_quietly(response: Any) -> None:
    try:
        response.close()
    except (*_TRANSPORT_ERRORS, ValueError):
        pass


def _next_event(lines: Iterator[bytes]) -> dict[str, Any] | None:
    """Runs on the watch thread: the next event, parsed, or None at the end."""
    line = next(lines, None)
    if line is None:
        return None
    event = json.loads(line)
    return event if isinstance(event, dict) else {}


class KubernetesJobObserver:
    """Reports what happens to the pods of Kriten's Jobs in `settings.namespace`."""

    def __init__(
        self,
        *,
        settings: KubernetesSettings,
        api_client: client.ApiClient | None = None,
        output_cap_bytes: int = 1_048_576,
        progress_interval: float = 1.0,
        max_followed_pods: int | None = None,
    ) -> None:
        """`max_followed_pods`: running pods whose log is followed at once (default
        `settings.live_log_max_pods`; 0: no live output)."""
        self._settings = settings
        self._max_followed = (
            settings.live_log_max_pods if max_followed_pods is None else max_followed_pods
        )
        self._owns_client = api_client is None
        # Every follow holds a connection; the rest is asyncio's default thread pool
        # (min(32, cpus + 4)) and the watch.
        pool = self._max_followed + min(32, (os.cpu_count() or 1) + 4) + 1
        self._api_client = (
            api_client
            if api_client is not None
            else load_api_client(settings, connection_pool_maxsize=pool)
        )
        self._core = client.CoreV1Api(self._api_client)
        self._output_cap = output_cap_bytes
        self._resource_version: str | None = None
        # job id -> pod name, for pods seen but not final: to notice one vanishing.
        self._active: dict[str, str] = {}
        # job ids whose 'running' was reported (a subset of _active).
        self._running: set[str] = set()
        # job ids whose pod was seen marked by Kriten's cancel (a subset of _active): its
        # removal is a cancel even when the last state seen lacks the mark.
        self._cancelling: set[str] = set()
        # job id -> pod name, final update reported but not yet forgotten.
        self._reported: dict[str, str] = {}
        self._closed = asyncio.Event()
        self._watch_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kriten-kube-watch"
        )
        self._response: Any = None
        self._progress_interval = progress_interval
        self._next_progress = 0.0
        # job id -> its running pod, for live output (a subset of _running).
        self._live: dict[str, PodView] = {}
        # job id -> its follower and the thread's future (done: it stopped by itself).
        self._followers: dict[str, tuple[PodLogFollower, asyncio.Future[None]]] = {}
        self._follow_threads = ThreadPoolExecutor(
            max_workers=max(self._max_followed, 1), thread_name_prefix="kriten-kube-log"
        )

    # -- the port ---------------------------------------------------------------------

    async def updates(self) -> AsyncIterator[ExecutionUpdate]:
        backoff = _Backoff(
            self._settings.backoff_initial_seconds, self._settings.backoff_max_seconds
        )
        while not self._closed.is_set():
            try:
                if self._resource_version is None:
                    async for update in self._relist():
                        yield update
                    backoff.reset()
                started = time.monotonic()
                events = 0
                async for change, counted in self._watch_once():
                    events += counted
                    if change is not None:
                        yield change
                if events or time.monotonic() - started >= _MIN_HEALTHY_WATCH_SECONDS:
                    backoff.reset()
                    continue
                raise ConnectionError("the watch ended at once without an event")
            except _Expired:
                log.info("pod_watch_expired", resource_version=self._resource_version)
                self._resource_version = None
                continue
            except (ApiException, *_TRANSPORT_ERRORS, ValueError) as error:
                # ValueError: a line that is not JSON (a proxy's page, a cut stream).
                if self._closed.is_set():
                    return
                if isinstance(error, ApiException) and error.status == 410:
                    self._resource_version = None
                    continue
                delay = backoff.next_delay()
                log.warning(
                    "kubernetes pod watch failed; retrying",
                    error=f"{type(error).__name__}: {error}",
                    delay=round(delay, 2),
                )
                await self._sleep(delay)
            except Exception:
                # Whatever cutting the stream on close() made the reader raise.
                if self._closed.is_set():
                    return
                raise

    async def forget(self, job_id: str) -> None:
        name = self._reported.pop(job_id, None) or self._active.get(job_id)
        self._active.pop(job_id, None)
        self._running.discard(job_id)
        self._cancelling.discard(job_id)
        self._unfollow(job_id)
        if name is not None:
            names = [name]
        else:
            try:
                names = await self._pods_of(job_id)
            except (ApiException, *_TRANSPORT_ERRORS) as error:
                # As for a failed patch: at worst reported once more after a restart.
                log.warning("pod_to_forget_not_found", job_id=job_id, error=str(error))
                return
        for pod in names:
            await self._mark_collected(job_id, pod)

    def launched(self, job_id: str) -> None:
        # The watch sees every Job of the namespace already.
        return None

    async def missing(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Of `job_ids`, those with no pod at all (collected or not). A pod this observer
        knows of is there; the others cost one list call each."""
        absent: dict[str, str] = {}
        for job_id in job_ids:
            if job_id in self._active or job_id in self._reported:
                continue
            if not await self._pods_of(job_id):
                absent[job_id] = NO_POD_ERROR
        return absent

    async def close(self) -> None:
        self._closed.set()
        self._abort_stream()
        for job_id in list(self._live):
            self._unfollow(job_id)
        # The read it was blocked in has been cut; wait for the thread to be gone. Bounded:
        # at worst it is opening a watch, which the request timeout limits.
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._watch_thread.shutdown, wait=True),
                self._settings.request_timeout_seconds,
            )
        except TimeoutError:
            log.warning("pod_watch_thread_not_stopped")
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._follow_threads.shutdown, wait=True),
                self._settings.request_timeout_seconds,
            )
        except TimeoutError:
            log.warning("pod_log_threads_not_stopped")
        if self._owns_client:
            await asyncio.to_thread(self._api_client.close)

    # -- list and watch ---------------------------------------------------------------

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._settings.request_timeout_seconds)
        return await asyncio.to_thread(function, *args, **kwargs)

    async def _list_page(self, token: str | None) -> dict[str, Any]:
        def fetch() -> dict[str, Any]:
            # Raw JSON (a urllib3 response), not the client's model objects.
            response: Any = self._core.list_namespaced_pod(
                self._settings.namespace,
                label_selector=POD_SELECTOR,
                limit=self._settings.list_page_size,
                _continue=token,
                _preload_content=False,
                _request_timeout=self._settings.request_timeout_seconds,
            )
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            return page if isinstance(page, dict) else {}

        return await asyncio.to_thread(fetch)

    async def _relist(self) -> AsyncIterator[ExecutionUpdate]:
        token: str | None = None
        version: str | None = None
        seen: set[str] = set()
        while True:
            page = await self._list_page(token)
            metadata = page.get("metadata") or {}
            # Every page of one list carries the snapshot's version; the watch starts there.
            version = version or metadata.get("resourceVersion")
            for pod in page.get("items") or []:
                job_id = pod_job_id(pod)
                if job_id is not None:
                    seen.add(job_id)
                async for update in self._on_pod(pod):
                    yield update
            token = metadata.get("continue") or None
            if token is None:
                break
        for job_id in [j for j in self._active if j not in seen]:
            name = self._active.pop(job_id)
            self._running.discard(job_id)
            self._unfollow(job_id)
            cancelled = job_id in self._cancelling
            self._cancelling.discard(job_id)
            yield self._final_update(vanished(name, job_id, cancelled=cancelled), output=None)
            self._reported[job_id] = name
        self._resource_version = version
        log.info("kubernetes_pods_listed", pods=len(seen), resource_version=version)

    def _open_watch(self) -> Any:
        settings = self._settings
        return self._core.list_namespaced_pod(
            settings.namespace,
            label_selector=POD_SELECTOR,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self._resource_version,
            timeout_seconds=settings.watch_timeout_seconds,
            _preload_content=False,
            # Reads wait out a quiet stream: a little longer than the server keeps it.
            _request_timeout=(
                settings.request_timeout_seconds,
                settings.watch_timeout_seconds + settings.request_timeout_seconds,
            ),
        )

    async def _watch_once(self) -> AsyncIterator[tuple[ExecutionUpdate | None, int]]:
        """One watch request: yields (update or None, 1 per event handled)."""
        if self._closed.is_set():
            return
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._watch_thread, self._open_watch)
        self._response = response
        lines = _iter_lines(response)
        try:
            while not self._closed.is_set():
                read = self._watch_thread.submit(_next_event, lines)
                waiting = asyncio.wrap_future(read)
                try:
                    # Live output goes out between events, however quiet the watch is.
                    while not (await asyncio.wait({waiting}, timeout=self._until_progress()))[0]:
                        for progress in self._progress():
                            yield progress, 0
                    event = waiting.result()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    # The read itself was dropped by close(), not this task cancelled.
                    if read.cancelled() and task is not None and not task.cancelling():
                        return
                    raise
                if event is None:
                    return
                kind = event.get("type")
                pod = event.get("object") or {}
                if kind == "ERROR":
                    code = pod.get("code")
                    if code == 410:
                        raise _Expired
                    raise ApiException(status=code or 500, reason=pod.get("message"))
                if kind in ("ADDED", "MODIFIED"):
                    async for update in self._on_pod(pod):
                        yield update, 0
                elif kind == "DELETED":
                    gone = self._on_deleted(pod)
                    if gone is not None:
                        yield gone, 0
                version = (pod.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._resource_version = version
                yield None, 1
        finally:
            self._response = None
            _interrupt(response)
            try:
                # After any read still running on the watch thread, not under it.
                self._watch_thread.submit(_close_quietly, response)
            except RuntimeError:
                _close_quietly(response)

    def _abort_stream(self) -> None:
        if self._response is not None:
            _interrupt(self._response)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    # -- what one pod says ------------------------------------------------------------

    async def _on_pod(self, pod: dict[str, Any]) -> AsyncIterator[ExecutionUpdate]:
        job_id = pod_job_id(pod)
        if job_id is None or is_collected(pod) or job_id in self._reported:
            return
        view = assess(
            pod,
            now=datetime.now(UTC),
            image_pull_grace_seconds=self._settings.image_pull_grace_seconds,
        )
        if view.final:
            # Stopped first: what it held is not needed, the final read is complete.
            self._unfollow(job_id)
            output = await self._read_output(view)
            self._active.pop(job_id, None)
            self._running.discard(job_id)
            self._cancelling.discard(job_id)
            self._reported[job_id] = view.name
            yield self._final_update(view, output=output)
            return
        self._active[job_id] = view.name
        if cancel_requested(pod):
            self._cancelling.add(job_id)
        if view.state == "running" and job_id not in self._running:
            self._running.add(job_id)
            yield ExecutionUpdate(job_id=job_id, state="running", start_time=view.start_time)
            if self._max_followed > 0:
                self._live[job_id] = view

    def _on_deleted(self, pod: dict[str, Any]) -> ExecutionUpdate | None:
        job_id = pod_job_id(pod)
        if job_id is None:
            return None
        name = self._active.pop(job_id, None)
        self._running.discard(job_id)
        self._unfollow(job_id)
        cancelled = cancel_requested(pod) or job_id in self._cancelling
        self._cancelling.discard(job_id)
        if name is None or is_collected(pod) or job_id in self._reported:
            # Ours already, or it left the selector because it was collected.
            return None
        view = assess(pod, now=datetime.now(UTC), image_pull_grace_seconds=float("inf"))
        if view.final:
            # Its final state came through this watch before it was deleted, so it was
            # reported; nothing new to say.
            return None
        self._reported[job_id] = name
        return self._final_update(vanished(name, job_id, cancelled=cancelled), output=None)

    # -- live output ------------------------------------------------------------------

    def _until_progress(self) -> float | None:
        """Seconds until live output is due; None while no pod runs (wait for events)."""
        if not self._live:
            return None
        return max(0.0, self._next_progress - time.monotonic())

    def _progress(self) -> list[ExecutionUpdate]:
        """Starts follows for running pods while there is room, and reports the output
        of those that printed something since the last time."""
        self._next_progress = time.monotonic() + self._progress_interval
        self._start_follows()
        updates: list[ExecutionUpdate] = []
        for job_id, (follower, _) in self._followers.items():
            output = follower.take()
            if output is not None:
                updates.append(
                    ExecutionUpdate(
                        job_id=job_id,
                        state="running",
                        start_time=follower.view.start_time,
                        output=output,
                    )
                )
        return updates

    def _start_follows(self) -> None:
        busy = sum(1 for _, thread in self._followers.values() if not thread.done())
        loop = asyncio.get_running_loop()
        for job_id, view in self._live.items():
            if busy >= self._max_followed:
                return
            if job_id in self._followers:
                continue
            settings = self._settings
            follower = PodLogFollower(
                core=self._core,
                namespace=settings.namespace,
                view=view,
                cap_bytes=self._output_cap,
                request_timeout=settings.request_timeout_seconds,
                read_timeout=settings.watch_timeout_seconds + settings.request_timeout_seconds,
                backoff_initial=settings.backoff_initial_seconds,
                backoff_max=settings.backoff_max_seconds,
            )
            thread = loop.run_in_executor(self._follow_threads, follower.run)
            self._followers[job_id] = (follower, thread)
            busy += 1

    def _unfollow(self, job_id: str) -> None:
        self._live.pop(job_id, None)
        followed = self._followers.pop(job_id, None)
        if followed is not None:
            followed[0].stop()

    def _final_update(self, view: PodView, *, output: str | None) -> ExecutionUpdate:
        assert view.job_id is not None
        state = view.state
        if state not in ("succeeded", "failed", "cancelled"):
            raise ValueError(f"not a final state: {state}")
        return ExecutionUpdate(
            job_id=view.job_id,
            state=state,
            start_time=view.start_time,
            completion_time=view.completion_time,
            exit_code=view.exit_code,
            output=output,
            error=view.error,
        )

    async def _read_output(self, view: PodView) -> str | None:
        if not view.log_containers:
            return None
        init_logs: list[tuple[str, bytes]] = []
        task_logs: bytes | None = None
        readable = False
        for container in view.log_containers:
            logs = await self._read_log(view.name, container)
            readable = readable or logs is not None
            if container == view.task_container:
                task_logs = logs
            else:
                init_logs.append((container, logs or b""))
        if not readable:
            # The pod went before its logs could be read (a deleted Job): no output is
            # more truthful than an empty one.
            return None
        return assemble_output(
            init_logs=init_logs,
            task_name=view.task_container,
            task_logs=task_logs,
            cap_bytes=self._output_cap,
        )

    async def _read_log(self, pod: str, container: str) -> bytes | None:
        """Up to the cap (plus one byte, to tell a cut); None when the server has none
        to give (the pod or container is gone). Transient errors propagate: the caller
        retries the whole pod later rather than store it without its output."""
        cap = self._output_cap

        def fetch() -> bytes:
            response: Any = self._core.read_namespaced_pod_log(
                pod,
                self._settings.namespace,
                container=container,
                limit_bytes=cap + 1,
                _preload_content=False,
                _request_timeout=self._settings.request_timeout_seconds,
            )
            try:
                return bytes(response.read(cap + 1))
            finally:
                response.close()

        try:
            return await asyncio.to_thread(fetch)
        except ApiException as error:
            if error.status in (400, 404):
                log.info("container_logs_missing", pod=pod, container=container)
                return None
            raise

    # -- forgetting -------------------------------------------------------------------

    async def _pods_of(self, job_id: str) -> list[str]:
        pods = await self._call(
            self._core.list_namespaced_pod,
            self._settings.namespace,
            label_selector=job_selector(job_id),
        )
        return [
            pod.metadata.name
            for pod in pods.items
            if pod_job_id(
                {
                    "metadata": {
                        "annotations": pod.metadata.annotations,
                        "labels": pod.metadata.labels,
                    }
                }
            )
            == job_id
        ]

    async def _mark_collected(self, job_id: str, pod: str) -> None:
        body = {"metadata": {"labels": {LABEL_COLLECTED: COLLECTED_VALUE}}}
        backoff = _Backoff(
            self._settings.backoff_initial_seconds, self._settings.backoff_max_seconds
        )
        for attempt in range(1, _FORGET_ATTEMPTS + 1):
            try:
                await self._call(
                    self._core.patch_namespaced_pod, pod, self._settings.namespace, body
                )
                return
            except ApiException as error:
                if error.status == 404:
                    return
                failure: BaseException = error
            except _TRANSPORT_ERRORS as error:
                failure = error
            if attempt < _FORGET_ATTEMPTS:
                await self._sleep(backoff.next_delay())
        # Not fatal: the job may be reported once more after a restart, and storing
        # a final update is idempotent.
        log.warning("pod_collected_mark_failed", job_id=job_id, pod=pod, error=str(failure))
