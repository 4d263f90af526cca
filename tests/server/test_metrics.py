"""Metrics scraped over real HTTP after a scripted mix of allows and every deny reason:
the counts are exact. The Check path is the real gRPC server."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from extauthz import config as config_mod
from extauthz import mint
from extauthz.errors import Reason
from extauthz.server.app import App
from tests.conftest import AUDIENCE, ISSUER, public
from tests.service_client import Client, wait_for


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def raw_jws(header: dict[str, Any], claims: dict[str, Any], sig: str = "c2ln") -> str:
    return f"{b64(json.dumps(header))}.{b64(json.dumps(claims))}.{sig}"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def checks(samples: dict[Any, float]) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for (name, labels), value in samples.items():
        if name == "extauthz_checks_total":
            d = dict(labels)
            counts[(d["decision"], d["reason"])] += int(value)
    return counts


@pytest.fixture
def app(write_config: Callable[..., Path]) -> Iterator[App]:
    instance = App(config_mod.load(write_config()))
    instance.start()
    assert instance.store.wait_ready(5)
    yield instance
    instance.stop_now()


def test_counts_are_exact_for_allows_and_every_deny_reason(
    app: App,
    write_config: Callable[..., Path],
    key_dirs: Path,
    enc_jwk: dict[str, Any],
    sig_jwk: dict[str, Any],
    mint_token: Callable[..., str],
) -> None:
    assert app.http is not None
    client = Client(app.grpc_port)
    before = scrape(app.http.port)
    enc_pub = public(enc_jwk)
    now_claims = mint.claims_for(ISSUER, AUDIENCE, "alice")
    other_sig = mint.generate_jwk("sig", "RS256", "sig-1")  # same kid, other key
    good = mint_token()
    tampered = good.split(".")
    tampered[3] = ("A" if tampered[3][0] != "A" else "B") + tampered[3][1:]
    unsigned_inner = raw_jws({"alg": "none"}, now_claims, "")
    script: list[tuple[str, dict[str, Any]]] = [
        ("ok", {"token": good}),
        ("ok", {"token": good}),  # cached: still counted
        ("anonymous", {"path": "/public/x"}),
        ("missing_token", {}),
        ("malformed", {"token": "a.b.c"}),
        ("too_large", {"token": "e" * 20000}),
        ("alg_not_allowed", {"token": raw_jws({"alg": "HS256"}, now_claims)}),
        (
            "unsupported_crit",
            {"token": raw_jws({"alg": "RS256", "crit": ["x"], "x": 1}, now_claims)},
        ),
        ("unknown_kid", {"token": mint_token(enc={**enc_jwk, "kid": "nope"})}),
        ("decrypt_failed", {"token": ".".join(tampered)}),
        ("bad_signature", {"token": mint_token(sig=other_sig)}),
        ("unsigned", {"token": mint.encrypt(unsigned_inner, enc_pub)}),
        ("expired", {"token": mint_token(ttl=-3600)}),
        (
            "not_yet_valid",
            {
                "token": mint.encrypt(
                    mint.sign(
                        mint.claims_for(ISSUER, AUDIENCE, "a", extra={"nbf": 4102444800}), sig_jwk
                    ),
                    enc_pub,
                )
            },
        ),
        (
            "bad_issuer",
            {
                "token": mint.encrypt(
                    mint.sign(mint.claims_for("https://evil", AUDIENCE, "a"), sig_jwk), enc_pub
                )
            },
        ),
        (
            "bad_audience",
            {
                "token": mint.encrypt(
                    mint.sign(mint.claims_for(ISSUER, "api://other", "a"), sig_jwk), enc_pub
                )
            },
        ),
        (
            "missing_claim",
            {
                "token": mint.encrypt(
                    mint.sign({k: v for k, v in now_claims.items() if k != "sub"}, sig_jwk), enc_pub
                )
            },
        ),
        (
            "invalid_claim",
            {"token": mint.encrypt(mint.sign({**now_claims, "exp": "tomorrow"}, sig_jwk), enc_pub)},
        ),
        ("insufficient_scope", {"token": good, "path": "/admin/x", "method": "POST"}),
        ("unknown_rule", {"token": good, "context": {"rule": "nope"}}),
        ("bad_path", {"token": good, "path": "/public/..;/admin"}),
    ]
    expected: Counter[tuple[str, str]] = Counter()
    for reason, call in script:
        token = call.pop("token", None)
        result = client.check(token, **call)
        assert result["metadata"]["reason"] == reason, (reason, result)
        expected[("allow" if reason in ("ok", "anonymous") else "deny", reason)] += 1

    # internal_error: an unexpected exception inside the pipeline is a deny, counted
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("unexpected")

    app.evaluator.cache.max_entries = 0
    app.evaluator.verifier.verify = boom  # type: ignore[method-assign]
    assert client.check(good)["metadata"]["reason"] == "internal_error"
    expected[("deny", "internal_error")] += 1

    # encryption_required and not_ready come from two more apps in the same process
    strict = App(
        config_mod.load(
            write_config(
                decryption={
                    "keys": [{"directory": str(key_dirs / "keys" / "decrypt")}],
                    "required": True,
                }
            )
        )
    )
    strict.start()
    try:
        assert strict.store.wait_ready(5)
        plain = mint_token(encrypt=False)
        assert Client(strict.grpc_port).check(plain)["metadata"]["reason"] == "encryption_required"
        expected[("deny", "encryption_required")] += 1
    finally:
        strict.stop_now()
    # revoked: one more app with a revocation list naming the token's jti
    revoked_dir = key_dirs / "revoked"
    revoked_dir.mkdir()
    entry = {"jti": "leaked-1", "exp": int(time.time()) + 600}
    (revoked_dir / "list.json").write_text(json.dumps({"revoked": [entry]}))
    revoking = App(
        config_mod.load(write_config(revocation={"sources": [{"directory": str(revoked_dir)}]}))
    )
    revoking.start()
    try:
        assert wait_for(revoking.is_ready, 5)
        leaked = mint_token(jti="leaked-1")
        assert Client(revoking.grpc_port).check(leaked)["metadata"]["reason"] == "revoked"
        expected[("deny", "revoked")] += 1
    finally:
        revoking.stop_now()
    shutil.rmtree(key_dirs / "keys" / "decrypt")
    waiting = App(config_mod.load(write_config()))
    waiting.start()
    try:
        assert Client(waiting.grpc_port).check(good)["metadata"]["reason"] == "not_ready"
        expected[("deny", "not_ready")] += 1
    finally:
        waiting.stop_now()

    after = scrape(app.http.port)
    delta = checks(after) - checks(before)
    assert delta == expected
    deny_reasons = {r for d, r in expected if d == "deny"}
    assert deny_reasons == {r.value for r in Reason} - {"ok", "anonymous"}
    hist = ("extauthz_check_duration_seconds_count", (("transport", "grpc"),))
    assert after[hist] - before.get(hist, 0) == sum(expected.values())
    cache_hits = ("extauthz_token_cache_total", (("result", "hit"),))
    assert after[cache_hits] - before.get(cache_hits, 0) >= 2


def test_key_and_reload_metrics_follow_the_sources(
    app: App, key_dirs: Path, enc_jwk2: dict[str, Any]
) -> None:
    assert app.http is not None
    samples = scrape(app.http.port)
    assert samples[("extauthz_keys", (("source", "directory"), ("use", "enc")))] == 1
    assert samples[("extauthz_key_source_up", (("source", "directory"),))] == 1
    reloads = ("extauthz_key_reloads_total", (("result", "success"), ("source", "directory")))
    before = samples[reloads]
    (key_dirs / "keys" / "decrypt" / "k2.json").write_text(json.dumps(enc_jwk2))
    assert wait_for(lambda: scrape(app.http.port)[reloads] > before, 5)  # type: ignore[union-attr]
    assert scrape(app.http.port)[("extauthz_keys", (("source", "directory"), ("use", "enc")))] == 2
    errors = ("extauthz_key_reloads_total", (("result", "error"), ("source", "directory")))
    errors_before = scrape(app.http.port).get(errors, 0)
    (key_dirs / "keys" / "decrypt" / "broken.json").write_text("{")
    assert wait_for(lambda: scrape(app.http.port).get(errors, 0) > errors_before, 5)  # type: ignore[union-attr]
    assert scrape(app.http.port)[("extauthz_keys", (("source", "directory"), ("use", "enc")))] == 2
    up = ("extauthz_key_source_up", (("source", "directory"),))
    assert scrape(app.http.port)[up] == 0  # down while a file is broken
    (key_dirs / "keys" / "decrypt" / "broken.json").unlink()
    assert wait_for(lambda: scrape(app.http.port)[up] == 1, 5)  # type: ignore[union-attr]
