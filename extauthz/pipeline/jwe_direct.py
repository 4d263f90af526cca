"""Decrypt the commonest JWE shapes with ``cryptography`` directly.

Identity providers that encrypt tokens mostly use ECDH-ES (direct key agreement on
P-256/P-384/P-521) or RSA-OAEP / RSA-OAEP-256, with AES-GCM content encryption.
For these, joserfc's general machinery (header registry, key and recipient objects,
the ephemeral key imported as a JWK) costs as much again as the cryptography. For a
token of exactly the plain shape — only the usual header members, each a string; an
``epk`` of exactly ``kty``/``crv``/``x``/``y`` on the key's own curve, coordinates in
strict base64url of the curve's size; ``apu``/``apv`` in strict base64url; no ``zip``
— :func:`decrypt` performs the steps joserfc performs (RFC 7516 §5.2; RFC 7518 §4.3,
§4.6, §5.3) and returns the plaintext. Anything else returns None and joserfc
decides, so an unusual token is judged exactly as before. A differential test holds
both to the same answers, valid and tampered tokens alike.

Failures raise (``ValueError``, ``InvalidTag``, joserfc's key-operation errors): the
caller tries the next key, as it does when joserfc fails.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

from extauthz.keys.material import Key
from extauthz.pipeline import b64url

#: content encryption: AES-GCM key size in bits (RFC 7518 §5.3)
_GCM_BITS = {"A128GCM": 128, "A192GCM": 192, "A256GCM": 256}
#: JWK curve -> (curve, coordinate size in bytes)
_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48), "P-521": (ec.SECP521R1(), 66),
}  # fmt: skip
_OAEP = {
    "RSA-OAEP": padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303 - RFC 7518 §4.3
    "RSA-OAEP-256": padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    ),
}
#: header members of the plain shapes; any other member sends the token to joserfc
_PLAIN_MEMBERS = frozenset({"alg", "enc", "kid", "typ", "cty"})
_AGREEMENT_MEMBERS = _PLAIN_MEMBERS | {"epk", "apu", "apv"}
_EPK_MEMBERS = frozenset({"kty", "crv", "x", "y"})


class DecryptFailed(ValueError):
    """This key did not decrypt the token."""


def _strict_b64(value: Any) -> bytes | None:
    """A header string in canonical base64url, or None (joserfc then decides)."""
    if not isinstance(value, str) or not value.isascii():
        return None
    try:
        return b64url.decode(value.encode("ascii"))
    except ValueError:
        return None


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _ecdh_es(header: Mapping[str, Any], encrypted_key: bytes, key: Key, enc: str,
             bits: int) -> bytes | None:  # fmt: skip
    """The agreed-upon key (RFC 7518 §4.6.2), or None outside the plain shape."""
    epk = header.get("epk")
    private = key.jwk.private_key if key.kty == "EC" else None
    if encrypted_key or private is None or not isinstance(epk, dict):
        return None
    if epk.keys() != _EPK_MEMBERS or epk["kty"] != "EC" or not isinstance(epk["crv"], str):
        return None
    curve = _CURVES.get(epk["crv"])
    if curve is None or curve[0].name != private.curve.name:
        return None
    x, y = _strict_b64(epk["x"]), _strict_b64(epk["y"])
    if x is None or y is None or len(x) != curve[1] or len(y) != curve[1]:
        return None
    party = []
    for name in ("apu", "apv"):
        value = header.get(name)
        decoded = b"" if value is None or value == "" else _strict_b64(value)
        if decoded is None:
            return None
        party.append(decoded)
    # an off-curve point is refused here (ValueError): the key failed
    public = ec.EllipticCurvePublicKey.from_encoded_point(curve[0], b"\x04" + x + y)
    shared = private.exchange(ec.ECDH(), public)
    other = (
        _length_prefixed(enc.encode("ascii")) + _length_prefixed(party[0])
        + _length_prefixed(party[1]) + struct.pack(">I", bits)
    )  # fmt: skip
    return ConcatKDFHash(hashes.SHA256(), bits // 8, other).derive(shared)


def _rsa_oaep(alg: str, encrypted_key: bytes, key: Key, bits: int) -> bytes | None:
    """The content encryption key (RFC 7518 §4.3), or None outside the plain shape."""
    if key.kty != "RSA" or not key.private:
        return None
    private = key.jwk.get_op_key("decrypt")  # honours the JWK's key_ops, as joserfc does
    cek: bytes = private.decrypt(encrypted_key, _OAEP[alg])
    if len(cek) * 8 != bits:
        raise DecryptFailed("content encryption key of the wrong size")
    return cek


def decrypt(header: Mapping[str, Any], segments: list[bytes], key: Key) -> bytes | None:
    """The plaintext of a compact JWE whose ``segments`` were checked as base64url and
    whose protected ``header`` was parsed by ``tokens.parse_header`` (``alg``, ``kid``,
    ``typ`` and ``cty`` are strings there); None when it is not of the plain shape
    (joserfc then decides); raises when ``key`` does not decrypt it."""
    alg = header["alg"]
    bits = _GCM_BITS.get(header["enc"])
    members = _AGREEMENT_MEMBERS if alg == "ECDH-ES" else _PLAIN_MEMBERS
    if bits is None or not header.keys() <= members:
        return None
    protected, encrypted_key, iv, ciphertext, tag = segments
    cek: bytes | None
    if alg == "ECDH-ES":
        cek = _ecdh_es(header, b64url.decode(encrypted_key), key, header["enc"], bits)
    elif alg in _OAEP:
        if not encrypted_key:
            return None
        cek = _rsa_oaep(alg, b64url.decode(encrypted_key), key, bits)
    else:
        return None
    if cek is None:
        return None
    nonce, auth_tag = b64url.decode(iv), b64url.decode(tag)
    if len(nonce) != 12 or len(auth_tag) != 16:
        raise DecryptFailed("GCM needs a 96-bit IV and a 128-bit tag")
    # raises InvalidTag unless the key, the header (additional data) and the
    # ciphertext are exactly what was encrypted
    return AESGCM(cek).decrypt(nonce, b64url.decode(ciphertext) + auth_tag, protected)
