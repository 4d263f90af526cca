"""The algorithm policy, built into joserfc registries once at start-up.

joserfc does not ship ``RSA-OAEP-384`` and ``RSA-OAEP-512``; they are defined here
on ``cryptography``'s OAEP (MGF1 and digest on the same SHA-2, empty label, as
RFC 7518 §4.3 defines RSA-OAEP-256 and the JOSE registry the longer hashes).

Which key types serve which algorithm is decided here too, so a JWK of the wrong
type is never even handed to the crypto (e.g. an RSA public key for ``HS256``).
"""

from __future__ import annotations

import copy
import zlib
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.errors import DecodeError, ExceededSizeError, InvalidKeyLengthError
from joserfc.jwa import JWEKeyEncryption, JWEZipModel
from joserfc.jwe import JWERegistry
from joserfc.jws import JWSRegistry

from extauthz.config import DecryptionConfig, ProviderConfig


class RSAOAEPSHA2(JWEKeyEncryption):
    """RSAES-OAEP with SHA-384 or SHA-512 (and MGF1 with the same hash)."""

    key_types = ["RSA"]  # noqa: RUF012 - joserfc's model attribute
    key_size = 2048

    def __init__(self, bits: int) -> None:
        digest: hashes.HashAlgorithm = hashes.SHA384() if bits == 384 else hashes.SHA512()
        self.name = f"RSA-OAEP-{bits}"
        self.description = f"RSAES OAEP using SHA-{bits} and MGF1 with SHA-{bits}"
        self.padding = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
        self.recommended = False

    def encrypt_cek(self, cek: bytes, recipient: Any) -> bytes:
        """Wrap the content key for ``recipient`` (used by ``extauthz token``)."""
        key = recipient.recipient_key
        self.check_key_type(key)
        op_key = key.get_op_key("encrypt")
        if op_key.key_size < self.key_size:
            raise InvalidKeyLengthError(f"RSA keys of at least {self.key_size} bits are required")
        result: bytes = op_key.encrypt(cek, self.padding)
        return result

    def decrypt_cek(self, recipient: Any) -> bytes:
        """Unwrap the content key with the recipient's private key."""
        key = recipient.recipient_key
        self.check_key_type(key)
        try:
            result: bytes = key.get_op_key("decrypt").decrypt(recipient.encrypted_key, self.padding)
        except ValueError as exc:
            raise DecodeError("decryption failed") from exc
        return result


class BoundedDeflate(JWEZipModel):
    """``zip: DEF`` with an operator-chosen cap on the inflated size (zip bombs)."""

    name = "DEF"
    description = "DEFLATE, bounded"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def compress(self, s: bytes) -> bytes:
        """Raw DEFLATE (for ``extauthz token``)."""
        data = zlib.compress(s)
        return data[2:-4]

    def decompress(self, s: bytes) -> bytes:
        """Inflate at most ``max_bytes``; more is an error, not a bigger buffer."""
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            value = inflater.decompress(s, self.max_bytes)
        except zlib.error as exc:
            raise DecodeError("invalid DEFLATE data") from exc
        if inflater.unconsumed_tail:
            raise ExceededSizeError("inflated plaintext too large")
        return value


def jwe_models() -> Any:
    """A private copy of joserfc's JWE model tables with RSA-OAEP-384/512 added.

    joserfc's class-wide registry is never modified (importing this module changes
    nothing): each registry we build gets its own tables.
    """
    tables: Any = JWERegistry.algorithms
    models: dict[str, dict[str, Any]] = {loc: dict(table) for loc, table in tables.items()}
    for bits in (384, 512):
        models["alg"][f"RSA-OAEP-{bits}"] = RSAOAEPSHA2(bits)
    return models


