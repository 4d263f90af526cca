"""A table of hostile tokens: each one is denied, for the right reason, quickly, quietly.

Every row is (id, token factory, expected reason class[, config]). For each row the test
asserts that the pipeline returns a deny with that reason and its status, that the
verifier raises nothing but :class:`TokenError`, that the client-facing body and
challenge carry no key id, token text, library message or traceback, that no network
connection was attempted (``jku``/``x5u`` point at a local listener that must stay
silent), and that the check stays under a generous CPU bound — a guard against
unbounded work (PBES2 iterations, zip bombs), not a benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from joserfc import jws as joserfc_jws
from joserfc.jwk import OctKey
from joserfc.jws import JWSRegistry
from jwcrypto import jwe as cjwe
from jwcrypto import jwk as cjwk

from extauthz.errors import STATUS, Reason, TokenError

from . import jose_raw, vectors
from .support import (
    AUDIENCE,
    NOW,
    OTHER_ISSUER,
    Env,
    Kit,
    b64,
    bare,
    body,
    claims,
    compact_json,
    encrypt,
    flip,
    header_of,
    jwk_dict,
    key,
    nested,
    oct_jwk,
    raw_jws,
    replace_segment,
    segments,
    sign,
    unb64,
)

NewEnv = Callable[..., Env]
Factory = Callable[[Kit, str], str]
CPU_BOUND = 0.5  # seconds of process time per check: generous, only catches runaway work

# -- building blocks -------------------------------------------------------------------


def jws(kit: Kit, **extra: Any) -> str:
    """A valid plain JWS (sig-rsa)."""
    return sign(claims(**extra), kit.sig_rsa)


def signed_raw(kit: Kit, header: str | dict[str, Any], payload: str | dict[str, Any]) -> str:
    """A correctly RS256-signed JWS (sig-rsa) whose header/payload text is exactly given."""
    text = payload if isinstance(payload, str) else compact_json(payload)
    return jose_raw.jws_rs256(header, text.encode(), kit.sig_rsa.jwk.private_key)


def encrypted_raw(kit: Kit, header: str | dict[str, Any], plaintext: str) -> str:
    """A correctly RSA-OAEP-256 encrypted JWE (enc-rsa) whose header text is exactly given."""
    return jose_raw.jwe_rsa_oaep(
        header, plaintext.encode(), kit.enc_rsa.jwk.public_key, "RSA-OAEP-256", "A256GCM"
    )


def payload_text(**override: Any) -> str:
    """Claims JSON text with members replaced by raw JSON text (e.g. ``exp="NaN"``)."""
    data = {name: json.dumps(value) for name, value in claims().items()}
    data.update(override)
    return "{" + ",".join(f'"{name}":{value}' for name, value in data.items()) + "}"


def jwe_header(**extra: Any) -> dict[str, Any]:
    """A plausible JWE header (for rows refused before any decryption)."""
    return {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "enc-rsa", "cty": "JWT", **extra}


def fake_jwe(header: dict[str, Any] | str) -> str:
    """A 5-segment token with this header and random, well-encoded other segments."""
    text = header if isinstance(header, str) else compact_json(header)
    return ".".join(
        [
            b64(text),
            b64(os.urandom(256)),
            b64(os.urandom(12)),
            b64(os.urandom(64)),
            b64(os.urandom(16)),
        ]
    )


def tamper_jwe(kit: Kit, index: int, byte: int = 0) -> str:
    """A valid nested token with one byte of segment ``index`` flipped."""
    token = nested(kit)
    return replace_segment(token, index, flip(segments(token)[index], byte))


def tampered_jwe_header(kit: Kit) -> str:
    """A valid nested token whose protected header gained a member (the AAD changes)."""
    token = nested(kit)
    header = {**header_of(token), "x-tampered": True}
    return replace_segment(token, 0, b64(compact_json(header)))


def tampered_jws_payload(kit: Kit) -> str:
    """A valid JWS whose payload now says ``sub: admin`` (signature kept)."""
    token = jws(kit)
    return replace_segment(token, 1, b64(compact_json(claims("admin", scope="admin"))))


def rsa_public_bytes(
    kit: Kit, encoding: serialization.Encoding, fmt: serialization.PublicFormat
) -> bytes:
    """The provider's RSA public key serialized (the classic HMAC-confusion secret)."""
    return bytes(kit.sig_rsa.jwk.public_key.public_bytes(encoding, fmt))


