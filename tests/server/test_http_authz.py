"""The HTTP authorization listener (Envoy ``http_service``) over real loopback sockets.

Each test states one behaviour of the HTTP edge: how a decision is written, the
bounds and timeouts of the listener, draining, TLS, and that the event loop never
waits on a verification.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from extauthz import config as config_mod
from extauthz.server.app import App
from extauthz.server.http_authz import MAX_HEAD_BYTES
from tests.service_client import wait_for

LISTEN = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}


def make_app(write_config: Callable[..., Path], ready: bool = True, **overrides: Any) -> App:
    listen = {**LISTEN, **overrides.pop("listen", {})}
    app = App(config_mod.load(write_config(listen=listen, **overrides)))
    app.start()
    if ready:
        assert app.store.wait_ready(5)
    return app


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = make_app(write_config)
    yield instance
    instance.stop_now()


def port_of(app: App) -> int:
    assert app.http_authz is not None
    return app.http_authz.port


def request(
    port: int, path: str = "/orders", headers: dict[str, str] | None = None,
    method: str = "GET", conn: http.client.HTTPConnection | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:  # fmt: skip
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        if own:
            conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def metadata(headers: http.client.HTTPMessage) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-extauthz-")}


def test_allow_is_200_with_claim_headers_removals_client_headers_and_metadata(
    app: App, mint_token: Callable[..., str]
) -> None:
    status, headers, body = request(
        port_of(app), "/orders?id=1",
        {**bearer(mint_token(email="a@x.test")), "x-auth-other": "spoof", "x-request-id": "r1"},
    )  # fmt: skip
    assert (status, body) == (200, b"")
    assert headers["x-auth-subject"] == "alice"
    assert headers["x-auth-email"] == "a@x.test"
    removed = headers["x-envoy-auth-headers-to-remove"].split(",")
    assert set(removed) == {"x-auth-scope", "x-auth-roles", "x-auth-other"}
    assert headers["x-content-type-options"] == "nosniff"
    assert metadata(headers) == {
        "x-extauthz-decision": "allow", "x-extauthz-reason": "ok", "x-extauthz-rule": "default",
        "x-extauthz-sub": "alice", "x-extauthz-iss": "https://idp.example.test",
        "x-extauthz-kid": "sig-1", "x-extauthz-enc-kid": "enc-1",
    }  # fmt: skip


def test_deny_carries_status_challenge_json_body_and_only_decision_and_reason(
    app: App, mint_token: Callable[..., str]
) -> None:
    status, headers, body = request(port_of(app), "/orders")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="extauthz"'
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    assert json.loads(body)["reason"] == "missing_token"
    assert metadata(headers) == {
        "x-extauthz-decision": "deny",
        "x-extauthz-reason": "missing_token",
    }
    # a valid token that misses the scope: 403, and still no subject or key id on a deny
    status, headers, body = request(
        port_of(app), "/admin/x", bearer(mint_token(scope="read")), method="POST"
    )
    assert status == 403
    assert 'error="insufficient_scope", scope="admin"' in headers["www-authenticate"]
    assert json.loads(body)["error"] == "insufficient_scope"
    assert set(metadata(headers)) == {"x-extauthz-decision", "x-extauthz-reason"}


def test_not_ready_is_a_403_with_retry_after(
    write_config: Callable[..., Path], key_dirs: Path, mint_token: Callable[..., str]
) -> None:
    """A 5xx would count as a failure of the service (and pass with failure_mode_allow)."""
    import shutil

    shutil.rmtree(key_dirs / "keys" / "verify")
    (key_dirs / "keys" / "verify").mkdir()
    waiting = make_app(write_config, ready=False)
    try:
        status, headers, body = request(port_of(waiting), "/orders", bearer(mint_token()))
        assert status == 403
        assert headers["retry-after"] == "1"
        assert json.loads(body)["reason"] == "not_ready"
    finally:
        waiting.stop_now()


def test_head_answers_have_no_body_and_keep_the_connection(app: App) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(app), timeout=5)
    try:
        status, headers, body = request(port_of(app), "/orders", method="HEAD", conn=conn)
        assert (status, body) == (401, b"")
        assert int(headers["content-length"]) > 0  # what a GET would carry
        # the next request on the same connection is parsed from a clean stream
        status, _, body = request(port_of(app), "/orders", conn=conn)
        assert status == 401
        assert json.loads(body)["reason"] == "missing_token"
    finally:
        conn.close()


def test_metadata_headers_can_be_switched_off(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    quiet = make_app(write_config, listen={"http_authz_metadata": False})
    try:
        _, allow, _ = request(port_of(quiet), "/orders", bearer(mint_token()))
        _, deny, _ = request(port_of(quiet), "/orders")
        assert allow["x-auth-subject"] == "alice"
        assert metadata(allow) == metadata(deny) == {}
    finally:
        quiet.stop_now()


def test_path_prefix_is_removed_and_other_paths_are_bad_path(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    prefixed = make_app(write_config, listen={"http_authz_path_prefix": "/authz"})
    try:
        port = port_of(prefixed)
        assert request(port, "/authz/public/x")[0] == 200  # the anonymous rule matched
        status, _, body = request(port, "/authz/admin/x", bearer(mint_token()), method="POST")
        assert (status, json.loads(body)["reason"]) == (403, "insufficient_scope")
        for outside in ("/public/x", "/authzpublic/x", "/authz"):
            status, _, body = request(port, outside)
            assert (status, json.loads(body)["reason"]) == (400, "bad_path"), outside
    finally:
        prefixed.stop_now()


def test_repeated_authorization_headers_are_denied(
    app: App, mint_token: Callable[..., str]
) -> None:
    token = mint_token()
    with socket.create_connection(("127.0.0.1", port_of(app)), timeout=5) as sock:
        sock.sendall(
            f"GET /orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
            f"authorization: Bearer {token}\r\n\r\n".encode()
        )
        reply = read_response(sock)
    assert reply.startswith(b"HTTP/1.1 401 ")
    assert b'"reason": "malformed"' in reply


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers, then content-length bytes) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def exchange(app: App, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything until the server closes it."""
    with socket.create_connection(("127.0.0.1", port_of(app)), timeout=5) as sock:
        sock.sendall(data)
        return read_all(sock)