#: key types that can serve each JWE key-management algorithm
_KEY_MANAGEMENT_KTY = {
    "RSA-OAEP": ("RSA",), "RSA-OAEP-256": ("RSA",), "RSA-OAEP-384": ("RSA",),
    "RSA-OAEP-512": ("RSA",),
    "ECDH-ES": ("EC", "OKP"), "ECDH-ES+A128KW": ("EC", "OKP"),
    "ECDH-ES+A192KW": ("EC", "OKP"), "ECDH-ES+A256KW": ("EC", "OKP"),
    "A128KW": ("oct",), "A192KW": ("oct",), "A256KW": ("oct",),
    "A128GCMKW": ("oct",), "A192GCMKW": ("oct",), "A256GCMKW": ("oct",),
    "dir": ("oct",),
    "PBES2-HS256+A128KW": ("oct",), "PBES2-HS384+A192KW": ("oct",),
    "PBES2-HS512+A256KW": ("oct",),
}  # fmt: skip

#: key management where the sender holds the same secret as us (unsigned inner allowed)
SYMMETRIC_KEY_MANAGEMENT = frozenset(
    {"dir", "A128KW", "A192KW", "A256KW", "A128GCMKW", "A192GCMKW", "A256GCMKW"}
)

_SIGNATURE_KTY = {
    "RS256": ("RSA",), "RS384": ("RSA",), "RS512": ("RSA",),
    "PS256": ("RSA",), "PS384": ("RSA",), "PS512": ("RSA",),
    "ES256": ("EC",), "ES384": ("EC",), "ES512": ("EC",),
    "EdDSA": ("OKP",), "HS256": ("oct",), "HS384": ("oct",), "HS512": ("oct",),
}  # fmt: skip

#: the curve each ES* algorithm requires (RFC 7518 §3.4)
ES_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def key_types_for_encryption(alg: str) -> tuple[str, ...]:
    """Key types that may decrypt with ``alg`` (empty when unknown)."""
    return _KEY_MANAGEMENT_KTY.get(alg, ())


def key_types_for_signature(alg: str) -> tuple[str, ...]:
    """Key types that may verify ``alg`` (empty when unknown)."""
    return _SIGNATURE_KTY.get(alg, ())


#: largest protected header we accept (encoded bytes); joserfc's own defaults (512 for
#: JWS, 1024 for JWE) refuse legitimate tokens carrying e.g. an ``x5c`` chain
MAX_HEADER_BYTES = 4096


class JWEPolicy:
    """The decryption side of the policy: allow-lists and a registry, built once."""

    def __init__(self, config: DecryptionConfig) -> None:
        self.key_algorithms = frozenset(config.key_algorithms)
        self.content_algorithms = frozenset(config.content_algorithms)
        self.pbes2_max_iterations = config.pbes2_max_iterations
        self.zip_max_bytes = config.zip_max_bytes
        self.registry = JWERegistry(
            algorithms=[*config.key_algorithms, *config.content_algorithms, "DEF"],
            strict_check_header=False,  # our parser already enforced the header rules
        )
        # a private copy of the model tables, so our bounded DEF never leaks to others
        algorithms: Any = jwe_models()
        algorithms["zip"] = {"DEF": BoundedDeflate(max(config.zip_max_bytes, 1))}
        self.registry.algorithms = algorithms
        self.registry.max_protected_header_length = MAX_HEADER_BYTES
        self.registry.max_encrypted_key_length = 2048  # an RSA-8192 wrapped key, encoded


def jws_models() -> dict[str, Any]:
    """A private copy of joserfc's JWS algorithm table, without deprecation warnings.

    joserfc warns on every ``EdDSA`` use (RFC 9864 prefers ``Ed25519``); the default allow-list has
    ``EdDSA`` as a default, and a warning per Check would flood stderr (or, under
    ``-W error``, deny every EdDSA token). The policy is ours: the allow-list decides.
    """
    table: Any = JWSRegistry.algorithms
    models: dict[str, Any] = {}
    for name, model in table.items():
        if getattr(model, "security_warning", None):
            model = copy.copy(model)
            model.security_warning = None
        models[name] = model
    return models


class JWSPolicy:
    """One provider's signature allow-list and registry, built once."""

    def __init__(self, provider: ProviderConfig) -> None:
        self.algorithms = frozenset(provider.algorithms)
        self.registry = JWSRegistry(algorithms=list(provider.algorithms), strict_check_header=False)
        self.registry.algorithms = jws_models()
        self.registry.max_header_length = MAX_HEADER_BYTES
