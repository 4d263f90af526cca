"""Importing extauthz changes no process-wide state: third-party registries stay as they
were, and nothing starts until an explicit call (structlog's ``_config`` discipline)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import threading
import joserfc.jwe as jwe
before_algs = set(jwe.JWERegistry.algorithms["alg"])
before_threads = {t.name for t in threading.enumerate()}
import extauthz.cli, extauthz.mint, extauthz.server.app, extauthz.pipeline.algorithms
import extauthz.logging, extauthz.metrics
assert set(jwe.JWERegistry.algorithms["alg"]) == before_algs, "joserfc's registry changed"
assert {t.name for t in threading.enumerate()} == before_threads, "a thread started on import"
print("ok")
"""


def test_importing_the_package_has_no_side_effects() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_rsa_oaep_384_and_512_work_without_a_global_registration() -> None:
    """The longer OAEP hashes live in our own registries, not in joserfc's class."""
    from joserfc.jwe import JWERegistry

    from extauthz import mint
    from extauthz.keys.material import key_from_jwk
    from extauthz.pipeline import algorithms

    assert "RSA-OAEP-512" not in JWERegistry.algorithms["alg"]
    assert "RSA-OAEP-512" in algorithms.jwe_models()["alg"]
    key = key_from_jwk(mint.generate_jwk("enc", "RSA-OAEP-512", "k"), "test")
    token = mint.encrypt("a.b.c", key, alg="RSA-OAEP-512")
    assert token.count(".") == 4
    assert "RSA-OAEP-512" not in JWERegistry.algorithms["alg"]
