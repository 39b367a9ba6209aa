"""The metrics documentation stays true: docs/metrics.md lists every metric the four
services register, with its type and labels, and lists nothing they do not; the Grafana
dashboard and the alert rules in deploy/monitoring/ use only documented metrics.

The services' metrics are read from the registries their `create_app` fills (which does
no I/O), so no broker or database is needed here; that the series move when messages and
requests flow is tested beside each service."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from kriten_api.app import create_app as create_api_app
from kriten_api.settings import ApiSettings
from kriten_collector.app import create_app as create_collector_app
from kriten_collector.settings import CollectorSettings
from kriten_common.http import METRICS_REGISTRY
from kriten_dispatcher.app import create_app as create_dispatcher_app
from kriten_dispatcher.settings import DispatcherSettings
from kriten_ingress.app import create_app as create_ingress_app
from kriten_ingress.settings import IngressSettings
from kriten_launcher.__main__ import create_app as create_development_app

ROOT = Path(__file__).resolve().parents[1]
METRICS_DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "deploy" / "monitoring" / "kriten-dashboard.json"
ALERTS = ROOT / "deploy" / "monitoring" / "kriten-alerts.yaml"
# A metric name in a PromQL expression (label values and rule names never match it).
METRIC_NAME = re.compile(r"\b(kriten_[a-z0-9_]+)\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
SERVICES = ("api", "ingress", "dispatcher", "collector")


@dataclass(frozen=True)
class Metric:
    type: str
    labels: frozenset[str]


def documented() -> dict[str, tuple[Metric, str]]:
    """The table of docs/metrics.md: name → (type and labels, services)."""
    found: dict[str, tuple[Metric, str]] = {}
    for line in METRICS_DOC.read_text().splitlines():
        if not line.startswith("| `kriten_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name, kind, labels, services = cells[0].strip("`"), cells[1], cells[2], cells[3]
        assert name not in found, f"{name} is in docs/metrics.md twice"
        found[name] = (Metric(kind, frozenset(re.findall(r"`([a-z_]+)`", labels))), services)
    return found


def _apps() -> dict[str, web.Application]:
    return {
        "api": create_api_app(ApiSettings()),
        "ingress": create_ingress_app(IngressSettings()),
        "dispatcher": create_dispatcher_app(DispatcherSettings()),
        "collector": create_collector_app(CollectorSettings()),
    }


def registered_in(registry: CollectorRegistry) -> dict[str, Metric]:
    """The `kriten_` metrics of a registry, named as PromQL sees them (counters with
    `_total`, histograms by their base name)."""
    found: dict[str, Metric] = {}
    # The collectors themselves: a labelled metric without series yet still has its labels.
    for collector in list(registry._collector_to_names):
        for family in collector.collect():
            if not family.name.startswith("kriten_"):
                continue
            name = family.name + "_total" if family.type == "counter" else family.name
            labels = frozenset(getattr(collector, "_labelnames", ()))
            found[name] = Metric(family.type, labels)
    return found


def registered() -> dict[str, dict[str, Metric]]:
    """Service → its metrics."""
    return {name: registered_in(app[METRICS_REGISTRY]) for name, app in _apps().items()}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert expressions
    return expressions


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert rules
    return rules


def metric_names(expression: str) -> set[str]:
    return set(METRIC_NAME.findall(expression))


def _undocumented(names: set[str], docs: dict[str, tuple[Metric, str]]) -> set[str]:
    """The names that are neither a documented metric nor a series of a documented
    histogram (`x_bucket`, `x_sum`, `x_count`)."""
    missing = set()
    for name in names:
        if name in docs:
            continue
        base = next((name.removesuffix(s) for s in HISTOGRAM_SERIES if name.endswith(s)), None)
        if base is not None and docs.get(base, (Metric("", frozenset()), ""))[0].type == (
            "histogram"
        ):
            continue
        missing.add(name)
    return missing


def test_every_registered_metric_is_documented_as_registered() -> None:
    docs = documented()
    by_service = registered()
    for service, metrics in by_service.items():
        assert metrics, f"the {service} registers no kriten_ metric"
        for name, metric in metrics.items():
            assert name in docs, f"{name} ({service}) is not in docs/metrics.md"
            assert docs[name][0] == metric, f"docs/metrics.md describes {name} otherwise"


def test_every_documented_metric_is_registered_by_the_services_it_names() -> None:
    by_service = registered()
    for name, (metric, services) in documented().items():
        named = SERVICES if services == "all" else tuple(s.strip() for s in services.split(","))
        assert set(named) <= set(SERVICES), f"{name}: unknown service in {services!r}"
        for service in named:
            assert by_service[service].get(name) == metric, f"{service} does not register {name}"


def test_the_dashboard_uses_only_documented_metrics() -> None:
    docs = documented()
    used = set().union(*(metric_names(e) for e in dashboard_expressions()))
    assert not _undocumented(used, docs)
    # Every panel asks the data source chosen on import, not one of this machine's.
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_expressions()))
    for needed in (
        "kriten_ingress_deliveries_total",  # intake
        "kriten_collector_job_transitions_total",  # throughput
        "kriten_collector_job_duration_seconds_bucket",  # durations
        "kriten_consumer_queue_messages",  # lag
        "kriten_dead_letters",
        "kriten_api_request_duration_seconds_bucket",
    ):
        assert needed in used


def test_the_alert_rules_use_only_documented_metrics() -> None:
    docs = documented()
    rules = alert_rules()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert not _undocumented(metric_names(str(rule["expr"])), docs), rule["alert"]
    names = {rule["alert"] for rule in rules}
    for needed in (
        "KritenDeadLettersGrowing",
        "KritenQueueLagHigh",
        "KritenLaunchFailures",
        "KritenApiErrors",
        "KritenServiceDown",
    ):
        assert needed in names


def test_the_check_catches_a_metric_that_does_not_exist() -> None:
    docs = documented()
    assert _undocumented({"kriten_consumer_handler_seconds_bucket"}, docs) == set()
    assert _undocumented({"kriten_dispatcher_launches"}, docs) == {"kriten_dispatcher_launches"}
    # `_bucket` only of a histogram.
    assert _undocumented({"kriten_dead_letters_bucket"}, docs) == {"kriten_dead_letters_bucket"}


def test_the_development_mode_registers_each_metric_once(tmp_path: Path) -> None:
    """The ingress's run endpoint shares the api's registry there: the shared consumer and
    publisher metrics must not be registered twice (which raises)."""
    settings: dict[str, Any] = {"jobs_dir": tmp_path}
    app = create_development_app(
        ApiSettings(**settings),
        IngressSettings(**settings),
        DispatcherSettings(**settings),
        CollectorSettings(**settings),
    )
    names = registered_in(app[METRICS_REGISTRY])
    assert "kriten_ingress_deliveries_total" in names
    assert "kriten_api_request_duration_seconds" in names
    assert "kriten_publisher_events_total" in names
