"""Interop: tokens from a second JOSE implementation, and published RFC example vectors.

Tokens are minted by jwcrypto (test-only), never by joserfc or ``extauthz.mint``, for
every default algorithm. jwcrypto has no RSA-OAEP-384/512, so those JWEs are
built with ``cryptography`` directly per RFC 7516 §5.1 (``jose_raw``): random CEK,
OAEP-SHA-384/512 wrap, AES-GCM or AES-CBC+HMAC with the encoded protected header as AAD.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from jwcrypto import jwe as cjwe
from jwcrypto import jwk as cjwk
from jwcrypto import jws as cjws

from extauthz.config import (
    DEFAULT_CONTENT_ALGORITHMS,
    DEFAULT_KEY_ALGORITHMS,
    DEFAULT_SIGNATURE_ALGORITHMS,
)
from extauthz.errors import Reason
from extauthz.keys.material import Key

from . import vectors
from .jose_raw import CEK_BYTES, jwe_rsa_oaep
from .support import (
    AUDIENCE,
    ISSUER,
    Env,
    Kit,
    assert_allow_invariants,
    claims,
    flip,
    header_of,
    jwk_dict,
    key,
    replace_segment,
    segments,
)

NewEnv = Callable[..., Env]

SIGNATURE_ALGS = list(DEFAULT_SIGNATURE_ALGORITHMS)
KEY_ALGS = DEFAULT_KEY_ALGORITHMS
CONTENT_ALGS = DEFAULT_CONTENT_ALGORITHMS
_JWKS: dict[tuple[str, bool], cjwk.JWK] = {}


def test_the_matrix_covers_every_default_algorithm() -> None:
    """The default allow-lists are what this module iterates over."""
    assert set(KEY_ALGS) == {
        "RSA-OAEP-256",
        "RSA-OAEP-384",
        "RSA-OAEP-512",
        "RSA-OAEP",
        "ECDH-ES",
        "ECDH-ES+A128KW",
        "ECDH-ES+A256KW",
        "A128KW",
        "A256KW",
        "A256GCMKW",
        "dir",
    }
    assert set(CONTENT_ALGS) == {
        "A128GCM",
        "A192GCM",
        "A256GCM",
        "A128CBC-HS256",
        "A192CBC-HS384",
        "A256CBC-HS512",
    }
    assert set(DEFAULT_SIGNATURE_ALGORITHMS) == {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }


def theirs(k: Key, *, private: bool) -> cjwk.JWK:
    """Our key as a jwcrypto JWK (memoized: private RSA import is slow)."""
    memo = (k.kid, private)
    if memo not in _JWKS:
        _JWKS[memo] = cjwk.JWK(**jwk_dict(k, private=private))
    return _JWKS[memo]


def signing_key(kit: Kit, alg: str) -> Key:
    """The kit key that signs ``alg``."""
    if alg.startswith(("RS", "PS")):
        return kit.sig_rsa_any
    if alg == "EdDSA":
        return kit.sig_ed
    return kit.sig_ec[{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]]


def decryption_key(kit: Kit, alg: str, enc: str) -> Key:
    """The kit key that ``alg``/``enc`` encrypts to."""
    if alg.startswith("RSA"):
        return kit.enc_rsa_any
    if alg.startswith("ECDH"):
        return kit.enc_ec
    if alg == "dir":
        return kit.enc_oct[CEK_BYTES[enc] * 8]
    return kit.enc_oct[128 if alg.startswith("A128") else 256]


def jwcrypto_sign(payload: dict[str, Any], k: Key, alg: str) -> str:
    """A compact JWS minted by jwcrypto."""
    token = cjws.JWS(json.dumps(payload).encode())
    token.add_signature(
        theirs(k, private=True),
        alg=alg,
        protected=json.dumps({"alg": alg, "kid": k.kid, "typ": "JWT"}),
    )
    return str(token.serialize(compact=True))


def jwcrypto_encrypt(plaintext: str, k: Key, alg: str, enc: str) -> str:
    """A compact JWE minted by jwcrypto (or by ``jose_raw`` for RSA-OAEP-384/512)."""
    header = {"alg": alg, "enc": enc, "kid": k.kid, "cty": "JWT"}
    if alg in ("RSA-OAEP-384", "RSA-OAEP-512"):
        return jwe_rsa_oaep(header, plaintext.encode(), k.jwk.public_key, alg, enc)
    recipient = theirs(k, private=k.kty == "oct")  # symmetric keys have no public half
    token = cjwe.JWE(plaintext.encode(), protected=json.dumps(header), algs=[alg, enc])
    token.add_recipient(recipient)
    return str(token.serialize(compact=True))


def interop_claims() -> dict[str, Any]:
    """Claims that exercise the claim headers."""
    return claims("interop-user", scope="read write", roles=["a", "b"], email="i@example.test")


def assert_accepted(env: Env, token: str, kid: str, enc_kid: str = "") -> None:
    """Allowed, with the right claim headers and key ids."""
    decision = env.check(token)
    assert decision.allowed, decision.reason
    assert_allow_invariants(decision)
    headers = dict(decision.upstream_headers)
    assert headers["x-auth-subject"] == "interop-user"
    assert headers["x-auth-scope"] == "read write"
    assert headers["x-auth-roles"] == "a,b"
    assert headers["x-auth-email"] == "i@example.test"
    assert (decision.iss, decision.kid, decision.enc_kid) == (ISSUER, kid, enc_kid)


@pytest.fixture(scope="module")
def interop_env(new_env: NewEnv) -> Env:
    """The default pipeline with the cache off, so every check really decrypts/verifies."""
    return new_env({"cache": {"max_entries": 0}})


# -- JWS -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", SIGNATURE_ALGS)
def test_jwcrypto_plain_jws_is_accepted(interop_env: Env, kit: Kit, alg: str) -> None:
    """Every default signature algorithm, as a plain JWS from jwcrypto."""
    k = signing_key(kit, alg)
    assert_accepted(interop_env, jwcrypto_sign(interop_claims(), k, alg), k.kid)


@pytest.mark.parametrize("alg", SIGNATURE_ALGS)
def test_jwcrypto_nested_jws_is_accepted(interop_env: Env, kit: Kit, alg: str) -> None:
    """Every default signature algorithm, nested in a jwcrypto RSA-OAEP-256 JWE."""
    k = signing_key(kit, alg)
    inner = jwcrypto_sign(interop_claims(), k, alg)
    token = jwcrypto_encrypt(inner, kit.enc_rsa, "RSA-OAEP-256", "A256GCM")
    assert_accepted(interop_env, token, k.kid, "enc-rsa")


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
def test_jwcrypto_eddsa_is_accepted_once_the_library_warning_is_not_an_error(
    interop_env: Env, kit: Kit
) -> None:
    """The EdDSA failure above is only the warning: silenced, Ed25519 tokens verify."""
    inner = jwcrypto_sign(interop_claims(), kit.sig_ed, "EdDSA")
    assert_accepted(interop_env, inner, "sig-ed25519")
    token = jwcrypto_encrypt(inner, kit.enc_rsa, "RSA-OAEP-256", "A256GCM")
    assert_accepted(interop_env, token, "sig-ed25519", "enc-rsa")


# -- JWE -------------------------------------------------------------------------------


@pytest.mark.parametrize("enc", CONTENT_ALGS)
@pytest.mark.parametrize("alg", KEY_ALGS)
def test_jwcrypto_jwe_is_accepted(interop_env: Env, kit: Kit, alg: str, enc: str) -> None:
    """Every default key-management x content algorithm, around an RS256 inner JWT."""
    inner = jwcrypto_sign(interop_claims(), kit.sig_rsa, "RS256")
    k = decryption_key(kit, alg, enc)
    assert_accepted(interop_env, jwcrypto_encrypt(inner, k, alg, enc), "sig-rsa", k.kid)


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "ECDH-ES", "A256KW"])
def test_jwcrypto_jwe_without_kid_is_accepted(interop_env: Env, kit: Kit, alg: str) -> None:
    """Issuers that omit ``kid`` on the JWE are served by the kid-less key search."""
    inner = jwcrypto_sign(interop_claims(), kit.sig_rsa, "RS256")
    k = decryption_key(kit, alg, "A256GCM")
    token = cjwe.JWE(
        inner.encode(), protected=json.dumps({"alg": alg, "enc": "A256GCM"}), algs=[alg, "A256GCM"]
    )
    token.add_recipient(theirs(k, private=k.kty == "oct"))
    assert_accepted(interop_env, str(token.serialize(compact=True)), "sig-rsa", k.kid)


def test_our_raw_minter_agrees_with_jwcrypto(interop_env: Env, kit: Kit) -> None:
    """Sanity check of the RSA-OAEP-384/512 path: the raw minter's RSA-OAEP-256 is accepted
    too, so a failure there would be the service's, not the minter's."""
    inner = jwcrypto_sign(interop_claims(), kit.sig_rsa, "RS256")
    header = {"alg": "RSA-OAEP-256", "enc": "A128CBC-HS256", "kid": "enc-rsa-any", "cty": "JWT"}
    public = kit.enc_rsa_any.jwk.public_key
    token = jwe_rsa_oaep(header, inner.encode(), public, "RSA-OAEP-256", "A128CBC-HS256")
    assert_accepted(interop_env, token, "sig-rsa", "enc-rsa-any")


# -- RFC example vectors ---------------------------------------------------------------


@pytest.fixture(scope="module")
def joe_env(new_env: NewEnv) -> Env:
    """Provider ``joe`` holding the RFC 7515 A.2 / A.3 public keys, clock before their exp."""
    keys = [key(vectors.RFC7515_A2_RSA_KEY), key(vectors.RFC7515_A3_EC_KEY)]
    return new_env(
        idp={"issuer": vectors.JOE_ISSUER, "audiences": [], "required_claims": ["exp"]},
        idp_keys=keys,
        now=vectors.JOE_EXP - 3600,
    )


@pytest.mark.parametrize(
    "token", [vectors.RFC7515_A2_RS256, vectors.RFC7515_A3_ES256], ids=["A.2-RS256", "A.3-ES256"]
)
def test_rfc7515_examples_verify(joe_env: Env, token: str) -> None:
    """RFC 7515 A.2 (RS256) and A.3 (ES256) are valid JWTs of issuer ``joe``."""
    decision = joe_env.check(token)
    assert decision.allowed, decision.reason
    assert decision.iss == "joe"


def test_rfc7515_examples_expire(joe_env: Env) -> None:
    """...and expire at their ``exp`` (the verification is real, the clock is injected)."""
    joe_env.clock.now = vectors.JOE_EXP + 31
    try:
        assert joe_env.check(vectors.RFC7515_A2_RS256).reason is Reason.EXPIRED
    finally:
        joe_env.clock.now = vectors.JOE_EXP - 3600


def test_rfc7515_example_with_a_flipped_signature_bit_fails(joe_env: Env) -> None:
    """Control: the same vector with one signature bit changed is ``bad_signature``."""
    token = vectors.RFC7515_A2_RS256
    forged = replace_segment(token, 2, flip(segments(token)[2], 5))
    assert joe_env.check(forged).reason is Reason.BAD_SIGNATURE


RFC7520_JWE = [
    pytest.param(vectors.RFC7520_JWE_5_2, vectors.RFC7520_KEY_5_2, id="5.2-RSA-OAEP-A256GCM"),
    pytest.param(
        vectors.RFC7520_JWE_5_4, vectors.RFC7520_KEY_5_4, id="5.4-ECDH-ES+A128KW-P384-A128GCM"
    ),
    pytest.param(vectors.RFC7520_JWE_5_8, vectors.RFC7520_KEY_5_8, id="5.8-A128KW-A128GCM"),
]


@pytest.mark.parametrize(("token", "jwk"), RFC7520_JWE)
def test_rfc7520_jwe_examples_decrypt(new_env: NewEnv, token: str, jwk: dict[str, Any]) -> None:
    """RFC 7520 §5 JWEs decrypt to the published plaintext with the published keys.

    The plaintext is prose, not a JWT, so the full pipeline then denies ``malformed``.
    """
    env = new_env(decryption_keys=[key(jwk)])
    plaintext, header, kid, _ = env.evaluator.verifier._decrypt(token, env.store.ring)
    assert plaintext == vectors.RFC7520_PLAINTEXT_5
    assert kid == jwk["kid"]
    assert header["alg"] == header_of(token)["alg"]
    assert env.check(token).reason is Reason.MALFORMED


def test_rfc7520_dir_example_decrypts_with_its_key_unpinned(new_env: NewEnv) -> None:
    """RFC 7520 §5.6 (``dir`` + A128GCM) decrypts with the published key material."""
    unpinned = {k: v for k, v in vectors.RFC7520_KEY_5_6.items() if k != "alg"}
    env = new_env(decryption_keys=[key(unpinned)])
    plaintext, *_ = env.evaluator.verifier._decrypt(vectors.RFC7520_JWE_5_6, env.store.ring)
    assert plaintext == vectors.RFC7520_PLAINTEXT_5


def test_rfc7520_dir_example_decrypts_with_its_key_as_published(new_env: NewEnv) -> None:
    """RFC 7520 §5.6's key says ``alg: A128GCM``: for ``dir`` that is the algorithm it serves."""
    env = new_env(decryption_keys=[key(vectors.RFC7520_KEY_5_6)])
    plaintext, *_ = env.evaluator.verifier._decrypt(vectors.RFC7520_JWE_5_6, env.store.ring)
    assert plaintext == vectors.RFC7520_PLAINTEXT_5


def test_rfc7520_signed_prose_is_not_a_token(new_env: NewEnv) -> None:
    """RFC 7520 §4.1 signs prose: refused as ``malformed`` before any key is consulted."""
    env = new_env(idp_keys=[key(vectors.RFC7520_RSA_PUBLIC_3_3)])
    assert env.check(vectors.RFC7520_JWS_4_1).reason is Reason.MALFORMED


def test_rfc7520_rsa1_5_example_is_refused(new_env: NewEnv) -> None:
    """RFC 7520 §5.1 uses RSA1_5: never accepted, even with its private key loaded."""
    env = new_env(decryption_keys=[key(vectors.RFC7520_KEY_5_1)])
    assert env.check(vectors.RFC7520_JWE_5_1).reason is Reason.ALG_NOT_ALLOWED


def test_audience_constant_is_what_the_providers_expect() -> None:
    """Guard: the interop claims target the configured audience."""
    assert interop_claims()["aud"] == AUDIENCE
