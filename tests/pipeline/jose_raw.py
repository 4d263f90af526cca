"""A minimal, independent JOSE minter on ``cryptography`` (test-only).

Two uses:

- interop: RSA-OAEP-384 / RSA-OAEP-512 JWEs, which neither joserfc nor jwcrypto ship,
  built straight from RFC 7516 §5.1 (random CEK, OAEP wrap, content encryption with the
  ASCII of the encoded protected header as AAD) and RFC 7518 §5 (AES-GCM, AES-CBC +
  HMAC-SHA2);
- forgery: a *correctly* encrypted or signed token whose protected header is any text
  we like (duplicate members, ``crit``, ``NaN`` ...), which real libraries refuse to
  produce.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from .support import b64

#: content-encryption key length in bytes (RFC 7518 §5.1)
CEK_BYTES = {
    "A128GCM": 16,
    "A192GCM": 24,
    "A256GCM": 32,
    "A128CBC-HS256": 32,
    "A192CBC-HS384": 48,
    "A256CBC-HS512": 64,
}
_CBC_HASH = {
    "A128CBC-HS256": hashlib.sha256,
    "A192CBC-HS384": hashlib.sha384,
    "A256CBC-HS512": hashlib.sha512,
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA-1": hashes.SHA1,
    "SHA-256": hashes.SHA256,
    "SHA-384": hashes.SHA384,
    "SHA-512": hashes.SHA512,
}
OAEP_HASH = {
    "RSA-OAEP": "SHA-1",
    "RSA-OAEP-256": "SHA-256",
    "RSA-OAEP-384": "SHA-384",
    "RSA-OAEP-512": "SHA-512",
}


def header_text(header: Mapping[str, Any] | str) -> str:
    """The protected header as JSON text (a string is used verbatim)."""
    return header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))


def content_encrypt(
    enc: str, cek: bytes, plaintext: bytes, aad: bytes
) -> tuple[bytes, bytes, bytes]:
    """(iv, ciphertext, tag) of ``plaintext`` under ``enc`` (RFC 7518 §5.2, §5.3)."""
    if enc.endswith("GCM"):
        iv = os.urandom(12)
        sealed = AESGCM(cek).encrypt(iv, plaintext, aad)
        return iv, sealed[:-16], sealed[-16:]
    half = len(cek) // 2
    mac_key, enc_key = cek[:half], cek[half:]
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    al = (len(aad) * 8).to_bytes(8, "big")
    tag = hmac.new(mac_key, aad + iv + ciphertext + al, _CBC_HASH[enc]).digest()[:half]
    return iv, ciphertext, tag


def jwe(
    header: Mapping[str, Any] | str, plaintext: bytes, encrypted_key: bytes, cek: bytes, enc: str
) -> str:
    """Assemble a compact JWE around an already wrapped CEK."""
    protected = b64(header_text(header))
    iv, ciphertext, tag = content_encrypt(enc, cek, plaintext, protected.encode("ascii"))
    return ".".join([protected, b64(encrypted_key), b64(iv), b64(ciphertext), b64(tag)])


def jwe_rsa_oaep(
    header: Mapping[str, Any] | str,
    plaintext: bytes,
    public_key: rsa.RSAPublicKey,
    alg: str,
    enc: str,
) -> str:
    """A compact JWE with RSAES-OAEP key wrapping (SHA-1/256/384/512, MGF1 same hash)."""
    digest = _HASHES[OAEP_HASH[alg]]()
    cek = os.urandom(CEK_BYTES[enc])
    wrapped = public_key.encrypt(
        cek, asym_padding.OAEP(mgf=asym_padding.MGF1(digest), algorithm=digest, label=None)
    )
    return jwe(header, plaintext, wrapped, cek, enc)


def jwe_rsa1_5(
    header: Mapping[str, Any] | str, plaintext: bytes, public_key: rsa.RSAPublicKey, enc: str
) -> str:
    """A compact JWE with RSAES-PKCS1-v1_5 key wrapping (``RSA1_5``, never accepted)."""
    cek = os.urandom(CEK_BYTES[enc])
    wrapped = public_key.encrypt(cek, asym_padding.PKCS1v15())
    return jwe(header, plaintext, wrapped, cek, enc)


def jwe_aes_kw(header: Mapping[str, Any] | str, plaintext: bytes, kek: bytes, enc: str) -> str:
    """A compact JWE with AES key wrap (``A128KW`` / ``A256KW``, RFC 3394)."""
    cek = os.urandom(CEK_BYTES[enc])
    return jwe(header, plaintext, aes_key_wrap(kek, cek), cek, enc)


def jwe_dir(header: Mapping[str, Any] | str, plaintext: bytes, cek: bytes, enc: str) -> str:
    """A compact JWE with direct encryption (``dir``: empty encrypted key)."""
    return jwe(header, plaintext, b"", cek, enc)


def jws_rs256(
    header: Mapping[str, Any] | str, payload: bytes, private_key: rsa.RSAPrivateKey
) -> str:
    """A compact RS256 JWS with exactly this header and payload text."""
    signing_input = f"{b64(header_text(header))}.{b64(payload)}".encode("ascii")
    signature = private_key.sign(signing_input, asym_padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


def jws_ecdsa(
    header: Mapping[str, Any] | str,
    payload: bytes,
    private_key: ec.EllipticCurvePrivateKey,
    digest: hashes.HashAlgorithm,
    size: int,
) -> str:
    """A compact ECDSA JWS (r || s, each ``size`` bytes), whatever curve/hash pairing."""
    signing_input = f"{b64(header_text(header))}.{b64(payload)}".encode("ascii")
    r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(digest)))
    signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return f"{signing_input.decode()}.{b64(signature)}"


def jws_hmac(
    header: Mapping[str, Any] | str, payload: bytes, secret: bytes, digest: str = "sha256"
) -> str:
    """A compact HS* JWS keyed with arbitrary bytes (e.g. an RSA public key's PEM)."""
    signing_input = f"{b64(header_text(header))}.{b64(payload)}".encode("ascii")
    signature = hmac.new(secret, signing_input, digest).digest()
    return f"{signing_input.decode()}.{b64(signature)}"
