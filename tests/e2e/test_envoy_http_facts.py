"""What Envoy 1.40 really does with the HTTP authorization protocol (``http_service``).

The HTTP listener of extauthz is built on these facts, so each is checked against the
real binary with the shipped bootstrap (``examples/envoy/envoy-http.yaml``) in front
of a scripted authorization server that records what it receives and answers what a
test tells it to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.envoy_harness import (
    HTTP_BOOTSTRAP_TEMPLATE,
    EchoUpstream,
    EnvoyProcess,
    free_port,
    http_get,
    http_request,
)

pytestmark = pytest.mark.e2e


@dataclass
class Seen:
    """One authorization request as the scripted server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """What the scripted server answers, and what it saw."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_on_head: bool = False
    seen: list[Seen] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)


class ScriptedAuthz:
    """A keep-alive HTTP/1.1 authorization server that answers ``script``."""

    def __init__(self) -> None:
        self.script = Script()
        script = self.script

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                script.seen.append(Seen(self.command, self.path, headers, body))
                script.connections.add(self.client_address[1])  # Envoy's port
                self.send_response(script.status)
                for name, value in script.headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(script.body)))
                self.end_headers()
                if self.command != "HEAD" or script.body_on_head:
                    self.wfile.write(script.body)

            do_GET = do_POST = do_HEAD = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedAuthz:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def authz() -> Iterator[ScriptedAuthz]:
    with ScriptedAuthz() as server:
        yield server


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as server:
        yield server


def envoy_for(
    authz: ScriptedAuthz, upstream: EchoUpstream, workdir: Path, **values: object
) -> EnvoyProcess:
    # no /readyz here: the health check port is closed, all hosts unhealthy, and Envoy
    # routes anyway (panic routing), which is what the shipped config relies on too
    return EnvoyProcess(
        workdir, extauthz_port=authz.port, upstream_port=upstream.port,
        template=HTTP_BOOTSTRAP_TEMPLATE, EXTAUTHZ_HEALTH_PORT=free_port(), **values,
    )  # fmt: skip


def test_the_authorization_request_has_method_prefixed_path_and_listed_headers_only(
    authz: ScriptedAuthz, upstream: EchoUpstream, tmp_path: Path
) -> None:
    with envoy_for(authz, upstream, tmp_path, EXTAUTHZ_PATH_PREFIX="/authz") as envoy:
        http_request(
            "POST", envoy.url + "/orders/1?a=b",
            {"authorization": "Bearer t", "x-auth-tenant": "t1", "x-other": "no",
             "x-request-id": "r-1", "content-type": "application/json"},
            body=b'{"x": 1}',
        )  # fmt: skip
    (seen,) = authz.script.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/authz/orders/1?a=b", b"")
    assert seen.headers["content-length"] == "0"
    assert seen.headers["authorization"] == "Bearer t"
    assert seen.headers["x-auth-tenant"] == "t1"  # the prefix matcher
    assert seen.headers["x-request-id"] == "r-1"
    assert "x-other" not in seen.headers
    assert "content-type" not in seen.headers
    assert {"host", "x-envoy-expected-rq-timeout-ms"} <= set(seen.headers)


def test_a_200_sets_listed_upstream_headers_removes_named_ones_and_keeps_metadata_private(
    authz: ScriptedAuthz, upstream: EchoUpstream, tmp_path: Path
) -> None:
    authz.script.headers = [
        ("x-auth-subject", "alice"),
        ("x-envoy-auth-headers-to-remove", "x-auth-roles, x-auth-tenant"),
        ("x-content-type-options", "nosniff"), ("x-extauthz-sub", "alice"),
        ("x-not-listed", "1"),
    ]  # fmt: skip
    with envoy_for(authz, upstream, tmp_path) as envoy:
        status, headers, _ = http_get(
            envoy.url + "/x",
            {"x-auth-subject": "root", "x-auth-roles": "admin", "x-auth-tenant": "evil"},
        )
        log = envoy.access_log_lines(1)[-1]
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.header("x-auth-subject") == ["alice"]  # overwritten
    assert seen.header("x-auth-roles") == seen.header("x-auth-tenant") == []
    assert seen.header("x-content-type-options") == seen.header("x-not-listed") == []
    assert [k for k, _ in seen.headers if k.startswith("x-extauthz-")] == []
    assert headers.get_all("x-content-type-options") == ["nosniff"]  # on success
    assert headers.get("x-extauthz-sub") is None
    assert headers.get("x-auth-subject") is None
    assert log["sub"] == "alice"  # dynamic_metadata_from_headers


def test_a_deny_passes_status_body_and_listed_headers_and_still_records_metadata(
    authz: ScriptedAuthz, upstream: EchoUpstream, tmp_path: Path
) -> None:
    authz.script.status = 401
    authz.script.body = b'{"error": "x"}'
    authz.script.headers = [
        ("www-authenticate", 'Bearer realm="r"'), ("content-type", "application/json"),
        ("x-extauthz-decision", "deny"), ("x-extauthz-reason", "expired"), ("x-secret", "1"),
    ]  # fmt: skip
    with envoy_for(authz, upstream, tmp_path) as envoy:
        status, headers, body = http_get(envoy.url + "/x")
        log = envoy.access_log_lines(1)[-1]
    assert (status, body) == (401, b'{"error": "x"}')
    assert headers["www-authenticate"] == 'Bearer realm="r"'
    assert headers.get("x-secret") is None  # allowed_client_headers keeps it back
    assert headers.get("x-extauthz-reason") is None
    assert (log["decision"], log["reason"]) == ("deny", "expired")
    assert upstream.requests == []


@pytest.mark.parametrize("fail_open", [False, True])
def test_a_5xx_answer_is_a_failure_of_the_service_not_a_deny(
    authz: ScriptedAuthz, upstream: EchoUpstream, tmp_path: Path, fail_open: bool
) -> None:
    """Why extauthz answers not_ready with a 403 over HTTP: a 503 would be status_on_error
    (or, with failure_mode_allow, let the request through)."""
    authz.script.status = 503
    authz.script.body = b'{"reason": "not_ready"}'
    with envoy_for(authz, upstream, tmp_path, FAILURE_MODE_ALLOW=fail_open) as envoy:
        status, _, body = http_get(envoy.url + "/x")
    if fail_open:
        assert status == 200  # passed: the upstream answered
        assert len(upstream.requests) == 1
    else:
        assert status == 503
        assert body != b'{"reason": "not_ready"}'  # Envoy's own answer, not ours
        assert upstream.requests == []


@pytest.mark.parametrize("body_on_head", [True, False])
def test_a_body_on_a_head_answer_costs_the_connection(
    authz: ScriptedAuthz, upstream: EchoUpstream, tmp_path: Path, body_on_head: bool
) -> None:
    """Why extauthz sends no body to HEAD: Envoy drops the keep-alive connection that
    carried one (the next Check needs a new connection); without it, one connection
    serves them all."""
    authz.script.status = 401
    authz.script.body = b"0123456789" * 5
    authz.script.body_on_head = body_on_head
    with envoy_for(authz, upstream, tmp_path) as envoy:
        statuses = [http_request(m, envoy.url + "/x")[0] for m in ("HEAD", "GET", "GET")]
    assert statuses == [401, 401, 401]
    if body_on_head:
        # the stray bytes are read as the next answer: that connection is reset (and
        # the Check retried, per the bootstrap's retry policy, on a new connection)
        assert len(authz.script.connections) >= 2
    else:
        assert len(authz.script.seen) == 3
        assert len(authz.script.connections) == 1
