"""Header spoofing at the edges of ext_authz, through a real Envoy (docs/security.md).

extauthz guarantees that on a request it *decides*, a client can never smuggle a claim
header upstream: every configured claim header is overwritten or removed. It cannot
help on requests it never sees:

- a route with ext_authz disabled (``/healthz-upstream`` in examples/envoy/envoy.yaml)
  forwards whatever ``x-auth-*`` headers the client sent;
- ``failure_mode_allow: true`` forwards every request, client headers included, when
  extauthz is down or slow: a complete bypass, which is why the example keeps it false.

These tests show both with the example bootstrap. The first is pinned as an xfail with
the proposed change to the example (strip the claim headers on routes without
ext_authz), and that change is shown to work on a copy of the bootstrap; the second
proves the bypass the example avoids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.envoy_harness import (
    HTTP_BOOTSTRAP_TEMPLATE,
    EchoUpstream,
    EnvoyProcess,
    free_port,
    http_get,
)
from tests.hardening.envoy_variants import Bootstrap, VariantEnvoy, ext_authz_filter

pytestmark = [pytest.mark.e2e]

SPOOFED = {"x-auth-subject": "admin", "x-auth-roles": "admin", "x-auth-scope": "admin"}
#: the claims_to_headers names of examples/config.yaml
CLAIM_HEADERS = {"x-auth-subject", "x-auth-email", "x-auth-scope", "x-auth-roles"}


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = App(config_mod.load(write_config()))
    instance.start()
    yield instance
    instance.stop_now()


def upstream_saw(body: bytes) -> dict[str, str]:
    return dict(json.loads(body)["headers"])


def test_a_decided_route_never_passes_spoofed_claim_headers(tmp_path: Path, app: App) -> None:
    """Control: on a route with ext_authz, an anonymous-rule allow (``/public/``) removes
    every configured claim header the client sent."""
    with (
        EchoUpstream() as upstream,
        EnvoyProcess(tmp_path, extauthz_port=app.grpc_port, upstream_port=upstream.port) as envoy,
    ):
        status, _, body = http_get(envoy.url + "/public/x", SPOOFED)
    assert status == 200
    assert not set(SPOOFED) & set(upstream_saw(body))


def test_a_route_without_ext_authz_does_not_pass_spoofed_claim_headers(
    tmp_path: Path, app: App
) -> None:
    with (
        EchoUpstream() as upstream,
        EnvoyProcess(tmp_path, extauthz_port=app.grpc_port, upstream_port=upstream.port) as envoy,
    ):
        status, _, body = http_get(envoy.url + "/healthz-upstream", SPOOFED)
    assert status == 200
    assert not set(SPOOFED) & set(upstream_saw(body)), upstream_saw(body)


def test_the_proposed_route_level_removal_strips_spoofed_headers(
    tmp_path: Path, app: App, mint_token: Callable[..., str]
) -> None:
    """The change proposed for the example (``request_headers_to_remove`` on the route
    without ext_authz) works: the spoofed headers no longer reach the upstream there,
    and the protected routes still get the claim headers extauthz sets."""

    def strip_on_public_route(doc: Bootstrap) -> None:
        listener = doc["static_resources"]["listeners"][0]
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            if route["match"].get("path") == "/healthz-upstream":
                route["request_headers_to_remove"] = sorted(CLAIM_HEADERS)

    with EchoUpstream() as upstream, VariantEnvoy(
        tmp_path, transform=strip_on_public_route, extauthz_port=app.grpc_port,
        upstream_port=upstream.port,
    ) as envoy:  # fmt: skip
        status, _, body = http_get(envoy.url + "/healthz-upstream", SPOOFED)
        assert status == 200
        assert not set(SPOOFED) & set(upstream_saw(body))
        token = mint_token()
        status, _, body = http_get(
            envoy.url + "/orders/1", {**SPOOFED, "authorization": f"Bearer {token}"}
        )
    assert status == 200
    seen = upstream_saw(body)
    assert seen["x-auth-subject"] == "alice"
    assert "x-auth-roles" not in seen


def test_failure_mode_allow_true_is_a_bypass_with_spoofed_headers(tmp_path: Path) -> None:
    """With ``failure_mode_allow: true`` and extauthz unreachable, a request with no
    token and a spoofed identity reaches the upstream: never enable it (the example sets
    it false and ``status_on_error: 503``; tests/e2e covers that side)."""

    def fail_open(doc: Bootstrap) -> None:
        ext_authz_filter(doc)["failure_mode_allow"] = True

    with EchoUpstream() as upstream, VariantEnvoy(
        tmp_path, transform=fail_open, extauthz_port=free_port(), upstream_port=upstream.port,
        EXTAUTHZ_TIMEOUT="0.25s",
    ) as envoy:  # fmt: skip
        status, _, body = http_get(envoy.url + "/admin/users", SPOOFED)
    assert status == 200
    assert upstream_saw(body)["x-auth-subject"] == "admin"


@pytest.fixture
def http_app(write_config: Callable[..., Path]) -> Iterator[App]:
    listen = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}
    instance = App(config_mod.load(write_config(listen=listen)))
    instance.start()
    assert instance.store.wait_ready(5)
    yield instance
    instance.stop_now()


@pytest.mark.parametrize("listed", [True, False])
def test_over_http_a_stripped_prefix_must_be_in_allowed_headers(
    tmp_path: Path, http_app: App, mint_token: Callable[..., str], listed: bool
) -> None:
    """Over Envoy's HTTP protocol extauthz sees only the headers ``allowed_headers``
    lists. The shipped bootstrap lists the ``x-auth-`` prefix, so a client's
    ``x-auth-tenant`` is seen and removed; a bootstrap without that matcher lets it
    reach the upstream on an allowed request (claim headers are removed either way:
    extauthz names every one it does not fill)."""

    def drop_prefix_matcher(doc: Bootstrap) -> None:
        patterns = ext_authz_filter(doc)["allowed_headers"]["patterns"]
        patterns[:] = [p for p in patterns if "prefix" not in p]

    assert http_app.http_authz is not None
    assert http_app.http is not None
    with EchoUpstream() as upstream, VariantEnvoy(
        tmp_path, transform=(lambda _doc: None) if listed else drop_prefix_matcher,
        template=HTTP_BOOTSTRAP_TEMPLATE, extauthz_port=http_app.http_authz.port,
        upstream_port=upstream.port, EXTAUTHZ_HEALTH_PORT=http_app.http.port,
    ) as envoy:  # fmt: skip
        headers = {"authorization": f"Bearer {mint_token()}", "x-auth-tenant": "evil", **SPOOFED}
        status, _, body = http_get(envoy.url + "/orders", headers)
    assert status == 200, envoy.explain()
    seen = upstream_saw(body)
    assert seen["x-auth-subject"] == "alice"
    assert "x-auth-roles" not in seen
    assert "x-auth-scope" not in seen
    assert ("x-auth-tenant" in seen) is not listed
