"""Every example is validated by a real tool or a published schema, and agrees with the
chart that it is written for.

- every Kubernetes manifest under examples/ is checked: built-in kinds by
  kubernetes-validate (strict), Gateway API / Istio / prometheus-operator kinds by the
  CRD schemas of npm's `@kubernetes-models/*` packages (crdschema.py), Envoy Gateway's
  SecurityPolicy by a structural schema of the fields its API documents (no registry
  ships its CRD schema); a kind with no check fails the test;
- every chart values file under examples/ lints and renders valid manifests;
- the Envoy bootstraps under examples/envoy pass `envoy --mode validate` (the gRPC one
  also runs end to end in tests/e2e);
- the Istio snippets equal what the chart renders and prints; the Envoy Gateway
  policies point at the Service port the chart serves, with the claim headers it sets.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.crdschema import VERSIONS, assert_valid, has_published_schema
from tests.chart.helmtest import CHART, KUBERNETES_VERSIONS, REPO, Helm, find, validate_manifest
from tests.envoy_harness import envoy_binary, render

EXAMPLES = REPO / "examples"
ISTIO = EXAMPLES / "istio"
ENVOY_GATEWAY = EXAMPLES / "envoy-gateway"
RELEASE, NAMESPACE = "extauthz", "auth"

#: files under examples/ that are not Kubernetes manifests
NOT_MANIFESTS = {"config.yaml"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def is_values_file(path: Path) -> bool:
    """Chart values (`values*.yaml`), rendered by the chart rather than applied."""
    return path.name.startswith("values")


def manifest_files() -> list[Path]:
    """Every YAML file under examples/ that holds Kubernetes manifests."""
    files = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        if path.parent.name == "envoy" or path.name in NOT_MANIFESTS or is_values_file(path):
            continue
        if path.name.startswith("mesh-config"):
            continue  # a fragment of Istio's mesh config, compared with NOTES below
        files.append(path)
    return files


def values_files() -> list[Path]:
    """Every chart values file under examples/."""
    return sorted(p for p in EXAMPLES.rglob("*.yaml") if is_values_file(p))


def _rel(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


def install(helm: Helm, values: Path) -> list[dict[str, Any]]:
    """The chart rendered with an example's values, as its README installs it."""
    result = helm.run(
        "template", RELEASE, CHART, "--namespace", NAMESPACE, "--values", values, check=True
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def notes(helm: Helm, values: Path) -> str:
    """NOTES printed by an install with an example's values."""
    result = helm.run(
        "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
        "--values", values, check=True,
    )  # fmt: skip
    return result.stdout.split("NOTES:", 1)[1]


def mesh_config_snippet(text: str) -> Any:
    """The meshConfig block of NOTES, parsed."""
    snippet = text[text.index("meshConfig:") :]
    return yaml.safe_load(snippet[: snippet.index("\n\n")])


# -- Envoy Gateway: a structural schema of its documented API ------------------------------

#: gateway.envoyproxy.io/v1alpha1 SecurityPolicy, the fields these examples may use, as
#: Envoy Gateway v1.9 documents them (api/v1alpha1: securitypolicy_types.go,
#: ext_auth_types.go, shared_types.go BackendCluster/ClusterSettings, retry_types.go,
#: healthcheck_types.go, circuitbreaker_types.go). Unknown fields are errors.
_DURATION = {"type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
_UINT = {"type": "integer", "minimum": 0}


def _strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
    }


_BACKEND_REF = _strict(
    {
        "group": {"type": "string"},
        "kind": {"enum": ["Service", "ServiceImport", "Backend"]},
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "weight": _UINT,
        "fallback": {"type": "boolean"},
    },
    ("name",),
)
_CLUSTER_SETTINGS = _strict(
    {
        "retry": _strict(
            {
                "numRetries": _UINT,
                "numAttemptsPerPriority": _UINT,
                "retryOn": _strict(
                    {
                        "triggers": {
                            "type": "array",
                            "items": {
                                "enum": [
                                    "5xx",
                                    "gateway-error",
                                    "reset",
                                    "reset-before-request",
                                    "connect-failure",
                                    "retriable-4xx",
                                    "refused-stream",
                                    "retriable-status-codes",
                                    "cancelled",
                                    "deadline-exceeded",
                                    "internal",
                                    "resource-exhausted",
                                    "unavailable",
                                ]
                            },
                        },
                        "httpStatusCodes": {"type": "array", "items": {"type": "integer"}},
                    }
                ),
                "perRetry": _strict(
                    {
                        "timeout": _DURATION,
                        "backOff": _strict({"baseInterval": _DURATION, "maxInterval": _DURATION}),
                    }
                ),
            }
        ),
        "healthCheck": _strict(
            {
                "active": _strict(
                    {
                        "timeout": _DURATION,
                        "interval": _DURATION,
                        "initialJitter": _DURATION,
                        "unhealthyThreshold": _UINT,
                        "healthyThreshold": _UINT,
                        "type": {"enum": ["HTTP", "TCP", "GRPC"]},
                        "grpc": _strict({"service": {"type": "string"}}),
                        "http": _strict(
                            {
                                "hostname": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "method": {"type": "string"},
                                "expectedStatuses": {
                                    "type": "array",
                                    "items": {"type": "integer", "minimum": 100, "maximum": 599},
                                },
                                "retriableStatuses": {"type": "array"},
                                "expectedResponse": {"type": "object"},
                                "requestBody": {"type": "object"},
                            },
                            ("path",),
                        ),
                        "tcp": {"type": "object"},
                        "overrides": _strict(
                            {"port": {"type": "integer", "minimum": 1, "maximum": 65535}}
                        ),
                    },
                    ("type",),
                ),
                "passive": _strict(
                    {
                        "splitExternalLocalOriginErrors": {"type": "boolean"},
                        "interval": _DURATION,
                        "consecutiveLocalOriginFailures": _UINT,
                        "consecutiveGatewayErrors": _UINT,
                        "consecutive5XxErrors": _UINT,
                        "baseEjectionTime": _DURATION,
                        "maxEjectionPercent": {"type": "integer", "minimum": 0, "maximum": 100},
                        "failurePercentageThreshold": _UINT,
                        "alwaysEjectOneEndpoint": {"type": "boolean"},
                    }
                ),
                "panicThreshold": _UINT,
            }
        ),
        "timeout": {"type": "object"},
        "circuitBreaker": _strict(
            {
                "maxConnections": _UINT,
                "maxPendingRequests": _UINT,
                "maxParallelRequests": _UINT,
                "maxParallelRetries": _UINT,
                "maxRequestsPerConnection": _UINT,
                "perEndpoint": {"type": "object"},
                "retryBudget": {"type": "object"},
            }
        ),
        "loadBalancer": {"type": "object"},
        "connection": {"type": "object"},
        "tcpKeepalive": {"type": "object"},
        "http2": {"type": "object"},
    }
)
_BACKEND_CLUSTER = {
    "backendRefs": {"type": "array", "minItems": 1, "items": _BACKEND_REF},
    "backendSettings": _CLUSTER_SETTINGS,
}
_HEADER_NAMES = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[a-z0-9!#$%&'*+.^_`|~-]+$"},  # exact names only
}
SECURITY_POLICY_SCHEMA = _strict(
    {
        "apiVersion": {"const": "gateway.envoyproxy.io/v1alpha1"},
        "kind": {"const": "SecurityPolicy"},
        "metadata": _strict({"name": {"type": "string"}, "namespace": {"type": "string"}}),
        "spec": _strict(
            {
                "targetRefs": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "group": {"const": "gateway.networking.k8s.io"},
                            "kind": {"enum": ["Gateway", "HTTPRoute", "GRPCRoute"]},
                            "name": {"type": "string", "minLength": 1},
                            "sectionName": {"type": "string"},
                        },
                        ("group", "kind", "name"),
                    ),
                },
                "extAuth": {
                    **_strict(
                        {
                            "grpc": _strict(_BACKEND_CLUSTER, ("backendRefs",)),
                            "http": _strict(
                                {
                                    **_BACKEND_CLUSTER,
                                    "path": {"type": "string"},
                                    "pathOverride": {"type": "string"},
                                    "headersToBackend": _HEADER_NAMES,
                                },
                                ("backendRefs",),
                            ),
                            "headersToExtAuth": _HEADER_NAMES,
                            "bodyToExtAuth": _strict({"maxRequestBytes": _UINT}),
                            "timeout": _DURATION,
                            "failOpen": {"type": "boolean"},
                            "recomputeRoute": {"type": "boolean"},
                            "includeRouteMetadata": {"type": "boolean"},
                            "contextExtensions": {"type": "array"},
                            "statusOnError": {"type": "integer", "minimum": 400, "maximum": 511},
                        }
                    ),
                    # "only one of grpc or http can be specified"
                    "oneOf": [{"required": ["grpc"]}, {"required": ["http"]}],
                },
            },
            ("targetRefs", "extAuth"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)


def validate_example(manifest: dict[str, Any]) -> None:
    """The check that fits the manifest's kind; a kind nothing checks is an error."""
    if manifest.get("apiVersion") == "gateway.envoyproxy.io/v1alpha1":
        jsonschema.Draft202012Validator(SECURITY_POLICY_SCHEMA).validate(manifest)
    elif has_published_schema(manifest):
        assert_valid([manifest])
    elif "." not in manifest["apiVersion"].split("/")[0] or manifest["apiVersion"] == "v1":
        for version in KUBERNETES_VERSIONS:
            validate_manifest(manifest, version)
    else:
        pytest.fail(f"no schema checks {manifest['apiVersion']} {manifest['kind']}")


@pytest.mark.parametrize("path", manifest_files(), ids=_rel)
def test_example_manifests_validate(path: Path) -> None:
    """Each manifest of the file passes the check for its kind."""
    docs = _docs(path)
    assert docs
    for manifest in docs:
        validate_example(manifest)


def test_the_structural_schema_can_fail() -> None:
    """A misspelt field, both protocols, or a malformed header name fail the check."""
    (policy, _) = _docs(ENVOY_GATEWAY / "securitypolicy-grpc.yaml")
    ext_auth = policy["spec"]["extAuth"]
    for broken in (
        {**ext_auth, "failopen": False},
        {**ext_auth, "http": {"backendRefs": ext_auth["grpc"]["backendRefs"]}},
        {**ext_auth, "headersToExtAuth": ["x auth"]},
    ):
        bad = {**policy, "spec": {**policy["spec"], "extAuth": broken}}
        with pytest.raises(jsonschema.ValidationError):
            validate_example(bad)


def test_vendored_schema_versions_are_recorded() -> None:
    """The package versions the CRD validators come from are written down."""
    assert VERSIONS["@kubernetes-models/gateway-api"]
    assert VERSIONS["@kubernetes-models/istio"]
    assert VERSIONS["@kubernetes-models/prometheus-operator"]


# -- chart values under examples/ --------------------------------------------------------


@pytest.mark.parametrize("values", values_files(), ids=_rel)
def test_example_values_lint_and_render_valid_manifests(helm: Helm, values: Path) -> None:
    """helm lint --strict passes; every rendered manifest validates."""
    lint = helm.run("lint", "--strict", CHART, "--namespace", NAMESPACE, "--values", values)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "funcMap fail" not in lint.stdout + lint.stderr
    manifests = install(helm, values)
    for manifest in manifests:
        if has_published_schema(manifest):
            continue
        for version in KUBERNETES_VERSIONS:
            validate_manifest(manifest, version)
    assert_valid([m for m in manifests if has_published_schema(m)])


# -- Envoy bootstraps --------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((EXAMPLES / "envoy").glob("*.yaml")), ids=lambda p: p.name)
def test_envoy_bootstraps_pass_envoy_validate(path: Path, tmp_path: Path) -> None:
    """`envoy --mode validate` accepts each bootstrap, placeholders at their defaults."""
    bootstrap = tmp_path / path.name
    text = render(path.read_text(encoding="utf-8"), {"ACCESS_LOG_PATH": str(tmp_path / "a.log")})
    bootstrap.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(bootstrap), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " OK" in result.stdout + result.stderr


def test_envoy_bootstrap_survives_a_replica_going_away() -> None:
    """The gRPC bootstrap's extauthz cluster health-checks, retries elsewhere, ejects
    failing replicas and resolves every replica by DNS."""
    text = render((EXAMPLES / "envoy" / "envoy.yaml").read_text(encoding="utf-8"), {})
    bootstrap = yaml.safe_load(text)
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "extauthz"]
    assert cluster["type"] == "STRICT_DNS"
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"]["service_name"] == "envoy.service.auth.v3.Authorization"
    assert cluster["outlier_detection"]["consecutive_local_origin_failure"] >= 1
    listener = bootstrap["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (authz,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    retry = authz["typed_config"]["grpc_service"]["retry_policy"]
    assert "connect-failure" in retry["retry_on"]
    assert retry["num_retries"] >= 1


# -- Istio -------------------------------------------------------------------------------


def test_example_policy_is_the_one_the_chart_renders(helm: Helm) -> None:
    """authorization-policy.yaml and the chart's policy send the same requests to extauthz."""
    example = _load(ISTIO / "authorization-policy.yaml")
    rendered = find(install(helm, ISTIO / "values-istio.yaml"), "AuthorizationPolicy")
    assert rendered["spec"] == example["spec"]
    assert rendered["metadata"]["namespace"] == example["metadata"]["namespace"]


def test_ambient_policy_is_the_one_the_chart_renders(helm: Helm) -> None:
    """The waypoint policy (targetRefs) equals the chart's with the ambient values, and
    names the waypoint Gateway of the same namespace."""
    example = _load(ISTIO / "ambient" / "authorization-policy.yaml")
    rendered = find(install(helm, ISTIO / "ambient" / "values.yaml"), "AuthorizationPolicy")
    assert rendered["spec"] == example["spec"]
    waypoint = _load(ISTIO / "ambient" / "waypoint.yaml")
    assert waypoint["spec"]["gatewayClassName"] == "istio-waypoint"
    assert example["spec"]["targetRefs"][0]["name"] == waypoint["metadata"]["name"]
    assert example["metadata"]["namespace"] == waypoint["metadata"]["namespace"]


@pytest.mark.parametrize(
    ("mesh_config", "values"),
    [
        ("mesh-config.yaml", "values-istio.yaml"),
        ("mesh-config-http.yaml", "values-istio-http.yaml"),
    ],
)
def test_example_mesh_config_is_what_notes_print(helm: Helm, mesh_config: str, values: str) -> None:
    """Each provider snippet equals the one the install with its values prints."""
    assert _load(ISTIO / mesh_config) == mesh_config_snippet(notes(helm, ISTIO / values))


def test_http_provider_sends_the_prefix_and_passes_only_claim_headers() -> None:
    """envoyExtAuthzHttp: extauthz sees client x-auth-* (so it can remove them), the
    application gets only the claim headers, the client only the challenge on deny."""
    (provider,) = _load(ISTIO / "mesh-config-http.yaml")["meshConfig"]["extensionProviders"]
    http = provider["envoyExtAuthzHttp"]
    assert {"authorization", "cookie", "x-request-id", "x-auth-*"} <= set(
        http["includeRequestHeadersInCheck"]
    )
    assert all(h.startswith("x-auth-") for h in http["headersToUpstreamOnAllow"])
    assert not any(h.startswith("x-extauthz") for h in http["headersToDownstreamOnDeny"])
    assert {"www-authenticate", "content-type"} <= set(http["headersToDownstreamOnDeny"])


# -- Envoy Gateway -----------------------------------------------------------------------


def test_envoy_gateway_policies_point_at_the_chart_service(helm: Helm) -> None:
    """backendRefs name the Service and port the chart serves each protocol on; the
    ReferenceGrant admits exactly the policy's namespace; HTTP: metadata headers off and
    headersToBackend = the claim headers of the values."""
    manifests = install(helm, ENVOY_GATEWAY / "values-envoy-gateway.yaml")
    service = find(manifests, "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    config = yaml.safe_load(
        next(m for m in manifests if m["kind"] == "ConfigMap")["data"]["config.yaml"]
    )
    assert config["listen"].get("http_authz_metadata") is False
    claim_headers = sorted(
        h for p in config["providers"] for h in p.get("claims_to_headers", {}).values()
    )
    for name, protocol, port_name in (
        ("securitypolicy-grpc.yaml", "grpc", "grpc"),
        ("securitypolicy-http.yaml", "http", "http-authz"),
    ):
        policy, grant = _docs(ENVOY_GATEWAY / name)
        (ref,) = policy["spec"]["extAuth"][protocol]["backendRefs"]
        assert (ref["name"], ref["namespace"]) == (
            service["metadata"]["name"],
            service["metadata"]["namespace"],
        )
        assert ref["port"] == ports[port_name]
        assert grant["metadata"]["namespace"] == service["metadata"]["namespace"]
        (source,) = grant["spec"]["from"]
        assert source == {
            "group": "gateway.envoyproxy.io",
            "kind": "SecurityPolicy",
            "namespace": policy["metadata"]["namespace"],
        }
        assert policy["spec"]["extAuth"]["failOpen"] is False
        assert policy["spec"]["extAuth"]["statusOnError"] == 503
        if protocol == "http":
            http = policy["spec"]["extAuth"]["http"]
            active = http["backendSettings"]["healthCheck"]["active"]
            assert active["overrides"]["port"] == ports["http-metrics"]
            assert active["http"]["path"] == "/readyz"
            # the NetworkPolicy lets the proxies reach that port
            policy_rules = find(manifests, "NetworkPolicy")["spec"]["ingress"]
            metrics_port = {"port": "extauthz-http", "protocol": "TCP"}
            (metrics_rule,) = [r for r in policy_rules if metrics_port in r["ports"]]
            assert any(
                peer.get("namespaceSelector", {})
                .get("matchLabels", {})
                .get("kubernetes.io/metadata.name")
                == "envoy-gateway-system"
                for peer in metrics_rule["from"]
            )
            assert sorted(http["headersToBackend"]) == claim_headers
            sent = set(policy["spec"]["extAuth"]["headersToExtAuth"])
            assert {"authorization", "x-request-id", *claim_headers} <= sent
