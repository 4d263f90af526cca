"""The series catalog the dashboard and doc tests check against is extauthz's own.

tests/chart/series.py derives it from extauthz/metrics.py with the Prometheus naming
rules; here those rules are checked against what prometheus_client really exposes, and
the catalog against the metrics and labels docs/observability.md promises operators.
"""

from __future__ import annotations

from extauthz import metrics
from tests.chart.series import SERIES, TARGET_LABELS


def test_the_naming_rules_match_what_prometheus_client_exposes() -> None:
    """Each `# TYPE` family of the live exposition maps onto the catalog's series."""
    exposed = {}
    for line in metrics.exposition().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            exposed[name] = kind
    expected: set[str] = set()
    for name, kind in exposed.items():
        if name.endswith("_created"):
            continue  # creation timestamps: not something a dashboard reads
        if kind == "histogram":
            expected |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        else:
            expected.add(name)
    assert expected == set(SERIES)


def test_the_catalog_covers_the_metrics_operators_rely_on() -> None:
    """The contract's metrics, with their labels (and the transport each Check came by)."""
    own = {name: labels - TARGET_LABELS for name, labels in SERIES.items()}
    assert own["extauthz_checks_total"] == {"decision", "reason", "transport"}
    assert own["extauthz_check_duration_seconds_bucket"] == {"le", "transport"}
    assert own["extauthz_keys"] == {"source", "use"}
    assert own["extauthz_key_reloads_total"] == {"source", "result"}
    assert own["extauthz_key_source_up"] == {"source"}
    assert own["extauthz_token_cache_total"] == {"result"}
    assert own["extauthz_build_info"] == {"version"}
