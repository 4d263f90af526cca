"""The series extauthz exports, as Prometheus stores them: name -> labels.

Built from the metric objects the package itself defines (never a hand-kept list): those
of ``extauthz/metrics.py`` and of any other module of the package (every module is
imported, so the catalog does not depend on which ones a test run happened to load),
under the Prometheus naming rules: a counter ``x`` is stored as ``x_total``, a histogram as
``x_bucket`` (plus ``le``), ``x_count`` and ``x_sum``, an Info as ``x_info``. Every
series also carries the target labels Prometheus adds when it scrapes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

import extauthz
from extauthz import metrics

#: labels Prometheus (via the chart's ServiceMonitor) attaches to every scraped series
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container",
                           "endpoint"})  # fmt: skip


def _info_keys(function: Any) -> frozenset[str]:
    """Keys of the dict literal passed to ``<Info>.info(...)`` in ``function``'s source."""
    tree = ast.parse(inspect.getsource(function).strip())
    keys = {
        key.value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "info"
        for arg in call.args
        if isinstance(arg, ast.Dict)
        for key in arg.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }
    assert keys, f"{function.__name__}: no .info({{...}}) call with literal keys"
    return frozenset(keys)


def defined_metrics() -> list[MetricWrapperBase]:
    """Every metric object defined at module level anywhere in the package."""
    found: dict[int, MetricWrapperBase] = {}
    for info in pkgutil.walk_packages(extauthz.__path__, "extauthz."):
        if info.name.startswith("extauthz._proto") or info.name == "extauthz.__main__":
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                found[id(value)] = value
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            found[id(value)] = value
    return list(found.values())


def exported_series() -> dict[str, frozenset[str]]:
    """Series name -> labels, for every metric the package defines.

    prometheus_client has no public accessor for a metric's label names, so this reads
    the wrapper's ``_name``/``_type``/``_labelnames``; the Info's keys come from
    ``set_build_info``, the one place that sets them.
    """
    series: dict[str, frozenset[str]] = {}
    for value in defined_metrics():
        name, kind = value._name, value._type
        labels = frozenset(value._labelnames) | TARGET_LABELS
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "gauge":
            series[name] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_count"] = labels
            series[f"{name}_sum"] = labels
        elif kind == "summary":
            series[name] = labels | {"quantile"}
            series[f"{name}_count"] = labels
            series[f"{name}_sum"] = labels
        elif kind == "info":
            series[f"{name}_info"] = labels | _info_keys(metrics.set_build_info)
        else:
            raise AssertionError(f"{name}: metric type {kind} has no naming rule here")
    return series


SERIES = exported_series()


def family(series: str) -> str:
    """The metric a series belongs to (its name without the type's suffix)."""
    return re.sub(r"_(total|bucket|count|sum|info)$", "", series)
