"""End to end: rules agree with what the upstream serves, with Envoy's own path and
method handling in the loop (client -> real Envoy -> extauthz -> upstream).

Envoy normalizes the path before ext_authz (``normalize_path``, ``merge_slashes``,
``path_with_escaped_slashes_action``), but it keeps ``;`` path parameters, keeps letter
case, and forwards an HTTP/2 method exactly as the client wrote it. These tests send
those forms through the real Envoy, over both of its authorization protocols, and
assert what reaches the upstream.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.e2e.conftest import bearer, proxy_for
from tests.envoy_harness import (
    EchoUpstream,
    EnvoyProcess,
    http_request,
)

pytestmark = pytest.mark.e2e

RULES = [
    {"name": "public", "path_prefix": "/public/", "anonymous": True},
    {"name": "admin", "path_prefix": "/admin/", "methods": ["POST", "PUT", "DELETE"],
     "require_scopes": ["admin"]},
    {"name": "reader", "path_prefix": "/docs/", "methods": ["GET"], "require_scopes": ["read"]},
]  # fmt: skip
LISTEN = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}


def start_app(write_config: Callable[..., Path], **overrides: Any) -> App:
    overrides.setdefault("rules", RULES)
    overrides["listen"] = LISTEN
    app = App(config_mod.load(write_config(**overrides)))
    app.start()
    assert app.store.wait_ready(5)
    return app


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = start_app(write_config)
    yield instance
    instance.stop_now()


def send(envoy: EnvoyProcess, method: str, path: str, headers: dict[str, str] | None = None
         ) -> int:  # fmt: skip
    """One HTTP/1.1 request with the path exactly as given; the status."""
    status, _, _ = http_request(method, envoy.url + path, headers)
    return status


# -- a minimal HTTP/2 (h2c, prior knowledge) client ------------------------------------
# Envoy accepts HTTP/2 without TLS on its listener (codec AUTO). No HTTP/2 library is
# needed to *send* a request: HPACK literals without Huffman coding and three frames.


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    return (
        b"\x00" + _hpack_int(len(raw_name), 7) + raw_name
        + _hpack_int(len(raw_value), 7) + raw_value
    )  # fmt: skip


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream
    ) + payload  # fmt: skip


def h2_request(envoy: EnvoyProcess, method: str, path: str, headers: dict[str, str]) -> None:
    """Send one HTTP/2 request with ``:method`` exactly as given, and wait for the end of
    the response stream (the status is read from Envoy's access log)."""
    block = b"".join(
        _hpack_literal(name, value)
        for name, value in [(":method", method), (":scheme", "http"), (":path", path),
                            (":authority", "localhost"), *headers.items()]
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=5) as conn:
        conn.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _frame(0x4, 0, 0)  # SETTINGS
            + _frame(0x1, 0x4 | 0x1, 1, block)  # HEADERS, END_HEADERS | END_STREAM
        )
        buffer = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                buffer = buffer[9 + length :]
                if kind == 0x4 and not flags & 0x1:
                    conn.sendall(_frame(0x4, 0x1, 0))  # SETTINGS ACK
                if kind == 0x7 or (kind == 0x3 and stream == 1):  # GOAWAY / RST_STREAM
                    return
                if stream == 1 and kind in (0x0, 0x1) and flags & 0x1:  # END_STREAM
                    return


def last_access(envoy: EnvoyProcess, count: int) -> dict[str, Any]:
    """The ``count``-th access log line (waits for Envoy's asynchronous writer)."""
    lines = envoy.access_log_lines(count)
    assert len(lines) >= count, envoy.explain()
    return lines[count - 1]


# -- paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/public/%2e%2e;/admin/x", "/admin;x=1/users", "/public/%2E%2E%3B/admin/x",
     "/public/%252e%252e/admin/x", "/public/%2e%2e;x=1/admin/x"],
)  # fmt: skip
def test_a_path_whose_meaning_depends_on_the_upstream_is_400_and_never_forwarded(
    envoy: EnvoyProcess, upstream: EchoUpstream, path: str
) -> None:
    """``;`` parameters (a servlet container serves ``/public/..;/admin/x`` as
    ``/admin/x``) and double encoding: Envoy forwards them; extauthz answers 400."""
    for method in ("GET", "POST"):
        assert send(envoy, method, path) == 400, envoy.explain()
    assert upstream.requests == []


