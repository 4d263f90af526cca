"""The real-Envoy harness works, and the example bootstrap does what its comments say.

A trivial ext_authz server, built here from our generated messages (``extauthz._proto``)
and served by grpcio, stands in for extauthz: it allows ``authorization: Bearer good``
(adding claim-like headers) and denies anything else with a 401. Driving a real Envoy
(``examples/envoy/envoy.yaml`` rendered by ``tests/envoy_harness.py``) with it proves the
harness, the example, and the facts about Envoy 1.40 the product relies on: what Envoy sends in a
CheckRequest and what it does with each part of a CheckResponse.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from extauthz._proto.envoy.config.core.v3 import base_pb2
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz._proto.envoy.type.v3 import http_status_pb2
from extauthz._proto.google.rpc import code_pb2, status_pb2
from tests.envoy_harness import (
    EchoUpstream,
    EnvoyError,
    EnvoyProcess,
    envoy_binary,
    free_port,
    http_get,
    placeholders,
    render_bootstrap,
)

pytestmark = pytest.mark.e2e

CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse
Policy = Callable[[CheckRequest], CheckResponse]
TEST_TIMEOUT = "5s"


# --------------------------------------------------------------------------- fake extauthz


def _set(
    name: str,
    value: str,
    action: base_pb2.HeaderValueOption.HeaderAppendAction = (
        base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    ),
) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value), append_action=action
    )


def _metadata(**fields: str) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    metadata.update(fields)
    return metadata


def _authorization(request: CheckRequest) -> str:
    """The authorization header in either encoding Envoy may use (Envoy 1.40)."""
    http = request.attributes.request.http
    if "authorization" in http.headers:
        value: str = http.headers["authorization"]
        return value
    raw = [h.raw_value for h in http.header_map.headers if h.key == "authorization"]
    return b",".join(raw).decode()


def bearer_good(request: CheckRequest) -> CheckResponse:
    """Allow ``Bearer good`` as alice; deny everything else with a 401 and a body."""
    rule = request.attributes.context_extensions.get("rule", "default")
    if _authorization(request) == "Bearer good":
        return CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_set("x-auth-subject", "alice")],
                headers_to_remove=["x-auth-email"],
                response_headers_to_add=[_set("x-content-type-options", "nosniff")],
            ),
            dynamic_metadata=_metadata(
                decision="allow",
                reason="ok",
                sub="alice",
                iss="https://idp.example.test",
                kid="sig-1",
                rule=rule,
            ),
        )
    return CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
            headers=[
                _set("www-authenticate", 'Bearer realm="extauthz", error="invalid_token"'),
                _set("content-type", "application/json"),
            ],
            body='{"error": "invalid_token", "error_description": "bad_signature"}',
        ),
        dynamic_metadata=_metadata(decision="deny", reason="bad_signature", rule=rule),
    )


class FakeAuthz:
    """A grpcio ext_authz server on 127.0.0.1:0 answering with ``policy``.

    Registered as a generic handler for ``envoy.service.auth.v3.Authorization/Check``
    with our generated messages' (de)serializers: this is also a check that Envoy and
    ``extauthz._proto`` agree on the wire.
    """

    def __init__(self) -> None:
        self.policy: Policy = bearer_good
        self.requests: list[CheckRequest] = []
        self._lock = threading.Lock()
        # No SO_REUSEPORT: on a shared machine another test's server must never share
        # (and answer on) this port.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
        )
        handler = grpc.method_handlers_generic_handler(
            "envoy.service.auth.v3.Authorization",
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self._check,
                    request_deserializer=CheckRequest.FromString,
                    response_serializer=CheckResponse.SerializeToString,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def _check(self, request: CheckRequest, context: grpc.ServicerContext) -> CheckResponse:
        with self._lock:
            self.requests.append(request)
        return self.policy(request)

    def last(self) -> CheckRequest:
        """The most recent CheckRequest."""
        with self._lock:
            assert self.requests, "Envoy never called the ext_authz server"
            return self.requests[-1]

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def authz() -> Iterator[FakeAuthz]:
    server = FakeAuthz()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def envoy(
    authz: FakeAuthz, upstream: EchoUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    # A generous Check deadline: a busy CI machine must not turn an allow into a 503.
    # The example's own default (1s) is validated above; timeouts have their own test.
    with EnvoyProcess(
        tmp_path_factory.mktemp("envoy"),
        extauthz_port=authz.port,
        upstream_port=upstream.port,
        EXTAUTHZ_TIMEOUT=TEST_TIMEOUT,
    ) as proc:
        yield proc


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    """Each test starts with the default policy and no recorded requests."""
    if "authz" in request.fixturenames:
        authz: FakeAuthz = request.getfixturevalue("authz")
        authz.policy = bearer_good
        authz.requests.clear()
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").clear()


def _echoed(body: bytes) -> dict[str, list[str]]:
    """Headers the echo upstream reports, name -> values."""
    headers: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


# --------------------------------------------------------------------------- the example


@pytest.mark.parametrize("values", [{}, {"ENCODE_RAW_HEADERS": True, "EXTAUTHZ_TIMEOUT": "0.25s"}])
def test_example_bootstrap_is_valid_envoy_config(tmp_path: Path, values: dict[str, Any]) -> None:
    """The example renders (defaults or overrides) to a config Envoy 1.40 accepts."""
    config = tmp_path / "envoy.yaml"
    config.write_text(render_bootstrap(**values))
    done = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_render_refuses_unknown_placeholders() -> None:
    """A typo in a placeholder name fails loudly instead of keeping the default."""
    assert "ENCODE_RAW_HEADERS" in placeholders()
    with pytest.raises(KeyError, match="ENCODE_RAW_HEADER"):
        render_bootstrap(ENCODE_RAW_HEADER=True)


def test_envoy_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    """A bootstrap Envoy rejects raises EnvoyError carrying Envoy's reason, no hang."""
    started = time.monotonic()
    with (
        pytest.raises(EnvoyError, match="duration"),
        EnvoyProcess(tmp_path, extauthz_port=1, upstream_port=1, EXTAUTHZ_TIMEOUT="250ms"),
    ):
        pass
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- allow / deny


