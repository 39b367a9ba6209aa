"""The pure reading of a Kriten pod: states, exit codes, failure reasons, output assembly."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kriten_collector.kube_pod_status import (
    INIT_HEADING,
    POD_DELETED_ERROR,
    assemble_output,
    assess,
    describe_failure,
    is_collected,
    parse_time,
    pod_job_id,
    vanished,
)
from kriten_common.kube import ANNOTATION_CANCEL_REQUESTED

NOW = datetime(2025, 6, 30, 21, 15, 0, tzinfo=UTC)
GRACE = 300.0


def ts(seconds_before_now: float) -> str:
    return (NOW - timedelta(seconds=seconds_before_now)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    *,
    phase: str = "Pending",
    init: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A pod as the API server sends it, with the container states given."""
    result: dict[str, Any] = {
        "metadata": {
            "name": "hello-a1b2c-xyz12",
            "creationTimestamp": ts(60),
            "labels": {"kriten.io/job-id": "hello-a1b2c", "app.kubernetes.io/managed-by": "kriten"},
            "annotations": {"kriten.io/job-id": "Hello_A1B2C"},
        },
        "spec": {
            "initContainers": [{"name": "git-clone", "image": "alpine/git:2.45.2"}],
            "containers": [{"name": "task", "image": "python:3.12"}],
        },
        "status": {"phase": phase, **status},
    }
    if init is not None:
        result["status"]["initContainerStatuses"] = [
            {"name": "git-clone", "image": "alpine/git:2.45.2", "state": init}
        ]
    if task is not None:
        result["status"]["containerStatuses"] = [
            {"name": "task", "image": "python:3.12", "state": task}
        ]
    return result


def terminated(
    code: int,
    *,
    reason: str | None = None,
    started: float = 40,
    finished: float = 5,
    message: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": code,
        "reason": reason or ("Completed" if code == 0 else "Error"),
        "startedAt": ts(started),
        "finishedAt": ts(finished),
    }
    if message is not None:
        state["message"] = message
    return {"terminated": state}


CLONED = terminated(0, started=50, finished=45)


def view_of(p: dict[str, Any], now: datetime = NOW) -> Any:
    return assess(p, now=now, image_pull_grace_seconds=GRACE)


# -- identity ----------------------------------------------------------------------------


def test_job_id_prefers_the_exact_annotation() -> None:
    p = pod()
    assert pod_job_id(p) == "Hello_A1B2C"
    del p["metadata"]["annotations"]
    assert pod_job_id(p) == "hello-a1b2c"
    del p["metadata"]["labels"]["kriten.io/job-id"]
    assert pod_job_id(p) is None


def test_collected_label() -> None:
    p = pod()
    assert not is_collected(p)
    p["metadata"]["labels"]["kriten.io/collected"] = "true"
    assert is_collected(p)


def test_parse_time() -> None:
    assert parse_time("2025-06-30T21:11:56Z") == datetime(2025, 6, 30, 21, 11, 56, tzinfo=UTC)
    assert parse_time(None) is None
    assert parse_time("yesterday") is None


# -- states ------------------------------------------------------------------------------


def test_pending_before_anything_runs() -> None:
    view = view_of(pod())
    assert view.state == "pending"
    assert not view.final
    assert view.log_containers == ()
    assert view.name == "hello-a1b2c-xyz12"
    assert view.job_id == "Hello_A1B2C"


def test_pending_while_cloning() -> None:
    view = view_of(
        pod(init={"running": {"startedAt": ts(3)}}, task={"waiting": {"reason": "PodInitializing"}})
    )
    assert view.state == "pending"
    assert view.log_containers == ("git-clone",)


def test_running() -> None:
    view = view_of(
        pod(phase="Running", init=CLONED, task={"running": {"startedAt": ts(30)}}, startTime=ts(55))
    )
    assert view.state == "running"
    assert not view.final
    assert view.start_time == NOW - timedelta(seconds=30)
    assert view.log_containers == ("git-clone", "task")
    assert (view.init_container, view.task_container) == ("git-clone", "task")


def test_succeeded() -> None:
    view = view_of(pod(phase="Succeeded", init=CLONED, task=terminated(0)))
    assert view.state == "succeeded"
    assert view.final
    assert view.exit_code == 0
    assert view.error is None
    assert view.start_time == NOW - timedelta(seconds=40)
    assert view.completion_time == NOW - timedelta(seconds=5)
    assert view.log_containers == ("git-clone", "task")


def test_failed_with_exit_code() -> None:
    view = view_of(pod(phase="Failed", init=CLONED, task=terminated(3)))
    assert view.state == "failed"
    assert view.exit_code == 3
    assert view.error == "task exited with code 3"


