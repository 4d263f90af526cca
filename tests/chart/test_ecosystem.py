"""Chart values an operator reaches for in a real cluster, each shown in a render.

- `transport` (grpc | http | both): listeners, container and Service ports, the
  NetworkPolicy, the `helm test` pods and NOTES follow it;
- safe defaults: the claim-header prefix stripped, no HSTS, one core per worker, a PDB
  whenever there is more than one pod;
- escape hatches named as other charts name them: `extraVolumes`, `extraVolumeMounts`,
  `envFrom`, `extraArgs`, `lifecycle`, `commonLabels`, `deploymentAnnotations`,
  `revisionHistoryLimit`, `extraObjects`;
- `caBundles` for a JWKS URL behind a private CA, checked against the mounts;
- revocation lists in ConfigMaps get their own narrow RBAC;
- headless Service, ServiceMonitor `scheme`/`tlsConfig`, the PrometheusRule, Istio
  `targetRefs` and NetworkPolicy peers (namespaces, revisions, ambient HBONE);
- Role names that two releases sharing a key namespace cannot collide on;
- sidecar mode refuses pod-level values it cannot apply.

Custom resources are also validated against the published CRD schemas (crdschema.py);
every manifest of these value files against Kubernetes in test_render.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.crdschema import assert_valid, has_published_schema
from tests.chart.helmtest import (
    CHART,
    GOOD_VALUES,
    NAMESPACE,
    RELEASE,
    REPO,
    Helm,
    config_of,
    find,
    kinds,
    values_id,
)

Render = Callable[[str | None], list[dict[str, Any]]]

FULLNAME = f"{RELEASE}-extauthz"
FQDN = f"{FULLNAME}.{NAMESPACE}.svc.cluster.local"
SELECTOR = {"app.kubernetes.io/name": "extauthz", "app.kubernetes.io/instance": RELEASE}
TEST_SELECTOR = {"app.kubernetes.io/name": "extauthz-test", "app.kubernetes.io/instance": RELEASE}


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod spec."""
    spec: dict[str, Any] = find(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The extauthz container."""
    (only,) = (c for c in pod_spec(manifests)["containers"] if c["name"] == "extauthz")
    return only


def test_pods(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The `helm test` pods by name."""
    return {
        m["metadata"]["name"]: m
        for m in manifests
        if m["kind"] == "Pod" and m["metadata"]["annotations"].get("helm.sh/hook") == "test"
    }


test_pods.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def transport(helm: Helm, value: str, *extra: str) -> list[dict[str, Any]]:
    """Defaults with `transport` set."""
    return helm.template(extra=("--set", f"transport={value}", *extra))


# -- published CRD schemas ----------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD_VALUES, ids=values_id)
def test_custom_resources_validate_against_the_published_crd_schemas(
    rendered: Render, name: str | None
) -> None:
    """AuthorizationPolicy, ServiceMonitor, PrometheusRule: the npm packages' schemas."""
    custom = [m for m in rendered(name) if has_published_schema(m)]
    if custom:
        assert_valid(custom)


def test_the_crd_validator_rejects_a_bad_resource(rendered: Render) -> None:
    """The schema check can fail: a misspelt enum in a rendered policy is an error."""
    policy = dict(find(rendered("istio.yaml"), "AuthorizationPolicy"))
    policy["spec"] = {**policy["spec"], "action": "CUSTOMISED"}
    with pytest.raises(AssertionError, match="/spec/action"):
        assert_valid([policy])


# -- transport ---------------------------------------------------------------------------


def test_transport_grpc_is_the_default(rendered: Render) -> None:
    """gRPC only: no HTTP authorization listener, port or test pod."""
    manifests = rendered(None)
    assert "http_authz" not in config_of(manifests)["listen"]
    assert {p["name"] for p in container(manifests)["ports"]} == {
        "extauthz-grpc",
        "extauthz-http",
    }
    assert {p["name"] for p in find(manifests, "Service")["spec"]["ports"]} == {
        "grpc",
        "http-metrics",
    }
    (pod,) = test_pods(manifests).values()
    assert pod["spec"]["containers"][0]["args"] == [
        "check",
        "--address",
        f"{FQDN}:9001",
        "--path",
        "/",
        "--expect",
        "deny:missing_token",
    ]


def test_transport_http_exposes_only_the_http_listener(helm: Helm) -> None:
    """http: the HTTP listener on 0.0.0.0:9002, gRPC on loopback only, not in the
    Service, the container ports or the NetworkPolicy; the test pod uses --http."""
    manifests = transport(
        helm,
        "http",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.istio.namespaces={istio-system}",
    )
    listen = config_of(manifests)["listen"]
    assert listen["http_authz"] == "0.0.0.0:9002"
    assert listen["grpc"] == "127.0.0.1:9001"
    ports = {p["name"]: p for p in container(manifests)["ports"]}
    assert set(ports) == {"extauthz-authz", "extauthz-http"}
    assert ports["extauthz-authz"]["containerPort"] == 9002
    service = {p["name"]: p for p in find(manifests, "Service")["spec"]["ports"]}
    assert set(service) == {"http-authz", "http-metrics"}
    assert service["http-authz"] == {
        "name": "http-authz",
        "port": 9002,
        "targetPort": "extauthz-authz",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    authz_rule = find(manifests, "NetworkPolicy")["spec"]["ingress"][0]
    assert authz_rule["ports"] == [{"port": "extauthz-authz", "protocol": "TCP"}]
    (pod,) = test_pods(manifests).values()
    assert pod["spec"]["containers"][0]["args"] == [
        "check",
        "--http",
        f"http://{FQDN}:9002",
        "--path",
        "/",
        "--expect",
        "deny:missing_token",
    ]


def test_transport_both_serves_and_tests_both(rendered: Render) -> None:
    """both: two listeners, two Service ports, one test pod per protocol, path prefix and
    metadata switch passed to the listener."""
    manifests = rendered("ecosystem.yaml")
    listen = config_of(manifests)["listen"]
    assert listen["grpc"] == "0.0.0.0:9001"
    assert listen["http_authz"] == "0.0.0.0:9443"
    assert listen["http_authz_path_prefix"] == "/authz"
    assert listen["http_authz_metadata"] is False
    assert {p["name"] for p in find(manifests, "Service")["spec"]["ports"]} == {
        "grpc",
        "http-authz",
        "http-metrics",
    }
    pods = test_pods(manifests)
    assert set(pods) == {f"{FULLNAME}-test-grpc", f"{FULLNAME}-test-http"}
    http_args = pods[f"{FULLNAME}-test-http"]["spec"]["containers"][0]["args"]
    assert http_args[:3] == ["check", "--http", f"http://{FQDN}:9443/authz"]
    assert http_args[3:5] == ["--path", "/orders"]
    policy = find(manifests, "NetworkPolicy")["spec"]
    ports = {p["port"] for p in policy["ingress"][0]["ports"]}
    assert ports == {"extauthz-grpc", "extauthz-authz", 15008}


def test_sidecar_listeners_stay_on_loopback(helm: Helm) -> None:
    """Sidecar mode with both transports: both authorization listeners on 127.0.0.1."""
    manifests = helm.template(extra=("--set", "mode=sidecar", "--set", "transport=both"))
    listen = config_of(manifests)["listen"]
    assert listen["grpc"] == "127.0.0.1:9001"
    assert listen["http_authz"] == "127.0.0.1:9002"
    assert listen["http"] == "0.0.0.0:9090"
    assert "Pod" not in kinds(manifests)  # no Service to test against


# -- helm test pods ----------------------------------------------------------------------


def test_test_pods_are_hooks_that_run_restricted_and_are_not_selected(rendered: Render) -> None:
    """A `helm test` hook, deleted before re-creation and on success; restricted security
    context, no ServiceAccount token; labels outside the Service/Deployment selector."""
    manifests = rendered("ecosystem.yaml")
    for pod in test_pods(manifests).values():
        annotations = pod["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "test"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert annotations["sidecar.istio.io/inject"] == "false"
        labels = pod["metadata"]["labels"]
        assert labels["purpose"] == "smoke"
        assert labels["team"] == "platform"
        assert not SELECTOR.items() <= labels.items()
        assert TEST_SELECTOR.items() <= labels.items()
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never"
        assert spec["automountServiceAccountToken"] is False
        (ctr,) = spec["containers"]
        assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
        assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert ctr["image"] == container(manifests)["image"]
        assert ctr["resources"] == {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "128Mi"},
        }
    # the NetworkPolicy lets exactly these pods in
    peers = find(manifests, "NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": TEST_SELECTOR}} in peers


def test_no_test_pods_when_disabled_or_over_tls(helm: Helm) -> None:
    """tests.enabled=false, or TLS on the listeners (the check has no client certificate)."""
    assert "Pod" not in kinds(helm.template(extra=("--set", "tests.enabled=false")))
    tls = helm.template(extra=("--set", "tls.enabled=true", "--set", "tls.secretName=t"))
    assert "Pod" not in kinds(tls)


# -- safe defaults -----------------------------------------------------------------------


def test_defaults_size_one_core_and_keep_two_pods_through_drains(rendered: Render) -> None:
    """One CPU per worker requested (so the autoscaler measures a real core), no CPU
    limit, and a PodDisruptionBudget for the two default replicas."""
    manifests = rendered(None)
    resources = container(manifests)["resources"]
    assert resources["requests"]["cpu"] == "1"
    assert "cpu" not in resources["limits"]
    assert config_of(manifests)["server"]["workers"] == 1
    pdb = find(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1


def test_a_single_pod_gets_no_disruption_budget(helm: Helm) -> None:
    """replicaCount 1 with the defaults: no PDB (it could only block node drains)."""
    manifests = helm.template(extra=("--set", "replicaCount=1"))
    assert "PodDisruptionBudget" not in kinds(manifests)


# -- escape hatches ----------------------------------------------------------------------


def test_escape_hatches_reach_the_pod(rendered: Render) -> None:
    """envFrom, extraArgs, extraVolumes/-Mounts, lifecycle, revisionHistoryLimit and
    deploymentAnnotations land where Kubernetes reads them."""
    manifests = rendered("ecosystem.yaml")
    deployment = find(manifests, "Deployment")
    assert deployment["metadata"]["annotations"] == {"reloader.example.test/auto": "true"}
    assert deployment["spec"]["revisionHistoryLimit"] == 3
    ctr = container(manifests)
    assert ctr["args"] == ["serve", "--config", "/etc/extauthz/config.yaml", "--workers", "2"]
    assert ctr["envFrom"] == [{"configMapRef": {"name": "extauthz-env"}}]
    assert ctr["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert volumes["corp-trust"] == {
        "name": "corp-trust",
        "configMap": {"name": "corp-trust-bundle"},
    }
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    assert mounts["/etc/corp-trust"] == {
        "name": "corp-trust",
        "mountPath": "/etc/corp-trust",
        "readOnly": True,
    }


def test_pre_stop_sleep_counts_toward_the_grace_period(rendered: Render) -> None:
    """preStop sleep 5 + drain 3 + grace 10, plus 5 s of margin."""
    assert pod_spec(rendered("ecosystem.yaml"))["terminationGracePeriodSeconds"] == 23


def test_common_labels_are_on_every_resource_but_never_in_selectors(rendered: Render) -> None:
    """commonLabels label every manifest; selectors keep the two stable labels only."""
    manifests = rendered("ecosystem.yaml")
    for manifest in manifests:
        labels = manifest["metadata"].get("labels", {})
        if manifest["metadata"]["name"].startswith(f"{RELEASE}-extra"):
            continue  # extraObjects are the operator's own manifests
        assert labels.get("team") == "platform", manifest["kind"]
        assert labels.get("cost-center") == "4711", manifest["kind"]
    deployment = find(manifests, "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"] == SELECTOR
    assert find(manifests, "Service")["spec"]["selector"] == SELECTOR


def test_extra_objects_are_rendered_through_tpl(rendered: Render) -> None:
    """Maps and strings both render, with template expressions evaluated."""
    manifests = rendered("ecosystem.yaml")
    extra = find(manifests, "ConfigMap", f"{RELEASE}-extra")
    assert extra["metadata"]["namespace"] == NAMESPACE
    text = find(manifests, "ConfigMap", f"{RELEASE}-extra-text")
    assert text["data"] == {"release": RELEASE}


# -- CA bundles for JWKS ------------------------------------------------------------------


def test_ca_bundles_are_mounted_where_ca_file_points(rendered: Render) -> None:
    """A ConfigMap and a Secret bundle, mounted read-only under /etc/extauthz-ca/NAME."""
    manifests = rendered("ecosystem.yaml")
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert volumes["extauthz-ca-idp-ca"]["configMap"] == {"name": "idp-root-ca"}
    assert volumes["extauthz-ca-partner-ca"]["secret"] == {"secretName": "partner-ca-bundle"}
    mounts = {m["name"]: m for m in container(manifests)["volumeMounts"]}
    assert mounts["extauthz-ca-idp-ca"] == {
        "name": "extauthz-ca-idp-ca",
        "mountPath": "/etc/extauthz-ca/idp-ca",
        "readOnly": True,
    }
    corp = config_of(manifests)["providers"][0]["keys"][0]
    assert corp["ca_file"].startswith(mounts["extauthz-ca-idp-ca"]["mountPath"] + "/")


def test_ca_file_outside_every_mount_is_refused(helm: Helm, tmp_path: Path) -> None:
    """A ca_file the pod cannot see fails the render, naming the key and the fix."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "providers": [
                        {
                            "name": "corp",
                            "issuer": "https://login.corp.example.test",
                            "keys": [
                                {
                                    "jwks_uri": "https://login.corp.example.test/jwks",
                                    "ca_file": "/etc/ssl/corp.pem",
                                }
                            ],
                        }
                    ]
                }
            }
        ),
        encoding="utf-8",
    )
    result = helm.run("template", RELEASE, CHART, "--namespace", NAMESPACE, "--values", values)
    assert result.returncode != 0
    assert "config.providers[0].keys[0].ca_file (/etc/ssl/corp.pem) is not in a mounted" in (
        result.stderr
    )


# -- revocation lists -------------------------------------------------------------------


def test_revocation_configmaps_get_narrow_read_access(rendered: Render) -> None:
    """ConfigMaps named in revocation sources: by resourceNames; a label-selected kind in
    another namespace: every ConfigMap there, and no Secret access at all."""
    manifests = rendered("ecosystem.yaml")
    roles = {m["metadata"]["namespace"]: m for m in manifests if m["kind"] == "Role"}
    rules = {r["resources"][0]: r for r in roles[NAMESPACE]["rules"]}
    assert rules["configmaps"]["resourceNames"] == ["extauthz-revoked"]
    assert rules["configmaps"]["verbs"] == ["get", "list", "watch"]
    assert rules["secrets"]["resourceNames"] == ["extauthz-decryption-keys"]
    (other,) = roles["auth-revocation"]["rules"]
    assert other["resources"] == ["configmaps"]
    assert "resourceNames" not in other
    sources = config_of(manifests)["revocation"]["sources"]
    assert sources[0] == {
        "kubernetes": {"namespace": NAMESPACE, "configmaps": ["extauthz-revoked"]}
    }


def test_role_names_of_two_releases_sharing_a_key_namespace_differ(helm: Helm) -> None:
    """Release `rel` from namespaces `a` and `b`, keys in `shared`: distinct Role names."""
    names = []
    for namespace in ("a", "b"):
        result = helm.run(
            "template", RELEASE, CHART, "--namespace", namespace,
            "--set", "config.decryption.keys[0].kubernetes.namespace=shared",
            "--set", "config.decryption.keys[0].kubernetes.secrets={k}",
            check=True,
        )  # fmt: skip
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        (role,) = [
            d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "shared"
        ]
        names.append(role["metadata"]["name"])
    assert names == [f"{FULLNAME}-a", f"{FULLNAME}-b"]


# -- Service, monitoring ------------------------------------------------------------------


def test_headless_service(rendered: Render) -> None:
    """service.headless: clusterIP None, so DNS returns every ready pod."""
    assert find(rendered("ecosystem.yaml"), "Service")["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in find(rendered(None), "Service")["spec"]


def test_service_monitor_scrapes_over_mesh_tls(rendered: Render) -> None:
    """scheme https and the tlsConfig of Istio's mounted certificates."""
    (endpoint,) = find(rendered("ecosystem.yaml"), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["caFile"] == "/etc/prom-certs/root-cert.pem"
    assert endpoint["tlsConfig"]["insecureSkipVerify"] is True


def test_prometheus_rule_carries_the_documented_alerts(rendered: Render) -> None:
    """The PrometheusRule's groups are docs/observability.md's, alert for alert."""
    rule = find(rendered("ecosystem.yaml"), "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    text = (REPO / "docs" / "observability.md").read_text(encoding="utf-8")
    section = text[text.index("### Alerts") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    documented = yaml.safe_load(match.group(1))
    assert rule["spec"] == documented["spec"]
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert "ExtauthzKeySourceDown" in names
    assert "ExtauthzNoDecryptionKeys" in names


# -- Istio -------------------------------------------------------------------------------


def test_network_policy_admits_istio_peers_and_hbone(rendered: Render) -> None:
    """Named namespaces, revision-labelled namespaces (and istio-injection for `default`),
    ambient namespaces; HBONE 15008; kubelet probes from 169.254.7.127 in ambient."""
    policy = find(rendered("ecosystem.yaml"), "NetworkPolicy")["spec"]
    authz, ops = policy["ingress"]
    peers = authz["from"]
    for namespace in ("istio-system", "istio-ingress"):
        assert {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        } in peers
    assert {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "istio.io/rev", "operator": "In", "values": ["default", "canary"]}
            ]
        }
    } in peers
    assert {"namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}} in peers
    assert {"namespaceSelector": {"matchLabels": {"istio.io/dataplane-mode": "ambient"}}} in peers
    assert {"port": 15008, "protocol": "TCP"} in authz["ports"]
    assert {"ipBlock": {"cidr": "169.254.7.127/32"}} in ops["from"]


def test_authorization_policy_for_an_ambient_waypoint(rendered: Render) -> None:
    """targetRefs instead of selector (Istio refuses both)."""
    policy = find(rendered("istio-ambient.yaml"), "AuthorizationPolicy")["spec"]
    assert policy["targetRefs"] == [
        {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}
    ]
    assert "selector" not in policy
    assert policy["provider"] == {"name": "extauthz-http"}


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--set", "mode=sidecar", "--set", "podLabels.team=x"),
            "podLabels is not used with mode: sidecar",
        ),
        (
            ("--set", "mode=sidecar", "--set", "imagePullSecrets[0].name=regcred"),
            "imagePullSecrets is not used with mode: sidecar",
        ),
        (
            ("--set", "service.headless=true", "--set", "service.type=NodePort"),
            "service.headless needs service.type ClusterIP",
        ),
        (
            (
                "--set",
                "istio.authorizationPolicy.enabled=true",
                "--set",
                "istio.authorizationPolicy.selector.matchLabels.app=x",
                "--set",
                "istio.authorizationPolicy.targetRefs[0].kind=Gateway",
                "--set",
                "istio.authorizationPolicy.targetRefs[0].name=waypoint",
            ),
            "set selector.matchLabels (sidecars) or targetRefs",
        ),
        (
            ("--set", "caBundles[0].name=x"),
            'caBundles entry "x": set exactly one of configMap or secret',
        ),
        (("--set", "transport=grpcweb"), "transport"),
    ],
    ids=[
        "sidecar-podLabels",
        "sidecar-pullSecrets",
        "headless-nodeport",
        "selector-and-refs",
        "ca-bundle-no-source",
        "bad-transport",
    ],
)
def test_invalid_combinations_are_refused(helm: Helm, args: tuple[str, ...], message: str) -> None:
    """Each combination fails the render with a message naming the keys."""
    result = helm.run("template", RELEASE, CHART, "--namespace", NAMESPACE, *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# -- NOTES -------------------------------------------------------------------------------


def _notes(helm: Helm, *args: str) -> str:
    result = helm.run(
        "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client", *args,
        check=True,
    )  # fmt: skip
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_follow_the_transport(helm: Helm) -> None:
    """both: the gRPC and the HTTP mesh providers, two check commands, both ports
    forwarded; http: no gRPC provider, port or command."""
    both = _notes(helm, "--set", "transport=both")
    snippet = both[both.index("meshConfig:") :]
    providers = yaml.safe_load(snippet[: snippet.index("\n\n")])["meshConfig"]["extensionProviders"]
    assert [p["name"] for p in providers] == ["extauthz", "extauthz-http"]
    http = providers[1]["envoyExtAuthzHttp"]
    assert (http["service"], http["port"]) == (FQDN, 9002)
    assert http["includeRequestHeadersInCheck"] == [
        "authorization", "cookie", "traceparent", "x-request-id", "x-auth-*",
    ]  # fmt: skip
    assert http["headersToUpstreamOnAllow"] == ["x-auth-scope", "x-auth-subject"]
    assert "extauthz check --address 127.0.0.1:9001" in both
    assert "extauthz check --http http://127.0.0.1:9002" in both
    assert "9001:9001 9002:9002 9090:9090" in both
    only_http = _notes(helm, "--set", "transport=http")
    assert "envoyExtAuthzGrpc" not in only_http
    assert "envoyExtAuthzHttp" in only_http
    assert "--address 127.0.0.1:9001" not in only_http
    assert "helm test" in only_http


def test_notes_never_put_a_private_key_in_a_file(helm: Helm) -> None:
    """The key commands NOTES print pipe the private key: keygen -> kubectl create (no
    last-applied copy), Secret -> keygen --public; no redirection into a file."""
    notes = _notes(helm)
    assert "--namespace auth | kubectl create -f -" in notes
    assert "base64 -d | extauthz keygen --public /dev/stdin" in notes
    assert "> enc.json" not in notes
    assert "kubectl apply" not in notes
