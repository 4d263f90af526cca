"""Decrypt (JWE) and verify (JWS): the token rules, one behaviour per test."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from jwcrypto import jwe as cjwe
from jwcrypto import jwk as cjwk

from extauthz.errors import Reason, TokenError
from extauthz.keys.keyset import DECRYPTION
from extauthz.pipeline import tokens
from extauthz.pipeline.algorithms import jws_models

from .jose_raw import jwe_aes_kw, jwe_rsa_oaep
from .support import (
    IDP,
    OTHER_ISSUER,
    Env,
    Kit,
    b64,
    bare,
    claims,
    encrypt,
    generated,
    jwk_dict,
    key,
    nested,
    oct_jwk,
    raw_jws,
    reason_of,
    sign,
)

NewEnv = Callable[..., Env]


# -- strict base64url ------------------------------------------------------------------


def test_b64decode_accepts_unpadded_base64url() -> None:
    """The RFC 7515 §2 encoding decodes: URL alphabet, no padding."""
    assert tokens.b64decode(b64(b"\xfb\xff\xfe").encode()) == b"\xfb\xff\xfe"
    assert tokens.b64decode(b"") == b""


@pytest.mark.parametrize(
    "segment",
    [b"YQ==", b"YQ=", b"+/8", b"a b", b"YW\tI", b"YWJj\n", b"YWJjZ", b"\xc3\xa9", b"YW.I"],
    ids=[
        "padding2",
        "padding1",
        "std-alphabet",
        "space",
        "tab",
        "newline",
        "len%4==1",
        "non-ascii",
        "dot",
    ],
)
def test_b64decode_rejects_anything_but_strict_base64url(segment: bytes) -> None:
    """Padding, the standard alphabet, whitespace and impossible lengths are malformed."""
    with pytest.raises(TokenError) as caught:
        tokens.b64decode(segment)
    assert caught.value.reason is Reason.MALFORMED


def test_trailing_newline_is_malformed_not_handed_to_the_crypto(env: Env, kit: Kit) -> None:
    """Strict parsing: a token with a trailing LF is malformed before any crypto runs."""
    assert reason_of(env, sign(claims(), kit.sig_rsa) + "\n") is Reason.MALFORMED


# -- strict JSON -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"alg":"RS256","alg":"none"}',
        '{"alg":"RS256","x":NaN}',
        '{"alg":"RS256","x":Infinity}',
        '{"alg":"RS256","x":-Infinity}',
        '{"alg":"RS256","x":1e999}',
        '{"alg":"RS256","x":123456789012345678901234567890}',
        '["alg","RS256"]',
        '"RS256"',
        "42",
        "null",
        '{"alg":"RS256"',
        '{"alg":"RS256"} x',
        "[" * 3000 + "]" * 3000,
    ],
    ids=[
        "duplicate",
        "NaN",
        "Infinity",
        "-Infinity",
        "float-overflow",
        "huge-int",
        "array",
        "string",
        "number",
        "null",
        "truncated",
        "trailing-garbage",
        "deep-nesting",
    ],
)
def test_header_must_be_a_strict_json_object(text: str) -> None:
    """Duplicate members, NaN/Infinity, huge numbers, non-objects are malformed headers."""
    with pytest.raises(TokenError) as caught:
        tokens.parse_header(b64(text).encode())
    assert caught.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"alg": 256},
        {"alg": ""},
        {"alg": None},
        {"alg": "RS256", "kid": 7},
        {"alg": "RS256", "kid": ""},
        {"alg": "RS256", "typ": 1},
        {"alg": "RS256", "cty": ["JWT"]},
        {"alg": "RS256", "crit": "exp"},
        {"alg": "RS256", "crit": []},
        {"alg": "RS256", "crit": [1]},
    ],
    ids=[
        "missing-alg",
        "alg-number",
        "alg-empty",
        "alg-null",
        "kid-number",
        "kid-empty",
        "typ-number",
        "cty-array",
        "crit-string",
        "crit-empty",
        "crit-number",
    ],
)
def test_header_members_have_their_registered_types(header: dict[str, Any]) -> None:
    """alg, kid, typ, cty and crit of the wrong JSON type make the header malformed."""
    with pytest.raises(TokenError) as caught:
        tokens.parse_header(b64(json.dumps(header)).encode())
    assert caught.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "text",
    [
        '{"sub":"a","sub":"b"}',
        '{"exp":NaN}',
        '{"exp":Infinity}',
        '{"exp":1e400}',
        '{"exp":1000000000000000000000000}',
        "[]",
        '"claims"',
        "1",
        "null",
        "{",
        "[" * 3000 + "]" * 3000,
    ],
    ids=[
        "duplicate",
        "NaN",
        "Infinity",
        "float-overflow",
        "huge-int",
        "array",
        "string",
        "number",
        "null",
        "truncated",
        "deep-nesting",
    ],
)
def test_claims_must_be_a_strict_json_object(text: str) -> None:
    """The claims set is parsed as strictly as the header."""
    with pytest.raises(TokenError) as caught:
        tokens.parse_claims(text.encode())
    assert caught.value.reason is Reason.MALFORMED


def test_signed_claims_with_duplicate_members_are_malformed(env: Env, kit: Kit) -> None:
    """A correctly signed token whose claims repeat a member is still malformed."""
    payload = json.dumps(claims(), separators=(",", ":"))[:-1] + ',"sub":"admin"}'
    assert reason_of(env, sign(payload.encode(), kit.sig_rsa)) is Reason.MALFORMED


# -- crit, b64 -------------------------------------------------------------------------


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["x-unknown"], ["kid"]])
def test_unknown_crit_on_a_jws_is_unsupported_crit(env: Env, kit: Kit, crit: list[str]) -> None:
    """A critical header the service does not implement is refused (RFC 7515 §4.1.11)."""
    header: dict[str, Any] = {"alg": "RS256", "kid": "sig-rsa", "crit": crit}
    for name in crit:
        header.setdefault(name, 1)
    token = raw_jws(header, claims())
    assert reason_of(env, token) is Reason.UNSUPPORTED_CRIT


def test_crit_naming_an_absent_header_is_unsupported_crit() -> None:
    """``crit`` listing a member that is not present is refused too."""
    with pytest.raises(TokenError) as caught:
        tokens.parse_header(b64('{"alg":"RS256","crit":["x-missing"]}').encode())
    assert caught.value.reason is Reason.UNSUPPORTED_CRIT


def test_unknown_crit_on_a_jwe_is_refused_before_decryption(env: Env, kit: Kit) -> None:
    """The JWE header's ``crit`` is checked before any key is touched."""
    header = {
        "alg": "RSA-OAEP-256",
        "enc": "A256GCM",
        "kid": "enc-rsa",
        "cty": "JWT",
        "crit": ["x-custom"],
        "x-custom": True,
    }
    token = jwe_rsa_oaep(
        header,
        sign(claims(), kit.sig_rsa).encode(),
        kit.enc_rsa.jwk.public_key,
        "RSA-OAEP-256",
        "A256GCM",
    )
    assert reason_of(env, token) is Reason.UNSUPPORTED_CRIT