def test_pipelined_requests_are_answered_in_order(app: App, mint_token: Callable[..., str]) -> None:
    """A fresh token (verified in a thread) ahead of a cheap deny keeps its place."""
    fresh = mint_token(sub="first")
    replies = exchange(
        app,
        f"GET /a HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {fresh}\r\n\r\n"
        "GET /b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode(),
    )
    first, second = replies.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ")
    assert b"x-auth-subject: first" in first
    assert second.startswith(b"401 ")


def refused(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` (the server may close while we send) and read the answer; a
    reset counts as a refusal too: the server closed with our bytes unread."""
    try:
        sock.sendall(payload)
        return read_all(sock)
    except ConnectionResetError:
        return b"reset"
    except BrokenPipeError:
        return b"reset"


def test_oversized_head_and_body_are_refused_and_closed(app: App) -> None:
    port = port_of(app)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        big = b"GET /orders HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (MAX_HEAD_BYTES + 1024)
        reply = refused(sock, big)
    assert reply.startswith(b"HTTP/1.1 431 ") or reply == b"reset", reply[:100]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reply = refused(sock, b"POST /o HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:100]
    # the listener still serves
    assert request(port, "/orders")[0] == 401


def test_headers_over_the_pipeline_bound_are_a_too_large_deny(app: App) -> None:
    """Below the listener's bound, the pipeline's own header bound decides (as over gRPC)."""
    headers = {f"x-h{i}": "v" * 400 for i in range(200)}  # ~80 KiB > token.max_header_bytes
    status, _, body = request(port_of(app), "/orders", headers)
    assert (status, json.loads(body)["reason"]) == (401, "too_large")


def test_malformed_requests_get_400_and_close(app: App) -> None:
    with socket.create_connection(("127.0.0.1", port_of(app)), timeout=5) as sock:
        sock.sendall(b"GET /orders HTTP/1.1\r\nbad header\r\n\r\n")
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert sock.recv(10) == b""


def test_slow_and_idle_clients_are_disconnected(write_config: Callable[..., Path]) -> None:
    instance = make_app(write_config)
    try:
        assert instance.http_authz is not None
        instance.http_authz.header_timeout = 0.5
        instance.http_authz.idle_timeout = 1.0
        port = port_of(instance)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"GET /orders HTTP/1.1\r\nhost: x\r\n")  # never finishes
            started = time.monotonic()
            assert slow.recv(10) == b""
            assert time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            idle.sendall(b"GET /orders HTTP/1.1\r\nhost: x\r\n\r\n")
            assert read_response(idle).startswith(b"HTTP/1.1 401 ")
            started = time.monotonic()
            assert idle.recv(10) == b""  # closed after the idle timeout
            assert 0.5 < time.monotonic() - started < 3
    finally:
        instance.stop_now()


def test_drain_closes_after_each_answer_and_stop_finishes_in_flight(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    instance = make_app(write_config)
    assert instance.http_authz is not None
    server = instance.http_authz
    try:
        port = port_of(instance)
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        server.begin_drain()
        status, headers, _ = request(port, "/orders")
        assert status == 401
        assert headers["connection"] == "close"
        # a verification in flight when the listener stops is still answered
        slow = threading.Event()
        verify = instance.evaluator.verifier.verify

        def slow_verify(*args: Any) -> Any:
            slow.set()
            time.sleep(0.5)
            return verify(*args)

        instance.evaluator.verifier.verify = slow_verify  # type: ignore[method-assign]
        answers: list[int] = []
        sender = threading.Thread(
            target=lambda: answers.append(request(port, "/o", bearer(mint_token()))[0])
        )
        sender.start()
        assert slow.wait(5)
        server.stop(grace=3)
        sender.join(5)
        assert answers == [200]
        assert idle.recv(10) == b""  # idle connections are closed
        idle.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        instance.stop_now()


def test_a_slow_identity_provider_never_stalls_cached_checks(
    write_config: Callable[..., Path], enc_jwk: dict[str, Any]
) -> None:
    """A Check waiting on a JWKS refetch runs off the event loop: cached Checks on other
    connections keep answering in milliseconds meanwhile (this fails if the loop blocks)."""
    from tests.conftest import AUDIENCE, ISSUER
    from tests.e2e.test_jwks_e2e import nested
    from tests.jwks_server import JwksServer, signing_key

    key, public_jwk = signing_key("k1")
    with JwksServer(trustme.CA()) as idp:
        idp.keys = [public_jwk]
        provider = {
            "name": "idp", "issuer": ISSUER, "audiences": [AUDIENCE],
            "keys": [{"jwks_uri": idp.jwks_url, "ca_file": str(idp.ca_file),
                      "refetch_interval_seconds": 0.2}],
            "claims_to_headers": {"sub": "x-auth-subject"},
        }  # fmt: skip
        instance = make_app(write_config, providers=[provider])
        try:
            port = port_of(instance)
            cached = nested(key, "k1", enc_jwk)
            assert request(port, "/o", bearer(cached))[0] == 200
            stranger, _ = signing_key("unknown")
            unknown = nested(stranger, "unknown", enc_jwk)
            idp.delay = 3.0
            time.sleep(0.3)  # past the refetch interval: the unknown kid will wait
            waited: list[float] = []

            def send_unknown() -> None:
                started = time.monotonic()
                request(port, "/o", bearer(unknown))
                waited.append(time.monotonic() - started)

            sender = threading.Thread(target=send_unknown)
            sender.start()
            time.sleep(0.05)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            latencies = []
            for _ in range(20):
                started = time.monotonic()
                assert request(port, "/o", bearer(cached), conn=conn)[0] == 200
                latencies.append(time.monotonic() - started)
            conn.close()
            sender.join(10)
            assert len(waited) == 1
            assert waited[0] >= 0.3  # the refetch really held that Check
            assert max(latencies) < 0.25, latencies  # a blocked loop: ~0.45 s
        finally:
            idp.delay = 0
            instance.stop_now()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_tls_and_mtls_on_the_http_listener(
    write_config: Callable[..., Path], tmp_path: Path, ca: trustme.CA
) -> None:
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    tls = {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(ca_file)}
    instance = make_app(write_config, listen={"tls": tls})
    try:
        port = port_of(instance)
        client = ssl.create_default_context(cafile=str(ca_file))
        client_leaf = ca.issue_cert("envoy.test")
        client_leaf.configure_cert(client)
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=5)
        assert request(port, "/orders", conn=conn)[0] == 401
        conn.close()
        # no client certificate: refused at the handshake
        anonymous = ssl.create_default_context(cafile=str(ca_file))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=anonymous, timeout=5)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            request(port, "/orders", conn=conn)
        # a new certificate on disk is presented on the next handshake
        new_leaf = ca.issue_cert("127.0.0.1")
        new_leaf.private_key_pem.write_to_path(str(key))
        new_leaf.cert_chain_pems[0].write_to_path(str(cert))

        def presented() -> bytes:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock,
            ):
                der = tls_sock.getpeercert(binary_form=True)
                assert der is not None
                return der

        expected = ssl.PEM_cert_to_DER_cert(new_leaf.cert_chain_pems[0].bytes().decode())
        assert wait_for(lambda: presented() == expected, timeout=5)
    finally:
        instance.stop_now()


def test_a_claim_with_line_breaks_never_splits_an_answer_header(
    app: App, mint_token: Callable[..., str]
) -> None:
    """Neither the claim header nor the metadata header carries a value with CR/LF."""
    status, headers, _ = request(port_of(app), "/o", bearer(mint_token(sub="a\r\nx-evil: 1")))
    assert status == 200
    assert headers.get("x-evil") is None
    assert headers.get("x-auth-subject") is None
    assert headers.get("x-extauthz-sub") is None
    assert "x-auth-subject" in headers["x-envoy-auth-headers-to-remove"].split(",")


def test_an_answer_that_fails_to_render_is_an_internal_error_deny(
    app: App, mint_token: Callable[..., str]
) -> None:
    """Never a 5xx (with failure_mode_allow Envoy would let the request pass)."""
    assert app.http_authz is not None
    memo = app.http_authz.answers
    real = memo.get
    calls: list[int] = []

    def failing_once(decision: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(decision)

    memo.get = failing_once  # type: ignore[method-assign]
    status, _, body = request(port_of(app), "/o", bearer(mint_token()))
    assert (status, json.loads(body)["reason"]) == (401, "internal_error")
    assert request(port_of(app), "/o", bearer(mint_token()))[0] == 200


def test_a_flood_of_pipelined_requests_is_refused(app: App, mint_token: Callable[..., str]) -> None:
    """Requests queued behind a verification are bounded (cheap ones are answered inline,
    as they arrive)."""
    first = f"GET /o HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {mint_token()}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(app)), timeout=5) as sock:
        reply = refused(sock, first.encode() + b"GET /o HTTP/1.1\r\nhost: x\r\n\r\n" * 2000)
    assert reply.startswith(b"HTTP/1.1 400 ") or reply == b"reset", reply[:200]


@pytest.mark.parametrize(("method", "status"), [("delete", b"403 "), ("get", b"200 ")])
def test_a_lower_case_method_is_decided_as_its_upper_case_form(
    app: App, mint_token: Callable[..., str], method: str, status: bytes
) -> None:
    """Envoy forwards an HTTP/2 client's ``delete`` as it came; frameworks serve it as
    DELETE, so the admin rule (POST/PUT/DELETE need ``admin``) applies, not a 400."""
    token = mint_token(scope="read")
    reply = exchange(
        app,
        f"{method} /admin/users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
        "connection: close\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:80]
    if status == b"403 ":
        assert (
            b'"reason": "insufficient_scope"' in reply or b'"reason":"insufficient_scope"' in reply
        )