def test_oom_killed() -> None:
    view = view_of(pod(phase="Failed", init=CLONED, task=terminated(137, reason="OOMKilled")))
    assert view.state == "failed"
    assert view.exit_code == 137
    assert view.error is not None
    assert view.error.startswith("OOMKilled: task exceeded its memory limit")


def test_clone_failure() -> None:
    view = view_of(
        pod(
            phase="Failed",
            init=terminated(
                128, message="Cloning into '/mnt/repo'...\nfatal: Remote branch nope not found\n"
            ),
            task={"waiting": {"reason": "PodInitializing"}},
        )
    )
    assert view.state == "failed"
    assert view.exit_code is None
    assert view.error == (
        "git clone failed (git-clone exited with code 128): fatal: Remote branch nope not found"
    )
    assert view.log_containers == ("git-clone",)


def test_deadline_exceeded() -> None:
    view = view_of(
        pod(
            phase="Failed",
            init=CLONED,
            task=terminated(137),
            reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
        )
    )
    assert view.state == "failed"
    assert view.exit_code == 137
    assert view.error is not None
    assert view.error.startswith("deadline exceeded: the job ran longer than its timeout")
    assert "task exited with code 137" in view.error


def test_deadline_while_the_image_could_not_be_pulled_names_both() -> None:
    p = pod(
        phase="Failed",
        init=CLONED,
        task={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}},
        reason="DeadlineExceeded",
    )
    view = view_of(p)
    assert view.state == "failed"
    assert view.error is not None
    assert "deadline exceeded" in view.error
    assert "image pull failed for task (python:3.12): ImagePullBackOff" in view.error
    assert view.log_containers == ("git-clone",)


def test_evicted() -> None:
    view = view_of(pod(phase="Failed", reason="Evicted", message="The node was low on memory."))
    assert view.error == "Evicted: The node was low on memory."


def test_failed_without_detail() -> None:
    assert view_of(pod(phase="Failed")).error == "pod failed"


@pytest.mark.parametrize("reason", ["InvalidImageName", "ErrImageNeverPull"])
def test_an_image_that_can_never_be_pulled_fails_at_once(reason: str) -> None:
    p = pod(init=CLONED, task={"waiting": {"reason": reason, "message": "bad"}})
    p["metadata"]["creationTimestamp"] = ts(1)
    view = view_of(p)
    assert view.state == "failed"
    assert view.error == f"image pull failed for task (python:3.12): {reason}: bad"
    assert view.completion_time == NOW


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_pull_errors_fail_only_after_the_grace_period(reason: str) -> None:
    p = pod(init=CLONED, task={"waiting": {"reason": reason, "message": "registry down"}})
    p["metadata"]["creationTimestamp"] = ts(GRACE - 10)
    assert view_of(p).state == "pending"
    p["metadata"]["creationTimestamp"] = ts(GRACE + 10)
    view = view_of(p)
    assert view.state == "failed"
    assert view.error == f"image pull failed for task (python:3.12): {reason}: registry down"


def test_git_image_pull_error() -> None:
    p = pod(
        init={"waiting": {"reason": "ImagePullBackOff"}},
        task={"waiting": {"reason": "PodInitializing"}},
    )
    p["metadata"]["creationTimestamp"] = ts(GRACE * 2)
    view = view_of(p)
    assert view.state == "failed"
    assert view.error == "image pull failed for git-clone (alpine/git:2.45.2): ImagePullBackOff"


def cancel_marked(p: dict[str, Any]) -> dict[str, Any]:
    """As the dispatcher's cancel leaves a pod before it deletes the Job."""
    p["metadata"].setdefault("annotations", {})[ANNOTATION_CANCEL_REQUESTED] = "true"
    return p


def test_deleted_while_running_by_a_cancel_is_cancelled() -> None:
    p = cancel_marked(pod(phase="Failed", init=CLONED, task=terminated(143, finished=2)))
    p["metadata"]["deletionTimestamp"] = ts(-28)  # now + 28 s: requested 2 s ago
    p["metadata"]["deletionGracePeriodSeconds"] = 30
    view = view_of(p)
    assert view.state == "cancelled"
    assert view.final
    assert view.exit_code == 143
    assert view.error == "cancelled"


def test_deleted_while_running_by_anyone_else_is_failed() -> None:
    """kubectl delete, a node lost, an eviction: nobody asked for the job to stop."""
    p = pod(phase="Failed", init=CLONED, task=terminated(143, finished=2))
    p["metadata"]["deletionTimestamp"] = ts(-28)
    p["metadata"]["deletionGracePeriodSeconds"] = 30
    view = view_of(p)
    assert view.state == "failed"
    assert view.exit_code == 143
    assert view.error == POD_DELETED_ERROR
    assert view.error.startswith("execution vanished: ")


