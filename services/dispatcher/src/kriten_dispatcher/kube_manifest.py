"""Pure builders of the Kubernetes objects for one job: its `batch/v1` Job and its Secrets.

No I/O here, so every field can be tested on its own and every Job validated against the
Kubernetes schema. The launcher sends what these return.

The shape of a Job:

- an init container (`git-clone`, `settings.git_image`) clones the runner's repository at
  its branch into an `emptyDir` at `/mnt/repo`. A runner token reaches git only through a
  credential helper configured by environment variables (`GIT_CONFIG_*`) that reads it from
  an environment variable filled from the job's own git Secret: the token is never in the
  URL, the command line, the Job spec or the clone's `.git/config`, and the task container
  never sees it;
- the main container (`task`) runs the runner's image with `sh -c <command>` in
  `/mnt/repo`, with `EXTRA_VARS` set to the job input exactly, and the runner's secrets
  both as environment variables (`envFrom`) and as files under `/etc/secret/`;
- `activeDeadlineSeconds` is set on the pod, not the Job: the kubelet then marks the pod
  Failed with reason `DeadlineExceeded` and keeps it, so the collector can still read its
  logs, where a Job-level deadline deletes the pod and its logs with it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from kriten_common.kube import (
    ANNOTATION_JOB_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_TASK,
    MANAGED_BY_VALUE,
    KubernetesSettings,
    job_name,
    label_value,
)
from kriten_dispatcher.ports import JobSpec

GIT_CONTAINER = "git-clone"
TASK_CONTAINER = "task"
REPO_VOLUME = "repo"
REPO_PATH = "/mnt/repo"
# Names of things that hold secrets, not secrets (hence the S105 exemptions).
SECRET_VOLUME = "secret"  # noqa: S105
SECRET_PATH = "/etc/secret"  # noqa: S105
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"  # noqa: S108 - an emptyDir of the pod's own, not the host's /tmp
GIT_TOKEN_KEY = "token"  # noqa: S105
GIT_TOKEN_ENV = "KRITEN_GIT_TOKEN"  # noqa: S105
GIT_USERNAME = "x-access-token"
# Group and files readable by the job's user (through fsGroup) and nobody else.
SECRET_FILE_MODE = 0o440

LABEL_SECRET_PURPOSE = "kriten.io/secret-purpose"  # noqa: S105

# git runs this through sh when it needs credentials; `$1` is get/store/erase. Any
# username works with a token as the password on GitHub, GitLab and Gitea.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'echo "username={GIT_USERNAME}"; echo "password=${{{GIT_TOKEN_ENV}}}"; }}; f'
)
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MAX_SECRET_KEY_LENGTH = 253


def git_secret_name(job_id: str) -> str:
    return f"{job_name(job_id)}-git"


def env_secret_name(job_id: str) -> str:
    return f"{job_name(job_id)}-env"


def job_labels(spec: JobSpec) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY_VALUE,
        LABEL_JOB_ID: label_value(spec.job_id),
        LABEL_TASK: label_value(spec.task),
        LABEL_OWNER: label_value(spec.owner),
    }


def _literal(value: str) -> str:
    """`value` protected from the kubelet's `$(VAR)` expansion, which applies to env values,
    `command` and `args`: `$$` reads back as `$`, so doubling every `$` keeps it exact."""
    return value.replace("$", "$$")


def _restricted_container_security(*, read_only_root: bool) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": read_only_root,
    }


def _pod_security(settings: KubernetesSettings) -> dict[str, Any]:
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if settings.run_as_non_root:
        context |= {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            # emptyDir volumes and Secret files become group-owned by this, so the job's
            # user can write the clone and read its secrets.
            "fsGroup": settings.run_as_user,
        }
    return context


def _git_container(
    spec: JobSpec, *, settings: KubernetesSettings, token_secret_name: str | None
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
        {"name": "HOME", "value": TMP_PATH},
    ]
    if token_secret_name is not None:
        env += [
            {
                "name": GIT_TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": token_secret_name, "key": GIT_TOKEN_KEY}},
            },
            # Configuration through the environment (git >= 2.31), so the helper is in
            # force for this clone only and is not written into the clone's config.
            {"name": "GIT_CONFIG_COUNT", "value": "1"},
            {"name": "GIT_CONFIG_KEY_0", "value": "credential.helper"},
            {"name": "GIT_CONFIG_VALUE_0", "value": _literal(_CREDENTIAL_HELPER)},
        ]
    return {
        "name": GIT_CONTAINER,
        "image": settings.git_image,
        "imagePullPolicy": settings.image_pull_policy,
        # No shell: the URL and branch are the runner's, and stay plain arguments.
        "command": [
            "git",
            "clone",
            "--single-branch",
            "--branch",
            _literal(spec.branch),
            "--",
            _literal(spec.git_url),
            REPO_PATH,
        ],
        "workingDir": REPO_PATH,
        "env": env,
        "resources": {
            "requests": {"cpu": settings.git_cpu_request, "memory": settings.git_memory_request},
            "limits": {"cpu": settings.git_cpu_limit, "memory": settings.git_memory_limit},
        },
        "securityContext": _restricted_container_security(read_only_root=True),
        "volumeMounts": [
            {"name": REPO_VOLUME, "mountPath": REPO_PATH},
            {"name": TMP_VOLUME, "mountPath": TMP_PATH},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _task_container(
    spec: JobSpec, *, settings: KubernetesSettings, secrets_secret_name: str | None
) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {"name": REPO_VOLUME, "mountPath": REPO_PATH},
        {"name": TMP_VOLUME, "mountPath": TMP_PATH},
    ]
    container: dict[str, Any] = {
        "name": TASK_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["sh", "-c", _literal(spec.command)],
        "workingDir": REPO_PATH,
        # `env` wins over `envFrom`, so a runner secret cannot shadow EXTRA_VARS.
        "env": [{"name": "EXTRA_VARS", "value": _literal(spec.extra_vars)}],
        "resources": {
            "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
            "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
        },
        "securityContext": _restricted_container_security(
            read_only_root=settings.read_only_root_filesystem
        ),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if secrets_secret_name is not None:
        container["envFrom"] = [{"secretRef": {"name": secrets_secret_name}}]
        mounts.append({"name": SECRET_VOLUME, "mountPath": SECRET_PATH, "readOnly": True})
    return container


def build_job_manifest(
    spec: JobSpec,
    *,
    settings: KubernetesSettings,
    token_secret_name: str | None,
    secrets_secret_name: str | None,
) -> dict[str, Any]:
    """The `batch/v1` Job for `spec`, as the JSON the API server takes.

    `token_secret_name` names a Secret holding the git token under `token`, and
    `secrets_secret_name` one holding the runner's secrets; None leaves each out.
    """
    labels = job_labels(spec)
    annotations = {ANNOTATION_JOB_ID: spec.job_id}
    volumes: list[dict[str, Any]] = [
        {"name": REPO_VOLUME, "emptyDir": {}},
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
    if secrets_secret_name is not None:
        volumes.append(
            {
                "name": SECRET_VOLUME,
                "secret": {"secretName": secrets_secret_name, "defaultMode": SECRET_FILE_MODE},
            }
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        # Service links would add variables the task did not ask for to its environment.
        "enableServiceLinks": False,
        "securityContext": _pod_security(settings),
        "initContainers": [
            _git_container(spec, settings=settings, token_secret_name=token_secret_name)
        ],
        "containers": [
            _task_container(spec, settings=settings, secrets_secret_name=secrets_secret_name)
        ],
        "volumes": volumes,
    }
    timeout = spec.timeout_seconds or settings.default_timeout_seconds
    if timeout is not None:
        pod_spec["activeDeadlineSeconds"] = timeout
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec.job_id),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }


def _check_secret_keys(data: Mapping[str, str]) -> None:
    for key in data:
        if len(key) > _MAX_SECRET_KEY_LENGTH or not _SECRET_KEY.match(key):
            raise ValueError(
                f"secret key {key!r} is not valid in Kubernetes "
                "(letters, digits, '-', '_' and '.' only, at most 253 characters)"
            )


def build_secret_manifest(
    spec: JobSpec,
    *,
    name: str,
    purpose: str,
    data: Mapping[str, str],
    settings: KubernetesSettings,
) -> dict[str, Any]:
    """An immutable Opaque Secret of the job, labelled like its Job so that one left
    behind (the Job never created) can be found and removed. Raises ValueError for a key
    Kubernetes would refuse."""
    _check_secret_keys(data)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": job_labels(spec) | {LABEL_SECRET_PURPOSE: purpose},
            "annotations": {ANNOTATION_JOB_ID: spec.job_id},
        },
        "type": "Opaque",
        "immutable": True,
        "data": {
            key: base64.b64encode(value.encode("utf-8")).decode("ascii")
            for key, value in sorted(data.items())
        },
    }


def build_job_secrets(spec: JobSpec, *, settings: KubernetesSettings) -> list[dict[str, Any]]:
    """The Secrets `spec` needs, each only when there is something to put in it: the git
    token (for the init container) and the runner's secrets (for the task container)."""
    secrets = []
    if spec.git_token:
        secrets.append(
            build_secret_manifest(
                spec,
                name=git_secret_name(spec.job_id),
                purpose="git-token",
                data={GIT_TOKEN_KEY: spec.git_token},
                settings=settings,
            )
        )
    if spec.secrets:
        secrets.append(
            build_secret_manifest(
                spec,
                name=env_secret_name(spec.job_id),
                purpose="runner-secrets",
                data=spec.secrets,
                settings=settings,
            )
        )
    return secrets


def owner_reference_patch(*, job: str, job_uid: str) -> dict[str, Any]:
    """Makes a Secret belong to its Job, so the garbage collector removes it with the Job
    (TTL after finishing, or cancellation). `blockOwnerDeletion` stays off: setting it
    needs update rights on the Job's finalizers, which the dispatcher does not have."""
    return {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job,
                    "uid": job_uid,
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ]
        }
    }
