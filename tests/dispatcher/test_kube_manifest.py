"""The Job and Secrets the Kubernetes executor creates, field by field, and checked against
the Kubernetes OpenAPI schema (v1.32, vendored under tests/data/kubernetes-json-schema)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client

from kriten_common.kube import (
    MAX_LABEL_LENGTH,
    POD_SELECTOR,
    KubernetesSettings,
    dns_label,
    job_name,
    job_selector,
    label_value,
)
from kriten_dispatcher.kube_manifest import (
    GIT_CONTAINER,
    GIT_TOKEN_ENV,
    TASK_CONTAINER,
    build_job_manifest,
    build_job_secrets,
    build_secret_manifest,
    env_secret_name,
    git_secret_name,
    owner_reference_patch,
)
from kriten_dispatcher.ports import JobSpec

SCHEMAS = Path(__file__).parents[1] / "data" / "kubernetes-json-schema" / "v1.32.0-local-strict"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind}.json").read_text())
    return jsonschema.Draft202012Validator(schema)


JOB_SCHEMA = _validator("job-batch-v1")
SECRET_SCHEMA = _validator("secret-v1")


def schema_errors(validator: jsonschema.Draft202012Validator, obj: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


def make_spec(**overrides: Any) -> JobSpec:
    values: dict[str, Any] = {
        "job_id": "hello-kriten-a1b2c",
        "task": "hello-kriten",
        "owner": "alice",
        "command": "python hello.py",
        "image": "python:3.12-slim",
        "git_url": "https://github.com/kriten-io/kriten-examples.git",
        "branch": "main",
        "extra_vars": '{"name": "world"}',
        "timeout_seconds": 120,
        "git_token": None,
        "secrets": {},
    }
    values.update(overrides)
    return JobSpec(**values)


SETTINGS = KubernetesSettings(namespace="kriten-jobs", kubeconfig=None)


def build(spec: JobSpec | None = None, **kwargs: Any) -> dict[str, Any]:
    spec = spec or make_spec()
    options: dict[str, Any] = {
        "settings": SETTINGS,
        "token_secret_name": None,
        "secrets_secret_name": None,
    }
    options.update(kwargs)
    return build_job_manifest(spec, **options)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = job["spec"]["template"]["spec"]
    return result


def init_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(job)["initContainers"]
    return dict(container)


def task_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(job)["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def kubelet_expand(value: str) -> str:
    """The kubelet's `$(VAR)` expansion with no variables defined: `$$` becomes `$`,
    unresolvable references stay as they are."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


# -- the Job ----------------------------------------------------------------------------


def test_job_identity_and_metadata() -> None:
    job = build()
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "hello-kriten-a1b2c"
    assert job["metadata"]["namespace"] == "kriten-jobs"
    assert job["metadata"]["annotations"] == {"kriten.io/job-id": "hello-kriten-a1b2c"}


def test_labels_on_job_and_pod() -> None:
    job = build()
    expected = {
        "app.kubernetes.io/managed-by": "kriten",
        "kriten.io/job-id": "hello-kriten-a1b2c",
        "kriten.io/task": "hello-kriten",
        "kriten.io/owner": "alice",
    }
    assert job["metadata"]["labels"] == expected
    template = job["spec"]["template"]["metadata"]
    assert template["labels"] == expected
    # The pod carries the exact job id too: the collector reports from the pod.
    assert template["annotations"] == {"kriten.io/job-id": "hello-kriten-a1b2c"}


def test_labels_are_label_safe_for_any_owner_and_task() -> None:
    job = build(make_spec(owner="Alice Smith <alice@example.com>", task="Nightly Backup!" * 8))
    labels = job["metadata"]["labels"]
    for value in labels.values():
        assert len(value) <= MAX_LABEL_LENGTH
        assert LABEL_VALUE.match(value)
    assert labels["kriten.io/owner"].startswith("alice-smith-alice-example.com-")


