"""Resource bounds, one input dimension at a time, each tested exactly at its boundary.

For every dimension an attacker (or a broken peer) controls: a request exactly at the
limit is decided as usual (a valid token is allowed), and one unit over it gets the
documented deny reason — cheaply: the CPU spent refusing is measured too. The table
in docs/security.md lists each bound with its config key, default and test.

Where a bound still needs a product change, the test pins it as
``xfail(strict=True)`` with the change it needs (``NEEDS: ...``).
"""

from __future__ import annotations

import base64
import gc
import json
import time
import weakref
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from extauthz import config as config_mod
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz.client import build_request
from extauthz.errors import ConfigError, KeyMaterialError, Reason
from extauthz.keys import material
from extauthz.pipeline import tokens
from extauthz.pipeline.request import CheckInput
from extauthz.server.app import MAX_REQUEST_BYTES, App
from extauthz.server.authz import METHOD, to_input
from tests.pipeline import jose_raw
from tests.pipeline.support import (
    Env,
    Kit,
    b64,
    claims,
    compact_json,
    encrypt,
    generated,
    nested,
    oct_jwk,
    sign,
    unb64,
)
from tests.pipeline.support import key as key_of
from tests.service_client import wait_for

NewEnv = Callable[..., Env]

#: CPU seconds a refusal may cost: bounds are checked before the expensive work
CHEAP = 0.02


def timed(env: Env, request: CheckInput) -> tuple[Reason, float]:
    """(reason, CPU seconds of this thread) of one Check, garbage collection excluded."""
    gc.disable()
    try:
        start = time.thread_time()
        decision, _ = env.evaluator.check(request)
        return decision.reason, time.thread_time() - start
    finally:
        gc.enable()


def reason(env: Env, token: str, **kwargs: Any) -> Reason:
    return env.check(token, **kwargs).reason


def exact(
    build: Callable[[int, int], str], target: int, measure: Callable[[str], int] = len
) -> str:
    """A token built by ``build(a, b)`` whose ``measure`` is exactly ``target``.

    ``a`` pads the payload, ``b`` (0..3) a second field (a header member), so that every
    length is reachable even though base64 lengths skip one residue modulo 4.
    """
    slope = None
    a = 0
    for _ in range(12):
        base = measure(build(a, 0))
        if base == target:
            return build(a, 0)
        probe = measure(build(a + 64, 0))
        slope = (probe - base) / 64
        a = max(0, a + int((target - base) / slope) - 2)
        for da in range(6):
            for b in range(4):
                token = build(a + da, b)
                if measure(token) == target:
                    return token
    raise AssertionError(f"no token of exactly {target} found")


@pytest.fixture(scope="module")
def env(new_henv: NewEnv) -> Env:
    return new_henv()


# -- token.max_bytes -----------------------------------------------------------------------


def test_token_of_exactly_max_bytes_is_allowed_and_one_more_byte_is_too_large(
    hkit: Kit, env: Env
) -> None:
    """Default ``token.max_bytes`` (16384): a valid nested token of exactly 16384
    characters is allowed; 16385 characters is ``too_large``, before any parsing."""
    cap = env.config.token.max_bytes
    assert cap == 16384

    def build(a: int, b: int) -> str:
        return nested(hkit, claims(pad="x" * a), header={"x": "y" * b})

    token = exact(build, cap)
    assert reason(env, token) is Reason.OK
    over, cpu = timed(env, env.request(token + "A"))
    assert over is Reason.TOO_LARGE
    assert cpu < CHEAP
    assert reason(env, "!" * (cap + 1)) is Reason.TOO_LARGE  # not "malformed": not parsed


def test_inflated_inner_token_is_bounded_by_max_bytes_too(hkit: Kit, new_henv: NewEnv) -> None:
    """With ``zip`` on, the inflated inner token must fit ``token.max_bytes`` as well:
    exactly 16384 characters inflated is allowed, 16385 is ``too_large``."""
    env = new_henv({"decryption": {"zip_max_bytes": 65536}})

    def inner(a: int, b: int) -> str:
        return sign(claims(pad="x" * a), hkit.sig_rsa, header={"x": "y" * b})

    at = exact(inner, 16384)
    over = exact(inner, 16385)
    for plaintext, expected in ((at, Reason.OK), (over, Reason.TOO_LARGE)):
        token = encrypt(plaintext, hkit.enc_rsa, header={"zip": "DEF"})
        assert len(token) < 4096  # the pad compresses: only the inflated size is at stake
        assert reason(env, token) is expected


