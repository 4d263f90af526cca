"""examples/istio stays consistent with what the chart renders and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chart.helmtest import CHART, KUBERNETES_VERSIONS, REPO, Helm, find, validate_manifest

EXAMPLES = REPO / "examples" / "istio"
RELEASE, NAMESPACE = "extauthz", "auth"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def istio_install(helm: Helm) -> list[dict[str, Any]]:
    """The chart rendered with the example's values, as its README installs it."""
    result = helm.run(
        "template", RELEASE, CHART, "--namespace", NAMESPACE,
        "--values", EXAMPLES / "values-istio.yaml", check=True,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_example_values_render_valid_manifests(istio_install: list[dict[str, Any]]) -> None:
    """values-istio.yaml renders manifests valid for every tested Kubernetes version."""
    for version in KUBERNETES_VERSIONS:
        for manifest in istio_install:
            validate_manifest(manifest, version)


def test_example_policy_is_the_one_the_chart_renders(istio_install: list[dict[str, Any]]) -> None:
    """authorization-policy.yaml and the chart's policy send the same requests to extauthz."""
    example = _load(EXAMPLES / "authorization-policy.yaml")
    validate_manifest(example, KUBERNETES_VERSIONS[0])
    rendered = find(istio_install, "AuthorizationPolicy")
    assert rendered["spec"] == example["spec"]
    assert rendered["metadata"]["namespace"] == example["metadata"]["namespace"]


def test_example_mesh_config_is_what_notes_print(helm: Helm) -> None:
    """mesh-config.yaml equals the extensionProviders snippet the install prints."""
    result = helm.run(
        "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
        "--values", EXAMPLES / "values-istio.yaml", check=True,
    )  # fmt: skip
    notes = result.stdout.split("NOTES:", 1)[1]
    snippet = notes[notes.index("meshConfig:") :]
    printed = yaml.safe_load(snippet[: snippet.index("\n\n")])
    assert _load(EXAMPLES / "mesh-config.yaml") == printed