def test_unencoded_payload_option_is_refused(env: Env, kit: Kit) -> None:
    """``b64: false`` (RFC 7797) changes what is signed; the service does not support it."""
    token = sign(claims(), kit.sig_rsa, header={"b64": True})
    assert reason_of(env, token) is Reason.UNSUPPORTED_CRIT


# -- key choice by kid -----------------------------------------------------------------


def test_kid_present_selects_only_that_key(env: Env, kit: Kit) -> None:
    """No fallback: a token naming key B but signed by key A fails even though A is loaded."""
    forged_kid = sign(claims(), kit.sig_rsa, "RS256", header={"kid": kit.sig_rsa_any.kid})
    assert reason_of(env, forged_kid) is Reason.BAD_SIGNATURE
    assert reason_of(env, sign(claims(), kit.sig_rsa)) is Reason.OK


def test_unknown_kid_is_denied_although_a_loaded_key_would_verify(env: Env, kit: Kit) -> None:
    """An unknown kid is ``unknown_kid``; the verifier does not go looking elsewhere."""
    token = sign(claims(), kit.sig_rsa, header={"kid": "rotated-away"})
    assert reason_of(env, token) is Reason.UNKNOWN_KID


def test_unknown_kid_on_a_jwe_is_denied(env: Env, kit: Kit) -> None:
    """The same rule holds for decryption keys."""
    token = encrypt(sign(claims(), kit.sig_rsa), kit.enc_rsa, header={"kid": "nope"})
    assert reason_of(env, token) is Reason.UNKNOWN_KID


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_kid_absent_finds_the_key_whose_type_and_curve_fit(env: Env, kit: Kit, curve: str) -> None:
    """Issuers that omit kid still verify: only keys of the right type/curve are tried."""
    assert reason_of(env, sign(claims(), kit.sig_ec[curve], kid=False)) is Reason.OK


