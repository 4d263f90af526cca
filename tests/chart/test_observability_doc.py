"""docs/observability.md tells the truth about the metrics and the dashboard.

- every ```promql block and every alert `expr` of its PrometheusRule parses and reads
  only series and labels extauthz exports; the labels an alert's annotations use are on
  the alert's result;
- its metrics table lists every series family of extauthz/metrics.py, with its labels;
- the dashboard it describes is the chart's (uid, file).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.chart.helmtest import REPO
from tests.chart.promql import check
from tests.chart.series import SERIES, TARGET_LABELS, family
from tests.chart.test_dashboard import DASHBOARD

DOC = REPO / "docs" / "observability.md"
TEXT = DOC.read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    """The fenced code blocks of ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```$", TEXT, flags=re.DOTALL | re.MULTILINE)


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of every PrometheusRule in the page."""
    rules: list[dict[str, Any]] = []
    for block in blocks("yaml"):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and document.get("kind") == "PrometheusRule":
            for group in document["spec"]["groups"]:
                rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


QUERIES = [block.strip() for block in blocks("promql")]
RULES = alert_rules()


def test_the_page_has_queries_and_alerts() -> None:
    """Example queries and the alerts the page promises are there; alert names are unique."""
    assert len(QUERIES) >= 5
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))
    assert {
        "ExtauthzDenyRatioSpike",
        "ExtauthzKeySourceDown",
        "ExtauthzKeyReloadErrors",
        "ExtauthzCheckLatencyHigh",
    } <= set(names)


@pytest.mark.parametrize("expr", QUERIES, ids=lambda q: q.splitlines()[0][:50])
def test_example_query_reads_only_exported_series(expr: str) -> None:
    """Parses; known series; every label used exists where it is used."""
    _, report = check(expr, SERIES)
    assert report.problems == []
    assert report.series


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_alert_expression_and_its_annotations(rule: dict[str, Any]) -> None:
    """The expr checks out; `$labels.x` in the annotations is a label of its result."""
    labels, report = check(rule["expr"], SERIES)
    assert report.problems == []
    assert re.fullmatch(r"[0-9]+[smh]", rule["for"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    used = set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", str(rule.get("annotations"))))
    assert used <= (labels or frozenset())


def test_key_source_down_alert_fires_after_one_minute() -> None:
    """`key source down > 1 min`: on extauthz_key_source_up == 0, `for: 1m`."""
    (rule,) = (r for r in RULES if r["alert"] == "ExtauthzKeySourceDown")
    assert "extauthz_key_source_up" in rule["expr"]
    assert rule["expr"].rstrip().endswith("== 0")
    assert rule["for"] == "1m"


def test_metrics_table_lists_every_family_with_its_labels() -> None:
    """One row per metric of metrics.py, naming the series and its own labels."""
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(extauthz_[a-z_]+)` \|[^|]*\|([^|]*)\|", TEXT, re.MULTILINE)
    }
    families = {family(series) for series in SERIES}
    documented = {family(name) for name in rows}
    assert documented == families
    for series, labels in SERIES.items():
        row = next(cells for name, cells in rows.items() if family(name) == family(series))
        own = labels - TARGET_LABELS - {"le"}
        assert set(re.findall(r"`([a-z_]+)`", row)) == own, series


def test_the_dashboard_described_is_the_charts() -> None:
    """Same uid and path as the file in the chart."""
    assert f"uid `{DASHBOARD['uid']}`" in TEXT
    assert "charts/extauthz/dashboards/extauthz.json" in TEXT
    assert "examples/envoy/envoy.yaml" in TEXT
