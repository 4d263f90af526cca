"""The service over a real gRPC channel: health, Check, reflection, HTTP endpoints,
directory key rotation, and SIGTERM handling of the real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from extauthz import config as config_mod
from extauthz.server.app import App
from extauthz.server.authz import SERVICE
from tests.service_client import Client, wait_for


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    config = config_mod.load(write_config())
    instance = App(config)
    instance.start()
    yield instance
    instance.stop_now()


@pytest.fixture
def client(app: App) -> Iterator[Client]:
    c = Client(app.grpc_port)
    assert wait_for(lambda: c.status() == health_pb2.HealthCheckResponse.SERVING)
    yield c
    c.channel.close()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_allow_over_grpc_carries_claim_headers(
    client: Client, mint_token: Callable[..., str]
) -> None:
    result = client.check(mint_token(email="a@example.test", roles=["r1", "r2"]), path="/x?y=1")
    assert result["decision"] == "allow"
    assert result["upstream_headers"]["x-auth-subject"] == "alice"
    assert result["upstream_headers"]["x-auth-roles"] == "r1,r2"
    assert result["headers_to_remove"] == ["x-auth-scope"]
    assert result["metadata"]["enc_kid"] == "enc-1"
    assert result["metadata"]["kid"] == "sig-1"


def test_deny_over_grpc_is_unauthenticated_with_body(client: Client) -> None:
    result = client.check(None)
    assert result["grpc_status"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert result["http_status"] == 401
    assert result["headers"]["www-authenticate"] == 'Bearer realm="extauthz"'
    assert result["body"]["error"] == "missing_token"


def test_insufficient_scope_is_permission_denied(
    client: Client, mint_token: Callable[..., str]
) -> None:
    result = client.check(mint_token(scope="read"), path="/admin/users", method="POST")
    assert result["grpc_status"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert result["http_status"] == 403
    assert 'error="insufficient_scope", scope="admin"' in result["headers"]["www-authenticate"]


def test_health_serves_both_names_and_reflection_lists_services(client: Client) -> None:
    assert client.status("") == health_pb2.HealthCheckResponse.SERVING
    assert client.status(SERVICE) == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_http_endpoints(app: App, client: Client, mint_token: Callable[..., str]) -> None:
    assert app.http is not None
    client.check(mint_token())
    assert http_get(app.http.port, "/healthz")[0] == 200
    assert http_get(app.http.port, "/readyz")[0] == 200
    status, body = http_get(app.http.port, "/metrics")
    assert status == 200
    assert 'extauthz_checks_total{decision="allow",reason="ok",transport="grpc"}' in body
    assert "extauthz_check_duration_seconds_bucket" in body
    assert 'extauthz_keys{source="directory",use="enc"} 1.0' in body
    assert http_get(app.http.port, "/nope")[0] == 404


def test_not_serving_until_every_source_loaded(
    write_config: Callable[..., Path], key_dirs: Path, enc_jwk: dict[str, Any]
) -> None:
    decrypt = key_dirs / "keys" / "decrypt"
    shutil.rmtree(decrypt)
    instance = App(config_mod.load(write_config()))
    instance.start()
    try:
        c = Client(instance.grpc_port)
        time.sleep(0.5)
        assert c.status() == health_pb2.HealthCheckResponse.NOT_SERVING
        denied = c.check("x.y.z")
        assert denied["http_status"] == 503
        assert denied["headers"]["retry-after"] == "1"
        assert instance.http is not None
        assert http_get(instance.http.port, "/readyz")[0] == 503
        decrypt.mkdir()
        (decrypt / "k.json").write_text(json.dumps(enc_jwk))
        assert wait_for(lambda: c.status() == health_pb2.HealthCheckResponse.SERVING, 5)
        c.channel.close()
    finally:
        instance.stop_now()


def kubelet_swap(directory: Path, files: dict[str, str], generation: int) -> None:
    """Do what the kubelet does on a Secret update: new timestamped dir, swap ``..data``."""
    target = directory / f"..{generation}"
    target.mkdir()
    for name, content in files.items():
        (target / name).write_text(content)
    tmp_link = directory / "..data_tmp"
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for entry in directory.iterdir():
        if entry.is_symlink() and entry.name not in files and not entry.name.startswith(".."):
            entry.unlink()


def reload_errors() -> float:
    """Failed key reloads so far, over every source (the process-wide counter)."""
    from extauthz.metrics import REGISTRY

    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "extauthz_key_reloads"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("result") == "error"
    )


def test_directory_rotation_via_kubelet_symlink_swap(
    write_config: Callable[..., Path],
    key_dirs: Path,
    enc_jwk: dict[str, Any],
    enc_jwk2: dict[str, Any],
    sig_jwk: dict[str, Any],
    mint_token: Callable[..., str],
) -> None:
    """Add the new key next to the old (both work), then remove the old (fails at once,
    cached decisions included); a broken update keeps the last good keys."""
    decrypt = key_dirs / "keys" / "decrypt"
    shutil.rmtree(decrypt)
    decrypt.mkdir()
    kubelet_swap(decrypt, {"jwks.json": json.dumps({"keys": [enc_jwk]})}, 1)
    instance = App(config_mod.load(write_config()))
    instance.start()
    c = Client(instance.grpc_port)
    try:
        assert wait_for(lambda: c.status() == health_pb2.HealthCheckResponse.SERVING)
        old, new = mint_token(), mint_token(enc=enc_jwk2)
        assert c.check(old)["decision"] == "allow"
        assert c.check(new)["metadata"]["reason"] == "unknown_kid"

        kubelet_swap(decrypt, {"jwks.json": json.dumps({"keys": [enc_jwk, enc_jwk2]})}, 2)
        assert wait_for(lambda: c.check(new)["decision"] == "allow", 3)
        assert c.check(old)["decision"] == "allow"

        errors = reload_errors()
        kubelet_swap(decrypt, {"jwks.json": "{not json"}, 3)
        assert wait_for(lambda: reload_errors() > errors, 5)  # the broken version was read
        assert c.check(old)["decision"] == "allow"
        assert c.check(new)["decision"] == "allow"

        kubelet_swap(decrypt, {"jwks.json": json.dumps({"keys": [enc_jwk2]})}, 4)
        assert wait_for(lambda: c.check(old)["decision"] == "deny", 3)
        assert c.check(old)["metadata"]["reason"] == "unknown_kid"
        assert c.check(new)["decision"] == "allow"
    finally:
        c.channel.close()
        instance.stop_now()


def test_removed_verification_key_drops_cached_decision(
    app: App, client: Client, key_dirs: Path, mint_token: Callable[..., str]
) -> None:
    token = mint_token()
    assert client.check(token)["decision"] == "allow"
    assert len(app.evaluator.cache) == 1
    (key_dirs / "keys" / "verify" / "idp.json").unlink()
    assert wait_for(lambda: client.check(token)["decision"] == "deny", 3)
    assert client.check(token)["metadata"]["reason"] == "unknown_kid"


def test_sigterm_drains_then_exits_zero(write_config: Callable[..., Path]) -> None:
    """SIGTERM: NOT_SERVING at once, Checks still answered while draining, exit 0."""
    path = write_config(
        shutdown={"drain_seconds": 1.5, "grace_seconds": 2}, listen={"grpc": "127.0.0.1:0"}
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = path.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}")
    path.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        c = Client(port)

        def serving() -> bool:
            try:
                return c.status() == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False

        assert wait_for(serving, 15)
        proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: c.status() == health_pb2.HealthCheckResponse.NOT_SERVING, 1)
        assert c.check(None)["http_status"] == 401  # still answering during the drain
        assert proc.wait(timeout=10) == 0
        c.channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate(timeout=10)[0].decode()
    events = [json.loads(line).get("event") for line in output.splitlines() if line.startswith("{")]
    assert "draining" in events
    assert "stopped" in events  # flushed at exit: buffered log lines are not lost


@pytest.mark.parametrize("key", ["grpc", "http_authz", "http"])
def test_a_busy_port_is_a_config_error_naming_the_listener(
    write_config: Callable[..., Path], key: str
) -> None:
    import socket

    from extauthz.errors import ConfigError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        listen = {"grpc": "127.0.0.1:0", "http_authz": "127.0.0.1:0", "http": "127.0.0.1:0"}
        listen[key] = f"127.0.0.1:{port}"
        with pytest.raises(ConfigError) as caught:
            App(config_mod.load(write_config(listen=listen)))
    assert caught.value.path == f"listen.{key}"
    assert str(port) in str(caught.value)
