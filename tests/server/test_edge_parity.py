"""Differential test: the same requests through both edges reach identical decisions.

One extauthz process serves gRPC and Envoy's HTTP protocol; every request below goes
to both over real loopback sockets, and the two answers, each read back into one
neutral form, must be equal: allow or deny, status, headers for the upstream,
headers removed, headers for the client, body, and the metadata each protocol
carries (a deny over HTTP carries only ``decision`` and ``reason``).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.service_client import Client

LISTEN = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}
RESPONSE_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY"}
RULES = [
    {"name": "public", "path_prefix": "/public/", "anonymous": True},
    {"name": "admin", "path_prefix": "/admin/", "methods": ["POST", "PUT", "DELETE"],
     "require_scopes": ["admin"]},
    {"name": "ops", "path_prefix": "/ops/", "require_claims": {"roles": ["ops"]}},
]  # fmt: skip
_FRAMING = {"content-length", "connection"}


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = App(
        config_mod.load(
            write_config(
                listen=LISTEN,
                rules=RULES,
                upstream={"authorization": "inner", "strip_header_prefixes": ["x-auth-"]},
                response={"headers": RESPONSE_HEADERS},
            )
        )
    )
    instance.start()
    assert instance.store.wait_ready(5)
    yield instance
    instance.stop_now()


def over_grpc(app: App, method: str, path: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    joined: dict[str, str] = {}
    for name, value in headers:  # Envoy joins repeated headers with ","
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    result = Client(app.grpc_port).check(None, path=path, method=method, headers=joined)
    meta = result["metadata"]
    if result["decision"] == "allow":
        return {
            "decision": "allow",
            "status": 200,
            "upstream": result["upstream_headers"],
            "remove": sorted(result["headers_to_remove"]),
            "client": result["response_headers"],
            "metadata": meta,
        }
    # over HTTP a 5xx would count as a failure of the service: not_ready is a 403 there
    status = 403 if result["http_status"] >= 500 else result["http_status"]
    return {
        "decision": "deny",
        "status": status,
        "client": result["headers"],
        "body": result["body"],
        "metadata": {k: meta[k] for k in ("decision", "reason")},
    }


def over_http(app: App, method: str, path: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    assert app.http_authz is not None
    conn = http.client.HTTPConnection("127.0.0.1", app.http_authz.port, timeout=5)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        answer = [(k.lower(), v) for k, v in response.getheaders() if k.lower() not in _FRAMING]
    finally:
        conn.close()
    meta = {
        k.removeprefix("x-extauthz-").replace("-", "_"): v
        for k, v in answer
        if k.startswith("x-extauthz-")
    }
    rest = {k: v for k, v in answer if not k.startswith("x-extauthz-")}
    if response.status == 200:
        removed = rest.pop("x-envoy-auth-headers-to-remove", "")
        client = {k: rest.pop(k) for k in RESPONSE_HEADERS if k in rest}
        assert body == b""
        return {
            "decision": "allow",
            "status": 200,
            "upstream": rest,
            "remove": sorted(h for h in removed.split(",") if h),
            "client": client,
            "metadata": meta,
        }
    return {
        "decision": "deny",
        "status": response.status,
        "client": rest,
        "body": json.loads(body) if method != "HEAD" else "(head)",
        "metadata": meta,
    }


def cases(mint: Callable[..., str]) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(name, method, path, headers): tokens of every kind, rules, and path tricks."""
    good = mint(email="a@x.test", roles=["r1", "ops"], scope="read admin")
    plain = mint(scope="read")
    parts = good.split(".")
    parts[3] = ("A" if parts[3][0] != "A" else "B") + parts[3][1:]
    tampered = ".".join(parts)

    def auth(token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    return [
        ("no token", "GET", "/orders", []),
        ("valid", "GET", "/orders?id=1", auth(good)),
        ("valid, spoofed claim and prefixed headers", "GET", "/orders",
         [*auth(plain), ("x-auth-subject", "root"), ("x-auth-tenant", "evil")]),
        ("cookie", "GET", "/orders", [("cookie", f"a=b; access_token={plain}")]),
        ("expired", "GET", "/orders", auth(mint(ttl=-3600))),
        ("tampered", "GET", "/orders", auth(tampered)),
        ("not a token", "GET", "/orders", auth("a.b.c")),
        ("two authorization headers", "GET", "/orders", auth(plain) + auth(plain)),
        ("other scheme", "GET", "/orders", [("authorization", "Basic dXNlcjpwdw==")]),
        ("missing scope", "POST", "/admin/users", auth(plain)),
        ("scope", "POST", "/admin/users", auth(good)),
        ("GET is not in the admin rule", "GET", "/admin/users", auth(plain)),
        ("missing role", "GET", "/ops/x", auth(plain)),
        ("role", "GET", "/ops/x", auth(good)),
        ("anonymous, no token", "GET", "/public/x", [("x-auth-subject", "spoof")]),
        ("anonymous, valid token", "GET", "/public/x", auth(plain)),
        ("anonymous, invalid token", "GET", "/public/x", auth(tampered)),
        ("dot segments", "POST", "/public/../admin/x", []),
        ("double slash", "POST", "//admin/x", []),
        ("encoded letter", "POST", "/%61dmin/x", []),
        ("upper case", "POST", "/ADMIN/x", auth(plain)),
        ("encoded slash", "GET", "/public%2f..%2fadmin/x", []),
        ("path parameter", "POST", "/public/..;/admin/x", []),
        ("broken escape", "GET", "/orders%zz", []),
        ("HEAD deny", "HEAD", "/orders", []),
        ("HEAD allow", "HEAD", "/orders", auth(plain)),
        ("too many headers", "GET", "/orders", [(f"x-h{i}", "v") for i in range(300)]),
    ]  # fmt: skip


def test_both_edges_reach_identical_decisions(app: App, mint_token: Callable[..., str]) -> None:
    seen = set()
    for name, method, path, headers in cases(mint_token):
        grpc_answer = over_grpc(app, method, path, headers)
        http_answer = over_http(app, method, path, headers)
        if method == "HEAD" and grpc_answer["decision"] == "deny":
            grpc_answer["body"] = "(head)"
        assert http_answer == grpc_answer, name
        seen.add((grpc_answer["decision"], grpc_answer["metadata"]["reason"]))
    # the cases cover allows, anonymous allows and the main deny classes
    assert {
        ("allow", "ok"), ("allow", "anonymous"), ("deny", "missing_token"),
        ("deny", "expired"), ("deny", "malformed"), ("deny", "insufficient_scope"),
        ("deny", "bad_path"), ("deny", "too_large"),
    } <= seen  # fmt: skip


def test_not_ready_is_the_same_deny_on_both_edges(
    write_config: Callable[..., Path], key_dirs: Path, mint_token: Callable[..., str]
) -> None:
    for item in (key_dirs / "keys" / "verify").iterdir():
        item.unlink()
    waiting = App(config_mod.load(write_config(listen=LISTEN)))
    waiting.start()
    try:
        request = ("GET", "/orders", [("authorization", f"Bearer {mint_token()}")])
        grpc_answer = over_grpc(waiting, *request)
        assert grpc_answer["metadata"]["reason"] == "not_ready"
        assert over_http(waiting, *request) == grpc_answer
    finally:
        waiting.stop_now()
