"""Static checks of the Kubernetes deployment in `k8s/`: the base and the production overlay.

Both are rendered with `kubectl kustomize` (no cluster needed), and every rendered object is
checked two ways.

Against the Kubernetes schemas. The kind's model is found the way a client finds it: the
official `kubernetes` Python client's API class for the object's `apiVersion`
(`apps/v1` -> `AppsV1Api`) must have a `create_[namespaced_]<kind>` call, whose return
type is the model (`V1Deployment`). The client's models are pydantic classes generated
from the Kubernetes OpenAPI specification, with `extra="forbid"`, strict types and the
required fields; their JSON Schema (`model_json_schema()`, JSON field names only) is what
every object is validated against, with `apiVersion` and `kind` pinned. Pod templates are
also validated against the strict v1.32 `PodSpec` and `ObjectMeta` schemas vendored under
`tests/data/kubernetes-json-schema` (from `kubernetes-validate`), so a field newer than
v1.32 fails too. No other schema source is available offline: `kubectl` validates only
against a live API server.

Against the deployment's own rules: probes, resources, grace period, non-root security
contexts, service accounts and least-privilege RBAC (compared with the Kubernetes calls
that the dispatcher's and collector's code makes), Ingress routing, autoscalers,
disruption budgets, Services selecting Deployments, references that resolve, and
environment variables that the services' settings know.

Each check is a function returning the problems it found, and each is also run on a
rendering broken on purpose, to show that it can fail.
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from kubernetes import client as kube_client

from kriten_api.settings import ApiSettings
from kriten_collector.settings import CollectorSettings
from kriten_common.kube import KubernetesSettings
from kriten_dispatcher.settings import DispatcherSettings
from kriten_ingress.settings import IngressSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
RENDERS = ("base", "overlays/production")
SERVICES = ("api", "ingress", "dispatcher", "collector")
HTTP_SERVICES = ("api", "ingress")
KUBE_SERVICES = ("dispatcher", "collector")
NAMESPACE = "kriten"
PORT = 8080
USER_ID = 10001
SECRETS_EXAMPLE = K8S / "base" / "secrets.example.env"
# Secrets the deployment uses but does not create; k8s/README.md says how to make them.
EXTERNAL_SECRETS = frozenset({"kriten-secrets", "kriten-tls"})
SECRETS_SECRET = "kriten-secrets"
VENDORED_SCHEMAS = REPO / "tests" / "data" / "kubernetes-json-schema" / "v1.32.0-local-strict"

SETTINGS_CLASSES: dict[str, tuple[type[Any], ...]] = {
    "api": (ApiSettings,),
    "ingress": (IngressSettings,),
    "dispatcher": (DispatcherSettings, KubernetesSettings),
    "collector": (CollectorSettings, KubernetesSettings),
}
# What each service must get from the Secret; nothing secret may come from anywhere else.
SECRET_VARIABLES: dict[str, frozenset[str]] = {
    "api": frozenset(
        {
            "KRITEN_AMQP_URL",
            "KRITEN_DATABASE_URL",
            "KRITEN_ENCRYPTION_KEYS",
            "KRITEN_JWT_KEY",
            "KRITEN_TOKEN_KEY",
            "KRITEN_ROOT_PASSWORD",
        }
    ),
    "ingress": frozenset({"KRITEN_AMQP_URL", "KRITEN_DATABASE_URL", "KRITEN_ENCRYPTION_KEYS"}),
    "dispatcher": frozenset({"KRITEN_AMQP_URL", "KRITEN_DATABASE_URL", "KRITEN_ENCRYPTION_KEYS"}),
    "collector": frozenset({"KRITEN_AMQP_URL", "KRITEN_DATABASE_URL"}),
}
SECRET_LIKE = re.compile(r"^KRITEN_\w*(?:KEY|KEYS|PASSWORD|SECRET|TOKEN|_URL)$")
# Variables that name no secret even though their names look like one.
NOT_SECRET = frozenset({"KRITEN_PUBLIC_URL"})
EXPECTED_ENVIRONMENT: dict[str, dict[str, str]] = {
    service: {
        "KRITEN_ENV": "production",
        "KRITEN_HOST": "0.0.0.0",  # noqa: S104 - in a container, listen on every interface
        "KRITEN_PORT": str(PORT),
    }
    | ({"KRITEN_EXECUTOR": "kubernetes"} if service in KUBE_SERVICES else {})
    for service in SERVICES
}

Rule = tuple[str, str, str]  # (API group, resource, verb)
# Least privilege, in the jobs namespace only: exactly the calls each service's code makes
# (test_expected_rbac_is_what_the_code_calls keeps the two together).
EXPECTED_RBAC: dict[str, frozenset[Rule]] = {
    "dispatcher": frozenset(
        {
            ("batch", "jobs", "create"),
            ("batch", "jobs", "get"),
            ("batch", "jobs", "delete"),
            ("", "secrets", "create"),
            ("", "secrets", "patch"),
            ("", "secrets", "delete"),
            ("", "pods", "list"),
            ("", "pods", "patch"),
        }
    ),
    "collector": frozenset(
        {
            ("", "pods", "list"),
            ("", "pods", "watch"),
            ("", "pods", "patch"),
            ("", "pods/log", "get"),
        }
    ),
}
KUBE_CODE = {
    "dispatcher": REPO / "services/dispatcher/src/kriten_dispatcher/kube_launcher.py",
    "collector": REPO / "services/collector/src/kriten_collector/kube_observer.py",
}
DEFAULT_GRACE = str(ApiSettings.model_fields["shutdown_grace_seconds"].default)
DEFAULT_JOBS_NAMESPACE = str(KubernetesSettings.model_fields["namespace"].default)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Objects = list[dict[str, Any]]


def component_name(service: str) -> str:
    return f"kriten-{service}"


# --------------------------------------------------------------------------- rendering


@functools.cache
def _render_text(path: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render k8s/ (`kubectl kustomize` needs no cluster)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return result.stdout


def render(path: str) -> Objects:
    """The objects `kubectl kustomize k8s/<path>` renders, as a fresh copy to change."""
    return [doc for doc in yaml.safe_load_all(_render_text(path)) if doc is not None]


def key_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    metadata = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(metadata.get("namespace", "")), str(metadata.get("name")))


def index(objects: Objects) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {key_of(obj): obj for obj in objects}


def of_kind(objects: Objects, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (found,) = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    return found


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod_spec(deployment)["containers"][0]
    return container


# --------------------------------------------------------------------------- the schemas


def api_class_name(api_version: str) -> str:
    """`apps/v1` -> `AppsV1Api`, `v1` -> `CoreV1Api`,
    `rbac.authorization.k8s.io/v1` -> `RbacAuthorizationV1Api`."""
    group, _, version = api_version.rpartition("/")
    group = group.removesuffix(".k8s.io")
    words = [part.capitalize() for part in group.split(".") if part] or ["Core"]
    return "".join(words) + version.capitalize() + "Api"


def snake_case(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


@dataclass(frozen=True)
class KindInfo:
    model: type[Any]
    namespaced: bool


@functools.cache
def kind_info(api_version: str, kind: str) -> KindInfo | None:
    """The client's model of `kind` as served at `api_version`, or None when the official
    client has no such kind there (a wrong group or version, a removed beta)."""
    api = getattr(kube_client, api_class_name(api_version), None)
    if api is None:
        return None
    for prefix, namespaced in (("create_namespaced_", True), ("create_", False)):
        method = getattr(api, prefix + snake_case(kind), None)
        if method is not None:
            model = inspect.signature(method).return_annotation
            if inspect.isclass(model) and hasattr(model, "model_json_schema"):
                return KindInfo(model=model, namespaced=namespaced)
    return None


@functools.cache
def object_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    info = kind_info(api_version, kind)
    if info is None:
        return None
    schema: dict[str, Any] = info.model.model_json_schema()
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return jsonschema.Draft202012Validator(schema)


def _vendored_validator(file: str, definition: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((VENDORED_SCHEMAS / file).read_text())
    return jsonschema.Draft202012Validator(
        {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    )


POD_SPEC_V1_32 = _vendored_validator("pod-v1.json", "io.k8s.api.core.v1.PodSpec")
OBJECT_META_V1_32 = _vendored_validator(
    "pod-v1.json", "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)


def _leaves(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """The errors that say what is wrong. An optional field's schema is `anyOf: [the
    type, null]`, whose own error only says that neither fits: descend into the branches
    that the value's type fits, and report their errors instead."""
    if not error.context:
        yield error
        return
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [
        errors
        for errors in branches.values()
        if not any(e.validator == "type" and not e.relative_path for e in errors)
    ]
    if not fitting:
        yield error
        return
    for errors in fitting:
        for sub in errors:
            yield from _leaves(sub)


def _errors(validator: jsonschema.Draft202012Validator, instance: Any, where: str) -> list[str]:
    return [
        f"{where}: {'/'.join(str(p) for p in leaf.absolute_path) or '.'}: {leaf.message}"
        for error in validator.iter_errors(instance)
        for leaf in _leaves(error)
    ]


def schema_problems(objects: Objects) -> list[str]:
    """Every object against its kind's schema; its scope; its name."""
    problems: list[str] = []
    for obj in objects:
        kind, namespace, name = key_of(obj)
        where = f"{obj.get('apiVersion')} {kind} {namespace}/{name}"
        api_version = str(obj.get("apiVersion"))
        validator = object_validator(api_version, kind)
        info = kind_info(api_version, kind)
        if validator is None or info is None:
            problems.append(f"{where}: the Kubernetes API has no kind {kind} in {api_version}")
            continue
        problems += _errors(validator, obj, where)
        if info.namespaced and not namespace:
            problems.append(f"{where}: a namespaced kind without metadata.namespace")
        if not info.namespaced and namespace:
            problems.append(f"{where}: a cluster-scoped kind with metadata.namespace")
        if not DNS_LABEL.match(name) or len(name) > 63:
            problems.append(f"{where}: the name is not a DNS label")
    return problems


def pod_template_problems(objects: Objects) -> list[str]:
    """Pod templates against the vendored strict v1.32 schemas."""
    problems: list[str] = []
    for deployment in of_kind(objects, "Deployment"):
        where = f"Deployment {deployment['metadata']['name']} (v1.32)"
        template = deployment.get("spec", {}).get("template", {})
        problems += _errors(POD_SPEC_V1_32, template.get("spec"), f"{where} pod spec")
        problems += _errors(OBJECT_META_V1_32, template.get("metadata"), f"{where} metadata")
    return problems


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class FromSecret:
    secret: str
    key: str


def container_environment(
    objects: Objects, namespace: str, container: dict[str, Any]
) -> dict[str, str | FromSecret | None]:
    """What the container's environment holds, ConfigMaps resolved (None: not resolvable
    here, e.g. a missing ConfigMap, a field reference)."""
    found = index(objects)
    environment: dict[str, str | FromSecret | None] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        config_map = found.get(("ConfigMap", namespace, ref["name"])) if ref else None
        for name, value in ((config_map or {}).get("data") or {}).items():
            environment[source.get("prefix", "") + name] = str(value)
        if source.get("secretRef"):
            secret = source["secretRef"]["name"]
            environment[f"<every key of Secret {secret}>"] = FromSecret(secret, "*")
    for variable in container.get("env") or []:
        if "value" in variable:
            environment[variable["name"]] = str(variable["value"])
            continue
        value_from = variable.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            environment[variable["name"]] = FromSecret(ref.get("name", ""), ref.get("key", ""))
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            config_map = found.get(("ConfigMap", namespace, ref.get("name", "")))
            data = (config_map or {}).get("data") or {}
            environment[variable["name"]] = data.get(ref.get("key"))
        else:
            environment[variable["name"]] = None
    return environment


def known_variables(service: str) -> frozenset[str]:
    names = {
        f"KRITEN_{field.upper()}"
        for settings in SETTINGS_CLASSES[service]
        for field in settings.model_fields
    }
    return frozenset(names)


def environment_problems(objects: Objects) -> list[str]:
    """Each service gets the variables it needs, secrets from the Secret only, and no
    variable its settings do not read (a misspelt name is silently ignored otherwise)."""
    problems: list[str] = []
    for service in SERVICES:
        name = component_name(service)
        try:
            deployment = find(objects, "Deployment", name)
        except ValueError:
            problems.append(f"{name}: no Deployment")
            continue
        environment = container_environment(
            objects, deployment["metadata"].get("namespace", ""), the_container(deployment)
        )
        known = known_variables(service)
        for variable, value in sorted(environment.items(), key=lambda item: item[0]):
            if variable not in known:
                problems.append(f"{name}: {variable} is not a setting of the {service} service")
            secret_like = SECRET_LIKE.match(variable) and variable not in NOT_SECRET
            if secret_like and not isinstance(value, FromSecret):
                problems.append(f"{name}: {variable} is secret but not from a Secret")
            if isinstance(value, FromSecret) and (
                value.secret != SECRETS_SECRET or value.key != variable
            ):
                problems.append(
                    f"{name}: {variable} comes from {value.secret}/{value.key}, "
                    f"not {SECRETS_SECRET}/{variable}"
                )
        from_secret = {v for v, value in environment.items() if isinstance(value, FromSecret)}
        if from_secret != SECRET_VARIABLES[service]:
            problems.append(
                f"{name}: gets {sorted(from_secret)} from the Secret, "
                f"needs exactly {sorted(SECRET_VARIABLES[service])}"
            )
        for variable, expected in EXPECTED_ENVIRONMENT[service].items():
            if environment.get(variable) != expected:
                problems.append(
                    f"{name}: {variable} is {environment.get(variable)!r}, not {expected!r}"
                )
    return problems


def grace_seconds(objects: Objects, deployment: dict[str, Any]) -> float | None:
    """KRITEN_SHUTDOWN_GRACE_SECONDS as the container gets it, else the settings' default."""
    environment = container_environment(
        objects, deployment["metadata"].get("namespace", ""), the_container(deployment)
    )
    value = environment.get("KRITEN_SHUTDOWN_GRACE_SECONDS", DEFAULT_GRACE)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- Deployments


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"].get("seconds", 0))
    command = (pre_stop.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        return float(command[1])
    return 0.0


def _probe_problems(where: str, probe: dict[str, Any] | None, path: str) -> list[str]:
    if not probe:
        return [f"{where}: missing"]
    http_get = probe.get("httpGet") or {}
    problems = []
    if http_get.get("path") != path:
        problems.append(f"{where}: probes {http_get.get('path')!r}, not {path}")
    if http_get.get("port") not in ("http", PORT):
        problems.append(f"{where}: probes port {http_get.get('port')!r}, not {PORT}")
    return problems


def _security_problems(where: str, pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    pod_context = pod.get("securityContext") or {}
    context = container.get("securityContext") or {}

    def effective(field: str) -> Any:
        return context.get(field, pod_context.get(field))

    problems = []
    if effective("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    if effective("runAsUser") != USER_ID:
        problems.append(f"{where}: runAsUser is {effective('runAsUser')!r}, not {USER_ID}")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if context.get("privileged"):
        problems.append(f"{where}: privileged")
    if (context.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: capabilities do not drop ALL")
    if (context.get("capabilities") or {}).get("add"):
        problems.append(f"{where}: capabilities are added")
    if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: the root filesystem is writable")
    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    tmp = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
        problems.append(f"{where}: no emptyDir mounted at /tmp")
    return problems


def deployment_problems(objects: Objects) -> list[str]:
    """Probes, resources, grace period, security contexts, command and port."""
    problems: list[str] = []
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    for service in SERVICES:
        name = component_name(service)
        if name not in deployments:
            problems.append(f"{name}: no Deployment")
            continue
        deployment = deployments[name]
        pod = pod_spec(deployment)
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            problems.append(f"{name}: shares a host namespace")
        containers = pod.get("containers") or []
        if [c.get("name") for c in containers] != [service]:
            problems.append(f"{name}: containers are not exactly [{service}]")
        # Every container, init containers too: resources and a locked-down context.
        for container in containers + (pod.get("initContainers") or []):
            where = f"{name}/{container.get('name')}"
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        problems.append(f"{where}: no {resource} in resources.{part}")
            problems += _security_problems(where, pod, container)
        for container in containers:
            where = f"{name}/{container.get('name')}"
            problems += _probe_problems(
                f"{where} liveness", container.get("livenessProbe"), "/healthz"
            )
            problems += _probe_problems(
                f"{where} readiness", container.get("readinessProbe"), "/readyz"
            )
            if container.get("command") != [name]:
                problems.append(f"{where}: command is {container.get('command')!r}, not [{name}]")
            ports = [(p.get("name"), p.get("containerPort")) for p in container.get("ports", [])]
            if ports != [("http", PORT)]:
                problems.append(f"{where}: ports are {ports}, not [('http', {PORT})]")
            grace = grace_seconds(objects, deployment)
            period = pod.get("terminationGracePeriodSeconds", 30)
            pause = _pre_stop_seconds(container)
            if grace is None or period <= grace + pause:
                problems.append(
                    f"{where}: terminationGracePeriodSeconds {period} is not above the "
                    f"shutdown grace {grace} plus the preStop pause {pause}"
                )
    return problems


def collector_problems(objects: Objects) -> list[str]:
    """One collector at a time: it watches every job pod, without leader election."""
    deployment = find(objects, "Deployment", component_name("collector"))
    problems = []
    if deployment["spec"].get("replicas") != 1:
        problems.append(f"kriten-collector: replicas {deployment['spec'].get('replicas')}, not 1")
    if (deployment["spec"].get("strategy") or {}).get("type") != "Recreate":
        problems.append("kriten-collector: strategy is not Recreate (two would overlap)")
    if any(
        hpa["spec"]["scaleTargetRef"]["name"] == "kriten-collector"
        for hpa in of_kind(objects, "HorizontalPodAutoscaler")
    ):
        problems.append("kriten-collector: autoscaled")
    return problems


def image_problems(objects: Objects, *, pinned: bool) -> list[str]:
    """Each service runs its own image; an overlay pins a tag or digest, never latest."""
    problems = []
    for service in SERVICES:
        deployment = find(objects, "Deployment", component_name(service))
        image = str(the_container(deployment).get("image"))
        repository, _, digest = image.partition("@")
        name, _, tag = repository.rpartition(":")
        if "/" in tag:  # a registry port, not a tag
            name, tag = repository, ""
        if not name.endswith(f"kriten/{service}"):
            problems.append(f"{service}: image {image} is not kriten/{service}")
        if pinned and (tag in ("", "latest") and not digest):
            problems.append(f"{service}: image {image} is not pinned")
        if not pinned and image != f"kriten/{service}:latest":
            problems.append(f"{service}: image {image} is not kriten/{service}:latest")
    return problems


# --------------------------------------------------------------------------- accounts, RBAC


def bound_rules(objects: Objects) -> dict[tuple[str, str], list[tuple[dict[str, Any], str]]]:
    """(namespace, service account) -> [(rule, namespace it applies in)] from every binding."""
    found = index(objects)
    granted: dict[tuple[str, str], list[tuple[dict[str, Any], str]]] = {}
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        namespace = binding["metadata"].get("namespace", "")
        ref = binding.get("roleRef") or {}
        role_namespace = namespace if ref.get("kind") == "Role" else ""
        role = found.get((str(ref.get("kind")), role_namespace, str(ref.get("name"))))
        for subject in binding.get("subjects") or []:
            if subject.get("kind") != "ServiceAccount":
                continue
            account = (subject.get("namespace", namespace), subject.get("name", ""))
            for rule in (role or {}).get("rules") or [{"unresolved": ref.get("name")}]:
                granted.setdefault(account, []).append((rule, namespace or "<cluster>"))
    return granted


def service_account_problems(objects: Objects) -> list[str]:
    """api and ingress: no token, no binding; dispatcher and collector: a token."""
    problems: list[str] = []
    granted = bound_rules(objects)
    found = index(objects)
    for service in SERVICES:
        name = component_name(service)
        deployment = found.get(("Deployment", NAMESPACE, name))
        account = found.get(("ServiceAccount", NAMESPACE, name))
        if deployment is None or account is None:
            problems.append(f"{name}: no Deployment or no ServiceAccount {name}")
            continue
        pod = pod_spec(deployment)
        if pod.get("serviceAccountName") != name:
            problems.append(f"{name}: runs as {pod.get('serviceAccountName')!r}, not {name}")
        mounts = pod.get("automountServiceAccountToken")
        if service in KUBE_SERVICES:
            if mounts is not True:
                problems.append(f"{name}: the pod mounts no token, its client needs one")
            continue
        if account.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: ServiceAccount automountServiceAccountToken is not false")
        if mounts is not False:
            problems.append(f"{name}: pod automountServiceAccountToken is not false")
        if granted.get((NAMESPACE, name)):
            problems.append(f"{name}: has Role bindings, needs none")
    return problems


def rbac_problems(objects: Objects, expected: dict[str, frozenset[Rule]]) -> list[str]:
    """Exactly the expected verbs, in the namespace the service works in, no wildcards,
    no cluster-wide roles."""
    problems: list[str] = []
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        problems += [
            f"{kind} {obj['metadata']['name']}: none is needed" for obj in of_kind(objects, kind)
        ]
    granted = bound_rules(objects)
    for service in KUBE_SERVICES:
        name = component_name(service)
        try:
            deployment = find(objects, "Deployment", name)
        except ValueError:
            problems.append(f"{name}: no Deployment")
            continue
        environment = container_environment(objects, NAMESPACE, the_container(deployment))
        jobs_namespace = environment.get("KRITEN_NAMESPACE") or DEFAULT_JOBS_NAMESPACE
        rules: set[Rule] = set()
        for rule, namespace in granted.get((NAMESPACE, name), []):
            if "unresolved" in rule:
                problems.append(f"{name}: bound to {rule['unresolved']!r}, which does not exist")
                continue
            if namespace != jobs_namespace:
                problems.append(f"{name}: granted rights in {namespace}, works in {jobs_namespace}")
            if rule.get("resourceNames") or rule.get("nonResourceURLs"):
                problems.append(f"{name}: a rule with resourceNames or nonResourceURLs")
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        if "*" in (group, resource, verb):
                            problems.append(f"{name}: wildcard in {group}/{resource}/{verb}")
                        rules.add((group, resource, verb))
        if rules != expected[service]:
            problems.append(
                f"{name}: granted {sorted(rules - expected[service])} too many, "
                f"{sorted(expected[service] - rules)} missing"
            )
    return problems


API_GROUPS = {"CoreV1Api": "", "BatchV1Api": "batch", "AppsV1Api": "apps"}
CALL = re.compile(
    r"^(?P<action>create|read|patch|replace|delete|list|delete_collection)_namespaced_"
    r"(?P<resource>\w+)$"
)
VERBS = {
    "create": "create",
    "read": "get",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
    "list": "list",
    "delete_collection": "deletecollection",
}
RESOURCES = {"job": "jobs", "secret": "secrets", "pod": "pods", "pod_log": "pods/log"}


def kubernetes_calls(source: str) -> tuple[frozenset[Rule], list[str]]:
    """The RBAC rules that the Kubernetes API calls in `source` need, and the calls it
    could not translate. Clients are found by their assignment
    (`self._core = client.CoreV1Api(...)`); `list_*` with `watch=True` needs `watch`."""
    tree = ast.parse(source)
    clients: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            api = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if api.endswith("Api") and re.match(r"^\w+V\d\w*Api$", api):
                for target in node.targets:
                    if isinstance(target, ast.Attribute):
                        clients[target.attr] = api
    rules: set[Rule] = set()
    unknown: list[str] = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr in clients
        ):
            continue
        api = clients[node.value.attr]
        match = CALL.match(node.attr)
        if api not in API_GROUPS or match is None or match["resource"] not in RESOURCES:
            unknown.append(f"{api}.{node.attr}")
            continue
        rules.add((API_GROUPS[api], RESOURCES[match["resource"]], VERBS[match["action"]]))
    for node in ast.walk(tree):
        # `client.list_namespaced_x(..., watch=True)` is a watch, which needs its own verb.
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and clients.get(node.func.value.attr) in API_GROUPS
        ):
            continue
        match = CALL.match(node.func.attr)
        watch = any(
            k.arg == "watch" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if watch and match and match["action"] == "list" and match["resource"] in RESOURCES:
            group = API_GROUPS[clients[node.func.value.attr]]
            rules.add((group, RESOURCES[match["resource"]], "watch"))
    return frozenset(rules), unknown


# --------------------------------------------------------------------------- Ingress


def prefix_matches(prefix: str, path: str) -> bool:
    """Kubernetes `Prefix` matching: element by element, a trailing slash ignored."""
    wanted = [part for part in prefix.split("/") if part]
    parts = [part for part in path.split("/") if part]
    return parts[: len(wanted)] == wanted


def route(ingress: dict[str, Any], path: str, host: str | None = None) -> tuple[str, Any] | None:
    """The (Service, port) that `path` reaches: Exact first, then the longest Prefix."""
    best: tuple[int, tuple[str, Any]] | None = None
    for rule in (ingress.get("spec") or {}).get("rules") or []:
        if rule.get("host") not in (None, host):
            continue
        for entry in (rule.get("http") or {}).get("paths") or []:
            service = (entry.get("backend") or {}).get("service") or {}
            port = service.get("port") or {}
            target = (str(service.get("name")), port.get("name", port.get("number")))
            kind, prefix = entry.get("pathType"), entry.get("path", "/")
            if kind == "Exact" and prefix == path:
                return target
            if kind == "Prefix" and prefix_matches(prefix, path):
                length = len([part for part in prefix.split("/") if part])
                if best is None or length > best[0]:
                    best = (length, target)
    return best[1] if best else None


INGRESS_ROUTES = {
    "/api/v1/webhooks/run/0123": "kriten-ingress",
    "/api/v1/webhooks/run/": "kriten-ingress",
    "/api/v1/webhooks": "kriten-api",
    "/api/v1/webhooks/0123": "kriten-api",
    "/api/v1/webhooks/runs": "kriten-api",
    "/api/v1/login": "kriten-api",
    "/api/v1/docs": "kriten-api",
    "/ui/jobs": "kriten-api",
    "/ui/static/console.css": "kriten-api",
}
# Served by every pod for Prometheus and the kubelet; never through the public entry point.
NOT_ROUTED = ("/metrics", "/healthz", "/readyz")


def ingress_problems(objects: Objects) -> list[str]:
    """Webhook runs reach the ingress Service, everything else the api Service, each on a
    port the Service has."""
    ingresses = of_kind(objects, "Ingress")
    if len(ingresses) != 1:
        return [f"{len(ingresses)} Ingresses, expected one"]
    (ingress,) = ingresses
    problems = []
    if ingress["apiVersion"] != "networking.k8s.io/v1":
        problems.append(f"Ingress is {ingress['apiVersion']}, not networking.k8s.io/v1")
    hosts = [rule.get("host") for rule in ingress["spec"].get("rules") or []]
    found = index(objects)
    namespace = ingress["metadata"].get("namespace", "")
    for host in hosts:
        for path, expected in INGRESS_ROUTES.items():
            target = route(ingress, path, host)
            if target is None or target[0] != expected:
                problems.append(f"{path} ({host}): goes to {target}, not {expected}")
                continue
            service = found.get(("Service", namespace, target[0]))
            ports = [
                p.get("name") if isinstance(target[1], str) else p.get("port")
                for p in (service or {}).get("spec", {}).get("ports") or []
            ]
            if target[1] not in ports:
                problems.append(f"{path}: Service {target[0]} has no port {target[1]!r}")
        for path in NOT_ROUTED:
            target = route(ingress, path, host)
            if target is not None:
                problems.append(f"{path} ({host}): public, goes to {target}")
    return problems


def public_url_problems(objects: Objects) -> list[str]:
    """The api hands out webhook URLs on KRITEN_PUBLIC_URL: the Ingress must serve that
    host, with TLS when it is https; and the collector links completion callbacks to
    the job's log under the same URL."""
    config = find(objects, "ConfigMap", "kriten-api-config")
    url = urlsplit(config["data"]["KRITEN_PUBLIC_URL"])
    ingress = find(objects, "Ingress", "kriten")
    hosts = [rule.get("host") for rule in ingress["spec"].get("rules") or []]
    problems = []
    collector = the_container(find(objects, "Deployment", "kriten-collector"))
    collector_url = container_environment(objects, NAMESPACE, collector).get("KRITEN_PUBLIC_URL")
    if collector_url != config["data"]["KRITEN_PUBLIC_URL"]:
        problems.append(f"the collector's KRITEN_PUBLIC_URL is {collector_url}, not the api's")
    if hosts != [url.hostname]:
        problems.append(f"the Ingress serves {hosts}, KRITEN_PUBLIC_URL is on {url.hostname}")
    tls_hosts = [h for tls in ingress["spec"].get("tls") or [] for h in tls.get("hosts", [])]
    if url.scheme == "https" and url.hostname not in tls_hosts:
        problems.append(f"KRITEN_PUBLIC_URL is https, the Ingress has no TLS for {url.hostname}")
    return problems


# --------------------------------------------------------------------------- scaling


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match_labels = selector.get("matchLabels") or {}
    if selector.get("matchExpressions") or not match_labels:
        return False
    return all(labels.get(key) == value for key, value in match_labels.items())


def scaling_problems(objects: Objects) -> list[str]:
    """HPAs on CPU and PDBs for the HTTP services; autoscaled Deployments set no replicas
    (an apply would reset the autoscaler's count); an HPA keeps more pods than its PDB
    must, so a node can still be drained."""
    problems: list[str] = []
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")
    }
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    for autoscaler in hpas.values():
        target = autoscaler["spec"]["scaleTargetRef"]
        kind = (target.get("apiVersion"), target.get("kind"))
        if kind != ("apps/v1", "Deployment") or target.get("name") not in deployments:
            name = autoscaler["metadata"]["name"]
            problems.append(f"HPA {name}: targets no Deployment: {target}")
    for service in HTTP_SERVICES:
        name = component_name(service)
        hpa = hpas.get(name)
        if hpa is None:
            problems.append(f"{name}: no HorizontalPodAutoscaler")
            continue
        if hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"{name}: HPA is {hpa['apiVersion']}, not autoscaling/v2")
        metrics = [
            (m.get("type"), (m.get("resource") or {}).get("name"))
            for m in hpa["spec"].get("metrics") or []
        ]
        if ("Resource", "cpu") not in metrics:
            problems.append(f"{name}: HPA does not scale on CPU: {metrics}")
        if name in deployments and "replicas" in deployments[name]["spec"]:
            problems.append(f"{name}: autoscaled, yet the Deployment sets replicas")
        budgets = [
            p
            for p in of_kind(objects, "PodDisruptionBudget")
            if name in deployments
            and _selects(p["spec"].get("selector") or {}, pod_labels(deployments[name]))
        ]
        if len(budgets) != 1:
            problems.append(f"{name}: {len(budgets)} PodDisruptionBudgets select its pods")
            continue
        (budget,) = budgets
        if budget["apiVersion"] != "policy/v1" or budget["spec"].get("minAvailable") != 1:
            problems.append(f"{name}: PodDisruptionBudget is not policy/v1 minAvailable 1")
        if hpa["spec"].get("minReplicas", 1) <= budget["spec"].get("minAvailable", 0):
            problems.append(f"{name}: minReplicas does not exceed the budget's minAvailable")
    return problems


# --------------------------------------------------------------------------- references


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"].get("labels") or {}
    return labels


def service_problems(objects: Objects) -> list[str]:
    """Every Service selects the pods of exactly one Deployment, on a port they have."""
    problems: list[str] = []
    for service in of_kind(objects, "Service"):
        name = service["metadata"]["name"]
        selector = service["spec"].get("selector") or {}
        selected = [
            d
            for d in of_kind(objects, "Deployment")
            if d["metadata"].get("namespace") == service["metadata"].get("namespace")
            and selector
            and all(pod_labels(d).get(k) == v for k, v in selector.items())
        ]
        if len(selected) != 1:
            problems.append(f"Service {name}: selects {len(selected)} Deployments")
            continue
        (deployment,) = selected
        if not _selects(deployment["spec"]["selector"], pod_labels(deployment)):
            problems.append(f"Deployment {deployment['metadata']['name']}: selector misses pods")
        container_ports = {
            p.get(key)
            for c in pod_spec(deployment)["containers"]
            for p in c.get("ports") or []
            for key in ("name", "containerPort")
        }
        for port in service["spec"].get("ports") or []:
            if port.get("targetPort", port.get("port")) not in container_ports:
                problems.append(f"Service {name}: targetPort {port.get('targetPort')!r} unknown")
    return problems


def secrets_example() -> dict[str, str]:
    values = {}
    for line in SECRETS_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def reference_problems(objects: Objects, secret_keys: Iterable[str]) -> list[str]:
    """Every ConfigMap, Secret, ServiceAccount, Role, namespace and scale target named
    exists, or is a documented external Secret (with its key in secrets.example.env)."""
    found = index(objects)
    keys = set(secret_keys)
    problems: list[str] = []
    namespaces = {obj["metadata"]["name"] for obj in of_kind(objects, "Namespace")}

    def need(kind: str, namespace: str, name: str, where: str) -> None:
        if kind == "Secret" and name in EXTERNAL_SECRETS and namespace == NAMESPACE:
            return
        if (kind, namespace, name) not in found:
            problems.append(f"{where}: {kind} {namespace}/{name} does not exist")

    for obj in objects:
        kind, namespace, name = key_of(obj)
        where = f"{kind} {name}"
        if namespace and namespace not in namespaces:
            problems.append(f"{where}: namespace {namespace} is not created here")
        if kind == "Deployment":
            pod = pod_spec(obj)
            need("ServiceAccount", namespace, pod.get("serviceAccountName", "default"), where)
            for volume in pod.get("volumes") or []:
                if "configMap" in volume:
                    need("ConfigMap", namespace, volume["configMap"]["name"], where)
                if "secret" in volume:
                    need("Secret", namespace, volume["secret"]["secretName"], where)
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                for source in container.get("envFrom") or []:
                    if "configMapRef" in source:
                        need("ConfigMap", namespace, source["configMapRef"]["name"], where)
                    if "secretRef" in source:
                        need("Secret", namespace, source["secretRef"]["name"], where)
                for variable in container.get("env") or []:
                    value_from = variable.get("valueFrom") or {}
                    if "configMapKeyRef" in value_from:
                        ref = value_from["configMapKeyRef"]
                        need("ConfigMap", namespace, ref["name"], where)
                        data = found.get(("ConfigMap", namespace, ref["name"]), {}).get("data")
                        if ref["key"] not in (data or {}):
                            problems.append(f"{where}: ConfigMap {ref['name']} has no {ref['key']}")
                    if "secretKeyRef" in value_from:
                        ref = value_from["secretKeyRef"]
                        need("Secret", namespace, ref["name"], where)
                        if ref["name"] == SECRETS_SECRET and ref["key"] not in keys:
                            problems.append(
                                f"{where}: {SECRETS_SECRET} key {ref['key']} is not in "
                                f"{SECRETS_EXAMPLE.name}"
                            )
        if kind == "RoleBinding":
            ref = obj["roleRef"]
            need(ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"], where)
            for subject in obj.get("subjects") or []:
                if subject.get("kind") == "ServiceAccount":
                    subject_namespace = subject.get("namespace", namespace)
                    need("ServiceAccount", subject_namespace, subject["name"], where)
        if kind == "HorizontalPodAutoscaler":
            need(
                obj["spec"]["scaleTargetRef"]["kind"],
                namespace,
                obj["spec"]["scaleTargetRef"]["name"],
                where,
            )
        if kind == "Ingress":
            for tls in obj["spec"].get("tls") or []:
                need("Secret", namespace, tls.get("secretName", ""), where)
            for rule in obj["spec"].get("rules") or []:
                for entry in (rule.get("http") or {}).get("paths") or []:
                    need("Service", namespace, entry["backend"]["service"]["name"], where)
    return problems


# --------------------------------------------------------------------------- the checks


ALL_CHECKS: dict[str, Callable[[Objects], list[str]]] = {
    "schema": schema_problems,
    "pod-template-v1.32": pod_template_problems,
    "deployments": deployment_problems,
    "collector": collector_problems,
    "environment": environment_problems,
    "service-accounts": service_account_problems,
    "rbac": lambda objects: rbac_problems(objects, EXPECTED_RBAC),
    "ingress": ingress_problems,
    "scaling": scaling_problems,
    "services": service_problems,
    "references": lambda objects: reference_problems(objects, secrets_example()),
}


@pytest.mark.parametrize("path", RENDERS)
def test_kustomize_renders_every_part(path: str) -> None:
    kinds = sorted({str(obj.get("kind")) for obj in render(path)})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    names = {obj["metadata"]["name"] for obj in of_kind(render(path), "Deployment")}
    assert names == {component_name(service) for service in SERVICES}


@pytest.mark.parametrize("path", RENDERS)
@pytest.mark.parametrize("check", sorted(ALL_CHECKS))
def test_rendering_passes(path: str, check: str) -> None:
    assert ALL_CHECKS[check](render(path)) == []


def test_base_images_are_the_placeholders_the_overlay_replaces() -> None:
    assert image_problems(render("base"), pinned=False) == []


def test_overlay_pins_every_image() -> None:
    assert image_problems(render("overlays/production"), pinned=True) == []


def test_overlay_serves_the_public_url_host_with_tls() -> None:
    assert public_url_problems(render("overlays/production")) == []


def test_overlay_scales_the_dispatcher() -> None:
    overlay = render("overlays/production")
    assert find(overlay, "Deployment", "kriten-dispatcher")["spec"]["replicas"] >= 2


def test_secrets_example_lists_the_needed_keys_and_commits_no_value() -> None:
    example = secrets_example()
    assert set(example) == set().union(*SECRET_VARIABLES.values())
    assert all(value == "" for value in example.values()), "fill values in a copy, not here"


def test_every_kind_used_has_a_model_with_its_schema() -> None:
    for path in RENDERS:
        for obj in render(path):
            info = kind_info(obj["apiVersion"], obj["kind"])
            assert info is not None, obj["kind"]
            assert info.model.__name__.endswith(obj["kind"])


@pytest.mark.parametrize(
    ("file", "model"),
    [
        ("job-batch-v1.json", kube_client.V1Job),
        ("pod-v1.json", kube_client.V1Pod),
        ("secret-v1.json", kube_client.V1Secret),
    ],
)
def test_model_schemas_know_every_field_of_the_vendored_openapi_schemas(
    file: str, model: type[Any]
) -> None:
    """The generated schema's source agrees with the OpenAPI-derived one where both
    exist: every field of every v1.32 definition is a field of the model (newer models
    only add fields)."""
    vendored = json.loads((VENDORED_SCHEMAS / file).read_text())
    generated = model.model_json_schema()
    pairs = [(vendored, generated)]
    for name, definition in vendored["$defs"].items():
        group_version, _, short = name.rpartition(".")
        model_name = group_version.rpartition(".")[2].capitalize() + short
        if "properties" in definition:
            pairs.append((definition, generated["$defs"].get(model_name, {})))
    matched = [(old, new) for old, new in pairs if new]
    # A few names differ (the client's `CoreV1ResourceClaim` for core/v1 ResourceClaim).
    assert len(matched) >= 0.9 * len(pairs)
    for old, new in matched:
        missing = set(old["properties"]) - set(new["properties"])
        assert not missing, f"{new.get('title')}: {missing}"


def test_expected_rbac_is_what_the_code_calls() -> None:
    for service, path in KUBE_CODE.items():
        rules, unknown = kubernetes_calls(path.read_text())
        assert unknown == [], f"{path.name}: calls RBAC here cannot translate: {unknown}"
        assert rules == EXPECTED_RBAC[service], (
            f"{path.name} needs {sorted(rules)}; update EXPECTED_RBAC and k8s/base/rbac.yaml"
        )


def test_kubernetes_calls_reads_clients_verbs_and_watches() -> None:
    source = """
class Sample:
    def __init__(self, api):
        self._core = client.CoreV1Api(api)
        self._batch = client.BatchV1Api(api)
        self._other = client.StorageV1Api(api)

    async def run(self):
        await self._call(self._core.read_namespaced_secret, "a", "ns")
        self._core.list_namespaced_pod("ns", watch=True)
        self._batch.list_namespaced_job("ns", watch=False)
        self._batch.delete_collection_namespaced_job("ns")
        self._core.read_namespaced_pod_log("p", "ns")
        self._core.connect_get_namespaced_pod_exec("p", "ns")
        self._other.list_storage_class()
"""
    rules, unknown = kubernetes_calls(source)
    assert rules == {
        ("", "secrets", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "deletecollection"),
        ("", "pods/log", "get"),
    }
    assert sorted(unknown) == [
        "CoreV1Api.connect_get_namespaced_pod_exec",
        "StorageV1Api.list_storage_class",
    ]


def test_prefix_matching_is_per_path_element() -> None:
    assert prefix_matches("/api/v1/webhooks/run/", "/api/v1/webhooks/run")
    assert prefix_matches("/api/v1/webhooks/run/", "/api/v1/webhooks/run/x")
    assert not prefix_matches("/api/v1/webhooks/run/", "/api/v1/webhooks/runs")
    assert prefix_matches("/", "/anything")


def test_api_class_names_follow_the_client() -> None:
    assert api_class_name("rbac.authorization.k8s.io/v1") == "RbacAuthorizationV1Api"
    assert api_class_name("v1") == "CoreV1Api"
    assert api_class_name("autoscaling/v2") == "AutoscalingV2Api"


# --------------------------------------------------------------------------- broken on purpose


Mutation = Callable[[Objects], None]
SHORTHANDS = {
    "C.": "spec.template.spec.containers.0.",
    "P.": "spec.template.spec.",
    "R0.": "spec.rules.0.http.paths.0.",
    "R1.": "spec.rules.0.http.paths.1.",
}
DELETE = object()


def edit(target: str, path: str, value: Any = DELETE) -> Mutation:
    """Sets (by default deletes) the dotted `path` of one object of the rendering.
    `target` is `Kind/name`, or a service name for its Deployment; `path` may start with
    a shorthand (`C.` the container, `P.` the pod spec, `R0.`/`R1.` an Ingress path)."""
    kind, _, name = target.rpartition("/")
    kind, name = (kind, name) if kind else ("Deployment", component_name(target))
    for short, full in SHORTHANDS.items():
        if path.startswith(short):
            path = full + path.removeprefix(short)

    def mutate(objects: Objects) -> None:
        node: Any = find(objects, kind, name)
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value

    return mutate


def remove(target: str) -> Mutation:
    kind, _, name = target.partition("/")
    return lambda objects: objects.remove(find(objects, kind, name))


def add(obj: dict[str, Any]) -> Mutation:
    return lambda objects: objects.append(copy.deepcopy(obj))


def broken(check: str, mutation: Mutation, expected: str, *, name: str | None = None) -> Any:
    """One broken case: `check` must pass on the rendering, then report `expected` once
    `mutation` has broken it."""
    slug = name or re.sub(r"[^a-z0-9]+", "-", expected.lower()).strip("-")[:48]
    return pytest.param(check, mutation, expected, id=f"{check}:{slug}")


API_SUBJECT = {"kind": "ServiceAccount", "name": "kriten-api", "namespace": NAMESPACE}
CLUSTER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "x"},
}
LITERAL_TOKEN_KEY = {"name": "KRITEN_TOKEN_KEY", "value": "s3cret"}
SECRETS_REF = "C.env.0.valueFrom.secretKeyRef."
BROKEN = [
    # schema: an unknown field, a wrong type, a missing required field, a JSON name in
    # snake_case, an API version that is gone, a namespaced object without a namespace
    broken(
        "schema", edit("api", "C.livenesProbe", {}), "('livenesProbe' was unexpected)", name="field"
    ),
    broken("schema", edit("dispatcher", "spec.replicas", "2"), "'2' is not valid", name="type"),
    broken("schema", edit("api", "C.name"), "'name' is a required property", name="required"),
    broken(
        "schema",
        edit("api", "P.service_account_name", "x"),
        "'service_account_name' was",
        name="snake",
    ),
    broken(
        "schema",
        edit("PodDisruptionBudget/kriten-api", "apiVersion", "policy/v1beta1"),
        "no kind PodDisruptionBudget in policy/v1beta1",
        name="gone",
    ),
    broken(
        "schema", edit("Service/kriten-api", "metadata.namespace"), "without metadata.namespace"
    ),
    broken("schema", edit("Service/kriten-api", "metadata.name", "Kriten_API"), "not a DNS label"),
    broken(
        "pod-template-v1.32",
        edit("api", "C.restartPolicyRules", []),
        "('restartPolicyRules' was unexpected)",
        name="newer-than-1.32",
    ),
    # Deployments
    broken("deployments", edit("api", "C.livenessProbe.httpGet.path", "/"), "liveness: probes '/'"),
    broken("deployments", edit("ingress", "C.readinessProbe"), "ingress readiness: missing"),
    broken(
        "deployments", edit("collector", "C.readinessProbe.httpGet.path", "/healthz"), "not /readyz"
    ),
    broken("deployments", edit("api", "C.livenessProbe.httpGet.port", 8000), "probes port 8000"),
    broken("deployments", edit("dispatcher", "C.resources.limits"), "no cpu in resources.limits"),
    broken(
        "deployments",
        edit("dispatcher", "P.terminationGracePeriodSeconds", 20),
        "terminationGracePeriodSeconds 20 is not above the shutdown grace 20.0",
        name="grace",
    ),
    broken(
        "deployments",
        edit("api", "P.terminationGracePeriodSeconds", 25),
        "25 is not above the shutdown grace 20.0 plus the preStop pause 5.0",
        name="grace-and-pre-stop",
    ),
    broken(
        "deployments",
        edit("ConfigMap/kriten-config", "data.KRITEN_SHUTDOWN_GRACE_SECONDS", "40"),
        "terminationGracePeriodSeconds 30 is not above the shutdown grace 40.0",
        name="drain-longer",
    ),
    broken("deployments", edit("api", "C.securityContext.runAsNonRoot", False), "runAsNonRoot"),
    broken("deployments", edit("api", "C.securityContext.runAsUser", 0), "runAsUser is 0"),
    broken(
        "deployments",
        edit("api", "C.securityContext.allowPrivilegeEscalation", True),
        "allowPrivilegeEscalation is not false",
    ),
    broken(
        "deployments",
        edit("collector", "C.securityContext.capabilities.drop", ["NET_RAW"]),
        "capabilities do not drop ALL",
    ),
    broken(
        "deployments",
        edit("ingress", "C.securityContext.readOnlyRootFilesystem", False),
        "the root filesystem is writable",
    ),
    broken("deployments", edit("ingress", "C.volumeMounts", []), "no emptyDir mounted at /tmp"),
    broken(
        "deployments",
        edit("api", "C.securityContext.seccompProfile.type", "Unconfined"),
        "seccompProfile is not RuntimeDefault",
    ),
    broken(
        "deployments", edit("api", "C.command", ["kriten-ingress"]), "command is ['kriten-ingress']"
    ),
    broken(
        "deployments", edit("api", "C.ports.0.containerPort", 8081), "ports are [('http', 8081)]"
    ),
    broken("deployments", edit("api", "P.hostNetwork", True), "shares a host namespace"),
    broken("collector", edit("collector", "spec.replicas", 2), "replicas 2, not 1"),
    broken("collector", edit("collector", "spec.strategy.type", "RollingUpdate"), "not Recreate"),
    # environment
    broken(
        "environment",
        edit("ConfigMap/kriten-executor", "data.KRITEN_NAMESPCE", "x"),
        "KRITEN_NAMESPCE is not a setting of the dispatcher service",
        name="misspelt",
    ),
    broken(
        "environment",
        edit("ConfigMap/kriten-api-config", "data.KRITEN_REPLAY_WINDOW_SECONDS", "1"),
        "KRITEN_REPLAY_WINDOW_SECONDS is not a setting of the api service",
        name="another-service's",
    ),
    broken("environment", edit("api", "C.env.4", LITERAL_TOKEN_KEY), "TOKEN_KEY is secret but not"),
    broken("environment", edit("api", "C.env", []), "kriten-api: gets [] from the Secret"),
    broken(
        "environment",
        edit("ConfigMap/kriten-executor", "data.KRITEN_EXECUTOR", "local"),
        "KRITEN_EXECUTOR is 'local', not 'kubernetes'",
    ),
    broken(
        "environment",
        edit("ConfigMap/kriten-config", "data.KRITEN_PORT", "8081"),
        "KRITEN_PORT is '8081', not '8080'",
    ),
    # service accounts and RBAC
    broken(
        "service-accounts",
        edit("ServiceAccount/kriten-api", "automountServiceAccountToken", True),
        "kriten-api: ServiceAccount automountServiceAccountToken is not false",
    ),
    broken(
        "service-accounts",
        edit("ingress", "P.automountServiceAccountToken"),
        "kriten-ingress: pod automountServiceAccountToken is not false",
    ),
    broken(
        "service-accounts",
        edit("RoleBinding/kriten-collector", "subjects.0", API_SUBJECT),
        "kriten-api: has Role bindings, needs none",
    ),
    broken(
        "service-accounts",
        edit("dispatcher", "P.automountServiceAccountToken", False),
        "kriten-dispatcher: the pod mounts no token",
    ),
    broken("service-accounts", edit("api", "P.serviceAccountName", "default"), "runs as 'default'"),
    broken(
        "rbac", edit("Role/kriten-dispatcher", "rules.0.verbs", ["*"]), "wildcard in batch/jobs/*"
    ),
    broken(
        "rbac",
        edit("Role/kriten-dispatcher", "rules.1.verbs", ["create", "patch", "delete", "get"]),
        "granted [('', 'secrets', 'get')] too many",
    ),
    broken(
        "rbac",
        edit("Role/kriten-collector", "rules.0.verbs", ["list", "watch"]),
        "[('', 'pods', 'patch')] missing",
    ),
    broken(
        "rbac",
        edit("Role/kriten-collector", "rules.0.resourceNames", ["one"]),
        "a rule with resourceNames",
    ),
    broken(
        "rbac",
        edit("ConfigMap/kriten-executor", "data.KRITEN_NAMESPACE", "default"),
        "granted rights in kriten-jobs, works in default",
    ),
    broken(
        "rbac",
        edit("RoleBinding/kriten-collector", "roleRef.name", "nope"),
        "bound to 'nope', which does not exist",
    ),
    broken("rbac", add(CLUSTER_ROLE), "ClusterRole x: none is needed"),
    # Ingress
    broken(
        "ingress",
        edit("Ingress/kriten", "R0.backend.service.name", "kriten-api"),
        "/api/v1/webhooks/run/0123 (None): goes to ('kriten-api', 'http'), not kriten-ingress",
        name="runs-to-api",
    ),
    broken(
        "ingress",
        edit("Ingress/kriten", "R0.path", "/api/v1/webhooks"),
        "/api/v1/webhooks (None): goes to ('kriten-ingress', 'http'), not kriten-api",
        name="too-broad",
    ),
    broken(
        "ingress",
        edit("Ingress/kriten", "R0.pathType", "ImplementationSpecific"),
        "/api/v1/webhooks/run/0123 (None): goes to ('kriten-api', 'http')",
        name="implementation-specific",
    ),
    broken(
        "ingress",
        edit("Ingress/kriten", "R1.backend.service.port.name", "web"),
        "/api/v1/webhooks: Service kriten-api has no port 'web'",
        name="port",
    ),
    # scaling
    broken("scaling", remove("HorizontalPodAutoscaler/kriten-api"), "kriten-api: no HorizontalPod"),
    broken(
        "scaling",
        edit("HorizontalPodAutoscaler/kriten-ingress", "spec.metrics.0.resource.name", "memory"),
        "kriten-ingress: HPA does not scale on CPU",
    ),
    broken(
        "scaling", edit("api", "spec.replicas", 3), "autoscaled, yet the Deployment sets replicas"
    ),
    broken(
        "scaling", remove("PodDisruptionBudget/kriten-ingress"), "0 PodDisruptionBudgets select"
    ),
    broken(
        "scaling",
        edit("HorizontalPodAutoscaler/kriten-api", "spec.minReplicas", 1),
        "kriten-api: minReplicas does not exceed",
    ),
    broken(
        "scaling",
        edit("HorizontalPodAutoscaler/kriten-api", "spec.scaleTargetRef.name", "kriten-apl"),
        "targets no Deployment",
    ),
    # Services and references
    broken(
        "services",
        edit("Service/kriten-collector", "spec.selector", {"app.kubernetes.io/name": "x"}),
        "Service kriten-collector: selects 0 Deployments",
        name="selects-nothing",
    ),
    broken(
        "services",
        edit("Service/kriten-api", "spec.ports.0.targetPort", 8000),
        "Service kriten-api: targetPort 8000 unknown",
    ),
    broken(
        "references",
        edit("ingress", "C.envFrom.0.configMapRef.name", "kriten-conf"),
        "ConfigMap kriten/kriten-conf does not exist",
    ),
    broken(
        "references", edit("api", SECRETS_REF + "name", "other"), "Secret kriten/other does not"
    ),
    broken(
        "references", edit("api", SECRETS_REF + "key", "AMQP"), "key AMQP is not in secrets.example"
    ),
    broken(
        "references",
        edit("collector", "P.serviceAccountName", "collector"),
        "ServiceAccount kriten/collector does not exist",
    ),
    broken(
        "references",
        remove("Namespace/kriten-jobs"),
        "Role kriten-dispatcher: namespace kriten-jobs is not created here",
    ),
    broken(
        "references",
        edit("RoleBinding/kriten-dispatcher", "subjects.0.namespace", "default"),
        "ServiceAccount default/kriten-dispatcher does not exist",
    ),
]


@pytest.mark.parametrize(
    ("check", "mutation", "expected"),
    BROKEN,
)
def test_problems_are_reported(check: str, mutation: Mutation, expected: str) -> None:
    objects = render("base")
    assert ALL_CHECKS[check](objects) == [], "the unbroken rendering must pass"
    mutation(objects)
    problems = ALL_CHECKS[check](objects)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("kriten/api:latest", "kriten/api:0.1"),
            "api: image kriten/api:0.1 is not kriten/api:latest",
        ),
        (
            ("kriten/ingress:latest", "kriten/api:latest"),
            "ingress: image kriten/api:latest is not kriten/ingress",
        ),
    ],
)
def test_image_problems_are_reported(change: tuple[str, str], expected: str) -> None:
    objects = render("base")
    for deployment in of_kind(objects, "Deployment"):
        container = the_container(deployment)
        if container["image"] == change[0]:
            container["image"] = change[1]
    assert expected in image_problems(objects, pinned=False)


@pytest.mark.parametrize(
    "image",
    ["registry.example.com/kriten/api:latest", "registry.example.com:5000/kriten/api"],
)
def test_unpinned_overlay_images_are_reported(image: str) -> None:
    objects = render("overlays/production")
    the_container(find(objects, "Deployment", "kriten-api"))["image"] = image
    assert f"api: image {image} is not pinned" in image_problems(objects, pinned=True)


def test_public_url_problems_are_reported() -> None:
    objects = render("overlays/production")
    find(objects, "ConfigMap", "kriten-api-config")["data"]["KRITEN_PUBLIC_URL"] = (
        "https://other.example.com"
    )
    problems = public_url_problems(objects)
    assert problems == [
        "the Ingress serves ['kriten.example.com'], KRITEN_PUBLIC_URL is on other.example.com",
        "KRITEN_PUBLIC_URL is https, the Ingress has no TLS for other.example.com",
    ]


def test_a_collector_without_the_public_url_is_reported() -> None:
    objects = render("overlays/production")
    collector = the_container(find(objects, "Deployment", "kriten-collector"))
    collector["env"] = [v for v in collector["env"] if v["name"] != "KRITEN_PUBLIC_URL"]
    assert public_url_problems(objects) == [
        "the collector's KRITEN_PUBLIC_URL is None, not the api's"
    ]
