"""Pure reading of a Kriten job's pod: what state the job is in, and its assembled output.

Works on the pod as the API server sends it (a JSON dict, camelCase), so the observer
never builds the client's heavy model objects and the rules are tested without a cluster.

The rules:

- `Succeeded` / `Failed` phases are final; the exit code is the task container's.
- A pod that was being deleted when its containers stopped (its containers finished
  within the deletion grace period, or never ran) is `cancelled` when Kriten's cancel
  deleted it (the dispatcher marks the pod `kriten.io/cancel-requested` first), and
  `failed`, "execution vanished", otherwise: a `kubectl delete`, a node lost, an eviction
  by the taint manager end the job without anyone asking for it.
- A pending pod whose image cannot be pulled is `failed` without waiting: at once for a
  name that can never work, after a grace period for pull errors that may be transient
  (a registry outage, rate limits), since without a deadline it would wait forever.
- The error names every cause it can see: the deadline, an eviction, a failed clone,
  image pull errors, OOMKilled, the task's exit code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kriten_common.kube import (
    ANNOTATION_CANCEL_REQUESTED,
    ANNOTATION_JOB_ID,
    CANCEL_REQUESTED_VALUE,
    COLLECTED_VALUE,
    LABEL_COLLECTED,
    LABEL_JOB_ID,
)

PodState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES: frozenset[PodState] = frozenset({"succeeded", "failed", "cancelled"})

# Waiting reasons that no retry can fix.
IMAGE_ERRORS_PERMANENT = frozenset({"InvalidImageName", "ErrImageNeverPull"})
# Waiting reasons the kubelet keeps retrying, which may clear up.
IMAGE_ERRORS_TRANSIENT = frozenset({"ErrImagePull", "ImagePullBackOff"})

INIT_HEADING = "===== {name} (init container) ====="
TASK_HEADING = "===== {name} ====="
TRUNCATION_NOTE = "\n[output truncated: only the first {cap} bytes are kept]\n"
# The errors of a job whose pod went away without anyone cancelling it.
POD_DELETED_ERROR = "execution vanished: the job's pod was deleted before it finished"
CANCELLED_ERROR = "cancelled"

Pod = Mapping[str, Any]


@dataclass(frozen=True)
class PodView:
    """What the collector needs from one pod; small, so it never has to keep the pod."""

    name: str
    job_id: str | None
    state: PodState
    start_time: datetime | None = None
    completion_time: datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    init_container: str | None = None
    task_container: str | None = None
    # Containers that ran (so have logs), init container first.
    log_containers: tuple[str, ...] = ()

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it (`2025-06-30T21:11:56Z`)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def pod_name(pod: Pod) -> str:
    return str(_map(pod.get("metadata")).get("name") or "")


def pod_job_id(pod: Pod) -> str | None:
    """The exact job id: the annotation, else the (possibly shortened) label."""
    metadata = _map(pod.get("metadata"))
    annotated = _map(metadata.get("annotations")).get(ANNOTATION_JOB_ID)
    if isinstance(annotated, str) and annotated:
        return annotated
    labelled = _map(metadata.get("labels")).get(LABEL_JOB_ID)
    return labelled if isinstance(labelled, str) and labelled else None


def is_collected(pod: Pod) -> bool:
    labels = _map(_map(pod.get("metadata")).get("labels"))
    return labels.get(LABEL_COLLECTED) == COLLECTED_VALUE


def cancel_requested(pod: Pod) -> bool:
    """Whether Kriten's cancel marked the pod before deleting its Job."""
    annotations = _map(_map(pod.get("metadata")).get("annotations"))
    return annotations.get(ANNOTATION_CANCEL_REQUESTED) == CANCEL_REQUESTED_VALUE


def _container_names(pod: Pod, key: str) -> list[str]:
    return [str(_map(c).get("name")) for c in _list(_map(pod.get("spec")).get(key))]


def _statuses(pod: Pod, key: str) -> dict[str, Mapping[str, Any]]:
    return {str(_map(s).get("name")): _map(s) for s in _list(_map(pod.get("status")).get(key))}


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    terminated = _map(_map(status.get("state")).get("terminated"))
    if terminated:
        return terminated
    last = _map(_map(status.get("lastState")).get("terminated"))
    return last or None