def test_allow_reaches_upstream_with_the_added_header(
    envoy: EnvoyProcess, authz: FakeAuthz, upstream: EchoUpstream
) -> None:
    """Allow: ok_response headers overwrite client copies, headers_to_remove removes."""
    status, headers, body = http_get(
        envoy.url + "/orders/1",
        [
            ("authorization", "Bearer good"),
            ("x-auth-subject", "mallory"),  # smuggled: must be overwritten
            ("x-auth-email", "mallory@example.test"),  # smuggled: must be removed
        ],
    )
    assert status == 200, envoy.explain()
    seen = _echoed(body)
    assert seen["x-auth-subject"] == ["alice"]
    assert "x-auth-email" not in seen
    assert seen["authorization"] == ["Bearer good"]
    assert headers.get_all("x-content-type-options") == ["nosniff"]
    assert [r.path for r in upstream.requests] == ["/orders/1"]


def test_deny_is_401_with_body_and_never_reaches_upstream(
    envoy: EnvoyProcess, authz: FakeAuthz, upstream: EchoUpstream
) -> None:
    """Deny: the client gets denied_response as is; the upstream sees nothing."""
    status, headers, body = http_get(envoy.url + "/orders/1", {"authorization": "Bearer bad"})
    assert status == 401, envoy.explain()
    assert json.loads(body) == {"error": "invalid_token", "error_description": "bad_signature"}
    assert headers["www-authenticate"] == 'Bearer realm="extauthz", error="invalid_token"'
    assert headers["content-type"] == "application/json"
    assert upstream.requests == []
    assert len(authz.requests) == 1


def test_deny_without_denied_response_is_an_empty_403(
    envoy: EnvoyProcess, authz: FakeAuthz, upstream: EchoUpstream
) -> None:
    """Envoy 1.40: a bare non-OK status becomes Envoy's own empty 403."""
    authz.policy = lambda _: CheckResponse(status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED))
    status, _, body = http_get(envoy.url + "/", {"authorization": "Bearer good"})
    assert (status, body) == (403, b"")
    assert upstream.requests == []


# --------------------------------------------------------------------------- CheckRequest


