"""Live output of one running pod: follows its task container's log on a thread.

Why a follow stream (`read_namespaced_pod_log(follow=True)`) rather than periodic reads:
every byte crosses the wire once, and a quiet pod costs nothing but an idle connection,
whereas re-reading the log every second costs the whole log each time (`sinceSeconds`
has a one-second grain, so it cannot give exact increments either).

Bounded: the final output keeps only the first `cap_bytes` of the task's log, so the
follower keeps at most `cap_bytes + 1` bytes (the extra byte tells a cut) and stops
reading once it has them. A stream that drops while the pod runs is resumed after a
backoff: the log is append-only, so the new stream's first bytes, as many as are held
already, are skipped. The init container ended before the task started, so its log is
read once, as the final read does, and both go through `assemble_output`, so the output
so far has exactly the shape of the final one.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Any

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kriten_collector.kube_pod_status import PodView, assemble_output
from kriten_common.logging import get_logger

log = get_logger(__name__)

_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError, ValueError)


class PodLogFollower:
    """Follows one pod's log; `run()` blocks (call it on a thread), `stop()` ends it."""

    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        namespace: str,
        view: PodView,
        cap_bytes: int,
        request_timeout: float,
        read_timeout: float,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.view = view
        self._core = core
        self._namespace = namespace
        self._limit = cap_bytes + 1
        self._cap = cap_bytes
        self._request_timeout = request_timeout
        self._read_timeout = read_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._init_logs: list[tuple[str, bytes]] = []
        self._task_logs = bytearray()
        self._response: Any = None
        self._init_read = False
        # Bytes of output last handed out by `take()`.
        self._reported = 0

    # -- from the event loop ----------------------------------------------------------

    def stop(self) -> None:
        """Ends the follow: wakes the thread out of its read; it then exits."""
        self._stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                response.shutdown()

    def take(self) -> str | None:
        """The output so far, if it grew since the last call; else None."""
        with self._lock:
            size = len(self._task_logs) + sum(len(data) for _, data in self._init_logs)
            if size == self._reported:
                return None
            self._reported = size
            init_logs = list(self._init_logs)
            task_logs = bytes(self._task_logs)
        return assemble_output(
            init_logs=init_logs,
            task_name=self.view.task_container,
            task_logs=task_logs,
            cap_bytes=self._cap,
        )

    # -- on the thread ----------------------------------------------------------------

    def run(self) -> None:
        try:
            self._follow()
        except Exception as error:  # live output is best effort: never fatal
            if self._stopped.is_set():
                return
            # The final update reads the logs again; only the live view is lost.
            log.warning(
                "pod_log_follow_failed",
                pod=self.view.name,
                error=f"{type(error).__name__}: {error}",
            )

    def _full(self) -> bool:
        return len(self._task_logs) >= self._limit

    def _read_init_logs(self) -> None:
        if self._init_read:
            return
        logs: list[tuple[str, bytes]] = []
        for container in self.view.log_containers:
            if container == self.view.task_container or self._stopped.is_set():
                continue
            response: Any = self._core.read_namespaced_pod_log(
                self.view.name,
                self._namespace,
                container=container,
                limit_bytes=self._limit,
                _preload_content=False,
                _request_timeout=self._request_timeout,
            )
            try:
                data = bytes(response.read(self._limit))
            finally:
                response.close()
            logs.append((container, data))
        with self._lock:
            self._init_logs = logs
        self._init_read = True

    def _follow(self) -> None:
        container = self.view.task_container
        if container is None:
            return
        attempt = 0
        while not self._stopped.is_set() and not self._full():
            held = len(self._task_logs)
            try:
                self._read_init_logs()
                self._stream_once(container)
            except ApiException as error:
                if error.status in (400, 404):
                    # Gone or stopped: the final read says what there is.
                    return
                log.info("pod_log_stream_failed", pod=self.view.name, status=error.status)
            except _TRANSPORT_ERRORS as error:
                if self._stopped.is_set():
                    return
                log.info("pod_log_stream_dropped", pod=self.view.name, error=str(error))
            # The stream ends when the container stops (the watch says so soon after
            # and stops this follower) or when a connection drops: resume, with a
            # backoff that grows while resuming brings nothing new.
            attempt = 0 if len(self._task_logs) > held else attempt + 1
            initial, ceiling = self._backoff
            delay = min(ceiling, initial * 2.0 ** max(attempt - 1, 0))
            self._stopped.wait(delay * (0.5 + random.random() / 2))  # noqa: S311

    def _stream_once(self, container: str) -> None:
        response: Any = self._core.read_namespaced_pod_log(
            self.view.name,
            self._namespace,
            container=container,
            follow=True,
            limit_bytes=self._limit,
            _preload_content=False,
            # A quiet task sends nothing for long; the read timeout only finds a dead
            # connection (then the stream is resumed).
            _request_timeout=(self._request_timeout, self._read_timeout),
        )
        with self._lock:
            self._response = response
        if self._stopped.is_set():
            self.stop()
        skip = len(self._task_logs)
        try:
            for chunk in response.stream(amt=None, decode_content=False):
                if skip:
                    # Already held from the stream that dropped.
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                room = self._limit - len(self._task_logs)
                with self._lock:
                    self._task_logs.extend(chunk[:room])
                if self._full() or self._stopped.is_set():
                    return
        finally:
            with self._lock:
                self._response = None
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                response.close()
