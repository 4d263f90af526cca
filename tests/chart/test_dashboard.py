"""The Grafana dashboard shipped in the chart reads only what extauthz exports.

- it is a valid, provisionable Grafana dashboard: schemaVersion 39, a stable unique
  uid, no numeric id, unique panel ids, panels on the 24-column grid without overlap,
  every query on the `${datasource}` Prometheus variable;
- every query parses as PromQL (tests/chart/promql.py) and reads only series that
  extauthz/metrics.py exports, under the Prometheus naming rules (counter `_total`,
  histogram `_bucket`/`_count`/`_sum`, info `_info`);
- every label in a matcher, a `by (...)`/`without (...)`, an `on (...)`, a
  `histogram_quantile` or a `{{legend}}` exists where it is used; a label outside the
  metric's own is one Prometheus attaches to every scraped series (`namespace`, `job`);
- every selector follows the `namespace` and `job` variables, and each metric of
  metrics.py is on some panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helmtest import CHART
from tests.chart.promql import Selector, check, parse, walk
from tests.chart.series import SERIES, family

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
DASHBOARD_FILE = CHART / "dashboards" / "extauthz.json"

#: the variables every selector must honour, as `label=~"$label"`
FILTER_VARIABLES = ("namespace", "job")
#: Grafana's own variables, usable in any query
GRAFANA_BUILTINS = frozenset({"__rate_interval", "__interval", "__range", "__interval_ms"})

SUPPORTED_PANELS = frozenset({"row", "timeseries", "stat"})
GRID_COLUMNS = 24


def load(path: Path) -> dict[str, Any]:
    """A dashboard file, parsed."""
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


DASHBOARD = load(DASHBOARD_FILE)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[tuple[str, dict[str, Any]]]:
    """(panel title / refId, target) for every query of the dashboard."""
    return [
        (f"{panel['title']} / {target['refId']}", target)
        for panel in panels(DASHBOARD)
        for target in panel.get("targets", [])
    ]


QUERIES = queries()
QUERY_IDS = [name for name, _ in QUERIES]


def variables() -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {v["name"]: v for v in DASHBOARD["templating"]["list"]}


# -- a valid, provisionable Grafana dashboard --------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_json_with_the_grafana_model(path: Path) -> None:
    """Parses; the top-level fields of Grafana's dashboard model at schemaVersion 39."""
    dashboard = load(path)
    assert dashboard["schemaVersion"] == 39
    assert dashboard["id"] is None  # provisioned: Grafana assigns the numeric id
    assert isinstance(dashboard["title"], str)
    assert dashboard["title"]
    assert isinstance(dashboard["version"], int)
    assert isinstance(dashboard["editable"], bool)
    assert set(dashboard["time"]) == {"from", "to"}
    assert isinstance(dashboard["templating"]["list"], list)
    assert isinstance(dashboard["annotations"]["list"], list)
    assert isinstance(dashboard["tags"], list)


def test_dashboard_uids_are_stable_valid_and_unique() -> None:
    """A fixed uid (links survive re-provisioning), Grafana's uid alphabet, one per file."""
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert DASHBOARD["uid"] == "extauthz-overview"
    for uid in uids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid), uid
    assert len(uids) == len(set(uids))
    titles = [load(path)["title"] for path in DASHBOARDS]
    assert len(titles) == len(set(titles))


def test_panels_have_unique_ids_and_known_types() -> None:
    """Panel ids are unique; only panel types whose options this file spells out."""
    all_panels = panels(DASHBOARD)
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    assert {panel["type"] for panel in all_panels} <= SUPPORTED_PANELS
    for panel in all_panels:
        assert panel["title"]
        if panel["type"] != "row":
            assert panel.get("description"), f"{panel['title']}: say what the panel shows"
            assert panel["targets"], panel["title"]


