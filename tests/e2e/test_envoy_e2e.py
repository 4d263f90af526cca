"""End to end: client -> real Envoy (examples/envoy/envoy.yaml) -> extauthz -> upstream."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import EchoUpstream, EnvoyProcess, http_get

from extauthz import config as config_mod
from extauthz.server.app import App

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


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as server:
        yield server


def start_app(write_config: Callable[..., Path], **overrides: Any) -> App:
    overrides.setdefault("rules", RULES)
    overrides.setdefault(
        "upstream", {"authorization": "keep", "strip_header_prefixes": ["x-auth-"]}
    )
    app = App(config_mod.load(write_config(**overrides)))
    app.start()
    assert app.store.wait_ready(5)
    return app


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = start_app(write_config)
    yield instance
    instance.stop_now()


@pytest.fixture
def envoy(app: App, upstream: EchoUpstream, tmp_path: Path) -> Iterator[EnvoyProcess]:
    upstream.clear()
    with EnvoyProcess(
        tmp_path / "envoy", extauthz_port=app.grpc_port, upstream_port=upstream.port
    ) as proxy:
        yield proxy


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_valid_nested_jwe_reaches_upstream_with_claim_headers(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    status, headers, _ = http_get(
        envoy.url + "/orders?id=1", bearer(mint_token(email="a@x.test", roles=["r1", "r2"]))
    )
    assert status == 200, envoy.explain()
    (seen,) = upstream.requests
    assert seen.header("x-auth-subject") == ["alice"]
    assert seen.header("x-auth-email") == ["a@x.test"]
    assert seen.header("x-auth-roles") == ["r1,r2"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["strict-transport-security"].startswith("max-age=31536000")


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
    from envoy_harness import http_request

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
    assert response_headers["x-content-type-options"] == "nosniff"
    assert json.loads(body)["error"] == error
    assert upstream.requests == []


def test_anonymous_route_and_context_extensions_rule(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    assert http_get(envoy.url + "/public/info", {"x-auth-subject": "spoof"})[0] == 200
    assert upstream.requests[-1].header("x-auth-subject") == []
    # /reports/ carries context_extensions {rule: reports}: needs scope "reports"
    status, headers, _ = http_get(envoy.url + "/reports/q1", bearer(mint_token(scope="read")))
    assert status == 403
    assert 'scope="reports"' in headers["www-authenticate"]
    assert http_get(envoy.url + "/reports/q1", bearer(mint_token(scope="reports")))[0] == 200


def test_access_log_carries_decision_metadata(
    envoy: EnvoyProcess, mint_token: Callable[..., str]
) -> None:
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
    assert (deny["decision"], deny["reason"]) == ("deny", "missing_token")


def test_encode_raw_headers_mode(
    app: App, upstream: EchoUpstream, tmp_path: Path, mint_token: Callable[..., str]
) -> None:
    upstream.clear()
    with EnvoyProcess(
        tmp_path / "raw",
        extauthz_port=app.grpc_port,
        upstream_port=upstream.port,
        ENCODE_RAW_HEADERS=True,
    ) as proxy:
        assert http_get(proxy.url + "/orders", bearer(mint_token()))[0] == 200, proxy.explain()
        assert upstream.requests[-1].header("x-auth-subject") == ["alice"]
        assert http_get(proxy.url + "/orders")[0] == 401
        from envoy_harness import http_request

        two = [("authorization", "Bearer " + mint_token())] * 2
        assert http_request("GET", proxy.url + "/orders", two)[0] == 401


def test_cookie_token_and_inner_authorization(
    write_config: Callable[..., Path],
    upstream: EchoUpstream,
    tmp_path: Path,
    mint_token: Callable[..., str],
) -> None:
    """upstream.authorization: inner replaces the JWE with the signed inner JWT."""
    instance = start_app(write_config, upstream={"authorization": "inner"})
    try:
        upstream.clear()
        with EnvoyProcess(
            tmp_path / "inner", extauthz_port=instance.grpc_port, upstream_port=upstream.port
        ) as proxy:
            token = mint_token()
            assert http_get(proxy.url + "/x", {"cookie": f"a=b; access_token={token}"})[0] == 200
            (auth,) = upstream.requests[-1].header("authorization")
            assert auth.startswith("Bearer ")
            assert auth.count(".") == 2
    finally:
        instance.stop_now()


def test_extauthz_down_gives_status_on_error(
    write_config: Callable[..., Path],
    upstream: EchoUpstream,
    tmp_path: Path,
    mint_token: Callable[..., str],
) -> None:
    instance = start_app(write_config)
    port = instance.grpc_port
    instance.stop_now()
    upstream.clear()
    with EnvoyProcess(tmp_path / "down", extauthz_port=port, upstream_port=upstream.port) as proxy:
        assert http_get(proxy.url + "/orders", bearer(mint_token()))[0] == 503
    assert upstream.requests == []


@pytest.mark.parametrize("path", ["/public/../admin/x", "//admin/x", "/%61dmin/x"])
def test_path_tricks_do_not_escape_a_protected_rule(
    envoy: EnvoyProcess, upstream: EchoUpstream, path: str
) -> None:
    """An anonymous /public/ rule never covers a path that resolves under /admin/."""
    from envoy_harness import http_request

    status, _, _ = http_request("POST", envoy.url + path, [])
    assert status == 401, envoy.explain()
    assert upstream.requests == []