def test_deleted_while_pending_is_cancelled_or_failed() -> None:
    p = pod(phase="Failed")
    p["metadata"]["deletionTimestamp"] = ts(-30)
    assert view_of(p).state == "failed"
    assert view_of(cancel_marked(p)).state == "cancelled"


def test_finished_then_removed_by_ttl_keeps_its_outcome() -> None:
    p = pod(phase="Succeeded", init=CLONED, task=terminated(0, finished=3600))
    p["metadata"]["deletionTimestamp"] = ts(0)
    p["metadata"]["deletionGracePeriodSeconds"] = 0
    assert view_of(p).state == "succeeded"


def test_being_deleted_but_not_stopped_yet_waits() -> None:
    p = pod(phase="Pending")
    p["metadata"]["deletionTimestamp"] = ts(-30)
    assert view_of(p).state == "pending"
    p = pod(phase="Running", init=CLONED, task={"running": {"startedAt": ts(10)}})
    p["metadata"]["deletionTimestamp"] = ts(-30)
    assert view_of(p).state == "running"


def test_restarted_container_reads_its_last_termination() -> None:
    p = pod(phase="Failed", init=CLONED, task={"waiting": {"reason": "CrashLoopBackOff"}})
    p["status"]["containerStatuses"][0]["lastState"] = terminated(2)
    view = view_of(p)
    assert view.exit_code == 2
    assert "task" in view.log_containers


def test_garbage_does_not_crash() -> None:
    junks: list[dict[str, Any]] = [
        {},
        {"metadata": None, "spec": [], "status": "x"},
        {"status": {"phase": 7}},
    ]
    for junk in junks:
        view = assess(junk, now=NOW, image_pull_grace_seconds=GRACE)
        assert view.state == "pending"
        assert view.job_id is None


def test_describe_failure_does_not_mutate() -> None:
    p = pod(phase="Failed", init=CLONED, task=terminated(1))
    before = copy.deepcopy(p)
    describe_failure(p)
    assert p == before


def test_vanished() -> None:
    view = vanished("pod-x", "job-1", cancelled=True)
    assert view.state == "cancelled"
    assert view.final
    assert view.job_id == "job-1"
    assert view.error == "cancelled"
    view = vanished("pod-x", "job-1", cancelled=False)
    assert view.state == "failed"
    assert view.final
    assert view.error == POD_DELETED_ERROR


# -- output ------------------------------------------------------------------------------


def test_output_is_the_task_output_alone_when_the_clone_was_quiet() -> None:
    out = assemble_output(
        init_logs=[("git-clone", b"")], task_name="task", task_logs=b"hello\n", cap_bytes=1000
    )
    assert out == "hello\n"


def test_init_logs_come_first_under_a_heading() -> None:
    out = assemble_output(
        init_logs=[("git-clone", b"Cloning into '/mnt/repo'...")],
        task_name="task",
        task_logs=b"hello\n^JSON\n{}\n^JSON\n",
        cap_bytes=1000,
    )
    assert out == (
        "===== git-clone (init container) =====\n"
        "Cloning into '/mnt/repo'...\n"
        "===== task =====\n"
        "hello\n^JSON\n{}\n^JSON\n"
    )
    assert out.startswith(INIT_HEADING.format(name="git-clone"))


def test_clone_failure_output_is_the_init_log() -> None:
    out = assemble_output(
        init_logs=[("git-clone", b"fatal: repository not found\n")],
        task_name="task",
        task_logs=None,
        cap_bytes=1000,
    )
    assert out == (
        "===== git-clone (init container) =====\nfatal: repository not found\n===== task =====\n"
    )


def test_no_logs_at_all() -> None:
    assert assemble_output(init_logs=[], task_name="task", task_logs=None, cap_bytes=10) == ""


def test_output_is_capped_with_a_note() -> None:
    out = assemble_output(init_logs=[], task_name="task", task_logs=b"x" * 101, cap_bytes=100)
    assert out.startswith("x" * 100)
    assert "x" * 101 not in out
    assert "truncated" in out
    exact = assemble_output(init_logs=[], task_name="task", task_logs=b"x" * 100, cap_bytes=100)
    assert exact == "x" * 100


def test_cap_never_splits_a_character() -> None:
    out = assemble_output(init_logs=[], task_name="task", task_logs="é".encode() * 10, cap_bytes=5)
    assert out.startswith("éé")
    assert "\ufffd" not in out


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    out = assemble_output(init_logs=[], task_name="task", task_logs=b"ok \xff\xfe", cap_bytes=100)
    assert out.startswith("ok ")
