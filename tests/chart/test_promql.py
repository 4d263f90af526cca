"""The PromQL checker behind the dashboard tests catches the mistakes it exists for.

A checker that accepts everything would make the dashboard tests pass vacuously, so
each kind of mistake it claims to find is shown here, on the real series catalog.
"""

from __future__ import annotations

import pytest

from tests.chart.promql import PromQLError, check, parse
from tests.chart.series import SERIES

SEL = 'namespace=~"$namespace", job=~"$job"'


@pytest.mark.parametrize(
    ("expr", "labels"),
    [
        (f"sum by (decision) (rate(extauthz_checks_total{{{SEL}}}[$__rate_interval]))",
         {"decision"}),
        ("histogram_quantile(0.99, sum by (le) (rate("
         "extauthz_check_duration_seconds_bucket[5m])))", set()),
        ('sum(rate(extauthz_checks_total{decision="deny"}[5m]))'
         " / sum(rate(extauthz_checks_total[5m]))", set()),
        ("sum by (reason) (rate(extauthz_checks_total[5m])) / ignoring(reason) group_left "
         "sum(rate(extauthz_checks_total[5m]))", {"reason"}),
        ("max without (pod, instance) (extauthz_keys)",
         {"source", "use", "job", "namespace", "service", "container", "endpoint"}),
        ('sum(rate(extauthz_checks_total[5m] offset 1h)) > bool 0', set()),
        ("max_over_time(min by (source) (extauthz_key_source_up)[10m:1m]) == 0", {"source"}),
        ('label_replace(extauthz_build_info, "v", "$1", "version", "(.*)")',
         SERIES["extauthz_build_info"] | {"v"}),
        ("-1 * sum(rate(extauthz_token_cache_total[1h]))", set()),
    ],
)  # fmt: skip
def test_valid_queries_pass_with_their_result_labels(expr: str, labels: set[str]) -> None:
    """Correct queries: no problem, and the labels of the result are tracked."""
    result, report = check(expr, SERIES)
    assert report.problems == []
    assert result is not None
    assert set(result) == labels


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(extauthz_checks[5m])", "extauthz_checks: not a series"),  # counter without _total
        ("rate(extauthz_check_duration_seconds[5m])", "not a series"),  # histogram base name
        ("extauthz_keys_bucket", "not a series"),
        ("rate(extauthz_token_cache_hits_total[5m])", "not a series"),
        ('extauthz_keys{kid="a"}', "matcher on 'kid'"),
        ("sum by (path) (rate(extauthz_checks_total[5m]))", "'path' is not on its argument"),
        ("sum by (decision) (sum by (reason) (rate(extauthz_checks_total[5m])))",
         "'decision' is not on its argument"),
        ("histogram_quantile(0.9, sum(rate(extauthz_check_duration_seconds_bucket[5m])))",
         "no `le` label"),
        ("sum(extauthz_checks_total)", ""),  # a counter without rate() is allowed, if odd
        ("rate(extauthz_checks_total)", "needs a range vector"),
        ("sum(rate(extauthz_checks_total[5m]))[5m]", "does not parse"),
        ("sum by (decision) (rate(extauthz_checks_total[5m]))"
         " / sum(rate(extauthz_checks_total[5m]))", "never pairs series"),
        ("sum by (decision) (rate(extauthz_checks_total[5m])) / on (reason) "
         "sum by (decision) (rate(extauthz_checks_total[5m]))", "'reason' is not on the left"),
        ("rate(extauthz_checks_total[$custom])", "does not parse"),
        ("absentee(extauthz_keys)", "function not known"),
    ],
)  # fmt: skip
def test_mistakes_are_reported(expr: str, problem: str) -> None:
    """Unknown series, misplaced labels, lost labels, bad matching: each is a problem."""
    _, report = check(expr, SERIES)
    if problem:
        assert any(problem in p for p in report.problems), report.problems
    else:
        assert report.problems == []


@pytest.mark.parametrize(
    "expr",
    ["sum(", "extauthz_keys{source=}", "extauthz_keys{source='a'", "topk(extauthz_keys)",
     "sum by (a) (x) by (b)", "rate(x[5])", "1 +"],
)  # fmt: skip
def test_malformed_queries_do_not_parse(expr: str) -> None:
    """Syntax errors are errors, not silently skipped text."""
    with pytest.raises(PromQLError):
        parse(expr)
