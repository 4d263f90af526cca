"""Custom resources validated against the schemas that npm's `@kubernetes-models/*`
packages publish (Gateway API, Istio, prometheus-operator).

The packages ship each CRD schema compiled into a validator module; the modules the
tests need are vendored under `crds/` (package versions in `crds/VERSIONS.json`, the
fetch script is `crds/vendor.py`) and run by Node.js (`crds/validate.mjs`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CRDS = Path(__file__).resolve().parent / "crds"
VERSIONS: dict[str, str] = json.loads((CRDS / "VERSIONS.json").read_text(encoding="utf-8"))

#: (apiVersion, kind) pairs that have a vendored schema (kept in step with validate.mjs)
KINDS = {
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "ReferenceGrant"),
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def has_published_schema(manifest: dict[str, Any]) -> bool:
    """Is there a vendored package schema for this manifest's apiVersion and kind?"""
    return (manifest.get("apiVersion"), manifest.get("kind")) in KINDS


def _node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node (Node.js >= 20) is needed to run the vendored CRD validators")
    return found


def errors_of(manifests: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """Per manifest, the schema errors (empty list: valid)."""
    result = subprocess.run(
        [_node(), str(CRDS / "validate.mjs")],
        input=json.dumps(manifests),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=CRDS,
    )
    assert result.returncode == 0, result.stderr
    errors: list[list[dict[str, str]]] = json.loads(result.stdout)
    assert len(errors) == len(manifests)
    return errors


def assert_valid(manifests: list[dict[str, Any]]) -> None:
    """Every manifest validates against its package schema."""
    for manifest, errors in zip(manifests, errors_of(manifests), strict=True):
        name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        assert errors == [], f"{name}: {errors}"