# -- request headers: count and total size ------------------------------------------------------


@pytest.mark.parametrize("form", ["map", "raw"])
def test_header_count_at_max_headers_is_decided_and_one_more_is_too_large(
    hkit: Kit, env: Env, form: str
) -> None:
    """``token.max_headers`` (256), both of Envoy's header forms."""
    limit = env.config.token.max_headers
    assert limit == 256
    token = nested(hkit)

    def request(count: int) -> CheckInput:
        pairs = [("authorization", f"Bearer {token}")]
        pairs += [(f"x-h{i}", "v") for i in range(count - 1)]
        if form == "map":
            return CheckInput(headers=dict(pairs))
        return CheckInput(raw_headers=tuple(pairs))

    assert timed(env, request(limit))[0] is Reason.OK
    over, cpu = timed(env, request(limit + 1))
    assert over is Reason.TOO_LARGE
    assert cpu < CHEAP


def test_header_bytes_at_max_header_bytes_are_decided_and_one_more_is_too_large(
    hkit: Kit, env: Env
) -> None:
    """``token.max_header_bytes`` (65536): names plus values, counted at the pipeline."""
    limit = env.config.token.max_header_bytes
    assert limit == 65536
    auth = f"Bearer {nested(hkit)}"
    used = len("authorization") + len(auth) + len("x-filler")

    def request(total: int) -> CheckInput:
        return CheckInput(headers={"authorization": auth, "x-filler": "f" * (total - used)})

    assert timed(env, request(limit))[0] is Reason.OK
    over, cpu = timed(env, request(limit + 1))
    assert over is Reason.TOO_LARGE
    assert cpu < CHEAP


def test_path_of_max_header_bytes_is_matched_and_one_more_is_too_large_before_any_rule(
    hkit: Kit, new_henv: NewEnv
) -> None:
    """The path is bounded by ``token.max_header_bytes`` too, and the bound is applied
    before any rule (a ``path_regex``) runs: one byte over is ``too_large`` under the
    ``default`` rule, whatever rule the path would have matched, for little CPU."""
    env = new_henv({"rules": [
        {"name": "p", "path_regex": r"/users/(\w+\.?)+/profile", "require_scopes": ["p"]},
    ]})  # fmt: skip
    limit = env.config.token.max_header_bytes
    auth = {"authorization": f"Bearer {sign(claims(), hkit.sig_rsa)}"}

    def request(size: int) -> CheckInput:
        path = "/users/" + "a" * (size - len("/users/") - 1) + "!"
        assert len(path) == size
        return CheckInput(path=path, headers=auth)

    assert timed(env, request(limit))[0] is Reason.OK
    gc.disable()
    try:
        start = time.thread_time()
        decision, _ = env.evaluator.check(request(limit + 1))
        cpu = time.thread_time() - start
    finally:
        gc.enable()
    assert (decision.reason, decision.rule) == (Reason.TOO_LARGE, "default")
    assert cpu < CHEAP


def test_header_bytes_at_the_grpc_edge_are_the_serialized_size(hkit: Kit, new_henv: NewEnv) -> None:
    """At the edge, the bound applies to the serialized size of the HTTP attributes
    (what Envoy sent, in bytes): exactly that size is decided, one byte less of cap is
    ``too_large``."""
    token = nested(hkit)
    check = to_input(build_request({"authorization": f"Bearer {token}", "x-f": "é" * 600}))
    size = check.header_bytes
    assert size > 2048
    assert new_henv({"token": {"max_header_bytes": size}}).evaluator.check(check)[0].allowed
    refused = new_henv({"token": {"max_header_bytes": size - 1}}).evaluator.check(check)[0]
    assert refused.reason is Reason.TOO_LARGE


