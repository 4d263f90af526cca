"""End to end: client -> real Envoy -> extauthz -> upstream, in both transports.

Every behaviour that both of Envoy's authorization protocols can carry is proven over
each: gRPC with ``examples/envoy/envoy.yaml`` and HTTP (``http_service``) with
``examples/envoy/envoy-http.yaml``, against one extauthz process that serves both.
Behaviours only one protocol has (``context_extensions``, ``encode_raw_headers``,
a path prefix) are tested in that one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.e2e.conftest import TRANSPORTS, bearer, proxy_for
from tests.envoy_harness import (
    EchoUpstream,
    EnvoyProcess,
    RecordedRequest,
    http_get,
    http_request,
)

pytestmark = pytest.mark.e2e

RULES = [
    {"name": "public", "path_prefix": "/public/", "anonymous": True},
    {
        "name": "admin",
        "path_prefix": "/admin/",
        "methods": ["POST", "PUT", "DELETE"],
        "require_scopes": ["admin"],
    },
    # never matches by path: only Envoy's context_extensions {rule: reports} selects it
    {"name": "reports", "path_exact": "/-", "require_scopes": ["reports"]},
]
LISTEN = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}


def start_app(write_config: Callable[..., Path], ready: bool = True, **overrides: Any) -> App:
    overrides.setdefault("rules", RULES)
    overrides.setdefault(
        "upstream", {"authorization": "keep", "strip_header_prefixes": ["x-auth-"]}
    )
    overrides.setdefault("response", {"headers": {"x-content-type-options": "nosniff"}})
    overrides["listen"] = {**LISTEN, **overrides.get("listen", {})}
    app = App(config_mod.load(write_config(**overrides)))
    app.start()
    if ready:
        assert app.store.wait_ready(5)
    return app


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = start_app(write_config)
    yield instance
    instance.stop_now()


def no_metadata_leaks(client: Message, seen: RecordedRequest | None = None) -> None:
    """``x-extauthz-*`` reach neither the client nor the upstream."""
    assert [k for k in client if k.lower().startswith("x-extauthz-")] == []
    if seen is not None:
        assert [k for k, _ in seen.headers if k.startswith("x-extauthz-")] == []
        assert seen.header("x-envoy-auth-headers-to-remove") == []


def test_valid_nested_jwe_reaches_upstream_with_claim_headers(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    status, headers, _ = http_get(
        envoy.url + "/orders?id=1", bearer(mint_token(email="a@x.test", roles=["r1", "r2"]))
    )
    assert status == 200, envoy.explain()
    (seen,) = upstream.requests
    assert seen.path == "/orders?id=1"
    assert seen.header("x-auth-subject") == ["alice"]
    assert seen.header("x-auth-email") == ["a@x.test"]
    assert seen.header("x-auth-roles") == ["r1,r2"]
    assert headers.get_all("x-content-type-options") == ["nosniff"]
    no_metadata_leaks(headers, seen)


def test_spoofed_claim_headers_are_replaced_or_removed(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    spoof = {
        **bearer(mint_token()),
        "x-auth-subject": "root",
        "x-auth-roles": "admin",
        "x-auth-scope": "admin",
        "x-auth-other": "evil",
    }
    status, _, _ = http_get(envoy.url + "/orders", spoof)
    assert status == 200, envoy.explain()
    (seen,) = upstream.requests
    assert seen.header("x-auth-subject") == ["alice"]
    assert seen.header("x-auth-roles") == []  # the token has no roles: removed
    assert seen.header("x-auth-scope") == []
    assert seen.header("x-auth-other") == []  # strip_header_prefixes


@pytest.mark.parametrize(
    ("case", "path", "method", "status", "challenge", "error"),
    [
        ("missing", "/orders", "GET", 401, 'Bearer realm="extauthz"', "missing_token"),
        ("tampered", "/orders", "GET", 401, 'error_description="decrypt_failed"', "invalid_token"),
        ("expired", "/orders", "GET", 401, 'error_description="expired"', "invalid_token"),
        (
            "scope",
            "/admin/users",
            "POST",
            403,
            'error="insufficient_scope", scope="admin"',
            "insufficient_scope",
        ),
        ("two-headers", "/orders", "GET", 401, 'error_description="malformed"', "invalid_token"),
    ],
)
def test_denials_never_reach_upstream(
    envoy: EnvoyProcess,
    upstream: EchoUpstream,
    mint_token: Callable[..., str],
    case: str,
    path: str,
    method: str,
    status: int,
    challenge: str,
    error: str,
) -> None:
    token = mint_token(scope="read")
    headers: list[tuple[str, str]] = []
    if case == "tampered":
        parts = token.split(".")
        parts[3] = ("A" if parts[3][0] != "A" else "B") + parts[3][1:]
        headers = [("authorization", "Bearer " + ".".join(parts))]
    elif case == "expired":
        headers = [("authorization", "Bearer " + mint_token(ttl=-3600))]
    elif case == "scope":
        headers = [("authorization", "Bearer " + token)]
    elif case == "two-headers":
        headers = [("authorization", "Bearer " + token), ("authorization", "Bearer " + token)]
    got, response_headers, body = http_request(method, envoy.url + path, headers)
    assert got == status, envoy.explain()
    assert challenge in response_headers["www-authenticate"]
    assert response_headers["content-type"] == "application/json"
    assert response_headers.get_all("x-content-type-options") == ["nosniff"]
    assert json.loads(body)["error"] == error
    no_metadata_leaks(response_headers)
    assert upstream.requests == []


def test_anonymous_route(envoy: EnvoyProcess, upstream: EchoUpstream) -> None:
    assert http_get(envoy.url + "/public/info", {"x-auth-subject": "spoof"})[0] == 200
    assert upstream.requests[-1].header("x-auth-subject") == []


def test_head_requests_are_decided_and_keep_working(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    """A deny to HEAD has no body; the connection to extauthz stays usable after it."""
    for _ in range(3):
        status, _, body = http_request("HEAD", envoy.url + "/orders")
        assert (status, body) == (401, b""), envoy.explain()
        status, _, body = http_get(envoy.url + "/orders")
        assert status == 401
        assert json.loads(body)["reason"] == "missing_token"
    status, _, _ = http_request("HEAD", envoy.url + "/orders", bearer(mint_token()))
    assert status == 200
    assert upstream.requests[-1].method == "HEAD"
    assert upstream.requests[-1].header("x-auth-subject") == ["alice"]


def test_context_extensions_select_a_rule_over_grpc(
    app: App, upstream: EchoUpstream, tmp_path: Path, mint_token: Callable[..., str]
) -> None:
    """/reports/ carries context_extensions {rule: reports}: needs scope "reports"."""
    with proxy_for(app, upstream, tmp_path / "envoy", "grpc") as proxy:
        status, headers, _ = http_get(proxy.url + "/reports/q1", bearer(mint_token(scope="read")))
        assert status == 403
        assert 'scope="reports"' in headers["www-authenticate"]
        assert http_get(proxy.url + "/reports/q1", bearer(mint_token(scope="reports")))[0] == 200


def test_access_log_carries_decision_metadata(
    envoy: EnvoyProcess, mint_token: Callable[..., str], transport: str
) -> None:
    """Allow and deny alike (over HTTP, from the x-extauthz-* answer headers)."""
    http_get(envoy.url + "/orders?secret=1", bearer(mint_token()))
    http_get(envoy.url + "/orders")
    lines = envoy.access_log_lines(2)
    allow, deny = lines[-2], lines[-1]
    assert (
        allow["decision"],
        allow["reason"],
        allow["sub"],
        allow["kid"],
        allow["enc_kid"],
        allow["rule"],
    ) == ("allow", "ok", "alice", "sig-1", "enc-1", "default")
    assert allow["path"] == "/orders"
    assert (deny["decision"], deny["reason"], deny["status"]) == ("deny", "missing_token", 401)
    # a deny names no subject or key: over HTTP its headers may reach a client
    assert (deny["sub"], deny["kid"]) == (("", "") if transport == "grpc" else (None, None))


def test_encode_raw_headers_mode(
    app: App, upstream: EchoUpstream, tmp_path: Path, mint_token: Callable[..., str]
) -> None:
    upstream.clear()
    with proxy_for(app, upstream, tmp_path / "raw", "grpc", ENCODE_RAW_HEADERS=True) as proxy:
        assert http_get(proxy.url + "/orders", bearer(mint_token()))[0] == 200, proxy.explain()
        assert upstream.requests[-1].header("x-auth-subject") == ["alice"]
        assert http_get(proxy.url + "/orders")[0] == 401
        two = [("authorization", "Bearer " + mint_token())] * 2
        assert http_request("GET", proxy.url + "/orders", two)[0] == 401


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cookie_token_and_inner_authorization(
    write_config: Callable[..., Path],
    upstream: EchoUpstream,
    tmp_path: Path,
    mint_token: Callable[..., str],
    transport: str,
) -> None:
    """upstream.authorization: inner replaces the JWE with the signed inner JWT."""
    instance = start_app(write_config, upstream={"authorization": "inner"})
    try:
        upstream.clear()
        with proxy_for(instance, upstream, tmp_path / "inner", transport) as proxy:
            token = mint_token()
            cookie = {"cookie": f"a=b; access_token={token}"}
            assert http_get(proxy.url + "/x", cookie)[0] == 200, proxy.explain()
            (auth,) = upstream.requests[-1].header("authorization")
            assert auth.startswith("Bearer ")
            assert auth.count(".") == 2
    finally:
        instance.stop_now()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_extauthz_down_gives_status_on_error(
    write_config: Callable[..., Path],
    upstream: EchoUpstream,
    tmp_path: Path,
    mint_token: Callable[..., str],
    transport: str,
) -> None:
    instance = start_app(write_config)
    instance.stop_now()
    upstream.clear()
    with proxy_for(instance, upstream, tmp_path / "down", transport) as proxy:
        assert http_get(proxy.url + "/orders", bearer(mint_token()))[0] == 503
    assert upstream.requests == []


class _FailOpenEnvoy(EnvoyProcess):
    """The shipped bootstrap with ``failure_mode_allow: true``."""

    def bootstrap_text(self) -> str:
        text = super().bootstrap_text()
        assert "failure_mode_allow: false" in text
        return text.replace("failure_mode_allow: false", "failure_mode_allow: true")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_not_ready_is_a_deny_even_with_failure_mode_allow(
    write_config: Callable[..., Path],
    key_dirs: Path,
    upstream: EchoUpstream,
    tmp_path: Path,
    mint_token: Callable[..., str],
    transport: str,
) -> None:
    """A service that cannot decide yet denies; Envoy never lets the request pass."""
    for item in (key_dirs / "keys" / "verify").iterdir():
        item.unlink()
    waiting = start_app(write_config, ready=False)
    try:
        upstream.clear()
        base = proxy_for(waiting, upstream, tmp_path / "waiting", transport)
        proxy = _FailOpenEnvoy(
            tmp_path / "waiting", extauthz_port=0, upstream_port=0, template=base.template
        )
        proxy._values = base._values  # the same rendering values, fail-open bootstrap
        with proxy:
            status, headers, body = http_get(proxy.url + "/orders", bearer(mint_token()))
            assert status == (503 if transport == "grpc" else 403), proxy.explain()
            assert json.loads(body)["reason"] == "not_ready"
            assert headers["retry-after"] == "1"
        assert upstream.requests == []
    finally:
        waiting.stop_now()


@pytest.mark.parametrize("path", ["/public/../admin/x", "//admin/x", "/%61dmin/x"])
def test_path_tricks_do_not_escape_a_protected_rule(
    envoy: EnvoyProcess, upstream: EchoUpstream, path: str
) -> None:
    """An anonymous /public/ rule never covers a path that resolves under /admin/."""
    status, _, _ = http_request("POST", envoy.url + path, [])
    assert status == 401, envoy.explain()
    assert upstream.requests == []


def test_http_path_prefix_set_in_envoy_is_removed_by_extauthz(
    write_config: Callable[..., Path],
    upstream: EchoUpstream,
    tmp_path: Path,
    mint_token: Callable[..., str],
) -> None:
    instance = start_app(write_config, listen={"http_authz_path_prefix": "/authz"})
    try:
        upstream.clear()
        with proxy_for(
            instance, upstream, tmp_path / "prefix", "http", EXTAUTHZ_PATH_PREFIX="/authz"
        ) as proxy:
            assert http_get(proxy.url + "/public/x")[0] == 200, proxy.explain()
            assert upstream.requests[-1].path == "/public/x"
            status, _, body = http_request("POST", proxy.url + "/admin/x", bearer(mint_token()))
            assert (status, json.loads(body)["reason"]) == (403, "insufficient_scope")
    finally:
        instance.stop_now()


def test_non_ascii_claim_values_reach_the_upstream_alike(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    """UTF-8 claim values arrive as the same bytes over either protocol."""
    status, _, _ = http_get(envoy.url + "/orders", bearer(mint_token(email="josé@例え.test")))
    assert status == 200, envoy.explain()
    (value,) = upstream.requests[-1].header("x-auth-email")
    assert value.encode("latin-1").decode("utf-8") == "josé@例え.test"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_authorization_remove_keeps_the_token_from_the_upstream(
    write_config: Callable[..., Path],
    upstream: EchoUpstream,
    tmp_path: Path,
    mint_token: Callable[..., str],
    transport: str,
) -> None:
    instance = start_app(
        write_config, upstream={"authorization": "remove", "strip_header_prefixes": ["x-auth-"]}
    )
    try:
        upstream.clear()
        with proxy_for(instance, upstream, tmp_path / "remove", transport) as proxy:
            assert http_get(proxy.url + "/x", bearer(mint_token()))[0] == 200, proxy.explain()
            seen = upstream.requests[-1]
            assert seen.header("authorization") == []
            assert seen.header("x-auth-subject") == ["alice"]
    finally:
        instance.stop_now()