def test_job_spec_policies() -> None:
    spec = build()["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in spec


def test_deadline_is_on_the_pod_from_the_task_timeout() -> None:
    assert pod_spec(build())["activeDeadlineSeconds"] == 120


def test_no_timeout_means_no_deadline_unless_settings_give_one() -> None:
    assert "activeDeadlineSeconds" not in pod_spec(build(make_spec(timeout_seconds=None)))
    with_default = KubernetesSettings(kubeconfig=None, default_timeout_seconds=900)
    job = build(make_spec(timeout_seconds=None), settings=with_default)
    assert pod_spec(job)["activeDeadlineSeconds"] == 900


def test_ttl_comes_from_settings() -> None:
    job = build(settings=KubernetesSettings(kubeconfig=None, job_ttl_seconds_after_finished=60))
    assert job["spec"]["ttlSecondsAfterFinished"] == 60


def test_pod_policies() -> None:
    spec = pod_spec(build())
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
    }


def test_image_user_when_settings_allow_root() -> None:
    spec = pod_spec(build(settings=KubernetesSettings(kubeconfig=None, run_as_non_root=False)))
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}


def test_every_container_is_locked_down() -> None:
    job = build()
    for container in (init_container(job), task_container(job)):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
    assert init_container(job)["securityContext"]["readOnlyRootFilesystem"] is True
    assert task_container(job)["securityContext"]["readOnlyRootFilesystem"] is False
    read_only = KubernetesSettings(kubeconfig=None, read_only_root_filesystem=True)
    hardened = task_container(build(settings=read_only))
    assert hardened["securityContext"]["readOnlyRootFilesystem"] is True


