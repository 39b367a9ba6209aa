"""What the dispatcher and the collector share about Kubernetes: settings, the API client,
and the labels that tie a Job and its pod to a Kriten job.

Kept free of any service: the dispatcher writes these labels on every Job it creates, and
the collector selects pods by them. `kubernetes` is imported lazily so that services
which never talk to a cluster do not pay for (or need) the client.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "kriten"
LABEL_JOB_ID = "kriten.io/job-id"
LABEL_TASK = "kriten.io/task"
LABEL_OWNER = "kriten.io/owner"
# Set on a pod once the collector's consumer has stored its final result: the pod
# selector excludes it from then on, so a collector restart does not report it again.
LABEL_COLLECTED = "kriten.io/collected"
COLLECTED_VALUE = "true"
# Labels are lossy (63 characters, a restricted alphabet): the exact job id travels in an
# annotation too, and that is what the collector reports.
ANNOTATION_JOB_ID = "kriten.io/job-id"
# Set by the dispatcher on a job's pods before it deletes the Job for a user's cancel: a
# pod deleted without it (kubectl, a node lost, an eviction) is a failure, not a cancel.
ANNOTATION_CANCEL_REQUESTED = "kriten.io/cancel-requested"
CANCEL_REQUESTED_VALUE = "true"

# What the collector lists and watches: every pod Kriten made that it has not collected.
POD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_COLLECTED}!={COLLECTED_VALUE}"

MAX_LABEL_LENGTH = 63
_HASH_LENGTH = 8
_LABEL_VALUE = re.compile(r"^(?:[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$")


class KubernetesSettings(BaseSettings):
    """How the Kubernetes executor reaches the cluster and shapes every Job."""

    model_config = SettingsConfigDict(env_prefix="KRITEN_", extra="ignore")

    namespace: str = "kriten"
    # None: the in-cluster service account, else the default kubeconfig (~/.kube/config
    # or $KUBECONFIG), in that order.
    kubeconfig: Path | None = None
    job_ttl_seconds_after_finished: int = Field(default=3600, ge=0)
    # Used when a task has no timeout of its own; None means no deadline at all.
    default_timeout_seconds: int | None = Field(default=None, gt=0)
    cpu_request: str = "100m"
    cpu_limit: str = "1"
    memory_request: str = "128Mi"
    memory_limit: str = "512Mi"
    git_image: str = "alpine/git:2.45.2"
    git_cpu_request: str = "50m"
    git_cpu_limit: str = "500m"
    git_memory_request: str = "64Mi"
    git_memory_limit: str = "256Mi"
    # Non-root by default, as `run_as_user`; false lets runner images that need root run
    # as their own user (no runAsNonRoot check, no fixed user).
    run_as_non_root: bool = True
    run_as_user: int = Field(default=65532, ge=1)
    read_only_root_filesystem: bool = False
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # Seconds a pod may sit in ImagePullBackOff before the collector reports the job failed.
    image_pull_grace_seconds: float = Field(default=300.0, ge=0)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    # A watch request ends after this long on the server and is resumed from where it was.
    watch_timeout_seconds: int = Field(default=300, gt=0)
    # Backoff between retries, for the dispatcher's launches and the collector's watch.
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    list_page_size: int = Field(default=500, gt=0)
    # Running pods whose log the collector follows at once for live output (each holds a
    # thread and a connection); 0 turns live output off. Beyond it, output appears at the end.
    live_log_max_pods: int = Field(default=64, ge=0)


def load_api_client(
    settings: KubernetesSettings, *, connection_pool_maxsize: int | None = None
) -> ApiClient:
    """A client of its own (never the library's global configuration): the configured
    kubeconfig, else in-cluster, else the default kubeconfig.

    `connection_pool_maxsize`: connections kept per host, at least the client's default
    (cpus * 5). A caller with more calls in flight than that asks for more, else urllib3
    opens the extra connections and throws them away after each call."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if settings.kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig),
            client_configuration=configuration,
            persist_config=False,
        )
    else:
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except config.ConfigException:
            # The library reads $KUBECONFIG once, at import; read it now, as kubectl does.
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
                persist_config=False,
            )
    # Watches sit idle for minutes; keepalive stops middleboxes from dropping them silently.
    configuration.keep_alive = True
    if connection_pool_maxsize is not None:
        configuration.connection_pool_maxsize = max(
            configuration.connection_pool_maxsize, connection_pool_maxsize
        )
    return client.ApiClient(configuration=configuration)


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:_HASH_LENGTH]


def label_value(value: str) -> str:
    """A valid, lowercase label value standing for `value`.

    A value that already is one is kept as it is. Any other is lowercased, stripped of
    characters labels cannot hold, cut to fit, and given a hash of the original as a
    suffix, so two different values that clean up alike still get different labels.
    """
    if len(value) <= MAX_LABEL_LENGTH and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^a-z0-9_.-]+", "-", value.lower())
    room = MAX_LABEL_LENGTH - _HASH_LENGTH - 1
    cleaned = cleaned[:room].strip("-_.")
    suffix = _short_hash(value)
    return f"{cleaned}-{suffix}" if cleaned else suffix


def dns_label(value: str, *, max_length: int = MAX_LABEL_LENGTH) -> str:
    """A DNS-1123 label (an object name) standing for `value`, built like `label_value`.

    Job names must be DNS labels of at most 63 characters, because the Job controller
    copies the name into a label on its pods.
    """
    if len(value) <= max_length and _DNS_LABEL.match(value):
        return value
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower())
    room = max_length - _HASH_LENGTH - 1
    cleaned = cleaned[:room].strip("-")
    suffix = _short_hash(value)
    # A name must start with a letter or digit; the hex suffix always does.
    return f"{cleaned}-{suffix}" if cleaned else suffix


def job_name(job_id: str) -> str:
    """The name of the Job (and the prefix of its Secrets) for `job_id`."""
    return dns_label(job_id)


def job_selector(job_id: str) -> str:
    """Selects the objects of one job (compare the annotation too: labels are lossy)."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_JOB_ID}={label_value(job_id)}"
