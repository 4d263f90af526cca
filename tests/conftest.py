"""Shared fixtures: keys generated once per session, a key directory, a config writer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from extauthz import config as config_mod
from extauthz import mint
from extauthz.config import Config
from extauthz.keys.keyset import KeyStore
from extauthz.server.app import Sources
from tests.fakekube import FakeKube

ISSUER = "https://idp.example.test"
AUDIENCE = "api://orders"
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "examples" / "config.yaml"

PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


def public(jwk: dict[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK dict."""
    return {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS}


@pytest.fixture(scope="session")
def enc_jwk() -> dict[str, Any]:
    """The service's RSA-OAEP-256 decryption key (private JWK)."""
    return mint.generate_jwk("enc", "RSA-OAEP-256", "enc-1")


@pytest.fixture(scope="session")
def enc_jwk2() -> dict[str, Any]:
    """A second decryption key, for rotation."""
    return mint.generate_jwk("enc", "RSA-OAEP-256", "enc-2")


@pytest.fixture(scope="session")
def sig_jwk() -> dict[str, Any]:
    """The identity provider's RS256 signing key (private JWK)."""
    return mint.generate_jwk("sig", "RS256", "sig-1")


@pytest.fixture(scope="session")
def mint_token(enc_jwk: dict[str, Any], sig_jwk: dict[str, Any]) -> Callable[..., str]:
    """Mint a nested JWE (or plain JWS with ``encrypt=False``) for the test provider."""

    def make(
        *,
        encrypt: bool = True,
        sig: dict[str, Any] | None = None,
        enc: dict[str, Any] | None = None,
        ttl: int = 300,
        **claims: Any,
    ) -> str:
        data = mint.claims_for(ISSUER, AUDIENCE, claims.pop("sub", "alice"), ttl=ttl, extra=claims)
        token = mint.sign(data, sig or sig_jwk)
        return mint.encrypt(token, public(enc or enc_jwk)) if encrypt else token

    return make


@pytest.fixture
def key_dirs(tmp_path: Path, enc_jwk: dict[str, Any], sig_jwk: dict[str, Any]) -> Path:
    """``keys/decrypt`` (private enc JWK) and ``keys/verify`` (public JWKS) under tmp_path."""
    decrypt = tmp_path / "keys" / "decrypt"
    verify = tmp_path / "keys" / "verify"
    decrypt.mkdir(parents=True)
    verify.mkdir(parents=True)
    (decrypt / "enc-1.json").write_text(json.dumps(enc_jwk))
    (verify / "idp.json").write_text(json.dumps({"keys": [public(sig_jwk)]}))
    return tmp_path


@pytest.fixture
def write_config(key_dirs: Path) -> Callable[..., Path]:
    """Write the example config (examples/config.yaml) with overrides into tmp_path."""

    def write(**overrides: Any) -> Path:
        data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        data["listen"] = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"}
        data["logging"] = {"level": "info", "format": "json"}
        data["shutdown"] = {"drain_seconds": 0.2, "grace_seconds": 2}
        for key, value in overrides.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        path = key_dirs / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


Served = TypeVar("Served", bound=FakeKube)


@pytest.fixture
def use_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``use_kubeconfig(server, **user)``: point ``KUBECONFIG`` at a kubeconfig for the
    fake API ``server`` (outside a cluster), as an operator's shell or a pod's
    environment would; returns the server."""

    def use(server: Served, **user: Any) -> Served:
        path = server.write_kubeconfig(tmp_path / "kubeconfig", **user)
        monkeypatch.setenv("KUBECONFIG", str(path))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        return server

    return use


#: ``load_ready(**overrides)``: see :func:`load_ready`
LoadReady = Callable[..., tuple[Config, KeyStore]]


@pytest.fixture
def load_ready(write_config: Callable[..., Path]) -> Iterator[LoadReady]:
    """``load_ready(**overrides)``: write the config (as ``write_config``), load it, start
    its key sources and wait until they are ready; returns (config, key store). The
    sources stop after the test."""
    started: list[Sources] = []

    def load(**overrides: Any) -> tuple[Config, KeyStore]:
        config = config_mod.load(write_config(**overrides))
        sources = Sources.from_config(config)
        sources.start()
        started.append(sources)
        assert sources.store.wait_ready(5)
        return config, sources.store

    yield load
    while started:
        started.pop().stop()
