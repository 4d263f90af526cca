"""End-to-end fixtures: every log line the service writes during this suite is captured
to a file, and every token minted is recorded, so the redaction guarantee can be
checked against everything that actually happened (tests/e2e/test_zz_redaction.py).
And the shared loop: an echo upstream, a real Envoy in front of it asking the module's
``app`` over each transport (``transport``, ``envoy``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
import structlog

from extauthz import logging as logging_mod
from extauthz.server.app import App
from tests.envoy_harness import HTTP_BOOTSTRAP_TEMPLATE, EchoUpstream, EnvoyProcess

#: Envoy's two authorization protocols: every end-to-end test runs over each
TRANSPORTS = ["grpc", "http"]


class Capture:
    """The captured log file and the secrets that must never appear in it."""

    def __init__(self, path: Path, stream: TextIO) -> None:
        self.path = path
        self.stream = stream
        self.secrets: set[str] = set()

    def text(self) -> str:
        self.stream.flush()
        return self.path.read_text()


@pytest.fixture(scope="session")
def log_capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    path = tmp_path_factory.mktemp("logs") / "extauthz.jsonl"
    with path.open("w") as stream:
        structlog.reset_defaults()
        logging_mod.configure("debug", "json", stream=stream)
        yield Capture(path, stream)
        structlog.reset_defaults()


@pytest.fixture(scope="session")
def mint_token(mint_token: Callable[..., str], log_capture: Capture) -> Callable[..., str]:
    """The shared minter, recording every token so the redaction test can look for it."""

    def make(**kwargs: Any) -> str:
        token = mint_token(**kwargs)
        log_capture.secrets.add(token)
        for part in token.split("."):
            if len(part) >= 16:
                log_capture.secrets.add(part)
        return token

    return make


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as server:
        yield server


def proxy_for(
    app: App, upstream: EchoUpstream, workdir: Path, transport: str, **values: object
) -> EnvoyProcess:
    """A real Envoy in front of ``upstream``, asking ``app`` over ``transport``."""
    if transport == "grpc":
        return EnvoyProcess(
            workdir, extauthz_port=app.grpc_port, upstream_port=upstream.port, **values
        )
    assert app.http_authz is not None
    assert app.http is not None
    return EnvoyProcess(
        workdir, extauthz_port=app.http_authz.port, upstream_port=upstream.port,
        template=HTTP_BOOTSTRAP_TEMPLATE, EXTAUTHZ_HEALTH_PORT=app.http.port, **values,
    )  # fmt: skip


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def envoy(
    app: App, upstream: EchoUpstream, tmp_path: Path, transport: str
) -> Iterator[EnvoyProcess]:
    """Envoy in front of the shared upstream, asking the requesting module's ``app``."""
    upstream.clear()
    with proxy_for(app, upstream, tmp_path / "envoy", transport) as proxy:
        yield proxy


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
