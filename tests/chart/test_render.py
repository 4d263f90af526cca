"""charts/extauthz renders valid, secure Kubernetes manifests, and refuses bad values.

Rendering is done by the real helm binary; every manifest is validated against the
Kubernetes OpenAPI schemas (strict: unknown fields are errors) of the oldest supported
release (1.29) and the newest that kubernetes-validate ships.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helmtest import (
    BAD_VALUES_DIR,
    CHART,
    GOOD_VALUES,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    VALUES_DIR,
    Helm,
    config_of,
    config_text,
    find,
    kinds,
    validate_manifest,
    values_id,
    values_path,
)

Render = Callable[[str | None], list[dict[str, Any]]]

FULLNAME = f"{RELEASE}-extauthz"
SELECTOR = {"app.kubernetes.io/name": "extauthz", "app.kubernetes.io/instance": RELEASE}


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod spec."""
    spec: dict[str, Any] = find(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The extauthz container of the Deployment."""
    (only,) = (c for c in pod_spec(manifests)["containers"] if c["name"] == "extauthz")
    return only


def port_number(ctr: dict[str, Any], name: str) -> int:
    """A named container port's number."""
    (number,) = (p["containerPort"] for p in ctr["ports"] if p["name"] == name)
    return int(number)


# -- lint and schema validation of every realistic value file ----------------------------


@pytest.mark.parametrize("name", GOOD_VALUES, ids=values_id)
def test_helm_lint_strict_passes(helm: Helm, name: str | None) -> None:
    """`helm lint --strict` passes, and no template `fail` was swallowed by lint mode."""
    args: list[str | Path] = ["lint", "--strict", CHART, "--namespace", NAMESPACE]
    for path in values_path(name):
        args += ["--values", path]
    result = helm.run(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "0 chart(s) failed" in output
    # helm lint turns `fail` into an INFO log line instead of an error
    assert "funcMap fail" not in output, output
    assert "[ERROR]" not in output
    assert "[WARNING]" not in output


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", GOOD_VALUES, ids=values_id)
def test_manifests_are_valid_kubernetes_objects(
    rendered: Render, name: str | None, version: str
) -> None:
    """Every rendered manifest validates (strictly) against that Kubernetes version."""
    manifests = rendered(name)
    assert manifests
    for manifest in manifests:
        validate_manifest(manifest, version)


@pytest.mark.parametrize("name", GOOD_VALUES, ids=values_id)
def test_no_secret_is_ever_rendered(rendered: Render, name: str | None) -> None:
    """Keys never come from values: the chart renders no Secret whatever the values."""
    assert "Secret" not in kinds(rendered(name))


@pytest.mark.parametrize("name", GOOD_VALUES, ids=values_id)
def test_rendered_config_passes_extauthz_config_validate(
    rendered: Render, name: str | None, tmp_path: Path
) -> None:
    """The ConfigMap's config file is accepted by `extauthz config validate`."""
    path = tmp_path / "config.yaml"
    path.write_text(with_mounted_files(config_text(rendered(name)), tmp_path), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def with_mounted_files(text: str, root: Path) -> str:
    """The config with the pod's mounted files (TLS, CA bundles, extra mounts) moved under
    ``root`` and created there, as the mounts provide them in the pod (validate checks
    that they exist)."""
    files = re.findall(r"(?:cert_file|key_file|client_ca_file|ca_file): (/\S+)", text)
    for path in sorted(set(files), key=len, reverse=True):
        local = root / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("placeholder\n", encoding="utf-8")
        text = text.replace(f": {path}", f": {local}")
    return text


# -- invalid values are refused with a clear message -----------------------------------


def _bad_values() -> list[tuple[str, str]]:
    cases = []
    for path in sorted(BAD_VALUES_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
        cases.append((path.name, first.removeprefix("# expect: ")))
    return cases


@pytest.mark.parametrize(("name", "message"), _bad_values(), ids=lambda v: str(v)[:40])
def test_bad_values_are_refused_with_a_clear_message(helm: Helm, name: str, message: str) -> None:
    """Each value file under values/bad/ fails to render, naming the offending keys."""
    result = helm.run(
        "template", RELEASE, CHART, "--namespace", NAMESPACE, "--values", BAD_VALUES_DIR / name
    )
    assert result.returncode != 0, f"{name} rendered:\n{result.stdout[:2000]}"
    assert message in result.stderr, result.stderr


# -- the default install ----------------------------------------------------------------


def test_default_install_renders_exactly_the_standalone_resources(rendered: Render) -> None:
    """Defaults: ServiceAccount, ConfigMap, Role, RoleBinding, Service, Deployment, a
    PodDisruptionBudget (two replicas) and the `helm test` Pod."""
    assert kinds(rendered(None)) == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "Pod",
        ]
    )


def test_pod_runs_with_the_restricted_security_context(rendered: Render) -> None:
    """Non-root 65532, read-only root, no privilege escalation, no capabilities, seccomp."""
    spec = pod_spec(rendered(None))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["runAsGroup"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(rendered(None))["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged", False)


def test_tmp_is_the_only_writable_mount(rendered: Render) -> None:
    """/tmp is an emptyDir (size-limited); the config is mounted read-only."""
    manifests = rendered(None)
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    mounts = {m["mountPath"]: m for m in container(manifests)["volumeMounts"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"]
    writable = [path for path, m in mounts.items() if not m.get("readOnly", False)]
    assert writable == ["/tmp"]
    assert volumes[mounts["/etc/extauthz"]["name"]]["configMap"]["name"] == FULLNAME


def test_service_account_token_is_mounted_only_for_the_extauthz_pod(rendered: Render) -> None:
    """The pod opts in (it watches Secrets); the ServiceAccount itself does not automount."""
    manifests = rendered(None)
    assert pod_spec(manifests)["automountServiceAccountToken"] is True
    assert pod_spec(manifests)["serviceAccountName"] == FULLNAME
    assert find(manifests, "ServiceAccount")["automountServiceAccountToken"] is False


def test_container_serves_grpc_on_9001_and_http_on_9090(rendered: Render) -> None:
    """Ports, the config path and the command line of the image's entrypoint."""
    ctr = container(rendered(None))
    assert port_number(ctr, "extauthz-grpc") == 9001
    assert port_number(ctr, "extauthz-http") == 9090
    assert ctr["args"] == ["serve", "--config", "/etc/extauthz/config.yaml"]
    assert "command" not in ctr  # the image's ENTRYPOINT ["extauthz"]
    assert ctr["image"] == "extauthz:0.1.0"


def test_probes_hit_readyz_and_healthz_on_the_http_port(rendered: Render) -> None:
    """Readiness on /readyz, liveness on /healthz, both on the HTTP port (9090)."""
    ctr = container(rendered(None))
    readiness, liveness = ctr["readinessProbe"]["httpGet"], ctr["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert port_number(ctr, readiness["port"]) == 9090
    assert port_number(ctr, liveness["port"]) == 9090


def test_service_exposes_grpc_and_metrics_with_protocol_hints(rendered: Render) -> None:
    """Service ports named for Istio protocol selection, targeting the container ports."""
    manifests = rendered(None)
    service = find(manifests, "Service")
    assert service["spec"]["selector"] == SELECTOR
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == 9001
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert port_number(container(manifests), ports["grpc"]["targetPort"]) == 9001
    assert ports["http-metrics"]["port"] == 9090
    assert port_number(container(manifests), ports["http-metrics"]["targetPort"]) == 9090


@pytest.mark.parametrize("name", [None, "standalone.yaml"], ids=values_id)
def test_termination_grace_period_exceeds_drain_plus_grace(
    rendered: Render, name: str | None
) -> None:
    """Kubernetes never kills the pod before the service's own drain + grace is over."""
    manifests = rendered(name)
    shutdown = config_of(manifests)["shutdown"]
    budget = shutdown["drain_seconds"] + shutdown["grace_seconds"]
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] > budget


def test_config_checksum_annotation_tracks_the_config(helm: Helm, rendered: Render) -> None:
    """checksum/config is the SHA-256 of the config file and changes with it."""
    manifests = rendered(None)
    config_file = config_text(manifests)
    annotation = find(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"
    ]
    assert annotation == hashlib.sha256(config_file.rstrip("\n").encode()).hexdigest()
    changed = helm.template(extra=("--set", "config.logging.level=debug"))
    assert (
        find(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]
        != annotation
    )


def test_default_config_file(rendered: Render) -> None:
    """The config file: apiVersion, listeners on all interfaces, Kubernetes key sources,
    the claim-header prefix stripped, no strict-transport-security of its own."""
    config = config_of(rendered(None))
    assert config["apiVersion"] == "extauthz/v1"
    assert config["listen"] == {"grpc": "0.0.0.0:9001", "http": "0.0.0.0:9090"}
    assert config["decryption"]["keys"] == [
        {"kubernetes": {"namespace": NAMESPACE, "secrets": ["extauthz-decryption-keys"]}}
    ]
    (provider,) = config["providers"]
    assert provider["keys"] == [
        {"kubernetes": {"namespace": NAMESPACE, "secrets": ["extauthz-verification-keys"]}}
    ]
    assert config["shutdown"] == {"drain_seconds": 3, "grace_seconds": 10}
    assert config["logging"]["level"] == "info"
    assert config["logging"]["format"] == "json"
    # "use the service default" values are left out rather than rendered empty
    assert "key_algorithms" not in config["decryption"]
    assert "claims_header" not in config["upstream"]
    assert "sources" not in config["token"]
    assert "rules" not in config
    assert config["upstream"]["strip_header_prefixes"] == ["x-auth-"]
    assert config["response"]["headers"] == {"x-content-type-options": "nosniff"}


# -- RBAC --------------------------------------------------------------------------------


def _roles(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["namespace"]: m for m in manifests if m["kind"] == "Role"}


@pytest.mark.parametrize("name", GOOD_VALUES, ids=values_id)
def test_rbac_is_namespaced_read_only_on_secrets(rendered: Render, name: str | None) -> None:
    """Only Roles (never ClusterRoles), each rule: secrets (keys) or configmaps
    (revocation lists), one resource per rule, verbs exactly get/list/watch."""
    manifests = rendered(name)
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(kinds(manifests))
    roles = _roles(manifests)
    assert roles
    for role in roles.values():
        assert 1 <= len(role["rules"]) <= 2
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""]
            assert rule["resources"] in (["secrets"], ["configmaps"])
            assert rule["verbs"] == ["get", "list", "watch"]


def test_rbac_names_exactly_the_configured_secrets(rendered: Render) -> None:
    """Secrets listed by name (decryption and providers) are the Role's resourceNames."""
    (rule,) = _roles(rendered(None))[NAMESPACE]["rules"]
    assert rule["resourceNames"] == ["extauthz-decryption-keys", "extauthz-verification-keys"]
    (rule,) = _roles(rendered("standalone.yaml"))[NAMESPACE]["rules"]
    assert rule["resourceNames"] == [
        "extauthz-decryption-keys",
        "extauthz-decryption-keys-next",
        "partner-issuer-jwks",
    ]


def test_label_selector_sources_get_namespace_wide_secret_read(rendered: Render) -> None:
    """A label selector needs all Secrets of its namespace (RBAC cannot filter by label);
    names elsewhere stay restricted, and each namespace gets its own Role + RoleBinding."""
    manifests = rendered("label-selector.yaml")
    roles = _roles(manifests)
    assert set(roles) == {NAMESPACE, "auth-keys"}
    # in a namespace other than the release's, the release namespace is part of the name
    assert roles["auth-keys"]["metadata"]["name"] == f"{FULLNAME}-{NAMESPACE}"
    assert roles[NAMESPACE]["metadata"]["name"] == FULLNAME
    (by_label,) = roles["auth-keys"]["rules"]
    assert "resourceNames" not in by_label
    (by_name,) = roles[NAMESPACE]["rules"]
    assert by_name["resourceNames"] == ["idp-verification-keys"]
    bindings = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == {NAMESPACE, "auth-keys"}
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": _roles(manifests)[binding["metadata"]["namespace"]]["metadata"]["name"],
        }
        assert binding["metadata"]["name"] == binding["roleRef"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
    config = config_of(manifests)
    assert config["decryption"]["keys"] == [
        {"kubernetes": {"namespace": "auth-keys", "label_selector": "extauthz.io/use=enc"}}
    ]


# -- standalone, production-like ---------------------------------------------------------


def test_standalone_values_reach_the_pod(rendered: Render) -> None:
    """Image by digest, scheduling knobs, extra env, annotations, TLS mounted."""
    manifests = rendered("standalone.yaml")
    deployment = find(manifests, "Deployment")
    spec = pod_spec(manifests)
    ctr = container(manifests)
    assert deployment["spec"]["replicas"] == 3
    assert ctr["image"] == (
        "registry.example.test/platform/extauthz@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["affinity"]["podAntiAffinity"]
    (constraint,) = spec["topologySpreadConstraints"]
    assert constraint["labelSelector"] == {"matchLabels": SELECTOR}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert {e["name"] for e in ctr["env"]} == {"OTEL_SERVICE_NAME", "NODE_NAME"}
    pod_meta = deployment["spec"]["template"]["metadata"]
    assert pod_meta["annotations"]["prometheus.io/scrape"] == "false"
    assert pod_meta["labels"]["team"] == "platform"
    assert spec["terminationGracePeriodSeconds"] == 40
    tls = next(v for v in spec["volumes"] if v["name"] == "extauthz-tls")
    assert tls["secret"]["secretName"] == "extauthz-grpc-tls"
    config = config_of(manifests)
    assert config["listen"]["tls"] == {
        "cert_file": "/etc/extauthz-tls/tls.crt",
        "key_file": "/etc/extauthz-tls/tls.key",
        "client_ca_file": "/etc/extauthz-tls/ca.crt",
    }
    assert [p["name"] for p in config["providers"]] == ["corp", "partners"]
    assert config["providers"][0]["keys"] == [
        {"jwks_uri": "https://login.corp.example.test/.well-known/jwks.json", "timeout_seconds": 3}
    ]
    assert [r["name"] for r in config["rules"]] == ["public", "admin", "partners-only"]


# -- sidecar mode ------------------------------------------------------------------------


def test_sidecar_mode_renders_config_and_rbac_but_no_workload(rendered: Render) -> None:
    """mode: sidecar -> ConfigMap + RBAC bound to the host's ServiceAccount; loopback gRPC."""
    manifests = rendered("sidecar.yaml")
    assert kinds(manifests) == ["ConfigMap", "Role", "RoleBinding"]
    binding = find(manifests, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "orders-api", "namespace": NAMESPACE}
    ]
    config = config_of(manifests)
    assert config["listen"] == {"grpc": "127.0.0.1:19001", "http": "0.0.0.0:19090"}


def test_sidecar_container_included_by_a_host_chart(helm: Helm, sidecar_host: Path) -> None:
    """The documented include of extauthz.sidecarContainer/-Volumes yields a valid pod."""
    lint = helm.run("lint", "--strict", sidecar_host)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "funcMap fail" not in lint.stdout + lint.stderr
    manifests = helm.template(chart=sidecar_host)
    for version in KUBERNETES_VERSIONS:
        for manifest in manifests:
            validate_manifest(manifest, version)
    assert "Service" not in kinds(manifests)
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    (host,) = deployments  # the host's own; extauthz renders none in sidecar mode
    spec = host["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["envoy", "extauthz"]
    extauthz = spec["containers"][1]
    assert extauthz["securityContext"]["readOnlyRootFilesystem"] is True
    assert {v["name"] for v in spec["volumes"]} == {"extauthz-config", "extauthz-tmp"}
    assert spec["serviceAccountName"] == find(manifests, "ServiceAccount")["metadata"]["name"]
    config_file = config_text(manifests)
    assert (
        host["spec"]["template"]["metadata"]["annotations"]["checksum/extauthz-config"]
        == hashlib.sha256(config_file.rstrip("\n").encode()).hexdigest()
    )
    assert yaml.safe_load(config_file)["listen"]["grpc"] == "127.0.0.1:9001"


# -- optional resources ------------------------------------------------------------------


def test_autoscaler_disruption_budget_and_network_policy(rendered: Render) -> None:
    """HPA (autoscaling/v2) owns the replica count; PDB; NetworkPolicy from the selectors."""
    manifests = rendered("ha.yaml")
    assert "replicas" not in find(manifests, "Deployment")["spec"]
    hpa = find(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    pdb = find(manifests, "PodDisruptionBudget")
    assert pdb["spec"] == {"selector": {"matchLabels": SELECTOR}, "minAvailable": 2}

    policy = find(manifests, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": SELECTOR}
    assert policy["policyTypes"] == ["Ingress"]
    grpc_rule, metrics_rule = policy["ingress"]
    assert grpc_rule["ports"] == [{"port": "extauthz-grpc", "protocol": "TCP"}]
    values = yaml.safe_load((VALUES_DIR / "ha.yaml").read_text(encoding="utf-8"))
    # the configured peers, and the release's `helm test` pods
    assert grpc_rule["from"] == [
        *values["networkPolicy"]["grpcFrom"],
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "extauthz-test",
                    "app.kubernetes.io/instance": RELEASE,
                }
            }
        },
    ]
    assert metrics_rule == {
        "ports": [{"port": "extauthz-http", "protocol": "TCP"}],
        "from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    }


def test_istio_authorization_policy_is_custom_with_the_provider(rendered: Render) -> None:
    """security.istio.io/v1 AuthorizationPolicy, action CUSTOM, provider/selector/rules."""
    policy = find(rendered("istio.yaml"), "AuthorizationPolicy")
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["metadata"]["namespace"] == "orders"
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"] == {"name": "extauthz-grpc"}
    assert policy["spec"]["selector"] == {"matchLabels": {"app": "orders-api"}}
    assert policy["spec"]["rules"] == [
        {"to": [{"operation": {"notPaths": ["/healthz", "/readyz"]}}]}
    ]


def test_service_monitor_scrapes_the_metrics_port(rendered: Render) -> None:
    """ServiceMonitor selects the Service and scrapes its named metrics port."""
    manifests = rendered("servicemonitor.yaml")
    monitor = find(manifests, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = find(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    pdb = find(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]


# -- NOTES --------------------------------------------------------------------------------


def _notes(helm: Helm, *values: Path) -> str:
    args: list[str | Path] = [
        "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client",
    ]  # fmt: skip
    for path in values:
        args += ["--values", path]
    result = helm.run(*args, check=True)
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_print_the_mesh_extension_provider_and_how_to_verify(helm: Helm) -> None:
    """NOTES: the envoyExtAuthzGrpc provider (FQDN, 9001, fail closed, 503) and checks."""
    notes = _notes(helm)
    snippet = notes[notes.index("meshConfig:") :]
    provider = yaml.safe_load(snippet[: snippet.index("\n\n")])
    assert provider == {
        "meshConfig": {
            "extensionProviders": [
                {
                    "name": "extauthz",
                    "envoyExtAuthzGrpc": {
                        "service": f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
                        "port": 9001,
                        "timeout": "1s",
                        "failOpen": False,
                        "statusOnError": "503",
                    },
                }
            ]
        }
    }
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes
    assert f"kubectl -n {NAMESPACE} port-forward service/{FULLNAME}" in notes
    assert re.search(r"extauthz check --address 127\.0\.0\.1:9001 ", notes)
    assert "extauthz keygen --use enc" in notes
    assert "placeholder issuer" in notes


def test_notes_in_sidecar_mode_explain_the_include(helm: Helm) -> None:
    """Sidecar NOTES show the host-chart include and the loopback address."""
    notes = _notes(helm, VALUES_DIR / "sidecar.yaml")
    assert 'include "extauthz.sidecarContainer" .Subcharts.extauthz' in notes
    assert 'include "extauthz.sidecarVolumes" .Subcharts.extauthz' in notes
    assert "127.0.0.1:19001" in notes
    assert "meshConfig" not in notes