# -- protected header size, JSON numbers and nesting ---------------------------------------------


def _padded_header_token(hkit: Kit, wrap: bool) -> Callable[[int, int], str]:
    """Builds a valid token whose protected header carries ``a`` + ``b`` pad characters."""

    def build(a: int, b: int) -> str:
        pad = {"x": "y" * a, "z": "w" * b}
        if wrap:
            return encrypt(sign(claims(), hkit.sig_rsa), hkit.enc_rsa, header=pad)
        return sign(claims(), hkit.sig_rsa, header=pad)

    return build


def _head(token: str) -> int:
    return len(token.split(".")[0])


@pytest.mark.parametrize("wrap", [False, True], ids=["jws", "jwe"])
def test_protected_header_over_4096_is_malformed_before_any_crypto(
    hkit: Kit, env: Env, wrap: bool
) -> None:
    """A protected header segment over 4096 characters (the next possible size is 4098:
    3073 bytes of JSON) is ``malformed``, before any cryptography."""
    assert tokens.MAX_HEADER_BYTES == 4096
    token = exact(_padded_header_token(hkit, wrap), 4098, _head)
    got, cpu = timed(env, env.request(token))
    assert got is Reason.MALFORMED
    assert cpu < CHEAP


@pytest.mark.parametrize("wrap", [False, True], ids=["jws", "jwe"])
def test_protected_header_of_exactly_4096_is_accepted(hkit: Kit, env: Env, wrap: bool) -> None:
    """At the documented bound (4096 characters, 3072 bytes of JSON) a valid token is
    allowed: joserfc's own, smaller header caps (512 for JWS, 1024 for JWE) are raised
    to ours by the policy registries."""
    token = exact(_padded_header_token(hkit, wrap), 4096, _head)
    assert reason(env, token) is Reason.OK


def test_a_trusted_token_carrying_an_x5c_chain_is_allowed(hkit: Kit, env: Env) -> None:
    """Some issuers put their certificate chain (``x5c``) in every JWS header. It is
    never trusted but must not make a valid token fail: with one 2048-bit
    certificate the header is ~1.7 KB encoded."""
    chain = [base64.b64encode(pem_to_der(trustme.CA().cert_pem.bytes())).decode()]
    token = sign(claims(), hkit.sig_rsa, header={"x5c": chain})
    assert 512 < _head(token) <= tokens.MAX_HEADER_BYTES
    assert reason(env, token) is Reason.OK


def pem_to_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9" * 20, Reason.OK),  # 20 characters: the longest integer accepted
        ("-" + "9" * 19, Reason.OK),
        ("1" + "0" * 20, Reason.MALFORMED),  # 21 characters
        ("-" + "9" * 20, Reason.MALFORMED),
        ("0." + "1" * 38, Reason.OK),  # 40 characters: the longest number with a fraction
        ("0." + "1" * 39, Reason.MALFORMED),
        ("1e308", Reason.OK),
        ("1e309", Reason.MALFORMED),  # overflows to infinity
    ],
)
@pytest.mark.parametrize("where", ["claims", "header"])
def test_json_number_size_bound(
    hkit: Kit, env: Env, text: str, expected: Reason, where: str
) -> None:
    """Integers over 20 characters, numbers over 40, and overflow are ``malformed``,
    in the claims and in the protected header alike."""
    base = compact_json(claims())
    if where == "claims":
        token = sign(f'{base[:-1]},"n":{text}}}'.encode(), hkit.sig_rsa)
    else:
        header = f'{{"alg":"RS256","kid":"{hkit.sig_rsa.kid}","n":{text}}}'
        signer = hkit.sig_rsa.jwk.get_op_key("sign")
        token = jose_raw.jws_rs256(header, base.encode(), signer)
    assert reason(env, token) is expected


def deep(depth: int) -> str:
    """A JSON array nested ``depth`` levels (``[[...]]``)."""
    return "[" * depth + "]" * depth


def claims_nested(depth: int) -> bytes:
    """Valid claims whose nesting depth is ``depth`` (the claims object itself is 1)."""
    base = compact_json(claims())
    return f'{base[:-1]},"deep":{deep(depth - 1)}}}'.encode()