def test_check_request_carries_headers_path_and_peers(
    envoy: EnvoyProcess, authz: FakeAuthz
) -> None:
    """Envoy 1.40: lower-case headers with pseudo-headers; query inside path, query empty."""
    http_get(envoy.url + "/a/b?x=1&y=two", {"X-Custom": "Val", "authorization": "Bearer good"})
    attributes = authz.last().attributes
    http = attributes.request.http
    assert http.headers["x-custom"] == "Val"
    assert {":authority", ":method", ":path", ":scheme"} <= set(http.headers)
    assert http.headers[":path"] == "/a/b?x=1&y=two"
    assert (http.method, http.path, http.query) == ("GET", "/a/b?x=1&y=two", "")
    assert http.protocol == "HTTP/1.1"
    assert http.id
    assert list(http.header_map.headers) == []
    assert attributes.source.address.socket_address.address == "127.0.0.1"
    assert attributes.destination.address.socket_address.port_value == envoy.port
    assert dict(attributes.context_extensions) == {}


def test_repeated_authorization_headers_arrive_joined_with_a_comma(
    envoy: EnvoyProcess, authz: FakeAuthz, upstream: EchoUpstream
) -> None:
    """Envoy 1.40: two authorization headers become one value joined by ',' (deny it).

    Cookie headers are joined the same way: with ',', not the cookie separator '; '.
    """
    status, _, _ = http_get(
        envoy.url + "/",
        [
            ("authorization", "Bearer good"),
            ("authorization", "Bearer other"),
            ("cookie", "a=1"),
            ("cookie", "access_token=t; b=2"),
        ],
    )
    headers = authz.last().attributes.request.http.headers
    assert headers["authorization"] == "Bearer good,Bearer other"
    assert headers["cookie"] == "a=1,access_token=t; b=2"
    assert status == 401, envoy.explain()
    assert upstream.requests == []


def test_reports_route_sends_its_context_extensions(envoy: EnvoyProcess, authz: FakeAuthz) -> None:
    """The /reports/ route's check_settings reach the server as context_extensions."""
    status, _, _ = http_get(envoy.url + "/reports/q3", {"authorization": "Bearer good"})
    assert status == 200, envoy.explain()
    assert dict(authz.last().attributes.context_extensions) == {"rule": "reports"}


def test_disabled_route_skips_the_check(
    envoy: EnvoyProcess, authz: FakeAuthz, upstream: EchoUpstream
) -> None:
    """/healthz-upstream has ext_authz disabled: no Check, no token needed."""
    status, _, _ = http_get(envoy.url + "/healthz-upstream")
    assert status == 200, envoy.explain()
    assert authz.requests == []
    assert [r.path for r in upstream.requests] == ["/healthz-upstream"]


def test_encode_raw_headers_moves_headers_to_header_map(
    authz: FakeAuthz, upstream: EchoUpstream, tmp_path: Path
) -> None:
    """Envoy 1.40: with encode_raw_headers the map is empty; header_map has raw_value."""
    with EnvoyProcess(
        tmp_path,
        extauthz_port=authz.port,
        upstream_port=upstream.port,
        ENCODE_RAW_HEADERS=True,
    ) as envoy:
        status, _, _ = http_get(envoy.url + "/raw?q=1", {"authorization": "Bearer good"})
        assert status == 200, envoy.explain()
        http = authz.last().attributes.request.http
        assert dict(http.headers) == {}
        entries = [(h.key, h.value, h.raw_value) for h in http.header_map.headers]
        assert ("authorization", "", b"Bearer good") in entries
        assert (":path", "", b"/raw?q=1") in entries

        # Per occurrence only for headers Envoy does not keep "inline": authorization
        # is inline and already arrives joined with ',' (as in the map); cookie is not.
        twice = [("authorization", "Bearer a"), ("authorization", "Bearer b")]
        http_get(envoy.url + "/", [*twice, ("cookie", "a=1"), ("cookie", "b=2")])
        http = authz.last().attributes.request.http
        assert [h.raw_value for h in http.header_map.headers if h.key == "authorization"] == [
            b"Bearer a,Bearer b"
        ]
        assert [h.raw_value for h in http.header_map.headers if h.key == "cookie"] == [
            b"a=1",
            b"b=2",
        ]


