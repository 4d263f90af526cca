"""The chart wires monitoring: a ServiceMonitor on the metrics port, a dashboard ConfigMap.

- the ServiceMonitor selects the chart's Service by its labels, in its namespace, and
  scrapes `/metrics` on the Service port that leads to the container's HTTP listener;
  interval and timeout are values, and a timeout above the interval is refused;
- the Grafana dashboard ConfigMap renders only when enabled (in either mode), carries
  the sidecar's label (key and value configurable) and holds the chart's dashboard file
  byte for byte.

Lint and Kubernetes schema validation of these renders run in test_render.py, over
every value file of tests/chart/values/ (grafana-dashboard.yaml among them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.helmtest import (
    CHART,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    VALUES_DIR,
    Helm,
    config_of,
    find,
    kinds,
    validate_manifest,
)

Render = Callable[[str | None], list[dict[str, Any]]]

DASHBOARD_FILE = CHART / "dashboards" / "extauthz.json"
DASHBOARD_CONFIGMAP = f"{RELEASE}-extauthz-dashboard"


def dashboard_configmaps(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ConfigMaps carrying a Grafana dashboard (a `.json` data key)."""
    return [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and any(k.endswith(".json") for k in m.get("data", {}))
    ]


# -- ServiceMonitor ----------------------------------------------------------------------


def test_service_monitor_selects_the_service_by_its_labels(rendered: Render) -> None:
    """A ServiceMonitor matches Services by metadata labels, in the release namespace."""
    manifests = rendered("grafana-dashboard.yaml")
    monitor = find(manifests, "ServiceMonitor")
    service = find(manifests, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {
        "matchNames": [service["metadata"]["namespace"]]
    }
    # the chart's other labelled objects are not Services: only this one is scraped
    assert [m for m in manifests if m["kind"] == "Service"] == [service]


def test_service_monitor_scrapes_metrics_on_the_http_listener(rendered: Render) -> None:
    """Endpoint port -> Service port -> container port -> the config's `listen.http`."""
    manifests = rendered("grafana-dashboard.yaml")
    (endpoint,) = find(manifests, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["path"], endpoint["scheme"]) == ("/metrics", "http")
    ports = {p["name"]: p for p in find(manifests, "Service")["spec"]["ports"]}
    service_port = ports[endpoint["port"]]
    (container,) = (
        c
        for c in find(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
        if c["name"] == "extauthz"
    )
    (container_port,) = (
        p["containerPort"] for p in container["ports"] if p["name"] == service_port["targetPort"]
    )
    assert config_of(manifests)["listen"]["http"] == f"0.0.0.0:{container_port}"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1m", "1m")


def test_service_monitor_follows_a_changed_http_port(helm: Helm) -> None:
    """ports.http moves the Service port; the ServiceMonitor still names it."""
    manifests = helm.template(
        VALUES_DIR / "servicemonitor.yaml",
        extra=("--set", "ports.http=19191", "--set", "serviceMonitor.interval=5m"),
    )
    (endpoint,) = find(manifests, "ServiceMonitor")["spec"]["endpoints"]
    (port,) = (
        p for p in find(manifests, "Service")["spec"]["ports"] if p["name"] == endpoint["port"]
    )
    assert port["port"] == 19191
    assert endpoint["interval"] == "5m"


@pytest.mark.parametrize(
    ("interval", "timeout", "ok"),
    [("30s", "30s", True), ("1m", "59s", True), ("1s", "999ms", True), ("1h", "61m", False),
     ("500ms", "1s", False)],
)  # fmt: skip
def test_scrape_timeout_may_not_exceed_the_interval(
    helm: Helm, interval: str, timeout: str, ok: bool
) -> None:
    """Durations compare across units; a timeout above the interval fails the render."""
    result = helm.run(
        "template", RELEASE, CHART, "--namespace", NAMESPACE,
        "--set", "serviceMonitor.enabled=true",
        "--set", f"serviceMonitor.interval={interval}",
        "--set", f"serviceMonitor.scrapeTimeout={timeout}",
    )  # fmt: skip
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "must not exceed serviceMonitor.interval" in result.stderr


# -- Grafana dashboard ConfigMap ---------------------------------------------------------


@pytest.mark.parametrize("name", [None, "servicemonitor.yaml", "sidecar.yaml"])
def test_dashboard_configmap_is_off_by_default(rendered: Render, name: str | None) -> None:
    """Without grafanaDashboard.enabled no dashboard ConfigMap is rendered."""
    assert dashboard_configmaps(rendered(name)) == []


def test_dashboard_configmap_carries_the_sidecar_label_and_the_file(rendered: Render) -> None:
    """grafana_dashboard: "1", the chart labels, extra labels/annotations; data == file."""
    (configmap,) = dashboard_configmaps(rendered("grafana-dashboard.yaml"))
    metadata = configmap["metadata"]
    assert metadata["name"] == DASHBOARD_CONFIGMAP
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["team"] == "platform"
    assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert metadata["annotations"] == {"grafana_folder": "Platform"}
    assert configmap["data"] == {"extauthz.json": DASHBOARD_FILE.read_text(encoding="utf-8")}


def test_dashboard_label_key_and_value_are_configurable(helm: Helm) -> None:
    """A Grafana sidecar with its own label selector: key and value from values."""
    manifests = helm.template(
        extra=(
            "--set", "grafanaDashboard.enabled=true",
            "--set", "grafanaDashboard.label=example.com/dashboard",
            "--set-string", "grafanaDashboard.labelValue=extauthz",
        ),
    )  # fmt: skip
    configmap = find(manifests, "ConfigMap", DASHBOARD_CONFIGMAP)
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["metadata"]["labels"]["example.com/dashboard"] == "extauthz"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    for version in KUBERNETES_VERSIONS:
        validate_manifest(configmap, version)


def test_dashboard_ships_in_sidecar_mode_too(helm: Helm) -> None:
    """The dashboard needs no Deployment: it renders next to the sidecar's config."""
    manifests = helm.template(
        VALUES_DIR / "sidecar.yaml", extra=("--set", "grafanaDashboard.enabled=true")
    )
    assert kinds(manifests) == ["ConfigMap", "ConfigMap", "Role", "RoleBinding"]
    (configmap,) = dashboard_configmaps(manifests)
    assert configmap["data"]["extauthz.json"] == DASHBOARD_FILE.read_text(encoding="utf-8")


def test_values_reject_a_numeric_label_value(helm: Helm) -> None:
    """labelValue is a string: an unquoted 1 is a schema error, not a silent "1"."""
    result = helm.run(
        "template", RELEASE, CHART, "--namespace", NAMESPACE,
        "--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.labelValue=1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "labelValue" in result.stderr
