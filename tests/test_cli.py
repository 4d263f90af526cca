"""The command line as a user types it (serve, keygen, token, check, revoke, config),
run as real subprocesses."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.conftest import AUDIENCE, ISSUER


def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extauthz", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_keygen_enc_and_public(tmp_path: Path) -> None:
    out = run("keygen", "--use", "enc", "--alg", "RSA-OAEP-256", "--kid", "k1", check=True)
    jwk = json.loads(out.stdout)
    assert (jwk["kty"], jwk["use"], jwk["alg"], jwk["kid"]) == ("RSA", "enc", "RSA-OAEP-256", "k1")
    assert "d" in jwk
    (tmp_path / "k.json").write_text(out.stdout)
    pub = json.loads(run("keygen", "--public", str(tmp_path / "k.json"), check=True).stdout)
    (key,) = pub["keys"]
    assert key["kid"] == "k1"
    assert "d" not in key
    assert key["n"] == jwk["n"]


def test_keygen_secret_manifest() -> None:
    out = run(
        "keygen",
        "--use",
        "sig",
        "--alg",
        "ES256",
        "--secret",
        "keys",
        "--namespace",
        "auth",
        check=True,
    )
    manifest = yaml.safe_load(out.stdout)
    assert manifest["kind"] == "Secret"
    assert manifest["metadata"] == {
        "name": "keys",
        "namespace": "auth",
    }
    jwks = json.loads(base64.b64decode(manifest["data"]["jwks.json"]))
    assert jwks["keys"][0]["crv"] == "P-256"


def test_keygen_rejects_unknown_alg() -> None:
    result = run("keygen", "--use", "enc", "--alg", "RSA1_5")
    assert result.returncode == 2
    assert "unsupported" in result.stderr


def test_config_validate_exit_codes(tmp_path: Path) -> None:
    good = Path(__file__).resolve().parent.parent / "examples" / "config.yaml"
    assert run("config", "validate", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"providers": [{"name": "p", "issuer": "i", "keys": [], "extra": 1}]})
    )
    result = run("config", "validate", str(bad))
    assert result.returncode == 1
    assert "providers[0]" in result.stderr


@pytest.fixture
def served(write_config: Callable[..., Path]) -> Iterator[str]:
    app = App(config_mod.load(write_config()))
    app.start()
    assert app.store.wait_ready(5)
    yield f"127.0.0.1:{app.grpc_port}"
    app.stop_now()


def test_token_then_check_round_trip(served: str, key_dirs: Path, tmp_path: Path) -> None:
    """`extauthz token` mints a nested JWE that `extauthz check` sees allowed (exit 0)."""
    claims = json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "bob", "scope": "admin"})
    sig = key_dirs / "sig.json"
    verify = json.loads((key_dirs / "keys" / "verify" / "idp.json").read_text())
    assert verify["keys"]
    # the private signing key is not on disk in key_dirs: make one and trust its public half
    out = run("keygen", "--use", "sig", "--alg", "ES256", "--kid", "cli-sig", check=True).stdout
    sig.write_text(out)
    pub = run("keygen", "--public", str(sig), check=True).stdout
    (key_dirs / "keys" / "verify" / "cli.json").write_text(pub)
    enc = key_dirs / "keys" / "decrypt" / "enc-1.json"
    token = run(
        "token", "--sign-key", str(sig), "--encrypt-key", str(enc), "--claims", claims, check=True
    ).stdout.strip()
    assert token.count(".") == 4
    import time

    deadline = time.monotonic() + 5
    while True:
        result = run(
            "check", "--address", served, "--token", token, "--path", "/admin/x", "--method", "POST"
        )
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    decision = json.loads(result.stdout)
    assert result.returncode == 0, decision
    assert decision["upstream_headers"]["x-auth-subject"] == "bob"
    assert decision["metadata"]["rule"] == "admin"


def test_check_deny_exit_1_and_error_exit_2(served: str) -> None:
    denied = run("check", "--address", served, "-H", "authorization: Bearer a.b.c")
    assert denied.returncode == 1
    assert json.loads(denied.stdout)["metadata"]["reason"] == "malformed"
    ctx = run("check", "--address", served, "--context", "rule=nope", "--token", "a.b.c")
    assert json.loads(ctx.stdout)["metadata"]["reason"] == "unknown_rule"
    down = run("check", "--address", "127.0.0.1:1", "--timeout", "1")
    assert down.returncode == 2


def test_config_validate_reports_three_mistakes_and_exits_1(tmp_path: Path) -> None:
    """Three mistakes: three lines, each with its key path; exit 1."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "listen:\n  grpc: nope\n"
        "providers:\n  - name: idp\n    issuer: https://idp\n    keys: [{directory: ./k}]\n"
        "    leeway_seconds: soon\n"
        "rules:\n  - name: a\n    methods: POST\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", "config", "validate", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    paths = [line.split(": ")[1] for line in result.stderr.splitlines()[:3]]
    assert paths == ["listen.grpc", "providers[0].leeway_seconds", "rules[0].methods"]