def test_kid_absent_tries_at_most_max_keys_tried(
    new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kid-less token costs at most ``token.max_keys_tried`` signature checks."""
    keys = list(kit.extra_rsa)  # four RS256 keys; the token is signed by the last
    token = sign(claims(), keys[-1], "RS256", kid=False)
    calls: list[object] = []
    rs256 = type(jws_models()["RS256"])  # the algorithm object joserfc verifies with
    original = rs256.verify

    def counting(self: Any, msg: bytes, sig: bytes, key: Any) -> bool:
        calls.append(key)
        return bool(original(self, msg, sig, key))

    monkeypatch.setattr(rs256, "verify", counting)
    limited = new_env(idp_keys=keys)
    assert limited.config.token.max_keys_tried == 3
    assert reason_of(limited, token) is Reason.BAD_SIGNATURE
    assert len(calls) == 3
    calls.clear()
    wider = new_env({"token": {"max_keys_tried": 4}}, idp_keys=keys)
    assert reason_of(wider, token) is Reason.OK
    assert len(calls) == 4


def test_kid_absent_jwe_tries_at_most_max_keys_tried(
    new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bound applies to decryption keys for a kid-less JWE."""
    keys = [key(oct_jwk(256, f"dir-{i}")) for i in range(4)]
    token = encrypt(sign(claims(), kit.sig_rsa), keys[-1], "dir", kid=False)
    calls: list[object] = []
    original = tokens.jwe.decrypt_compact

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(tokens.jwe, "decrypt_compact", counting)
    limited = new_env(decryption_keys=keys)
    assert reason_of(limited, token) is Reason.DECRYPT_FAILED
    assert len(calls) == 3
    calls.clear()
    assert reason_of(new_env({"token": {"max_keys_tried": 4}}, decryption_keys=keys), token) is (
        Reason.OK
    )
    assert len(calls) == 4


def test_kid_naming_a_key_of_the_wrong_type_is_unknown_kid(env: Env, kit: Kit) -> None:
    """A kid that exists but names an EC key cannot serve RS256."""
    token = sign(claims(), kit.sig_rsa, "RS256", header={"kid": "sig-p256"})
    assert reason_of(env, token) is Reason.UNKNOWN_KID


# -- use / alg pinning -----------------------------------------------------------------


def test_a_sig_key_never_decrypts(new_env: NewEnv, kit: Kit) -> None:
    """A JWK with ``use: sig`` among the decryption keys is never used to decrypt."""
    env = new_env(decryption_keys=[kit.sig_rsa])
    token = encrypt(sign(claims(), kit.sig_rsa), kit.sig_rsa, "RSA-OAEP-256")
    assert reason_of(env, token) is Reason.UNKNOWN_KID
    unpinned = new_env(
        decryption_keys=[key({**jwk_dict(kit.sig_rsa), "use": "enc", "alg": "RSA-OAEP-256"})]
    )
    assert reason_of(unpinned, token) is Reason.OK  # same key material, declared for enc


def test_an_enc_key_never_verifies(new_env: NewEnv, kit: Kit) -> None:
    """A JWK with ``use: enc`` among a provider's keys never verifies a signature."""
    env = new_env(idp_keys=[kit.enc_rsa_any])
    token = sign(claims(), kit.enc_rsa_any, "RS256")
    assert reason_of(env, token) is Reason.UNKNOWN_KID
    assert reason_of(env, sign(claims(), kit.enc_rsa_any, "RS256", kid=False)) is (
        Reason.UNKNOWN_KID
    )


def test_a_key_declaring_rs384_never_verifies_rs256(new_env: NewEnv) -> None:
    """A JWK that declares ``alg`` serves that algorithm only."""
    pinned = generated("sig", "RS384", "pinned-rs384")
    env = new_env(idp_keys=[pinned])
    assert reason_of(env, sign(claims(), pinned, "RS256")) is Reason.UNKNOWN_KID
    assert reason_of(env, sign(claims(), pinned, "RS256", kid=False)) is Reason.UNKNOWN_KID
    assert reason_of(env, sign(claims(), pinned, "RS384")) is Reason.OK


def test_a_key_declaring_rsa_oaep_256_never_decrypts_rsa_oaep(env: Env, kit: Kit) -> None:
    """The same pinning for key management algorithms."""
    inner = sign(claims(), kit.sig_rsa)
    assert reason_of(env, encrypt(inner, kit.enc_rsa, "RSA-OAEP")) is Reason.UNKNOWN_KID
    assert reason_of(env, encrypt(inner, kit.enc_rsa, "RSA-OAEP-256")) is Reason.OK


def test_a_public_enc_key_cannot_decrypt(new_env: NewEnv, kit: Kit) -> None:
    """Decryption needs the private half; a public JWK in the decryption set fits nothing."""
    public = key(jwk_dict(kit.enc_rsa, private=False))
    env = new_env(decryption_keys=[public])
    assert reason_of(env, nested(kit)) is Reason.UNKNOWN_KID


# -- provider scoping ------------------------------------------------------------------


def test_a_key_of_provider_a_never_verifies_a_token_of_issuer_b(env: Env, kit: Kit) -> None:
    """Keys are looked up among the keys of the provider named by ``iss`` only."""
    as_idp = sign(claims(), kit.other_sig)  # iss idp, signed by provider "other"
    assert reason_of(env, as_idp) is Reason.UNKNOWN_KID
    assert reason_of(env, sign(claims(), kit.other_sig, kid=False)) is Reason.BAD_SIGNATURE
    as_other = sign(claims(issuer=OTHER_ISSUER), kit.sig_rsa)
    assert reason_of(env, as_other) is Reason.UNKNOWN_KID
    assert reason_of(env, sign(claims(issuer=OTHER_ISSUER), kit.other_sig)) is Reason.OK


def test_same_kid_in_two_providers_does_not_cross_over(new_env: NewEnv, kit: Kit) -> None:
    """Two providers may reuse a kid; each token is checked with its issuer's key only."""
    ours = key({**jwk_dict(kit.sig_rsa), "kid": "shared"})
    theirs = key({**jwk_dict(kit.other_sig), "kid": "shared"})
    env = new_env(idp_keys=[ours], other_keys=[theirs])
    assert reason_of(env, sign(claims(), theirs)) is Reason.BAD_SIGNATURE
    assert reason_of(env, sign(claims(), ours)) is Reason.OK


def test_unconfigured_issuer_is_bad_issuer(env: Env, kit: Kit) -> None:
    """A token from an issuer with no provider is refused before any key lookup."""
    token = sign(claims(issuer="https://evil.example.test"), kit.sig_rsa)
    assert reason_of(env, token) is Reason.BAD_ISSUER


# -- JWE content type and nesting ------------------------------------------------------


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/jwt", "Application/JWT", None])
def test_accepted_jwe_content_types(env: Env, kit: Kit, cty: str | None) -> None:
    """``cty`` JWT (any case), ``application/jwt``, or absent with a JWS plaintext."""
    assert reason_of(env, nested(kit, cty=cty)) is Reason.OK


@pytest.mark.parametrize("cty", ["application/json", "JOSE", "jwe", "text/plain", "JWT "])
def test_other_jwe_content_types_are_denied(env: Env, kit: Kit, cty: str) -> None:
    """Any other ``cty`` is refused, even around a valid signed token."""
    decision = env.check(nested(kit, cty=cty))
    assert not decision.allowed
    assert decision.reason is Reason.MALFORMED


@pytest.mark.parametrize("cty", ["JWT", None])
def test_jwe_inside_jwe_is_denied(env: Env, kit: Kit, cty: str | None) -> None:
    """Exactly one level of nesting: an encrypted token inside another is malformed."""
    token = encrypt(nested(kit), kit.enc_rsa, cty=cty)
    assert reason_of(env, token) is Reason.MALFORMED


def test_jws_inside_jws_is_not_a_token(env: Env, kit: Kit) -> None:
    """A JWS whose payload is another JWS has no claims object: malformed."""
    inner = sign(claims(), kit.sig_rsa)
    outer = sign(json.dumps(inner).encode(), kit.sig_rsa)
    assert reason_of(env, outer) is Reason.MALFORMED


@pytest.mark.parametrize("plaintext", [b"hello world", b"\xff\xfe\x00", b"", b"a.b"])
def test_non_jwt_plaintext_is_malformed(env: Env, kit: Kit, plaintext: bytes) -> None:
    """A JWE whose plaintext is neither a compact JWS nor a claims object is malformed."""
    token = encrypt(plaintext, kit.enc_rsa)
    assert reason_of(env, token) is Reason.MALFORMED


def test_unsigned_inner_token_is_unsigned(env: Env, kit: Kit) -> None:
    """A bare claims set inside a JWE is refused by default."""
    token = encrypt(json.dumps(claims()), kit.enc_rsa)
    assert reason_of(env, token) is Reason.UNSIGNED


def test_unsigned_inner_is_accepted_only_when_allowed_and_symmetric(
    new_env: NewEnv, kit: Kit
) -> None:
    """``allow_unsigned_inner`` works under dir / A*KW, never under public-key wrapping."""
    env = new_env(idp={"allow_unsigned_inner": ["enc-oct-256", "enc-rsa", "enc-ec"]})
    body = json.dumps(claims())
    assert reason_of(env, encrypt(body, kit.enc_oct[256], "dir")) is Reason.OK
    assert reason_of(env, encrypt(body, kit.enc_oct[256], "A256KW")) is Reason.OK
    assert reason_of(env, encrypt(body, kit.enc_oct[256], "A256GCMKW")) is Reason.OK
    assert reason_of(env, encrypt(body, kit.enc_rsa)) is Reason.UNSIGNED
    assert reason_of(env, encrypt(body, kit.enc_ec, "ECDH-ES")) is Reason.UNSIGNED
    strict = new_env()
    assert reason_of(strict, encrypt(body, kit.enc_oct[256], "dir")) is Reason.UNSIGNED


def test_unsigned_inner_token_allowed_reaches_the_upstream(new_env: NewEnv, kit: Kit) -> None:
    """An allowed unsigned inner token is a full allow with claim headers, no JWS kid."""
    env = new_env(idp={"allow_unsigned_inner": ["enc-oct-256"]})
    decision = env.check(encrypt(json.dumps(claims()), kit.enc_oct[256], "dir"))
    assert decision.allowed
    assert ("x-auth-subject", "user-1") in decision.upstream_headers
    assert decision.kid == ""
    assert decision.enc_kid == "enc-oct-256"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_inner_token_is_unsigned(env: Env, kit: Kit, alg: str) -> None:
    """An Unsecured JWS inside a JWE is ``unsigned``, whatever the case of ``none``."""
    inner = raw_jws({"alg": alg, "typ": "JWT"}, claims(), b"")
    assert reason_of(env, encrypt(inner, kit.enc_rsa)) is Reason.UNSIGNED


# -- decryption.required, size ---------------------------------------------------------


def test_decryption_required_refuses_plain_jws(new_env: NewEnv, kit: Kit) -> None:
    """``decryption.required: true``: a plain signed JWT is ``encryption_required``."""
    env = new_env({"decryption": {"required": True}})
    assert reason_of(env, sign(claims(), kit.sig_rsa)) is Reason.ENCRYPTION_REQUIRED
    assert reason_of(env, nested(kit)) is Reason.OK


def test_token_size_cap_is_checked_first(env: Env) -> None:
    """``token.max_bytes`` is enforced before parsing; a token at the cap is parsed."""
    cap = env.config.token.max_bytes
    assert reason_of(env, "a" * (cap + 1)) is Reason.TOO_LARGE
    assert reason_of(env, "\x00" * (cap + 1)) is Reason.TOO_LARGE
    assert reason_of(env, "a" * cap) is Reason.MALFORMED


def test_configured_token_size_cap(new_env: NewEnv, kit: Kit) -> None:
    """A smaller ``token.max_bytes`` refuses a normal nested token as too large."""
    env = new_env({"token": {"max_bytes": 512}})
    assert reason_of(env, nested(kit)) is Reason.TOO_LARGE


# -- zip and PBES2 ---------------------------------------------------------------------


def _zip_jwe(kit: Kit, plaintext: bytes, zip_value: str = "DEF") -> str:
    key_ = cjwk.JWK(**jwk_dict(kit.enc_oct[256]))
    header = {
        "alg": "A256KW",
        "enc": "A256GCM",
        "zip": zip_value,
        "kid": "enc-oct-256",
        "cty": "JWT",
    }
    if zip_value == "DEF":
        token = cjwe.JWE(plaintext, protected=json.dumps(header))
        token.add_recipient(key_)
        return str(token.serialize(compact=True))
    compressed = zlib.compress(plaintext)[2:-4]
    return jwe_aes_kw(header, compressed, bare(kit.enc_oct[256]).raw_value, "A256GCM")


def test_zip_is_off_by_default(env: Env, kit: Kit) -> None:
    """``zip: DEF`` is refused unless enabled with a cap."""
    token = _zip_jwe(kit, sign(claims(), kit.sig_rsa).encode())
    assert reason_of(env, token) is Reason.ALG_NOT_ALLOWED


def test_zip_enabled_with_a_cap_inflates(new_env: NewEnv, kit: Kit) -> None:
    """With ``zip_max_bytes`` set, a compressed nested token is accepted."""
    env = new_env({"decryption": {"zip_max_bytes": 65536}})
    token = _zip_jwe(kit, sign(claims(), kit.sig_rsa).encode())
    assert reason_of(env, token) is Reason.OK


def test_only_deflate_is_understood(new_env: NewEnv, kit: Kit) -> None:
    """Any ``zip`` value other than DEF is refused even when zip is enabled."""
    env = new_env({"decryption": {"zip_max_bytes": 65536}})
    token = _zip_jwe(kit, sign(claims(), kit.sig_rsa).encode(), zip_value="GZIP")
    assert reason_of(env, token) is Reason.ALG_NOT_ALLOWED


def test_inflated_plaintext_over_max_bytes_is_too_large(new_env: NewEnv, kit: Kit) -> None:
    """A plaintext under the zip cap but over ``token.max_bytes`` is still too large."""
    env = new_env({"decryption": {"zip_max_bytes": 1 << 20}})
    token = _zip_jwe(kit, b"x" * 40000)
    assert len(token) < env.config.token.max_bytes
    assert reason_of(env, token) is Reason.TOO_LARGE


def _pbes2_jwe(kit: Kit, p2c: int) -> tuple[str, dict[str, Any]]:
    password = {"kty": "oct", "k": b64(b"correct horse battery"), "kid": "pbes2", "use": "enc"}
    header = {
        "alg": "PBES2-HS256+A128KW",
        "enc": "A128GCM",
        "kid": "pbes2",
        "cty": "JWT",
        "p2c": p2c,
    }
    token = cjwe.JWE(
        sign(claims(), kit.sig_rsa).encode(),
        protected=json.dumps(header),
        algs=["PBES2-HS256+A128KW", "A128GCM"],
    )
    token.add_recipient(cjwk.JWK(**password))
    return str(token.serialize(compact=True)), password


def test_pbes2_is_off_by_default(new_env: NewEnv, kit: Kit) -> None:
    """PBES2 is not in the default key-management allow-list."""
    token, password = _pbes2_jwe(kit, 1000)
    env = new_env(decryption_keys=[key(password)])
    assert reason_of(env, token) is Reason.ALG_NOT_ALLOWED


def test_pbes2_enabled_honours_the_iteration_cap(new_env: NewEnv, kit: Kit) -> None:
    """Enabled with a cap: p2c within the cap decrypts, above it is refused unread."""
    token, password = _pbes2_jwe(kit, 1000)
    env = new_env(
        {"decryption": {"key_algorithms": ["PBES2-HS256+A128KW"], "pbes2_max_iterations": 1000}},
        decryption_keys=[key(password)],
    )
    assert reason_of(env, token) is Reason.OK
    header = json.loads(tokens.b64decode(token.split(".")[0].encode()))
    for p2c in (1001, 10**9, 10**19):
        forged = b64(json.dumps({**header, "p2c": p2c})) + token[token.index(".") :]
        assert reason_of(env, forged) is Reason.TOO_LARGE
    for p2c in (0, -1, "1000", True, None):
        forged = b64(json.dumps({**header, "p2c": p2c})) + token[token.index(".") :]
        assert reason_of(env, forged) is Reason.MALFORMED


# -- algorithms ------------------------------------------------------------------------


def test_jws_alg_outside_the_provider_list_is_refused(new_env: NewEnv, kit: Kit) -> None:
    """A provider restricted to RS256 refuses a valid PS256 token."""
    env = new_env(idp={"algorithms": ["RS256"]})
    assert reason_of(env, sign(claims(), kit.sig_rsa_any, "PS256")) is Reason.ALG_NOT_ALLOWED
    assert reason_of(env, sign(claims(), kit.sig_rsa_any, "RS256")) is Reason.OK


def test_jwe_algorithms_outside_the_allow_lists_are_refused(new_env: NewEnv, kit: Kit) -> None:
    """``decryption.key_algorithms`` / ``content_algorithms`` restrict what decrypts."""
    env = new_env(
        {"decryption": {"key_algorithms": ["RSA-OAEP-256"], "content_algorithms": ["A256GCM"]}}
    )
    inner = sign(claims(), kit.sig_rsa)
    assert reason_of(env, encrypt(inner, kit.enc_rsa, enc="A128GCM")) is Reason.ALG_NOT_ALLOWED
    assert reason_of(env, encrypt(inner, kit.enc_oct[256], "A256KW")) is Reason.ALG_NOT_ALLOWED
    assert reason_of(env, encrypt(inner, kit.enc_rsa)) is Reason.OK


def test_hmac_needs_an_explicit_provider_and_an_oct_key(new_env: NewEnv) -> None:
    """HS256 works only when the provider lists it and holds an ``oct`` key."""
    secret = key(oct_jwk(256, "hmac", use="sig"))
    token = sign(claims(), secret, "HS256")
    assert reason_of(new_env(idp_keys=[secret]), token) is Reason.ALG_NOT_ALLOWED
    env = new_env(idp={"algorithms": ["RS256", "HS256"]}, idp_keys=[secret])
    assert reason_of(env, token) is Reason.OK


def test_verified_result_names_the_keys_it_depends_on(env: Env, kit: Kit) -> None:
    """A verified nested token records both keys (what the cache re-checks later)."""
    verified = env.evaluator.verifier.verify(nested(kit), env.store.ring)
    assert verified.kid == "sig-rsa"
    assert verified.enc_kid == "enc-rsa"
    assert verified.encrypted
    assert set(verified.depends) == {
        (IDP, kit.sig_rsa.identity),
        (DECRYPTION, kit.enc_rsa.identity),
    }
    assert verified.inner.count(".") == 2


def test_jws_parts_over_joserfcs_bounds_are_too_large(new_env: NewEnv, kit: Kit) -> None:
    """With ``token.max_bytes`` raised far, joserfc's own JWS size bounds still hold (a
    payload over 128,000 characters, a signature over 1,024): ``too_large``, before any
    signature check; just under them the token verifies."""
    env = new_env({"token": {"max_bytes": 400_000}})
    big = sign(claims(blob="x" * 97_000), kit.sig_rsa)  # ~129k characters of payload
    assert len(big.split(".")[1]) > 128_000
    assert reason_of(env, big) is Reason.TOO_LARGE
    fits = sign(claims(blob="x" * 95_000), kit.sig_rsa)
    assert reason_of(env, fits) is Reason.OK
    head, payload, signature = sign(claims(), kit.sig_rsa).split(".")
    assert reason_of(env, f"{head}.{payload}.{signature * 4}") is Reason.TOO_LARGE
    assert reason_of(env, f"{head}.{payload}.{signature}A") is Reason.BAD_SIGNATURE


def _noncanonical(segment: str) -> str:
    """The same bytes with the unused low bits of the last character set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3)
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]


def test_a_second_spelling_of_a_signed_or_encrypted_token_is_refused(env: Env, kit: Kit) -> None:
    """Base64url is decoded canonically: setting the unused bits of a part's last
    character keeps its bytes, but the token is refused — two strings for one token
    would let a token listed by digest (revocation) through under its other spelling."""
    signed = sign(claims(), kit.sig_rsa)
    assert reason_of(env, signed) is Reason.OK
    head, payload, signature = signed.split(".")
    assert len(signature) % 4 in (2, 3)
    assert base64.urlsafe_b64decode(_noncanonical(signature) + "==") == base64.urlsafe_b64decode(
        signature + "=="
    )
    assert reason_of(env, f"{head}.{payload}.{_noncanonical(signature)}") is Reason.BAD_SIGNATURE
    for part in (head, payload):
        if len(part) % 4 in (2, 3):
            respelled = signed.replace(part, _noncanonical(part), 1)
            assert reason_of(env, respelled) is Reason.MALFORMED
    sealed = encrypt(signed, kit.enc_rsa)
    assert reason_of(env, sealed) is Reason.OK
    parts = sealed.split(".")
    for index in (1, 2, 4):  # encrypted key, IV, tag
        if len(parts[index]) % 4 in (2, 3):
            respelled = ".".join(_noncanonical(p) if i == index else p for i, p in enumerate(parts))
            assert reason_of(env, respelled) is Reason.DECRYPT_FAILED, index
