"""Providers' keys from a JWKS URL, end to end: a local HTTPS identity provider, the
service, and a real Envoy. A nested JWE whose inner JWT is verified with the fetched
keys reaches the upstream; the IdP rotating its key is picked up by one refetch; the
service is NOT_SERVING until the IdP first answers, and keeps serving when it goes down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from grpc_health.v1 import health_pb2

from extauthz import config as config_mod
from extauthz import mint
from extauthz.server.app import App
from tests.conftest import AUDIENCE, ISSUER, public
from tests.envoy_harness import EchoUpstream, EnvoyProcess, http_get
from tests.jwks_server import JwksServer, signing_key
from tests.service_client import Client, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    server = JwksServer(trustme.CA()).start()
    yield server
    server.stop()


def nested(key: Any, kid: str, enc_jwk: dict[str, Any], **claims: Any) -> str:
    from joserfc import jws

    data = mint.claims_for(ISSUER, AUDIENCE, "carol", extra=claims)
    import json

    inner = jws.serialize_compact(
        {"alg": "ES256", "kid": kid, "typ": "JWT"}, json.dumps(data).encode(), key
    )
    return mint.encrypt(inner, public(enc_jwk))


def app_for(write_config: Callable[..., Path], idp: JwksServer, **jwks: Any) -> App:
    provider = {
        "name": "idp",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "keys": [
            {
                "jwks_uri": idp.jwks_url,
                "ca_file": str(idp.ca_file),
                "refetch_interval_seconds": 0.5,
                **jwks,
            }
        ],
        "claims_to_headers": {"sub": "x-auth-subject"},
    }
    app = App(config_mod.load(write_config(providers=[provider])))
    app.start()
    return app


def test_nested_jwe_verified_with_fetched_keys_through_envoy(
    write_config: Callable[..., Path], idp: JwksServer, enc_jwk: dict[str, Any], tmp_path: Path
) -> None:
    key1, pub1 = signing_key("idp-1")
    idp.set_keys([pub1])
    app = app_for(write_config, idp)
    try:
        assert app.store.wait_ready(10)
        with (
            EchoUpstream() as upstream,
            EnvoyProcess(
                tmp_path / "envoy", extauthz_port=app.grpc_port, upstream_port=upstream.port
            ) as envoy,
        ):
            token = nested(key1, "idp-1", enc_jwk)
            status, _, _ = http_get(envoy.url + "/orders", {"authorization": f"Bearer {token}"})
            assert status == 200, envoy.explain()
            assert upstream.requests[-1].header("x-auth-subject") == ["carol"]

            # the IdP rotates: a token with the new kid triggers exactly one refetch
            key2, pub2 = signing_key("idp-2")
            idp.set_keys([pub1, pub2])
            fetches = idp.count()
            wait_for(lambda: False, 0.6)  # past the refetch interval
            token2 = nested(key2, "idp-2", enc_jwk)
            status, _, _ = http_get(envoy.url + "/orders", {"authorization": f"Bearer {token2}"})
            assert status == 200, envoy.explain()
            assert idp.count() == fetches + 1

            # the IdP drops the old key: tokens signed with it stop working at once
            idp.set_keys([pub2])
            wait_for(lambda: False, 0.6)
            token3 = nested(key2, "idp-2", enc_jwk, n=3)
            assert http_get(envoy.url + "/x", {"authorization": f"Bearer {token3}"})[0] == 200
            # a refetch happens on the next unknown kid; force it with one
            stray = nested(key2, "nope", enc_jwk)
            assert http_get(envoy.url + "/x", {"authorization": f"Bearer {stray}"})[0] == 401
            assert wait_for(
                lambda: http_get(envoy.url + "/x", {"authorization": f"Bearer {token}"})[0] == 401,
                5,
            )
    finally:
        app.stop_now()


def test_not_serving_until_the_idp_answers_then_serving_through_an_outage(
    write_config: Callable[..., Path], idp: JwksServer, enc_jwk: dict[str, Any]
) -> None:
    key1, pub1 = signing_key("idp-1")
    idp.set_keys([pub1])
    idp.down = True
    app = app_for(write_config, idp)
    try:
        client = Client(app.grpc_port)
        wait_for(lambda: False, 1.0)
        assert client.status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert client.check(nested(key1, "idp-1", enc_jwk))["metadata"]["reason"] == "not_ready"
        idp.down = False
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING, 15)
        assert client.check(nested(key1, "idp-1", enc_jwk))["decision"] == "allow"
        idp.down = True
        stray = nested(key1, "unknown", enc_jwk)
        assert client.check(stray)["metadata"]["reason"] == "unknown_kid"  # fetch fails
        assert client.status() == health_pb2.HealthCheckResponse.SERVING
        assert client.check(nested(key1, "idp-1", enc_jwk, n=2))["decision"] == "allow"
        client.channel.close()
    finally:
        app.stop_now()