def test_volumes_without_secrets() -> None:
    assert pod_spec(build())["volumes"] == [
        {"name": "repo", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]


def test_init_container_clones_the_branch_into_the_shared_volume() -> None:
    init = init_container(build())
    assert init["name"] == GIT_CONTAINER
    assert init["image"] == "alpine/git:2.45.2"
    assert init["imagePullPolicy"] == "IfNotPresent"
    assert init["command"] == [
        "git",
        "clone",
        "--single-branch",
        "--branch",
        "main",
        "--",
        "https://github.com/kriten-io/kriten-examples.git",
        "/mnt/repo",
    ]
    assert init["workingDir"] == "/mnt/repo"
    assert {"name": "repo", "mountPath": "/mnt/repo"} in init["volumeMounts"]
    assert env_of(init) == {"GIT_TERMINAL_PROMPT": "0", "HOME": "/tmp"}
    assert init["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def test_git_image_from_settings() -> None:
    job = build(settings=KubernetesSettings(kubeconfig=None, git_image="registry.local/git:1"))
    assert init_container(job)["image"] == "registry.local/git:1"


def test_token_reaches_git_only_through_a_secret_and_a_credential_helper() -> None:
    spec = make_spec(git_token="ghp_SECRET_TOKEN_123")
    job = build(spec, token_secret_name="hello-kriten-a1b2c-git")
    init = init_container(job)
    env = env_of(init)
    assert env[GIT_TOKEN_ENV] == {
        "secretKeyRef": {"name": "hello-kriten-a1b2c-git", "key": "token"}
    }
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "credential.helper"
    helper = kubelet_expand(env["GIT_CONFIG_VALUE_0"])
    assert helper.startswith("!f() {")
    assert f"password=${{{GIT_TOKEN_ENV}}}" in helper
    # The token itself is nowhere in the Job: not in the URL, argv, env or anywhere.
    assert "ghp_SECRET_TOKEN_123" not in json.dumps(job)
    assert all("@" not in arg for arg in init["command"])
    # And the task container never gets the token.
    assert GIT_TOKEN_ENV not in json.dumps(task_container(job))


def test_task_container_runs_the_command_in_the_clone() -> None:
    task = task_container(build())
    assert task["name"] == TASK_CONTAINER
    assert task["image"] == "python:3.12-slim"
    assert task["command"] == ["sh", "-c", "python hello.py"]
    assert "args" not in task
    assert task["workingDir"] == "/mnt/repo"
    assert {"name": "repo", "mountPath": "/mnt/repo"} in task["volumeMounts"]
    assert task["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_resources_from_settings() -> None:
    custom = KubernetesSettings(
        kubeconfig=None,
        cpu_request="250m",
        cpu_limit="2",
        memory_request="1Gi",
        memory_limit="2Gi",
    )
    assert task_container(build(settings=custom))["resources"] == {
        "requests": {"cpu": "250m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }


def test_extra_vars_is_the_input_exactly() -> None:
    task = task_container(build())
    assert env_of(task) == {"EXTRA_VARS": '{"name": "world"}'}


@pytest.mark.parametrize(
    "raw",
    ["", "$HOME", "$$", "$(PATH)", "a $$(X) b", '{"cost": "$5", "shell": "$(rm -rf /)"}', "ünï\n"],
)
def test_dollar_signs_survive_the_kubelets_expansion(raw: str) -> None:
    job = build(make_spec(extra_vars=raw, command=f"echo {raw}", branch=raw or "main"))
    assert kubelet_expand(env_of(task_container(job))["EXTRA_VARS"]) == raw
    assert kubelet_expand(task_container(job)["command"][2]) == f"echo {raw}"
    assert kubelet_expand(init_container(job)["command"][4]) == (raw or "main")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_input_round_trips_through_expansion(raw: str) -> None:
    job = build(make_spec(extra_vars=raw))
    assert kubelet_expand(env_of(task_container(job))["EXTRA_VARS"]) == raw


def test_runner_secrets_as_env_and_as_files() -> None:
    job = build(make_spec(secrets={"API_KEY": "k"}), secrets_secret_name="hello-kriten-a1b2c-env")
    task = task_container(job)
    assert task["envFrom"] == [{"secretRef": {"name": "hello-kriten-a1b2c-env"}}]
    assert {"name": "secret", "mountPath": "/etc/secret", "readOnly": True} in task["volumeMounts"]
    assert {
        "name": "secret",
        "secret": {"secretName": "hello-kriten-a1b2c-env", "defaultMode": 0o440},
    } in pod_spec(job)["volumes"]
    # Secret values never appear in the Job.
    assert '"k"' not in json.dumps(job)
    # The clone does not get them.
    assert "envFrom" not in init_container(job)


def test_job_name_is_a_dns_label_for_any_job_id() -> None:
    job = build(make_spec(job_id="Weird_ID/with spaces and a very long tail " + "x" * 80))
    name = job["metadata"]["name"]
    assert DNS_LABEL.match(name)
    assert len(name) <= 63
    assert job["metadata"]["annotations"]["kriten.io/job-id"].startswith("Weird_ID/")


# -- schema validity ----------------------------------------------------------------------


SPEC_VARIANTS = [
    make_spec(),
    make_spec(timeout_seconds=None),
    make_spec(git_token="t0ken", secrets={"A": "1", "b.c": "2"}),
    make_spec(job_id="X" * 100, owner="bob@example.com", task="Task With Spaces"),
    make_spec(extra_vars="", command="", branch="release/1.0"),
]


@pytest.mark.parametrize("spec", SPEC_VARIANTS)
@pytest.mark.parametrize(
    "settings_",
    [
        SETTINGS,
        KubernetesSettings(
            kubeconfig=None,
            run_as_non_root=False,
            default_timeout_seconds=60,
            read_only_root_filesystem=True,
        ),
    ],
)
def test_every_job_validates_against_the_kubernetes_schema(
    spec: JobSpec, settings_: KubernetesSettings
) -> None:
    job = build_job_manifest(
        spec,
        settings=settings_,
        token_secret_name=git_secret_name(spec.job_id) if spec.git_token else None,
        secrets_secret_name=env_secret_name(spec.job_id) if spec.secrets else None,
    )
    assert schema_errors(JOB_SCHEMA, job) == []


def test_the_schema_is_strict_enough_to_catch_mistakes() -> None:
    job = build()
    task_container(job)  # sanity
    pod_spec(job)["containers"][0]["comand"] = ["typo"]
    pod_spec(job)["restartPolicy"] = 3
    errors = schema_errors(JOB_SCHEMA, job)
    assert any("comand" in error for error in errors)
    assert any("restartPolicy" in error for error in errors)


@pytest.mark.parametrize("spec", SPEC_VARIANTS)
def test_the_client_model_keeps_every_field(spec: JobSpec) -> None:
    """The launcher sends the manifest through `V1Job`, which drops unknown fields
    silently: a round trip must give back the same JSON."""
    job = build(spec, token_secret_name="a-git", secrets_secret_name="a-env")
    model = client.V1Job.from_dict(job)
    sent = client.ApiClient().sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
    assert sent == job


# -- Secrets -----------------------------------------------------------------------------


def test_no_secrets_when_there_is_nothing_to_keep() -> None:
    assert build_job_secrets(make_spec(), settings=SETTINGS) == []


def test_git_token_secret() -> None:
    spec = make_spec(git_token="ghp_abc")
    (secret,) = build_job_secrets(spec, settings=SETTINGS)
    assert secret["metadata"]["name"] == git_secret_name(spec.job_id) == "hello-kriten-a1b2c-git"
    assert secret["metadata"]["namespace"] == "kriten-jobs"
    assert secret["metadata"]["labels"]["kriten.io/job-id"] == "hello-kriten-a1b2c"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kriten"
    assert secret["metadata"]["labels"]["kriten.io/secret-purpose"] == "git-token"
    assert secret["type"] == "Opaque"
    assert secret["immutable"] is True
    assert base64.b64decode(secret["data"]["token"]) == b"ghp_abc"
    assert schema_errors(SECRET_SCHEMA, secret) == []


def test_runner_secrets_secret() -> None:
    spec = make_spec(git_token="t", secrets={"API_KEY": "key ü", "cert.pem": "----"})
    git, env = build_job_secrets(spec, settings=SETTINGS)
    assert git["metadata"]["name"].endswith("-git")
    assert env["metadata"]["name"] == env_secret_name(spec.job_id)
    assert env["metadata"]["labels"]["kriten.io/secret-purpose"] == "runner-secrets"
    decoded = {k: base64.b64decode(v).decode() for k, v in env["data"].items()}
    assert decoded == {"API_KEY": "key ü", "cert.pem": "----"}
    assert "token" not in env["data"]
    assert schema_errors(SECRET_SCHEMA, env) == []


@pytest.mark.parametrize("key", ["has space", "slash/key", "", "k" * 254])
def test_secret_keys_kubernetes_refuses_are_rejected(key: str) -> None:
    with pytest.raises(ValueError, match="secret key"):
        build_secret_manifest(
            make_spec(), name="n", purpose="p", data={key: "v"}, settings=SETTINGS
        )


def test_owner_reference_patch() -> None:
    patch = owner_reference_patch(job="hello", job_uid="1234")
    assert patch == {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "hello",
                    "uid": "1234",
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ]
        }
    }


# -- label helpers (kriten_common.kube) --------------------------------------------------


@pytest.mark.parametrize("value", ["alice", "hello-kriten", "a.b_c-d", "x" * 63, "9", ""])
def test_label_value_keeps_valid_values(value: str) -> None:
    assert label_value(value) == value


@pytest.mark.parametrize("value", ["Alice", "a b", "x" * 64, "-lead", "trail_", "ü", "a/b", "__"])
def test_label_value_cleans_and_hashes_the_rest(value: str) -> None:
    label = label_value(value)
    assert len(label) <= MAX_LABEL_LENGTH
    assert re.fullmatch(r"(([a-z0-9][-a-z0-9_.]*)?[a-z0-9])?", label)
    assert label != value
    assert re.search(r"[0-9a-f]{8}$", label)


def test_label_values_that_clean_up_alike_stay_distinct() -> None:
    assert label_value("Alice") != label_value("alice-")
    assert label_value("Alice") != label_value("ALICE")
    assert label_value("x" * 70 + "1") != label_value("x" * 70 + "2")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_label_value_always_valid(value: str) -> None:
    label = label_value(value)
    assert len(label) <= MAX_LABEL_LENGTH
    assert LABEL_VALUE.match(label)
    assert label == label.lower()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_dns_label_always_valid(value: str) -> None:
    name = dns_label(value)
    assert len(name) <= 63
    assert DNS_LABEL.match(name)
    assert job_name(value) == name


def test_selectors() -> None:
    assert POD_SELECTOR == "app.kubernetes.io/managed-by=kriten,kriten.io/collected!=true"
    assert job_selector("Job 1") == (
        f"app.kubernetes.io/managed-by=kriten,kriten.io/job-id={label_value('Job 1')}"
    )
