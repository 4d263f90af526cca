"""Make keys and tokens: for ``extauthz keygen``, ``extauthz token`` and the dev mode.

Nothing here is used to *accept* a token; it only produces them, with the same
algorithm set the service accepts (including RSA-OAEP-384/512).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from joserfc import jwe, jwk, jws
from joserfc.jwe import JWERegistry
from joserfc.jws import JWSRegistry

from extauthz.keys.material import Key, key_from_jwk
from extauthz.pipeline import algorithms as _algorithms

#: key parameters for each algorithm ``keygen`` understands
_KEYGEN: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), ("RSA", 2048)),
    **dict.fromkeys(("RSA-OAEP", "RSA-OAEP-256", "RSA-OAEP-384", "RSA-OAEP-512"), ("RSA", 2048)),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
    "ECDH-ES": ("EC", "P-256"), "ECDH-ES+A128KW": ("EC", "P-256"),
    "ECDH-ES+A256KW": ("EC", "P-256"),
    "A128KW": ("oct", 128), "A256KW": ("oct", 256), "A256GCMKW": ("oct", 256),
    "dir": ("oct", 256), "HS256": ("oct", 256), "HS384": ("oct", 384), "HS512": ("oct", 512),
}  # fmt: skip

KEYGEN_ALGORITHMS = tuple(sorted(_KEYGEN))

#: content-encryption key size in bits, for ``dir``
DIR_KEY_BITS = {"A128GCM": 128, "A192GCM": 192, "A256GCM": 256, "A128CBC-HS256": 256,
                "A192CBC-HS384": 384, "A256CBC-HS512": 512}  # fmt: skip


def generate_jwk(
    use: str, alg: str, kid: str | None = None, bits: int | None = None
) -> dict[str, Any]:
    """A new private JWK (as a dict) for ``use`` (``enc``/``sig``) and ``alg``."""
    if alg not in _KEYGEN:
        raise ValueError(f"unsupported algorithm {alg!r}")
    kty, param = _KEYGEN[alg]
    if bits is not None:
        param = bits
    key: Any = jwk.generate_key(kty, param, private=True)  # type: ignore[call-overload]
    data: dict[str, Any] = dict(key.as_dict(private=True))
    data["use"] = use
    data["alg"] = alg
    data["kid"] = kid or key.thumbprint()
    return data


def import_key(data: Mapping[str, Any] | Key) -> Key:
    """A :class:`Key` from a JWK dict (or a Key, returned as is)."""
    return data if isinstance(data, Key) else key_from_jwk(data, "mint")


def sign(
    claims: Mapping[str, Any], key: Mapping[str, Any] | Key, alg: str | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:  # fmt: skip
    """A compact JWS of ``claims``; ``kid`` and ``alg`` default to the key's."""
    k = import_key(key)
    alg = alg or k.alg or "RS256"
    protected = {"alg": alg, "typ": "JWT", "kid": k.kid, **(header or {})}
    payload = json.dumps(dict(claims), separators=(",", ":")).encode()
    registry = JWSRegistry(algorithms=[alg])
    registry.algorithms = _algorithms.jws_models()
    return jws.serialize_compact(protected, payload, k.jwk, registry=registry)


def encrypt(
    plaintext: str | bytes, key: Mapping[str, Any] | Key, alg: str | None = None,
    enc: str = "A256GCM", header: Mapping[str, Any] | None = None,
) -> str:  # fmt: skip
    """A compact JWE of ``plaintext`` for ``key`` (``cty: JWT`` by default)."""
    k = import_key(key)
    alg = alg or k.alg or "RSA-OAEP-256"
    protected = {"alg": alg, "enc": enc, "cty": "JWT", "kid": k.kid, **(header or {})}
    protected = {name: value for name, value in protected.items() if value is not None}
    registry = JWERegistry(algorithms=[alg, enc, "DEF"])
    registry.algorithms = _algorithms.jwe_models()  # RSA-OAEP-384/512 included
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    return jwe.encrypt_compact(protected, data, k.jwk, registry=registry)


def claims_for(
    issuer: str, audience: str | list[str] | None, subject: str = "user-1", ttl: int = 300,
    extra: Mapping[str, Any] | None = None, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A typical access-token claims set valid for ``ttl`` seconds from ``now``."""
    t = int(time.time() if now is None else now)
    data: dict[str, Any] = {"iss": issuer, "sub": subject, "iat": t, "nbf": t, "exp": t + ttl}
    if audience is not None:
        data["aud"] = audience
    data.update(extra or {})
    return data
