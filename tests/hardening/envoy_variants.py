"""Variants of the example Envoy bootstrap for the hardening tests (a helper, not tests).

``examples/envoy/envoy.yaml`` is the product's documented bootstrap and has no
placeholder for TLS to extauthz, for several extauthz endpoints, for active health
checks or for retries of the Check call. Rather than fork it, these helpers render it
exactly as the end-to-end tests do (:func:`envoy_harness.render_bootstrap`), load the
YAML, and change only the ``extauthz`` cluster and the ext_authz filter's
``grpc_service``:

- :func:`add_mtls` — an ``UpstreamTlsContext`` with a client certificate, a trusted CA
  and a pinned SAN (mTLS from Envoy to extauthz);
- :func:`set_endpoints` — several extauthz replicas behind the one cluster;
- :func:`add_health_checks` — gRPC health checking (``grpc.health.v1``), so a replica
  that turns NOT_SERVING on SIGTERM leaves the load-balancing set;
- :func:`add_check_retries` — ``grpc_service.retry_policy``: a Check refused or reset by
  a replica that stopped accepting is retried on another host.

:class:`VariantEnvoy` is :class:`envoy_harness.EnvoyProcess` started with the changed
bootstrap (same readiness checks, same cleanup).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.envoy_harness import EnvoyProcess, render

Bootstrap = dict[str, Any]


def cluster(doc: Bootstrap, name: str = "extauthz") -> dict[str, Any]:
    """The static cluster ``name`` of a bootstrap."""
    for item in doc["static_resources"]["clusters"]:
        if item["name"] == name:
            found: dict[str, Any] = item
            return found
    raise KeyError(name)


def ext_authz_filter(doc: Bootstrap) -> dict[str, Any]:
    """The ``typed_config`` of the ext_authz HTTP filter of the ingress listener."""
    listener = doc["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for item in hcm["http_filters"]:
        if item["name"] == "envoy.filters.http.ext_authz":
            config: dict[str, Any] = item["typed_config"]
            return config
    raise KeyError("envoy.filters.http.ext_authz")


def add_mtls(
    doc: Bootstrap, *, cert_file: Path, key_file: Path, ca_file: Path, server_name: str,
    alpn: str = "h2",
) -> None:  # fmt: skip
    """TLS from Envoy to extauthz: present ``cert_file``, trust ``ca_file``, pin the SAN.

    ALPN ``h2`` for gRPC (grpc-core refuses a TLS connection without it); ``http/1.1``
    for the HTTP authorization protocol.
    """
    cluster(doc)["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "UpstreamTlsContext",
            "sni": server_name,
            "common_tls_context": {
                "alpn_protocols": [alpn],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(cert_file)},
                        "private_key": {"filename": str(key_file)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(ca_file)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": server_name}}
                    ],
                },
            },
        },
    }


def set_endpoints(doc: Bootstrap, ports: Sequence[int], host: str = "127.0.0.1") -> None:
    """Point the extauthz cluster at one endpoint per port (round robin between them)."""
    item = cluster(doc)
    item["type"] = "STATIC"
    item.pop("dns_lookup_family", None)
    item["load_assignment"]["endpoints"] = [
        {
            "lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": p}}}}
                for p in ports
            ]
        }
    ]


def add_health_checks(doc: Bootstrap, interval: str = "0.1s") -> None:
    """Active gRPC health checks on the extauthz cluster (service name of ext_authz)."""
    cluster(doc)["health_checks"] = [
        {
            "timeout": "0.5s",
            "interval": interval,
            "no_traffic_interval": interval,
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": "envoy.service.auth.v3.Authorization"},
        }
    ]


def add_check_retries(doc: Bootstrap, retries: int = 5) -> None:
    """Retry a Check that a replica refused or reset, preferably on another host.

    The cluster's circuit breaker allows 3 concurrent retries by default; when a replica
    stops, every in-flight Check retries at once, so the budget is raised with it.
    """
    cluster(doc)["circuit_breakers"] = {"thresholds": [{"max_retries": 1024}]}
    ext_authz_filter(doc)["grpc_service"]["retry_policy"] = {
        "retry_on": "connect-failure,refused-stream,reset,unavailable,cancelled",
        "num_retries": retries,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.1s"},
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host."
                    "previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
    }


def set_http_endpoints(doc: Bootstrap, ports: Sequence[tuple[int, int]]) -> None:
    """HTTP-mode bootstrap: one endpoint per ``(authorization port, health port)``."""
    set_endpoints(doc, [port for port, _ in ports])
    for endpoint, (_, health) in zip(
        cluster(doc)["load_assignment"]["endpoints"][0]["lb_endpoints"], ports, strict=True
    ):
        endpoint["endpoint"]["health_check_config"] = {"port_value": health}


def tighten_http_health_checks(doc: Bootstrap, interval: str = "0.1s") -> None:
    """HTTP-mode bootstrap: ``/readyz`` checked every ``interval``."""
    for check in cluster(doc)["health_checks"]:
        check.update(interval=interval, no_traffic_interval=interval, timeout="0.5s")


def add_http_check_retries(doc: Bootstrap, retries: int = 5) -> None:
    """HTTP-mode bootstrap: retry a Check refused or reset by a replica, elsewhere."""
    cluster(doc)["circuit_breakers"] = {"thresholds": [{"max_retries": 1024}]}
    ext_authz_filter(doc)["http_service"]["retry_policy"] = {
        "retry_on": "connect-failure,reset",
        "num_retries": retries,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.1s"},
    }


class VariantEnvoy(EnvoyProcess):
    """:class:`EnvoyProcess` whose rendered bootstrap is changed by ``transform`` first."""

    def __init__(
        self, workdir: Path | None = None, *, transform: Callable[[Bootstrap], None],
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(workdir, **kwargs)
        self._transform = transform

    def bootstrap_text(self) -> str:
        """The example (``template``) rendered, loaded, transformed and dumped again."""
        doc = yaml.safe_load(render(self.template.read_text(), self._values))
        self._transform(doc)
        return str(yaml.safe_dump(doc, sort_keys=False))

    def stat(self, name: str) -> int:
        """One counter or gauge from the admin ``/stats`` (0 when absent)."""
        body = self.admin_get(f"/stats?filter=^{name}$").decode()
        for line in body.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


def limit_requests_per_connection(doc: Bootstrap, requests: int) -> None:
    """Make Envoy open a new connection (a new TLS handshake) every ``requests`` Checks."""
    options = cluster(doc)["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    options.setdefault("common_http_protocol_options", {})["max_requests_per_connection"] = requests