# --------------------------------------------------------------------------- CheckResponse


def test_envoy_140_overwrites_when_append_is_unset_whatever_append_action(
    envoy: EnvoyProcess, authz: FakeAuthz
) -> None:
    """Envoy 1.40: even append_action APPEND_IF_EXISTS_OR_ADD (0) overwrites on 1.40.

    If this starts failing after an Envoy upgrade, Envoy now honours append_action:
    the product's OVERWRITE_IF_EXISTS_OR_ADD is what keeps both versions safe.
    """
    appending = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    authz.policy = lambda _: CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_set("x-auth-subject", "alice", appending)]
        ),
    )
    status, _, body = http_get(envoy.url + "/", {"x-auth-subject": "mallory"})
    assert status == 200, envoy.explain()
    assert _echoed(body)["x-auth-subject"] == ["alice"]


def test_headers_to_remove_is_applied_after_headers(envoy: EnvoyProcess, authz: FakeAuthz) -> None:
    """Envoy 1.40: a header both set and listed in headers_to_remove does not arrive."""
    authz.policy = lambda _: CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_set("x-auth-roles", "admin"), _set("x-auth-subject", "alice")],
            headers_to_remove=["x-auth-roles"],
        ),
    )
    status, _, body = http_get(envoy.url + "/")
    assert status == 200, envoy.explain()
    seen = _echoed(body)
    assert "x-auth-roles" not in seen
    assert seen["x-auth-subject"] == ["alice"]


def test_access_log_carries_the_dynamic_metadata(envoy: EnvoyProcess, authz: FakeAuthz) -> None:
    """One JSON line per request with the metadata the server set, allow and deny."""
    allow_path, deny_path = f"/audit/{uuid.uuid4()}", f"/reports/{uuid.uuid4()}"
    http_get(envoy.url + allow_path + "?token=secret", {"authorization": "Bearer good"})
    http_get(envoy.url + deny_path)

    def line(path: str) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [entry for entry in envoy.access_log_lines() if entry["path"] == path]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no access log line for {path}: {envoy.access_log_lines()}")

    allowed = line(allow_path)  # the query string is not logged
    assert {k: allowed[k] for k in ("status", "method", "decision", "reason", "sub")} == {
        "status": 200,
        "method": "GET",
        "decision": "allow",
        "reason": "ok",
        "sub": "alice",
    }
    assert (allowed["iss"], allowed["kid"], allowed["rule"]) == (
        "https://idp.example.test",
        "sig-1",
        "default",
    )
    denied = line(deny_path)
    assert (denied["status"], denied["decision"], denied["reason"], denied["rule"]) == (
        401,
        "deny",
        "bad_signature",
        "reports",
    )
    assert denied["sub"] is None


# --------------------------------------------------------------------------- failures


def test_authz_server_down_is_503_and_upstream_untouched(
    upstream: EchoUpstream, tmp_path: Path
) -> None:
    """status_on_error: nobody listening on the extauthz port -> 503, fail closed."""
    with EnvoyProcess(tmp_path, extauthz_port=free_port(), upstream_port=upstream.port) as envoy:
        status, _, _ = http_get(envoy.url + "/", {"authorization": "Bearer good"})
        assert status == 503, envoy.explain()
        assert upstream.requests == []
        assert envoy.access_log_lines(1)[-1]["flags"] == "UAEX"


def test_authz_timeout_is_503(authz: FakeAuthz, upstream: EchoUpstream, tmp_path: Path) -> None:
    """status_on_error also covers a Check slower than EXTAUTHZ_TIMEOUT."""

    def slow(request: CheckRequest) -> CheckResponse:
        time.sleep(0.6)
        return bearer_good(request)

    authz.policy = slow
    with EnvoyProcess(
        tmp_path,
        extauthz_port=authz.port,
        upstream_port=upstream.port,
        EXTAUTHZ_TIMEOUT="0.2s",
    ) as envoy:
        started = time.monotonic()
        status, _, _ = http_get(envoy.url + "/", {"authorization": "Bearer good"})
        assert status == 503, envoy.explain()
        assert time.monotonic() - started < 0.6
        assert upstream.requests == []
