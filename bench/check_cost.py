"""Cost of one Check in-process, next to bare joserfc decrypt+verify on the same tokens.

    python bench/check_cost.py [--n 300]

Three workloads: (a) one token checked over and over (the verified-token cache),
(b) unique nested RSA-OAEP-256 + RS256 tokens, (c) unique ECDH-ES + ES256 tokens.
For each: Checks/s and CPU µs per Check through the whole edge (protobuf
CheckRequest bytes -> Authorizer -> CheckResponse bytes, decision log included),
and the same tokens through bare ``joserfc.jwe.decrypt_compact`` +
``joserfc.jws.deserialize_compact`` + ``JWTClaimsRegistry.validate`` (no policy, no
protobuf, no logging) measured in the same run. Ratios are what to compare: the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog
from joserfc import jwe, jws, jwt
from joserfc.jwa import JWERegistry, JWSRegistry

from extauthz import mint
from extauthz.client import build_request
from extauthz.config import Config, ProviderConfig
from extauthz.keys.keyset import DECRYPTION, KeyStore, provider_purpose
from extauthz.keys.material import key_from_jwk
from extauthz.keys.sources.static import StaticSource
from extauthz.pipeline.evaluate import Evaluator
from extauthz.server.authz import Authorizer

ISSUER = "https://idp.bench"
PRIVATE = ("d", "p", "q", "dp", "dq", "qi")


def measure(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
    """(calls per wall second, CPU µs per call) of ``fn(i)`` for i in range(n)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, cpu / n * 1e6


def setup(enc_alg: str, sig_alg: str) -> tuple[Authorizer, Any, Any, Callable[[], str]]:
    enc = key_from_jwk(mint.generate_jwk("enc", enc_alg, "e1"), "bench")
    sig = key_from_jwk(mint.generate_jwk("sig", sig_alg, "s1"), "bench")
    config = Config(
        providers=(
            ProviderConfig(
                name="idp",
                issuer=ISSUER,
                audiences=("api",),
                keys=(),
                claims_to_headers=(("sub", "x-auth-subject"), ("scope", "x-auth-scope")),
            ),
        )
    )
    store = KeyStore()
    store.attach(DECRYPTION, StaticSource([enc])).publish([enc])
    store.attach(provider_purpose("idp"), StaticSource([sig])).publish([sig])
    authorizer = Authorizer(Evaluator(config, store), config.logging)
    counter = iter(range(10**9))

    def token() -> str:
        claims = mint.claims_for(ISSUER, "api", f"user-{next(counter)}", extra={"scope": "a b"})
        return mint.encrypt(mint.sign(claims, sig), enc, enc=("A256GCM"))

    return authorizer, enc, sig, token


def workload(
    label: str, enc_alg: str, sig_alg: str, n: int
) -> list[tuple[str, float, float, float, float]]:
    """Rows for one algorithm pair: unique tokens (and, for RSA, a cached token)."""
    from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb

    authorizer, enc, sig, token = setup(enc_alg, sig_alg)
    tokens = [token() for _ in range(n)]
    requests = [
        build_request({"authorization": f"Bearer {t}"}, "/orders").SerializeToString()
        for t in tokens
    ]

    def via_edge(i: int) -> bytes:
        wire = authorizer.check(pb.CheckRequest.FromString(requests[i]))
        assert wire[:2] != b"\n\x02", "deny"  # CheckResponse.status with a code
        return wire

    jwe_reg = JWERegistry(algorithms=[enc_alg, "A256GCM"])
    jws_reg = JWSRegistry(algorithms=[sig_alg])
    claims_reg = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": "api"},
        exp={"essential": True},
        leeway=30,
    )

    def bare(i: int) -> None:
        """joserfc alone: decrypt, verify, parse and validate the claims."""
        inner = jwe.decrypt_compact(tokens[i], enc.jwk, registry=jwe_reg).plaintext
        assert inner is not None
        signed = jws.deserialize_compact(inner, sig.jwk, registry=jws_reg)
        claims_reg.validate(json.loads(signed.payload))

    base_rate, base_cpu = measure(bare, n)
    rate, cpu = measure(via_edge, n)
    rows = [(f"unique {label}", rate, cpu, base_rate, base_cpu)]
    if enc_alg.startswith("RSA"):
        cached_rate, cached_cpu = measure(lambda i: via_edge(0), n * 20)
        rows.insert(0, (f"cached {label}", cached_rate, cached_cpu, base_rate, base_cpu))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300, help="unique tokens per workload")
    args = parser.parse_args()
    # decision logs go to an in-memory sink: their cost counts, the terminal's does not
    sink = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=sink),
        cache_logger_on_first_use=True,
    )
    logging.disable(logging.CRITICAL)
    rows: list[tuple[str, float, float, float, float]] = []
    for label, enc_alg, sig_alg in (
        ("RSA-OAEP-256 + RS256", "RSA-OAEP-256", "RS256"),
        ("ECDH-ES + ES256", "ECDH-ES", "ES256"),
    ):
        rows.extend(workload(label, enc_alg, sig_alg, args.n))
    print(f"command: {' '.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}\n")
    print(
        "| workload | Checks/s | CPU µs/Check | bare joserfc /s | bare CPU µs | Checks/s ÷ bare |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, rate, cpu, brate, bcpu in rows:
        print(
            f"| {name} | {rate:,.0f} | {cpu:,.0f} | {brate:,.0f} | {bcpu:,.0f} | "
            f"{rate / brate:.2f}× |"
        )


if __name__ == "__main__":
    main()