#: the JSON nesting bound (objects and arrays; the top level is 1)
MAX_DEPTH = material.MAX_JSON_DEPTH


def test_claims_at_the_depth_limit_are_accepted(hkit: Kit, env: Env) -> None:
    """Nesting as deep as the bound (32, the claims object included) is accepted; it
    is far beyond any real token (Keycloak's ``resource_access.<client>.roles`` is 4)."""
    assert MAX_DEPTH == 32
    token = encrypt(sign(claims_nested(MAX_DEPTH), hkit.sig_rsa), hkit.enc_rsa)
    assert reason(env, token) is Reason.OK


@pytest.mark.parametrize("depth", [900, 985, 5000])
def test_deeply_nested_claims_under_the_size_cap_cost_little_and_never_crash(
    hkit: Kit, env: Env, depth: int
) -> None:
    """Far deeper than the bound, up to what the size cap allows: ``malformed`` (over
    ~985 levels the parser's RecursionError is what refuses it), for little CPU, never
    ``internal_error``."""
    token = sign(claims_nested(depth), hkit.sig_rsa)
    assert len(token) <= env.config.token.max_bytes
    got, cpu = timed(env, env.request(token))
    assert got is Reason.MALFORMED
    assert cpu < 0.05


@pytest.mark.parametrize("where", ["claims", "header"])
def test_json_nested_one_over_the_limit_is_malformed(hkit: Kit, env: Env, where: str) -> None:
    """``material.MAX_JSON_DEPTH`` (32): one level deeper is ``malformed``, in the claims
    and in a protected header alike."""
    if where == "claims":
        token = sign(claims_nested(MAX_DEPTH + 1), hkit.sig_rsa)
    else:
        header = f'{{"alg":"RS256","kid":"{hkit.sig_rsa.kid}","x":{deep(MAX_DEPTH)}}}'
        signer = hkit.sig_rsa.jwk.get_op_key("sign")
        token = jose_raw.jws_rs256(header, compact_json(claims()).encode(), signer)
    assert reason(env, token) is Reason.MALFORMED


# -- PBES2 iterations ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
def test_pbes2_count_at_the_cap_is_decrypted_and_one_more_is_too_large(
    hkit: Kit, new_henv: NewEnv
) -> None:
    """``decryption.pbes2_max_iterations``: ``p2c`` equal to the cap decrypts; one more
    is ``too_large``, and even 2^31-1 costs nothing (refused before any derivation)."""
    cap = 1000
    env = new_henv({"decryption": {
        "key_algorithms": ["RSA-OAEP-256", "PBES2-HS256+A128KW"], "pbes2_max_iterations": cap,
    }})  # fmt: skip
    inner = sign(claims(), hkit.sig_rsa)

    def token(p2c: int) -> str:
        return encrypt(inner, hkit.enc_oct[256], "PBES2-HS256+A128KW", header={"p2c": p2c})

    assert reason(env, token(cap)) is Reason.OK
    assert reason(env, token(cap + 1)) is Reason.TOO_LARGE
    huge = token(cap).split(".")
    header = json.loads(unb64(huge[0]))
    header["p2c"] = 2**31 - 1
    huge[0] = b64(compact_json(header))
    got, cpu = timed(env, env.request(".".join(huge)))
    assert got is Reason.TOO_LARGE
    assert cpu < CHEAP


def test_a_pbes2_cap_above_what_joserfc_decrypts_is_a_config_error() -> None:
    data = {
        "apiVersion": "extauthz/v1",
        "decryption": {"keys": [{"directory": "/k"}], "pbes2_max_iterations": 300_001,
                       "key_algorithms": ["PBES2-HS256+A128KW"]},
        "providers": [{"name": "p", "issuer": "https://i", "keys": [{"directory": "/v"}]}],
    }  # fmt: skip
    with pytest.raises(ConfigError) as error:
        config_mod.parse(data, Path("/"))
    assert error.value.path == "decryption.pbes2_max_iterations"


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
def test_pbes2_is_refused_unless_enabled(hkit: Kit, env: Env) -> None:
    """PBES2 is off by default (not in ``decryption.key_algorithms``)."""
    inner = sign(claims(), hkit.sig_rsa)
    token = encrypt(inner, hkit.enc_oct[256], "PBES2-HS256+A128KW", header={"p2c": 1000})
    assert reason(env, token) is Reason.ALG_NOT_ALLOWED