def test_panels_tile_the_grid_without_overlap() -> None:
    """Every panel fits the 24 columns, and no two panels share a cell."""
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] >= 1
        assert grid["h"] >= 1
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_query_uses_the_datasource_variable() -> None:
    """`${datasource}` (a Prometheus data source variable) on every panel and target."""
    datasource = variables()["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels(DASHBOARD):
        if panel["type"] != "row":
            assert panel["datasource"] == expected, panel["title"]
    for name, target in QUERIES:
        assert target["datasource"] == expected, name
    for variable in variables().values():
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


def test_ref_ids_are_unique_within_each_panel() -> None:
    """Grafana keys a panel's queries by refId."""
    for panel in panels(DASHBOARD):
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


# -- queries read only what extauthz exports ---------------------------------------------


@pytest.mark.parametrize(("name", "target"), QUERIES, ids=QUERY_IDS)
def test_query_reads_only_exported_series_and_their_labels(
    name: str, target: dict[str, Any]
) -> None:
    """Parses; known series; matcher, grouping, matching and legend labels all exist."""
    labels, report = check(target["expr"], SERIES)
    assert report.problems == [], name
    assert report.series, f"{name}: reads no series"
    legend = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target["legendFormat"]))
    assert legend <= (labels or frozenset()), f"{name}: legend labels {legend - (labels or set())}"


@pytest.mark.parametrize(("name", "target"), QUERIES, ids=QUERY_IDS)
def test_every_selector_follows_the_namespace_and_job_variables(
    name: str, target: dict[str, Any]
) -> None:
    """Each selector has `namespace=~"$namespace"` and `job=~"$job"`."""
    selectors = [node for node in walk(parse(target["expr"])) if isinstance(node, Selector)]
    assert selectors, name
    for selector in selectors:
        have = {(m.label, m.op, m.value) for m in selector.matchers}
        for variable in FILTER_VARIABLES:
            assert (variable, "=~", f"${variable}") in have, f"{name}: {selector.name}"


def test_variables_referenced_by_queries_are_defined() -> None:
    """No `$name` in a query or variable query that the dashboard does not define."""
    defined = set(variables()) | GRAFANA_BUILTINS
    texts = [target["expr"] for _, target in QUERIES]
    texts += [v["definition"] for v in variables().values() if v["type"] == "query"]
    for text in texts:
        used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
        assert used <= defined, f"{text}: {used - defined}"


def test_filter_variables_come_from_an_exported_series() -> None:
    """`label_values(series{...}, label)`: the series is exported and carries the label."""
    for name in FILTER_VARIABLES:
        variable = variables()[name]
        assert variable["type"] == "query"
        query = variable["query"]["query"]
        assert query == variable["definition"]
        match = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query)
        assert match, query
        selector, label = match.groups()
        labels, report = check(selector, SERIES)
        assert report.problems == [], query
        assert label == name
        assert label in (labels or frozenset()), query


def test_every_metric_of_metrics_py_is_on_a_panel() -> None:
    """Each metric family extauthz exports is read by at least one query."""
    read = {
        family(series)
        for _, target in QUERIES
        for series in check(target["expr"], SERIES)[1].series
    }
    assert {family(series) for series in SERIES} <= read


def test_latency_panel_shows_p50_p90_p99_from_the_histogram() -> None:
    """histogram_quantile over rate(extauthz_check_duration_seconds_bucket) at 0.5/0.9/0.99."""
    quantiles: dict[float, str] = {}
    for _, target in QUERIES:
        match = re.fullmatch(
            r"histogram_quantile\(([0-9.]+), sum by \(le\) \(rate\("
            r"extauthz_check_duration_seconds_bucket\{[^}]*\}\[\$__rate_interval\]\)\)\)",
            target["expr"],
        )
        if match:
            quantiles[float(match.group(1))] = target["legendFormat"]
    assert quantiles == {0.5: "p50", 0.9: "p90", 0.99: "p99"}


def test_decisions_are_stacked_by_decision_and_by_reason() -> None:
    """Two stacked rate panels: `sum by (decision)` and `sum by (reason)` of the checks."""
    stacked: set[tuple[str, ...]] = set()
    for panel in panels(DASHBOARD):
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        if custom.get("stacking", {}).get("mode") != "normal":
            continue
        for target in panel["targets"]:
            match = re.match(
                r"sum by \(([a-z_, ]+)\) \(rate\(extauthz_checks_total", target["expr"]
            )
            if match:
                stacked.add(tuple(match.group(1).split(", ")))
    assert {("decision",), ("reason",)} <= stacked