def hs256_with_public_key(
    kit: Kit, encoding: serialization.Encoding, fmt: serialization.PublicFormat, *, kid: bool = True
) -> str:
    """HS256 keyed with the RSA public key: verifies only if a verifier confuses key types."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = "sig-rsa"
    secret = rsa_public_bytes(kit, encoding, fmt)
    return jose_raw.jws_hmac(header, compact_json(claims()).encode(), secret)


PEM = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
PKCS1 = (serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
DER = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa1_5(kit: Kit) -> str:
    """An RSA1_5 JWE around a valid inner token (Bleichenbacher-prone: never accepted)."""
    header = {"alg": "RSA1_5", "enc": "A128CBC-HS256", "kid": "enc-rsa-any", "cty": "JWT"}
    return jose_raw.jwe_rsa1_5(
        header, jws(kit).encode(), kit.enc_rsa_any.jwk.public_key, "A128CBC-HS256"
    )


def pbes2(p2c: Any) -> str:
    """A PBES2 JWE header with iteration count ``p2c`` (refused before any PBKDF2 work)."""
    header = {
        "alg": "PBES2-HS512+A256KW",
        "enc": "A256GCM",
        "kid": "pbes2",
        "cty": "JWT",
        "p2s": b64(os.urandom(16)),
        "p2c": p2c,
    }
    return fake_jwe(header)


#: a 128-bit HMAC secret: long enough for a key-wrapping key, too short for HS256
SHORT_HMAC = bytes(range(16))


def jose_raw_oct(secret: bytes) -> Any:
    """A bare joserfc ``oct`` key, to sign with whatever a test likes."""
    return OctKey.import_key(secret)


def raw_typless(kit: Kit) -> str:
    """A valid RS256 token of ``idp`` whose header has no ``typ`` at all."""
    registry = JWSRegistry(algorithms=["RS256"], strict_check_header=False)
    protected = {"alg": "RS256", "kid": kit.sig_rsa.kid}
    payload = compact_json(claims()).encode()
    return joserfc_jws.serialize_compact(protected, payload, bare(kit.sig_rsa), registry=registry)


_BOMBS: dict[str, str] = {}


def zip_bomb(kit: Kit) -> str:
    """5 MiB of zeros, DEFLATEd into a ~7 KB JWE (enc-oct-256, A256KW); built once."""
    k = kit.enc_oct[256]
    if k.thumbprint not in _BOMBS:
        header = {"alg": "A256KW", "enc": "A256GCM", "zip": "DEF", "kid": k.kid, "cty": "JWT"}
        token = cjwe.JWE(b"0" * (5 << 20), protected=json.dumps(header))
        token.add_recipient(cjwk.JWK(**jwk_dict(k)))
        _BOMBS[k.thumbprint] = str(token.serialize(compact=True))
    return _BOMBS[k.thumbprint]


def embedded_jwk(kit: Kit, *, kid: str | None) -> str:
    """Signed by the attacker, who also ships the matching public key in ``jwk``."""
    header: dict[str, Any] = {"jwk": jwk_dict(kit.attacker, private=False)}
    if kid is not None:
        header["kid"] = kid
    return sign(claims(), kit.attacker, "RS256", header, kid=False)


def url_header(kit: Kit, name: str, url: str, *, kid: bool = True) -> str:
    """Signed by the attacker, pointing ``jku``/``x5u`` at where its keys would be."""
    return sign(claims(), kit.attacker, "RS256", {name: url}, kid=kid)


def es256_with_p384(kit: Kit, *, kid: bool) -> str:
    """``alg: ES256`` but an ECDSA signature by the P-384 key (wrong curve for ES256)."""
    header: dict[str, Any] = {"alg": "ES256", "typ": "JWT"}
    if kid:
        header["kid"] = "sig-p384"
    private = kit.sig_ec["P-384"].jwk.private_key
    return jose_raw.jws_ecdsa(header, compact_json(claims()).encode(), private, hashes.SHA256(), 48)


def ecdh_invalid_point(kit: Kit) -> str:
    """ECDH-ES with an ephemeral key that is not on P-256 (invalid-curve attack)."""
    header = {
        "alg": "ECDH-ES",
        "enc": "A256GCM",
        "kid": "enc-ec",
        "cty": "JWT",
        "epk": {"kty": "EC", "crv": "P-256", "x": b64(b"\x01" * 32), "y": b64(b"\x02" * 32)},
    }
    return ".".join(
        [
            b64(compact_json(header)),
            "",
            b64(os.urandom(12)),
            b64(os.urandom(80)),
            b64(os.urandom(16)),
        ]
    )


def cbc_truncated_tag(kit: Kit) -> str:
    """A valid A128CBC-HS256 token whose 16-byte tag is cut to 8 bytes."""
    token = encrypt(jws(kit), kit.enc_rsa, enc="A128CBC-HS256")
    return replace_segment(token, 4, b64(unb64(segments(token)[4])[:8]))


def gcm_truncated_tag(kit: Kit) -> str:
    """A valid AES-GCM token with its tag truncated to 8 bytes."""
    token = nested(kit)
    return replace_segment(token, 4, b64(unb64(segments(token)[4])[:8]))


def grow(token: str, length: int) -> str:
    """``token`` with its last segment extended to exactly ``length`` characters."""
    return token + "A" * (length - len(token))


def one_mod_four(segment: str) -> str:
    """``segment`` extended to a length no base64 encoding can have (4n + 1)."""
    return segment + "A" * ((1 - len(segment)) % 4 or 4)


def deep_json(depth: int) -> str:
    """A claims "object" nested ``depth`` arrays deep."""
    return '{"iss":"https://idp.example.test","x":' + "[" * depth + "]" * depth + "}"


# -- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """One hostile token and what the service must answer."""

    id: str
    make: Factory
    reason: Reason
    config: dict[str, Any] = field(default_factory=dict)
    idp: dict[str, Any] = field(default_factory=dict)
    keys: Callable[[Kit], dict[str, Any]] | None = None
    bug: str = ""

    @property
    def status(self) -> int:
        """The status the decision rules give this reason class."""
        return STATUS.get(self.reason, 401)


R = Reason
HS_PROVIDER = {"algorithms": ["RS256", "HS256"]}
ATTACKS: list[Attack] = [
    # alg none, in every spelling, outside and inside a JWE
    *[
        Attack(
            f"alg_{alg}",
            lambda kit, url, a=alg: raw_jws({"alg": a, "typ": "JWT"}, claims(), b""),
            R.ALG_NOT_ALLOWED,
        )
        for alg in ("none", "None", "NONE", "nOnE")
    ],
    Attack(
        "alg_none_with_a_signature",
        lambda kit, url: raw_jws({"alg": "none"}, claims()),
        R.ALG_NOT_ALLOWED,
    ),
    Attack("alg_none_rfc7515_a5", lambda kit, url: vectors.RFC7515_A5_NONE, R.ALG_NOT_ALLOWED),
    *[
        Attack(
            f"inner_alg_{alg}",
            lambda kit, url, a=alg: encrypt(
                raw_jws({"alg": a, "typ": "JWT"}, claims(), b""), kit.enc_rsa
            ),
            R.UNSIGNED,
        )
        for alg in ("none", "None", "NONE", "nOnE")
    ],
    # algorithm confusion
    Attack(
        "hs256_keyed_with_rsa_public_pem",
        lambda kit, url: hs256_with_public_key(kit, *PEM),
        R.ALG_NOT_ALLOWED,
    ),
    Attack(
        "hs256_keyed_with_rsa_public_der",
        lambda kit, url: hs256_with_public_key(kit, *DER),
        R.ALG_NOT_ALLOWED,
    ),
    Attack(
        "hs256_keyed_with_rsa_pkcs1_pem",
        lambda kit, url: hs256_with_public_key(kit, *PKCS1),
        R.ALG_NOT_ALLOWED,
    ),
    Attack(
        "hs256_pem_where_the_provider_allows_hs256",
        lambda kit, url: hs256_with_public_key(kit, *PEM),
        R.UNKNOWN_KID,
        idp=HS_PROVIDER,
    ),
    Attack(
        "hs256_pem_without_kid_where_the_provider_allows_hs256",
        lambda kit, url: hs256_with_public_key(kit, *PEM, kid=False),
        R.UNKNOWN_KID,
        idp=HS_PROVIDER,
    ),
    Attack(
        "es256_signed_with_a_p384_key",
        lambda kit, url: es256_with_p384(kit, kid=True),
        R.UNKNOWN_KID,
    ),
    Attack(
        "es256_signed_with_a_p384_key_no_kid",
        lambda kit, url: es256_with_p384(kit, kid=False),
        R.BAD_SIGNATURE,
    ),
    Attack(
        "lowercase_rs256",
        lambda kit, url: replace_segment(jws(kit), 0, b64('{"alg":"rs256","kid":"sig-rsa"}')),
        R.ALG_NOT_ALLOWED,
    ),
    Attack(
        "unknown_alg",
        lambda kit, url: raw_jws({"alg": "RS1024", "kid": "sig-rsa"}, claims()),
        R.ALG_NOT_ALLOWED,
    ),
    Attack(
        "jws_alg_not_in_provider_list",
        lambda kit, url: sign(claims(), kit.sig_rsa_any, "PS256"),
        R.ALG_NOT_ALLOWED,
        idp={"algorithms": ["RS256"]},
    ),
    # JWE algorithm policy
    Attack("rsa1_5", lambda kit, url: rsa1_5(kit), R.ALG_NOT_ALLOWED),
    Attack(
        "rsa1_5_rfc7520_5_1",
        lambda kit, url: vectors.RFC7520_JWE_5_1,
        R.ALG_NOT_ALLOWED,
        keys=lambda kit: {"decryption_keys": [key(vectors.RFC7520_KEY_5_1)]},
    ),
    Attack("pbes2_huge_p2c_disabled", lambda kit, url: pbes2(2**31), R.ALG_NOT_ALLOWED),
    Attack(
        "pbes2_huge_p2c_over_the_cap",
        lambda kit, url: pbes2(2**31),
        R.TOO_LARGE,
        config={
            "decryption": {"key_algorithms": ["PBES2-HS512+A256KW"], "pbes2_max_iterations": 10000}
        },
    ),
    Attack(
        "pbes2_absurd_p2c_over_the_cap",
        lambda kit, url: pbes2(10**19),
        R.TOO_LARGE,
        config={
            "decryption": {"key_algorithms": ["PBES2-HS512+A256KW"], "pbes2_max_iterations": 10000}
        },
    ),
    Attack(
        "pbes2_p2c_as_string",
        lambda kit, url: pbes2("100000000"),
        R.MALFORMED,
        config={
            "decryption": {"key_algorithms": ["PBES2-HS512+A256KW"], "pbes2_max_iterations": 10000}
        },
    ),
    Attack("zip_bomb_zip_disabled", lambda kit, url: zip_bomb(kit), R.ALG_NOT_ALLOWED),
    Attack(
        "zip_bomb_small_cap",
        lambda kit, url: zip_bomb(kit),
        R.TOO_LARGE,
        config={"decryption": {"zip_max_bytes": 4096}},
    ),
    Attack(
        "enc_not_allowed", lambda kit, url: fake_jwe(jwe_header(enc="XC20P")), R.ALG_NOT_ALLOWED
    ),
    Attack(
        "optional_key_alg_not_enabled",
        lambda kit, url: fake_jwe(jwe_header(alg="A192KW")),
        R.ALG_NOT_ALLOWED,
    ),
    Attack(
        "jwe_alg_dir_with_rsa_kid",
        lambda kit, url: encrypt(jws(kit), kit.enc_oct[256], "dir", header={"kid": "enc-rsa"}),
        R.UNKNOWN_KID,
    ),
    # tampering
    Attack(
        "tampered_jwe_protected_header", lambda kit, url: tampered_jwe_header(kit), R.DECRYPT_FAILED
    ),
    Attack("tampered_jwe_encrypted_key", lambda kit, url: tamper_jwe(kit, 1, 17), R.DECRYPT_FAILED),
    Attack("tampered_jwe_iv", lambda kit, url: tamper_jwe(kit, 2), R.DECRYPT_FAILED),
    Attack("tampered_jwe_ciphertext", lambda kit, url: tamper_jwe(kit, 3, 40), R.DECRYPT_FAILED),
    Attack("tampered_jwe_tag", lambda kit, url: tamper_jwe(kit, 4, 15), R.DECRYPT_FAILED),
    Attack("truncated_gcm_tag", lambda kit, url: gcm_truncated_tag(kit), R.DECRYPT_FAILED),
    Attack("truncated_cbc_hmac_tag", lambda kit, url: cbc_truncated_tag(kit), R.DECRYPT_FAILED),
    Attack("empty_jwe_tag", lambda kit, url: replace_segment(nested(kit), 4, ""), R.DECRYPT_FAILED),
    Attack(
        "ecdh_es_point_not_on_the_curve", lambda kit, url: ecdh_invalid_point(kit), R.DECRYPT_FAILED
    ),
    Attack("tampered_jws_payload", lambda kit, url: tampered_jws_payload(kit), R.BAD_SIGNATURE),
    Attack(
        "tampered_jws_signature",
        lambda kit, url: replace_segment(jws(kit), 2, flip(segments(jws(kit))[2], 100)),
        R.BAD_SIGNATURE,
    ),
    Attack(
        "tampered_jws_header",
        lambda kit, url: replace_segment(
            jws(kit), 0, b64('{"alg":"RS256","kid":"sig-rsa","typ":"at+jwt"}')
        ),
        R.BAD_SIGNATURE,
    ),
    Attack(
        "truncated_jws_signature",
        lambda kit, url: replace_segment(jws(kit), 2, b64(unb64(segments(jws(kit))[2])[:128])),
        R.BAD_SIGNATURE,
    ),
    Attack(
        "signature_of_another_token",
        lambda kit, url: replace_segment(jws(kit), 2, segments(jws(kit, sub="x"))[2]),
        R.BAD_SIGNATURE,
    ),
    # keys: unknown, foreign, embedded, remote
    Attack(
        "unknown_kid_jws",
        lambda kit, url: sign(claims(), kit.sig_rsa, header={"kid": "nope"}),
        R.UNKNOWN_KID,
    ),
    Attack(
        "unknown_kid_jwe",
        lambda kit, url: encrypt(jws(kit), kit.enc_rsa, header={"kid": "x"}),
        R.UNKNOWN_KID,
    ),
    Attack(
        "key_of_another_provider", lambda kit, url: sign(claims(), kit.other_sig), R.UNKNOWN_KID
    ),
    Attack(
        "key_of_another_provider_no_kid",
        lambda kit, url: sign(claims(), kit.other_sig, kid=False),
        R.BAD_SIGNATURE,
    ),
    Attack(
        "own_key_claiming_another_issuer",
        lambda kit, url: sign(claims(issuer=OTHER_ISSUER), kit.sig_rsa),
        R.UNKNOWN_KID,
    ),
    Attack(
        "attacker_key_in_jwk_header",
        lambda kit, url: embedded_jwk(kit, kid="attacker"),
        R.UNKNOWN_KID,
    ),
    Attack(
        "attacker_key_in_jwk_header_no_kid",
        lambda kit, url: embedded_jwk(kit, kid=None),
        R.BAD_SIGNATURE,
    ),
    Attack(
        "attacker_key_in_jwk_header_our_kid",
        lambda kit, url: embedded_jwk(kit, kid="sig-rsa"),
        R.BAD_SIGNATURE,
    ),
    Attack("jku_url", lambda kit, url: url_header(kit, "jku", url), R.UNKNOWN_KID),
    Attack(
        "jku_url_no_kid", lambda kit, url: url_header(kit, "jku", url, kid=False), R.BAD_SIGNATURE
    ),
    Attack("x5u_url", lambda kit, url: url_header(kit, "x5u", url), R.UNKNOWN_KID),
    Attack(
        "x5c_chain",
        lambda kit, url: sign(
            claims(),
            kit.attacker,
            "RS256",
            {"x5c": [b64(os.urandom(300)).replace("-", "+")]},
            kid=False,
        ),
        R.BAD_SIGNATURE,
    ),
    Attack(
        "jws_signed_with_an_enc_key",
        lambda kit, url: sign(claims(), kit.enc_rsa_any, "RS256"),
        R.UNKNOWN_KID,
        keys=lambda kit: {"idp_keys": [*kit.idp_keys, kit.enc_rsa_any]},
    ),
    Attack(
        "jwe_for_a_sig_key",
        lambda kit, url: encrypt(jws(kit), kit.sig_rsa, "RSA-OAEP-256"),
        R.UNKNOWN_KID,
        keys=lambda kit: {"decryption_keys": [*kit.decryption_keys, kit.sig_rsa]},
    ),
    # crit
    Attack(
        "unknown_crit_jws",
        lambda kit, url: signed_raw(
            kit, {"alg": "RS256", "kid": "sig-rsa", "crit": ["x-policy"], "x-policy": 1}, claims()
        ),
        R.UNSUPPORTED_CRIT,
    ),
    Attack(
        "unknown_crit_jwe",
        lambda kit, url: encrypted_raw(
            kit, jwe_header(crit=["x-policy"], **{"x-policy": 1}), jws(kit)
        ),
        R.UNSUPPORTED_CRIT,
    ),
    Attack(
        "unencoded_payload_b64_false",
        lambda kit, url: signed_raw(
            kit, {"alg": "RS256", "kid": "sig-rsa", "b64": False, "crit": ["b64"]}, claims()
        ),
        R.UNSUPPORTED_CRIT,
    ),
    # strict JSON
    Attack(
        "duplicate_alg_in_jws_header",
        lambda kit, url: signed_raw(kit, '{"alg":"RS256","kid":"sig-rsa","alg":"none"}', claims()),
        R.MALFORMED,
    ),
    Attack(
        "duplicate_kid_in_jwe_header",
        lambda kit, url: encrypted_raw(
            kit,
            '{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"enc-rsa","kid":"x","cty":"JWT"}',
            jws(kit),
        ),
        R.MALFORMED,
    ),
    Attack(
        "duplicate_sub_in_claims",
        lambda kit, url: signed_raw(
            kit, {"alg": "RS256", "kid": "sig-rsa"}, payload_text()[:-1] + ',"sub":"admin"}'
        ),
        R.MALFORMED,
    ),
    Attack(
        "duplicate_iss_in_inner_claims",
        lambda kit, url: encrypt(
            signed_raw(
                kit,
                {"alg": "RS256", "kid": "sig-rsa"},
                payload_text()[:-1] + ',"iss":"https://other.example.test"}',
            ),
            kit.enc_rsa,
        ),
        R.MALFORMED,
    ),
    Attack(
        "nan_exp",
        lambda kit, url: signed_raw(
            kit, {"alg": "RS256", "kid": "sig-rsa"}, payload_text(exp="NaN")
        ),
        R.MALFORMED,
    ),
    Attack(
        "infinity_exp",
        lambda kit, url: signed_raw(
            kit, {"alg": "RS256", "kid": "sig-rsa"}, payload_text(exp="Infinity")
        ),
        R.MALFORMED,
    ),
    Attack(
        "float_overflow_exp",
        lambda kit, url: signed_raw(
            kit, {"alg": "RS256", "kid": "sig-rsa"}, payload_text(exp="1e400")
        ),
        R.MALFORMED,
    ),
    Attack(
        "huge_integer_exp",
        lambda kit, url: signed_raw(
            kit, {"alg": "RS256", "kid": "sig-rsa"}, payload_text(exp="9" * 400)
        ),
        R.MALFORMED,
    ),
    Attack(
        "huge_integer_in_header",
        lambda kit, url: raw_jws('{"alg":"RS256","kid":"sig-rsa","n":' + "1" * 400 + "}", claims()),
        R.MALFORMED,
    ),
    Attack(
        "deeply_nested_claims",
        lambda kit, url: signed_raw(kit, {"alg": "RS256", "kid": "sig-rsa"}, deep_json(5000)),
        R.MALFORMED,
    ),
    Attack("json_array_header", lambda kit, url: raw_jws('["RS256"]', claims()), R.MALFORMED),
    Attack("json_string_header", lambda kit, url: raw_jws('"RS256"', claims()), R.MALFORMED),
    Attack(
        "missing_alg",
        lambda kit, url: raw_jws({"kid": "sig-rsa", "typ": "JWT"}, claims()),
        R.MALFORMED,
    ),
    Attack(
        "kid_not_a_string",
        lambda kit, url: raw_jws({"alg": "RS256", "kid": 1}, claims()),
        R.MALFORMED,
    ),
    Attack(
        "jwe_without_enc",
        lambda kit, url: fake_jwe({"alg": "RSA-OAEP-256", "kid": "enc-rsa"}),
        R.MALFORMED,
    ),
    Attack(
        "claims_are_an_array",
        lambda kit, url: signed_raw(kit, {"alg": "RS256", "kid": "sig-rsa"}, "[]"),
        R.MALFORMED,
    ),
    Attack(
        "header_over_4_kib",
        lambda kit, url: raw_jws({"alg": "RS256", "kid": "sig-rsa", "pad": "p" * 5000}, claims()),
        R.MALFORMED,
    ),
    # size
    Attack(
        "one_megabyte_token",
        lambda kit, url: "eyJ" + "A" * (1 << 20),
        R.TOO_LARGE,
        config={"token": {"max_header_bytes": 4 << 20}},
    ),
    Attack("one_megabyte_header_line", lambda kit, url: "eyJ" + "A" * (1 << 20), R.TOO_LARGE),
    Attack("max_bytes_plus_one", lambda kit, url: grow(jws(kit), 16385), R.TOO_LARGE),
    # nesting and plaintext
    Attack("jwe_inside_jwe", lambda kit, url: encrypt(nested(kit), kit.enc_rsa), R.MALFORMED),
    Attack(
        "jwe_inside_jwe_without_cty",
        lambda kit, url: encrypt(nested(kit), kit.enc_oct[256], "A256KW", cty=None),
        R.MALFORMED,
    ),
    Attack(
        "non_jwt_plaintext", lambda kit, url: encrypt("just some text", kit.enc_rsa), R.MALFORMED
    ),
    Attack("binary_plaintext", lambda kit, url: encrypt(os.urandom(64), kit.enc_rsa), R.MALFORMED),
    Attack("jwe_cty_json", lambda kit, url: nested(kit, cty="application/json"), R.MALFORMED),
    Attack(
        "unsigned_inner_under_public_key",
        lambda kit, url: encrypt(json.dumps(claims()), kit.enc_rsa),
        R.UNSIGNED,
    ),
    Attack(
        "unsigned_inner_under_dir_not_allowed",
        lambda kit, url: encrypt(json.dumps(claims()), kit.enc_oct[256], "dir"),
        R.UNSIGNED,
    ),
    Attack(
        "unsigned_inner_under_public_key_even_if_allowed",
        lambda kit, url: encrypt(json.dumps(claims()), kit.enc_rsa),
        R.UNSIGNED,
        idp={"allow_unsigned_inner": ["enc-rsa"]},
    ),
    Attack(
        "unsigned_inner_under_ecdh_even_if_allowed",
        lambda kit, url: encrypt(json.dumps(claims()), kit.enc_ec, "ECDH-ES"),
        R.UNSIGNED,
        idp={"allow_unsigned_inner": ["enc-ec"]},
    ),
    Attack(
        # a key shared with one sender never lets it mint tokens for another issuer
        "unsigned_inner_under_a_symmetric_key_the_provider_does_not_name",
        lambda kit, url: encrypt(
            json.dumps(claims(scope="admin", sub="root")), kit.enc_oct[256], "dir"
        ),
        R.UNSIGNED,
        idp={"allow_unsigned_inner": ["enc-oct-128"]},
    ),
    Attack(
        "hs256_with_a_key_shorter_than_the_hash",
        lambda kit, url: sign(claims(), jose_raw_oct(SHORT_HMAC), "HS256"),
        R.UNKNOWN_KID,
        idp=HS_PROVIDER,
        keys=lambda kit: {"idp_keys": [key(oct_jwk(128, "short", use=None, secret=SHORT_HMAC))]},
    ),
    Attack(
        "typ_not_in_the_providers_token_types",
        lambda kit, url: sign(claims(), kit.sig_rsa, header={"typ": "JWT"}),
        R.INVALID_CLAIM,
        idp={"token_types": ["at+jwt"]},
    ),
    Attack(
        "typ_missing_when_the_provider_checks_it",
        lambda kit, url: raw_typless(kit),
        R.INVALID_CLAIM,
        idp={"token_types": ["at+jwt"]},
    ),
    Attack(
        "plain_jws_when_decryption_required",
        lambda kit, url: jws(kit),
        R.ENCRYPTION_REQUIRED,
        config={"decryption": {"required": True}},
    ),
    # claims
    Attack("exp_as_string", lambda kit, url: jws(kit, exp=str(NOW + 300)), R.INVALID_CLAIM),
    Attack("exp_as_bool", lambda kit, url: jws(kit, exp=True), R.INVALID_CLAIM),
    Attack("exp_beyond_year_9999", lambda kit, url: jws(kit, exp=10**19), R.INVALID_CLAIM),
    Attack("missing_exp", lambda kit, url: jws(kit, exp=None), R.MISSING_CLAIM),
    Attack("missing_sub", lambda kit, url: jws(kit, sub=None, subject=None), R.MISSING_CLAIM),
    Attack("missing_iss", lambda kit, url: jws(kit, iss=None), R.MISSING_CLAIM),
    Attack(
        "iss_not_a_string",
        lambda kit, url: jws(kit, iss=["https://idp.example.test"]),
        R.INVALID_CLAIM,
    ),
    Attack("future_nbf", lambda kit, url: jws(kit, nbf=NOW + 3600), R.NOT_YET_VALID),
    Attack("future_iat", lambda kit, url: jws(kit, iat=NOW + 3600), R.NOT_YET_VALID),
    Attack("expired", lambda kit, url: jws(kit, exp=NOW - 31), R.EXPIRED),
    Attack("expired_long_ago_nested", lambda kit, url: nested(kit, claims(now=0)), R.EXPIRED),
    Attack(
        "wrong_iss", lambda kit, url: jws(kit, issuer="https://evil.example.test"), R.BAD_ISSUER
    ),
    Attack(
        "iss_with_trailing_slash",
        lambda kit, url: jws(kit, issuer="https://idp.example.test/"),
        R.BAD_ISSUER,
    ),
    Attack("wrong_aud", lambda kit, url: jws(kit, audience="api://payments"), R.BAD_AUDIENCE),
    Attack("missing_aud", lambda kit, url: jws(kit, audience=None), R.BAD_AUDIENCE),
    Attack("aud_not_strings", lambda kit, url: jws(kit, audience=[AUDIENCE, 7]), R.INVALID_CLAIM),
    Attack("scope_not_a_string", lambda kit, url: jws(kit, scope=["admin"]), R.INVALID_CLAIM),
    Attack(
        "valid_token_without_the_scope",
        lambda kit, url: jws(kit, scope="read"),
        R.INSUFFICIENT_SCOPE,
        config={"rules": [{"name": "all", "path_prefix": "/", "require_scopes": ["admin"]}]},
    ),
    # encoding and shape
    Attack("plus_in_header", lambda kit, url: "eyJ+" + jws(kit)[4:], R.MALFORMED),
    Attack(
        "slash_in_payload",
        lambda kit, url: replace_segment(jws(kit), 1, segments(jws(kit))[1][:-1] + "/"),
        R.MALFORMED,
    ),
    Attack("padding_in_signature", lambda kit, url: jws(kit) + "==", R.MALFORMED),
    Attack(
        "padding_in_header",
        lambda kit, url: replace_segment(jws(kit), 0, segments(jws(kit))[0] + "="),
        R.MALFORMED,
    ),
    Attack(
        "impossible_base64_length",
        lambda kit, url: replace_segment(jws(kit), 1, one_mod_four(segments(jws(kit))[1])),
        R.MALFORMED,
    ),
    Attack("space_inside", lambda kit, url: jws(kit)[:20] + " " + jws(kit)[20:], R.MALFORMED),
    Attack("non_ascii_letter", lambda kit, url: "\u00ebyJ" + jws(kit)[3:], R.MALFORMED),
    Attack("fullwidth_digits", lambda kit, url: jws(kit)[:-2] + "\uff10\uff11", R.MALFORMED),
    Attack("nul_byte", lambda kit, url: jws(kit)[:10] + "\x00" + jws(kit)[10:], R.MALFORMED),
    Attack("one_segment", lambda kit, url: segments(jws(kit))[0], R.MALFORMED),
    Attack("two_segments", lambda kit, url: ".".join(segments(jws(kit))[:2]), R.MALFORMED),
    Attack("four_segments", lambda kit, url: ".".join(segments(nested(kit))[:4]), R.MALFORMED),
    Attack("six_segments", lambda kit, url: nested(kit) + "." + segments(jws(kit))[0], R.MALFORMED),
    Attack(
        "seven_segments",
        lambda kit, url: jws(kit) + "." + ".".join(segments(jws(kit))[:3]),
        R.MALFORMED,
    ),
    Attack("only_dots", lambda kit, url: "..", R.MALFORMED),
    Attack("only_dots_jwe", lambda kit, url: "....", R.MALFORMED),
    Attack("empty_header_segment", lambda kit, url: replace_segment(jws(kit), 0, ""), R.MALFORMED),
    Attack("empty_payload_segment", lambda kit, url: replace_segment(jws(kit), 1, ""), R.MALFORMED),
    Attack(
        "empty_signature_segment", lambda kit, url: replace_segment(jws(kit), 2, ""), R.MALFORMED
    ),
    Attack("trailing_newline", lambda kit, url: jws(kit) + "\n", R.MALFORMED),
    Attack("trailing_newline_jwe", lambda kit, url: nested(kit) + "\n", R.MALFORMED),
    Attack("leading_newline", lambda kit, url: "\n" + jws(kit), R.MALFORMED),
    Attack("empty_bearer", lambda kit, url: "", R.MALFORMED),
]

#: reason classes a token can produce (the rest need a rule, the keys or a bug)
TOKEN_REASONS = {
    R.MALFORMED,
    R.TOO_LARGE,
    R.ALG_NOT_ALLOWED,
    R.UNSUPPORTED_CRIT,
    R.ENCRYPTION_REQUIRED,
    R.UNKNOWN_KID,
    R.DECRYPT_FAILED,
    R.BAD_SIGNATURE,
    R.UNSIGNED,
    R.EXPIRED,
    R.NOT_YET_VALID,
    R.BAD_ISSUER,
    R.BAD_AUDIENCE,
    R.MISSING_CLAIM,
    R.INVALID_CLAIM,
    R.INSUFFICIENT_SCOPE,
}


def test_the_table_is_broad() -> None:
    """At least 40 distinct rows, covering every reason class a token can produce."""
    ids = [attack.id for attack in ATTACKS]
    assert len(ids) == len(set(ids)) >= 40
    assert {attack.reason for attack in ATTACKS} >= TOKEN_REASONS


# -- the runner ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A local TCP listener that ``jku``/``x5u`` point at; nobody may ever connect."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    host, port = server.getsockname()
    try:
        yield server, f"http://{host}:{port}/.well-known/jwks.json"
    finally:
        server.close()


@pytest.fixture(scope="module")
def envs(new_env: NewEnv, kit: Kit) -> Callable[[Attack], Env]:
    """One pipeline per distinct row configuration (built lazily, reused)."""
    built: dict[str, Env] = {}

    def get(attack: Attack) -> Env:
        keys = attack.keys(kit) if attack.keys else {}
        memo = json.dumps([attack.config, attack.idp, attack.id if keys else ""], sort_keys=True)
        if memo not in built:
            built[memo] = new_env(attack.config, idp=attack.idp or None, **keys)
        return built[memo]

    return get


def _leaks(text: str, kit: Kit, token: str) -> list[str]:
    needles = [
        *kit.all_kids,
        "Traceback",
        "joserfc",
        "cryptography",
        "Exception",
        "Error(",
        "line ",
        ".py",
    ]
    found = [n for n in needles if n in text]
    if len(token) >= 24 and any(token[i : i + 24] in text for i in range(0, len(token) - 24, 24)):
        found.append("token text")
    return found


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(
            a, id=a.id, marks=pytest.mark.xfail(strict=True, reason=a.bug) if a.bug else ()
        )
        for a in ATTACKS
    ],
)
def test_attack_is_denied(
    attack: Attack, kit: Kit, envs: Callable[[Attack], Env], listener: tuple[socket.socket, str]
) -> None:
    """Deny, expected reason and status, nothing leaked, no network, bounded CPU."""
    server, url = listener
    env = envs(attack)
    token = attack.make(kit, url)

    with contextlib.suppress(TokenError):  # the verifier raises nothing but TokenError
        env.evaluator.verifier.verify(token, env.store.ring)

    request = env.request(token)
    started_cpu, started_wall = time.process_time(), time.monotonic()
    decision, _ = env.evaluator.check(request)
    cpu, wall = time.process_time() - started_cpu, time.monotonic() - started_wall

    assert not decision.allowed
    assert decision.reason is attack.reason, decision.detail
    assert decision.status == attack.status
    assert cpu < CPU_BOUND, f"{cpu:.3f}s of CPU"
    assert wall < 5 * CPU_BOUND, f"{wall:.3f}s of wall time"
    with pytest.raises(BlockingIOError):
        server.accept()  # nothing ever dialled the jku / x5u address

    data = body(decision)
    assert set(data) >= {"error", "error_description"}
    client_facing = decision.body + "".join(value for _, value in decision.response_headers)
    assert _leaks(client_facing, kit, token) == []
