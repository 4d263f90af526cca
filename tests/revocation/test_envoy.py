"""End to end through a real Envoy, over both of its authorization protocols: a token
that reached the upstream is refused at the client with ``401`` and
``error_description="revoked"`` within a second of the list changing, the upstream
never sees it again, and another token of the same subject still passes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from extauthz import config as config_mod
from extauthz.server.app import App
from tests.envoy_harness import HTTP_BOOTSTRAP_TEMPLATE, EchoUpstream, EnvoyProcess, http_get

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.example.test"
LISTEN = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "http_authz": "127.0.0.1:0"}


@pytest.fixture
def revoked_dir(tmp_path: Path) -> Path:
    path = tmp_path / "revoked"
    path.mkdir()
    (path / "revoked.json").write_text('{"revoked": []}')
    return path


@pytest.fixture
def app(write_config: Callable[..., Path], revoked_dir: Path) -> Iterator[App]:
    revocation = {"sources": [{"directory": str(revoked_dir), "interval_seconds": 0.05}]}
    instance = App(config_mod.load(write_config(revocation=revocation, listen=LISTEN)))
    instance.start()
    yield instance
    instance.stop_now()


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as server:
        yield server


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_revoked_token_is_refused_at_the_client(
    app: App, upstream: EchoUpstream, revoked_dir: Path, tmp_path: Path, transport: str,
    mint_token: Callable[..., str],
) -> None:  # fmt: skip
    if transport == "grpc":
        proxy = EnvoyProcess(tmp_path / "envoy", extauthz_port=app.grpc_port,
                             upstream_port=upstream.port)  # fmt: skip
    else:
        assert app.http_authz is not None
        assert app.http is not None
        proxy = EnvoyProcess(
            tmp_path / "envoy", extauthz_port=app.http_authz.port, upstream_port=upstream.port,
            template=HTTP_BOOTSTRAP_TEMPLATE, EXTAUTHZ_HEALTH_PORT=app.http.port,
        )  # fmt: skip
    leaked = mint_token(sub="alice", jti="leaked-1")
    fresh = mint_token(sub="alice", jti="fresh-2")
    with proxy as envoy:
        deadline = time.monotonic() + 10
        while http_get(envoy.url + "/orders", {"authorization": f"Bearer {leaked}"})[0] != 200:
            assert time.monotonic() < deadline, envoy.explain()
            time.sleep(0.1)
        upstream.clear()
        entry = {"jti": "leaked-1", "iss": ISSUER, "exp": int(time.time()) + 300}
        (revoked_dir / "revoked.json").write_text(json.dumps({"revoked": [entry]}))
        written = time.monotonic()
        while True:
            status, headers, body = http_get(
                envoy.url + "/orders", {"authorization": f"Bearer {leaked}"}
            )
            if status != 200:
                break
            assert time.monotonic() - written < 1.0, "not refused within a second"
        reached = len(upstream.requests)
        assert status == 401, envoy.explain()
        assert headers["www-authenticate"] == (
            'Bearer realm="extauthz", error="invalid_token", error_description="revoked"'
        )
        assert json.loads(body)["reason"] == "revoked"
        assert http_get(envoy.url + "/orders", {"authorization": f"Bearer {leaked}"})[0] == 401
        assert len(upstream.requests) == reached  # the upstream never saw it again
        assert http_get(envoy.url + "/orders", {"authorization": f"Bearer {fresh}"})[0] == 200