def _waiting(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(_map(status.get("state")).get("waiting"))


def _ran(status: Mapping[str, Any]) -> bool:
    state = _map(status.get("state"))
    return bool(state.get("running") or state.get("terminated") or _terminated(status))


def _exit_code(status: Mapping[str, Any] | None) -> int | None:
    if status is None:
        return None
    terminated = _terminated(status)
    code = terminated.get("exitCode") if terminated else None
    return code if isinstance(code, int) else None


def _last_line(text: Any, limit: int = 300) -> str:
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def _image_problems(pod: Pod, *, include_transient: bool) -> list[str]:
    problems = []
    spec_images = {
        str(_map(c).get("name")): str(_map(c).get("image"))
        for key in ("initContainers", "containers")
        for c in _list(_map(pod.get("spec")).get(key))
    }
    for key in ("initContainerStatuses", "containerStatuses"):
        for name, status in _statuses(pod, key).items():
            waiting = _waiting(status)
            reason = str(waiting.get("reason") or "")
            if reason in IMAGE_ERRORS_PERMANENT or (
                include_transient and reason in IMAGE_ERRORS_TRANSIENT
            ):
                image = status.get("image") or spec_images.get(name, "?")
                message = str(waiting.get("message") or "").strip()
                detail = f": {message}" if message else ""
                problems.append(f"image pull failed for {name} ({image}): {reason}{detail}")
    return problems


def describe_failure(pod: Pod) -> str:
    """Every cause of failure the pod shows, most telling first."""
    status = _map(pod.get("status"))
    causes: list[str] = []
    reason = status.get("reason")
    message = str(status.get("message") or "").strip()
    if reason == "DeadlineExceeded":
        causes.append("deadline exceeded: the job ran longer than its timeout")
    elif reason:
        causes.append(f"{reason}: {message}" if message else str(reason))
    init_names = _container_names(pod, "initContainers")
    init_statuses = _statuses(pod, "initContainerStatuses")
    for name in init_names:
        code = _exit_code(init_statuses.get(name))
        if code not in (None, 0):
            init_terminated = _terminated(init_statuses[name]) or {}
            detail = _last_line(init_terminated.get("message"))
            causes.append(
                f"git clone failed ({name} exited with code {code})"
                + (f": {detail}" if detail else "")
            )
    causes.extend(_image_problems(pod, include_transient=True))
    task_statuses = _statuses(pod, "containerStatuses")
    for name in _container_names(pod, "containers"):
        terminated = _terminated(task_statuses.get(name, {}))
        if not terminated:
            continue
        code = terminated.get("exitCode")
        if terminated.get("reason") == "OOMKilled":
            causes.append(f"OOMKilled: {name} exceeded its memory limit (exit code {code})")
        elif isinstance(code, int) and code != 0:
            causes.append(f"{name} exited with code {code}")
    if not causes:
        causes.append(f"pod failed: {message}" if message else "pod failed")
    return "; ".join(causes)


def _finished_at(pod: Pod) -> datetime | None:
    times = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for status in _statuses(pod, key).values():
            terminated = _terminated(status)
            moment = parse_time(terminated.get("finishedAt")) if terminated else None
            if moment is not None:
                times.append(moment)
    return max(times) if times else None


def _stopped_by_deletion(pod: Pod) -> bool:
    metadata = _map(pod.get("metadata"))
    deleted_at = parse_time(metadata.get("deletionTimestamp"))
    if deleted_at is None:
        return False
    grace = metadata.get("deletionGracePeriodSeconds")
    requested_at = deleted_at - timedelta(seconds=grace if isinstance(grace, int) else 30)
    finished = _finished_at(pod)
    # A tolerance of a second: API times are truncated to whole seconds.
    return finished is None or finished >= requested_at - timedelta(seconds=1)


def _start_time(pod: Pod, task_status: Mapping[str, Any]) -> datetime | None:
    state = _map(task_status.get("state"))
    started = _map(state.get("running")).get("startedAt") or _map(state.get("terminated")).get(
        "startedAt"
    )
    return parse_time(started) or parse_time(_map(pod.get("status")).get("startTime"))


def assess(pod: Pod, *, now: datetime, image_pull_grace_seconds: float) -> PodView:
    """The state of the job that `pod` runs, as of `now`."""
    metadata = _map(pod.get("metadata"))
    status = _map(pod.get("status"))
    phase = status.get("phase")
    init_names = _container_names(pod, "initContainers")
    task_names = _container_names(pod, "containers")
    init_name = init_names[0] if init_names else None
    task_name = task_names[0] if task_names else None
    init_statuses = _statuses(pod, "initContainerStatuses")
    task_statuses = _statuses(pod, "containerStatuses")
    task_status = task_statuses.get(task_name or "", {})
    ran = tuple(
        [n for n in init_names if _ran(init_statuses.get(n, {}))]
        + [n for n in task_names if _ran(task_statuses.get(n, {}))]
    )
    base = PodView(
        name=pod_name(pod),
        job_id=pod_job_id(pod),
        state="pending",
        start_time=_start_time(pod, task_status),
        init_container=init_name,
        task_container=task_name,
        log_containers=ran,
    )

    def final(state: PodState, error: str | None, *, declared: bool = False) -> PodView:
        # A failure we declare (the pod is still pending) ends now, whatever ran before.
        return replace(
            base,
            state=state,
            completion_time=now if declared else (_finished_at(pod) or now),
            exit_code=_exit_code(task_status) if task_status else None,
            error=error,
        )

    if phase in ("Succeeded", "Failed"):
        if _stopped_by_deletion(pod):
            if cancel_requested(pod):
                return final("cancelled", CANCELLED_ERROR)
            return final("failed", POD_DELETED_ERROR)
        if phase == "Succeeded":
            return final("succeeded", None)
        return final("failed", describe_failure(pod))
    if phase == "Running":
        return replace(base, state="running")
    if metadata.get("deletionTimestamp"):
        # Being deleted: wait for the kubelet to report how it ended.
        return base
    if _image_problems(pod, include_transient=False):
        return final("failed", describe_failure(pod), declared=True)
    created = parse_time(metadata.get("creationTimestamp"))
    if (
        created is not None
        and (now - created).total_seconds() >= image_pull_grace_seconds
        and _image_problems(pod, include_transient=True)
    ):
        return final("failed", describe_failure(pod), declared=True)
    return base


def vanished(name: str, job_id: str, *, cancelled: bool) -> PodView:
    """A job whose pod was deleted before anyone saw it finish: `cancelled` when Kriten's
    cancel deleted it, else failed (deleted by someone else, or its node lost)."""
    if cancelled:
        return PodView(name=name, job_id=job_id, state="cancelled", error=CANCELLED_ERROR)
    return PodView(name=name, job_id=job_id, state="failed", error=POD_DELETED_ERROR)


def _cut_utf8(data: bytes, cap: int) -> bytes:
    # Never cut a character in two: drop a trailing partial sequence.
    return data[:cap].decode("utf-8", errors="ignore").encode("utf-8")


def assemble_output(
    *,
    init_logs: Sequence[tuple[str, bytes]],
    task_name: str | None,
    task_logs: bytes | None,
    cap_bytes: int,
) -> str:
    """The job's stdout: init containers' logs first, each under a heading (only those
    that printed something, so a quiet clone adds nothing), then the task's logs, under
    a heading only when init output precedes them. Capped at `cap_bytes`, with a note."""
    parts: list[bytes] = []
    for name, logs in init_logs:
        if logs:
            parts.append(INIT_HEADING.format(name=name).encode() + b"\n")
            parts.append(logs if logs.endswith(b"\n") else logs + b"\n")
    if parts and task_name is not None:
        parts.append(TASK_HEADING.format(name=task_name).encode() + b"\n")
    parts.append(task_logs or b"")
    data = b"".join(parts)
    if len(data) <= cap_bytes:
        return data.decode("utf-8", errors="replace")
    kept = _cut_utf8(data, cap_bytes).decode("utf-8", errors="replace")
    return kept + TRUNCATION_NOTE.format(cap=cap_bytes)