# -- zip: DEF --------------------------------------------------------------------------------------


def test_inflated_size_at_zip_max_bytes_is_allowed_and_one_more_is_too_large(
    hkit: Kit, new_henv: NewEnv
) -> None:
    """``decryption.zip_max_bytes``: a plaintext inflating to exactly the cap decrypts;
    a cap one byte smaller makes the same token ``too_large``."""
    inner = sign(claims(pad="z" * 3000), hkit.sig_rsa)
    token = encrypt(inner, hkit.enc_rsa, header={"zip": "DEF"})
    at = new_henv({"decryption": {"zip_max_bytes": len(inner)}})
    under = new_henv({"decryption": {"zip_max_bytes": len(inner) - 1}})
    assert reason(at, token) is Reason.OK
    assert reason(under, token) is Reason.TOO_LARGE
    assert reason(new_henv(), token) is Reason.ALG_NOT_ALLOWED  # zip is off by default


def test_a_zip_bomb_is_cut_at_the_cap_for_little_cpu(hkit: Kit, new_henv: NewEnv) -> None:
    """~10 KiB of DEFLATE that would inflate to 10 MiB, validly encrypted to the
    service's public key (anyone can do that): ``too_large`` after inflating at most
    ``zip_max_bytes``."""
    env = new_henv({"decryption": {"zip_max_bytes": 65536}})
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = bomb.compress(b"\0" * (10 << 20)) + bomb.flush()
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "zip": "DEF", "kid": hkit.enc_rsa.kid}
    public = hkit.enc_rsa.jwk.get_op_key("encrypt")
    token = jose_raw.jwe_rsa_oaep(header, raw, public, "RSA-OAEP-256", "A256GCM")
    assert len(token) <= env.config.token.max_bytes
    got, cpu = timed(env, env.request(token))
    assert got is Reason.TOO_LARGE
    assert cpu < 0.05


# -- claim header values -----------------------------------------------------------------------