@pytest.mark.parametrize("path", ["/ADMIN/x", "/Admin/users", "/%41DMIN/x"])
def test_an_upper_case_path_needs_the_rule_of_its_lower_case_reading(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str], path: str
) -> None:
    """Envoy keeps letter case; a case-insensitive upstream serves ``/ADMIN/x`` as
    ``/admin/x``: without the ``admin`` scope it is 403, with it the request passes."""
    assert send(envoy, "POST", path, bearer(mint_token(scope="read"))) == 403, envoy.explain()
    assert send(envoy, "POST", path) == 401
    assert upstream.requests == []
    assert send(envoy, "POST", path, bearer(mint_token(scope="admin"))) == 200
    (seen,) = upstream.requests
    assert seen.path == path.replace("%41", "A")  # Envoy decodes unreserved escapes


@pytest.mark.parametrize(
    "path", ["/public/../admin/x", "/public/%2e%2e/admin/x", "//admin/x", "/public/..;/admin/x"]
)
def test_envoy_normalized_forms_reach_the_protected_rule(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str], path: str
) -> None:
    """Forms Envoy itself normalizes to ``/admin/x`` get the admin rule (Envoy resolves
    a raw ``..;`` as ``..``, as a servlet container would)."""
    assert send(envoy, "DELETE", path, bearer(mint_token(scope="read"))) == 403, envoy.explain()
    assert upstream.requests == []
    assert send(envoy, "DELETE", path, bearer(mint_token(scope="admin"))) == 200
    (seen,) = upstream.requests
    assert seen.path == "/admin/x"


def test_a_plain_public_path_stays_anonymous(envoy: EnvoyProcess, upstream: EchoUpstream) -> None:
    """The control: canonicalization does not break an ordinary anonymous route."""
    assert send(envoy, "GET", "/public/a/b?x=1") == 200, envoy.explain()
    (seen,) = upstream.requests
    assert seen.path == "/public/a/b?x=1"


# -- methods ---------------------------------------------------------------------------


def test_head_is_covered_by_a_get_rule(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    """``HEAD /docs/x`` is answered by the upstream's GET handler: it needs ``read``."""
    assert send(envoy, "HEAD", "/docs/x", bearer(mint_token(scope="other"))) == 403
    assert upstream.requests == []
    assert send(envoy, "HEAD", "/docs/x", bearer(mint_token(scope="read"))) == 200
    assert [r.method for r in upstream.requests] == ["HEAD"]


def test_a_lower_case_method_over_http2_gets_the_upper_case_rule(
    envoy: EnvoyProcess, upstream: EchoUpstream, mint_token: Callable[..., str]
) -> None:
    """HTTP/2 lets a client send ``:method: delete``; Envoy forwards it as written and
    frameworks upper-case it. It must meet the ``DELETE`` rule: never reach the upstream
    without the ``admin`` scope."""
    h2_request(envoy, "delete", "/admin/x", bearer(mint_token(scope="read")))
    line = last_access(envoy, 1)
    assert (line["method"], line["status"], line["reason"]) == (
        "delete", 403, "insufficient_scope",
    ), line  # fmt: skip
    h2_request(envoy, "delete", "/admin/x", {})
    line = last_access(envoy, 2)
    assert (line["status"], line["reason"]) == (401, "missing_token"), line
    assert upstream.requests == []
    h2_request(envoy, "delete", "/admin/x", bearer(mint_token(scope="admin")))
    line = last_access(envoy, 3)
    # allowed and forwarded as written: the test upstream (Python's http.server) has no
    # handler for a lower-case method and answers 501 itself
    assert (line["decision"], line["status"]) == ("allow", 501), line


# -- case-sensitive upstreams ----------------------------------------------------------


def test_case_sensitive_matching_lets_an_upper_case_path_through(
    write_config: Callable[..., Path], upstream: EchoUpstream, tmp_path: Path,
    mint_token: Callable[..., str],
) -> None:  # fmt: skip
    """``path_matching: {case: sensitive}``: for upstreams that are all case-sensitive,
    ``/ADMIN/x`` is another path (the default rule: any valid token)."""
    app = start_app(write_config, path_matching={"case": "sensitive"})
    upstream.clear()
    try:
        with proxy_for(app, upstream, tmp_path / "envoy", "grpc") as envoy:
            assert send(envoy, "POST", "/ADMIN/x", bearer(mint_token(scope="read"))) == 200
            assert send(envoy, "POST", "/admin/x", bearer(mint_token(scope="read"))) == 403
    finally:
        app.stop_now()
    assert [r.path for r in upstream.requests] == ["/ADMIN/x"]
