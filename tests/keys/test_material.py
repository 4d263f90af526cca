"""Key material: JWK / JWKS / PEM parsing, RSA import checks, size floor, memoization."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extauthz import mint
from extauthz.errors import KeyMaterialError
from extauthz.keys.material import MaterialMemo, key_from_jwk, parse_key_material


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    return mint.generate_jwk("enc", "RSA-OAEP-256", "a"), mint.generate_jwk(
        "enc", "RSA-OAEP-256", "b"
    )


@pytest.mark.parametrize("member", ["p", "q", "dp", "dq", "qi", "d"])
def test_an_rsa_private_key_with_inconsistent_parameters_is_refused(
    rsa_pair: tuple[dict[str, Any], dict[str, Any]], member: str
) -> None:
    good, other = rsa_pair
    with pytest.raises(KeyMaterialError):
        key_from_jwk({**good, member: other[member]}, "test")


def test_the_fast_rsa_import_keeps_use_alg_and_decrypts(
    rsa_pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    good, _ = rsa_pair
    key = key_from_jwk(good, "test")
    assert key.private
    assert (key.public_dict()["use"], key.public_dict()["alg"], key.kid) == (
        "enc",
        "RSA-OAEP-256",
        "a",
    )
    public = {k: v for k, v in good.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    from joserfc import jwe

    from extauthz.config import DecryptionConfig
    from extauthz.pipeline.algorithms import JWEPolicy

    token = mint.encrypt("x.y.z", public)
    registry = JWEPolicy(DecryptionConfig()).registry
    assert jwe.decrypt_compact(token, key.jwk, registry=registry).plaintext == b"x.y.z"


def test_rsa_keys_under_2048_bits_are_refused_as_jwk_and_pem() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns when it generates a weak key
        small = mint.generate_jwk("enc", "RSA-OAEP-256", "s", bits=1024)
    with pytest.raises(KeyMaterialError, match="2048"):
        key_from_jwk(small, "test")
    native = rsa.generate_private_key(65537, 1024)
    pem = native.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyMaterialError, match="2048"):
        parse_key_material(pem, "small.pem")


def test_parsed_material_is_memoized_by_content(
    rsa_pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """A source's memo parses unchanged bytes once; another source parses its own."""
    data = json.dumps({"keys": [rsa_pair[0]]}).encode()
    memo = MaterialMemo()
    first = memo.parse(data, "s/jwks.json")
    again = memo.parse(data, "s/jwks.json")
    assert first[0] is again[0]
    assert MaterialMemo().parse(data, "s/jwks.json")[0] is not first[0]
    with pytest.raises(KeyMaterialError):
        memo.parse(b"{broken", "s/jwks.json")