@pytest.mark.parametrize("char", ["a", "é"], ids=["ascii", "two-byte"])
def test_claim_header_value_at_the_limit_is_set_and_one_byte_more_is_dropped(
    hkit: Kit, env: Env, char: str
) -> None:
    """``upstream.max_header_value_bytes`` (8192, in UTF-8 bytes): a value of exactly
    8192 bytes is set; 8193 is dropped, removed upstream, and reported as dropped."""
    limit = env.config.upstream.max_header_value_bytes
    assert limit == 8192
    per = len(char.encode())

    def decide(value: str) -> Any:
        payload = json.dumps(claims(email=value), separators=(",", ":"), ensure_ascii=False)
        return env.check(sign(payload.encode(), hkit.sig_rsa))

    at = decide(char * (limit // per))
    assert at.allowed
    assert dict(at.upstream_headers)["x-auth-email"] == char * (limit // per)
    over = decide(char * (limit // per) + "a")
    assert over.allowed
    assert "x-auth-email" not in dict(over.upstream_headers)
    assert "x-auth-email" in over.remove_headers
    assert over.dropped == ("x-auth-email",)


def test_claims_header_at_the_limit_is_set_and_one_byte_more_is_dropped(
    hkit: Kit, new_henv: NewEnv
) -> None:
    """``upstream.claims_header`` obeys the same limit (base64url characters)."""
    token = nested(hkit, claims(pad="p" * 200))
    wide = new_henv({"upstream": {"claims_header": "x-auth-claims"}}).check(token)
    size = len(dict(wide.upstream_headers)["x-auth-claims"])
    at = new_henv({"upstream": {"claims_header": "x-auth-claims",
                                "max_header_value_bytes": size}}).check(token)  # fmt: skip
    over = new_henv({"upstream": {"claims_header": "x-auth-claims",
                                  "max_header_value_bytes": size - 1}}).check(token)  # fmt: skip
    assert "x-auth-claims" in dict(at.upstream_headers)
    assert "x-auth-claims" not in dict(over.upstream_headers)
    assert "x-auth-claims" in over.remove_headers


# -- keys tried for a token without kid -----------------------------------------------------------


def test_kidless_jws_tries_at_most_max_keys_tried(hkit: Kit, new_henv: NewEnv) -> None:
    """``token.max_keys_tried`` (3): the signer third among the fitting keys verifies;
    fourth is ``bad_signature`` (never tried), unless the bound is raised to 4."""
    extra = list(hkit.extra_rsa)
    env = new_henv(idp_keys=extra)
    assert env.config.token.max_keys_tried == 3
    third = sign(claims(), extra[2], "RS256", kid=False)
    fourth = sign(claims(), extra[3], "RS256", kid=False)
    assert reason(env, third) is Reason.OK
    assert reason(env, fourth) is Reason.BAD_SIGNATURE
    assert reason(new_henv({"token": {"max_keys_tried": 4}}, idp_keys=extra), fourth) is Reason.OK


@pytest.fixture(scope="module")
def ec_enc_keys() -> list[Any]:
    """64 EC decryption keys (cheap to make), no ``alg``: all fit ``ECDH-ES``."""
    return [generated("enc", "ECDH-ES", f"ec-{i}", pin_alg=False) for i in range(64)]


def test_kidless_jwe_tries_at_most_max_keys_tried_whatever_the_key_count(
    hkit: Kit, new_henv: NewEnv, ec_enc_keys: list[Any]
) -> None:
    """With 64 fitting decryption keys, a kid-less JWE costs at most 3 attempts: the
    third key decrypts, the fourth is ``decrypt_failed``, the 64th too, for little CPU."""
    env = new_henv(decryption_keys=ec_enc_keys)
    inner = sign(claims(), hkit.sig_rsa)

    def for_key(index: int) -> str:
        return encrypt(inner, ec_enc_keys[index], "ECDH-ES", kid=False)

    assert reason(env, for_key(2)) is Reason.OK
    assert reason(env, for_key(3)) is Reason.DECRYPT_FAILED
    got, cpu = timed(env, env.request(for_key(63)))
    assert got is Reason.DECRYPT_FAILED
    assert cpu < 0.05


# -- memory: cache, memo, per-entry decisions ------------------------------------------------------


def test_memoized_rule_lookups_are_bounded(new_henv: NewEnv) -> None:
    """Rule lookups are memoized per (method, path readings); clients choose paths, so
    the memo is cleared when full (4096 entries) and never grows past it."""
    from extauthz.pipeline import policy

    env = new_henv({"rules": [{"name": "public", "path_prefix": "/public/", "anonymous": True}]})
    for index in range(policy._MATCHED_MAX + 500):
        assert env.check(path=f"/public/{index}").allowed
        assert len(env.evaluator.policy._matched) <= policy._MATCHED_MAX
    assert env.check(path="/public/again").rule == "public"


def test_token_cache_holds_at_most_max_entries(hkit: Kit, new_henv: NewEnv) -> None:
    """``cache.max_entries``: N distinct tokens fill it; the N+1th evicts the oldest."""
    env = new_henv({"cache": {"max_entries": 3}})
    tokens_ = [sign(claims(f"user-{i}"), hkit.sig_rsa) for i in range(4)]
    for token in tokens_[:3]:
        assert env.check(token).allowed
    assert len(env.evaluator.cache) == 3
    assert env.check(tokens_[3]).allowed
    assert len(env.evaluator.cache) == 3


def test_memoized_denies_are_bounded(new_henv: NewEnv) -> None:
    """Deny decisions are memoized by (reason, rule, detail); the detail may echo an
    attacker-chosen ``alg``, so the memo stops growing at 1024 entries."""
    env = new_henv()
    for i in range(1500):
        header = b64(compact_json({"alg": f"X{i}", "enc": "A256GCM"}))
        assert reason(env, f"{header}.AAAA.AAAA.AAAA.AAAA") is Reason.ALG_NOT_ALLOWED
    assert len(env.evaluator.denials._memo) == 1024


def test_decisions_memoized_per_cached_token_are_bounded(hkit: Kit, new_henv: NewEnv) -> None:
    """One token meeting 40 distinct rules: every decision right, and the cache entry
    keeps a bounded number of memoized decisions (one slot today; at most 16 before)."""
    rules = [{"name": f"r{i}", "path_prefix": f"/never-{i}/"} for i in range(40)]
    env = new_henv({"rules": rules})
    token = nested(hkit)
    for i in range(40):
        decision = env.check(token, context={"rule": f"r{i}"})
        assert decision.allowed
        assert decision.rule == f"r{i}"
    (entry,) = env.evaluator.cache._data.values()
    held = entry.decisions if hasattr(entry, "decisions") else [entry.memo]
    assert len(held) <= 16


# -- key material (trusted sources, bounded anyway) ------------------------------------------------


def test_key_material_of_exactly_1_mib_parses_and_one_byte_more_is_refused() -> None:
    """``MAX_MATERIAL_BYTES`` (1 MiB) per key file, Secret entry or JWKS document."""
    jwk = json.dumps(oct_jwk(256, "k")).encode()
    at = jwk + b" " * (material.MAX_MATERIAL_BYTES - len(jwk))
    assert len(material.parse_key_material(at, "test")) == 1
    with pytest.raises(KeyMaterialError):
        material.parse_key_material(at + b" ", "test")


def test_a_jwks_of_256_keys_loads_and_257_is_refused() -> None:
    """``MAX_KEYS_PER_SET`` (256) keys per JWKS."""

    def jwks(count: int) -> bytes:
        return json.dumps({"keys": [oct_jwk(128, f"k{i}") for i in range(count)]}).encode()

    assert len(material.parse_key_material(jwks(256), "test")) == 256
    with pytest.raises(KeyMaterialError):
        material.parse_key_material(jwks(257), "test")
    assert key_of(oct_jwk(128, "x")).kty == "oct"


def test_a_superseded_key_version_is_released() -> None:
    """Once a newer version of the same Secret entry / file is parsed, the previous
    version's keys (a removed private key among them) are no longer held anywhere."""
    origin = "auth/extauthz-decryption-keys[jwks.json]"

    def version(i: int) -> bytes:
        return json.dumps({"keys": [oct_jwk(256, f"rotated-{i}")]}).encode()

    memo = material.MaterialMemo()
    first = version(1)
    old = memo.parse(first, origin)
    assert memo.parse(first, origin)[0] is old[0]  # unchanged bytes: not parsed again
    released = weakref.ref(old[0].jwk)
    del old
    memo.parse(version(2), origin)
    gc.collect()
    assert released() is None
    memo.forget("auth/extauthz-decryption-keys[")
    assert len(memo) == 0


# -- the gRPC message ----------------------------------------------------------------------------


def test_a_check_request_of_exactly_1_mib_is_answered_and_larger_is_refused(
    write_config: Callable[..., Path],
) -> None:
    """``grpc.max_receive_message_length`` (1 MiB): a CheckRequest of exactly 1 MiB is
    answered (here: ``too_large`` for its headers); one byte more is refused by gRPC
    with RESOURCE_EXHAUSTED before any of our code runs (Envoy: ``status_on_error``)."""
    app = App(config_mod.load(write_config()))
    app.start()
    channel = grpc.insecure_channel(
        f"127.0.0.1:{app.grpc_port}", options=[("grpc.max_send_message_length", 4 << 20)]
    )
    try:
        assert wait_for(app.is_ready, 10)
        call = channel.unary_unary(
            METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )

        def sized(total: int) -> Any:
            request = build_request({"x-pad": ""})
            pad = total - request.ByteSize()
            while True:
                request.attributes.request.http.headers["x-pad"] = "p" * pad
                size = request.ByteSize()
                if size == total:
                    return request
                pad += total - size

        answer = call(sized(MAX_REQUEST_BYTES), timeout=10)
        assert answer.denied_response.status.code == 401
        with pytest.raises(grpc.RpcError) as refused:
            call(sized(MAX_REQUEST_BYTES + 1), timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        channel.close()
        app.stop_now()