def test_config_validate_unreadable_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", "config", "validate", str(tmp_path / "absent.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_config_schema_is_the_generated_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", "config", "schema"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    from extauthz import config as config_mod

    assert json.loads(result.stdout) == config_mod.json_schema()


def test_serve_with_a_bad_config_exits_2_with_key_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen: {grpc: nope}\n")
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "listen.grpc" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_expect_over_grpc_and_http(write_config: Callable[..., Path]) -> None:
    """--expect makes the exit code say whether the answer matched, on both listeners."""
    app = App(config_mod.load(write_config(listen={
        "grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0",
    })))  # fmt: skip
    app.start()
    try:
        assert app.store.wait_ready(5)
        assert app.http_authz is not None
        grpc_at = ["--address", f"127.0.0.1:{app.grpc_port}"]
        http_at = ["--http", f"http://127.0.0.1:{app.http_authz.port}"]
        for where in (grpc_at, http_at):
            assert run("check", *where, "--expect", "deny:missing_token").returncode == 0
            assert run("check", *where, "--expect", "deny").returncode == 0
            assert run("check", *where, "--expect", "deny:malformed").returncode == 1
            assert run("check", *where, "--expect", "allow").returncode == 1
            public = run("check", *where, "--path", "/public/x", "--expect", "allow")
            assert public.returncode == 0, public.stdout
        assert run("check", *grpc_at, "--expect", "maybe").returncode == 2
        assert run("check", *grpc_at, *http_at).returncode == 2
    finally:
        app.stop_now()


def test_check_over_mtls_on_both_listeners(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """--ca-file/--cert-file/--key-file reach a TLS (mTLS) listener; without a client
    certificate the handshake is refused (exit 2)."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "extauthz.test")
    client = ca.issue_cert("client.test")
    files = {}
    for name, blob in (
        ("ca.pem", ca.cert_pem), ("server.pem", server.cert_chain_pems[0]),
        ("server.key", server.private_key_pem), ("client.pem", client.cert_chain_pems[0]),
        ("client.key", client.private_key_pem),
    ):  # fmt: skip
        blob.write_to_path(str(tmp_path / name))
        files[name] = str(tmp_path / name)
    tls = {"cert_file": files["server.pem"], "key_file": files["server.key"],
           "client_ca_file": files["ca.pem"]}  # fmt: skip
    app = App(config_mod.load(write_config(listen={
        "grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0", "tls": tls,
    })))  # fmt: skip
    app.start()
    try:
        assert app.store.wait_ready(5)
        assert app.http_authz is not None
        identity = ["--ca-file", files["ca.pem"]]
        mtls = [*identity, "--cert-file", files["client.pem"], "--key-file", files["client.key"]]
        grpc_at = ["--address", f"127.0.0.1:{app.grpc_port}", "--server-name", "extauthz.test"]
        http_at = ["--http", f"https://127.0.0.1:{app.http_authz.port}"]
        for where in (grpc_at, http_at):
            ok = run("check", *where, *mtls, "--expect", "deny:missing_token", "--timeout", "3")
            assert ok.returncode == 0, ok.stdout
            refused = run("check", *where, *identity, "--timeout", "3")
            assert refused.returncode == 2, refused.stdout
    finally:
        app.stop_now()


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ({"decryption": {"keys": [{"kubernetes": {"namespace": "auth", "secrets": ["x"]}}]}},
         "decryption.keys[0]"),
        ({"revocation": {"sources": [{"kubernetes": {"namespace": "auth", "configmaps": ["r"]}}]}},
         "revocation.sources"),
    ],
)  # fmt: skip
def test_serve_with_a_source_that_cannot_start_exits_2_in_one_line(
    write_config: Callable[..., Path], section: dict[str, Any], where: str
) -> None:
    """No Kubernetes client configuration (no kubeconfig, not in a cluster): one line
    naming the key path and the cause, exit 2, never a traceback."""
    path = write_config(**section)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**env, "KUBECONFIG": str(path.parent / "absent-kubeconfig")},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("extauthz serve:")]
    assert len(lines) == 1, result.stderr
    assert where in lines[0], result.stderr
