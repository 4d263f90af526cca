"""Turn bytes (a JWK, a JWKS or a PEM key) into :class:`Key` values.

Every key source (directory, Kubernetes Secret, JWKS URI) feeds its raw bytes
through :func:`parse_key_material`, so a key means the same thing whatever
source it came from.

A key without a ``kid`` (a PEM file, or a JWK that omits it) is given its
RFC 7638 thumbprint as ``kid``: issuers that compute ``kid`` that way (most do)
then match it, and the key is still addressable when a token names it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x448, x25519
from joserfc import jwk
from joserfc.errors import JoseError

from extauthz.errors import KeyMaterialError

#: Key types we accept; anything else in a JWKS is refused.
KEY_TYPES = frozenset({"RSA", "EC", "OKP", "oct"})

#: Upper bound on the size of one key file / Secret entry / JWKS document.
MAX_MATERIAL_BYTES = 1 << 20
#: Upper bound on the number of keys in one JWKS.
MAX_KEYS_PER_SET = 256


def key_identity(thumbprint: str, kid: str, use: str | None, alg: str | None) -> str:
    """The identity of a published key: its material (RFC 7638 thumbprint) AND what it
    is published as (``kid``, ``use``, ``alg``). The same material re-published with
    ``use: enc``, another ``alg`` or another ``kid`` is another key."""
    text = json.dumps([thumbprint, kid, use, alg], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Key:
    """One usable key, immutable.

    ``thumbprint`` (RFC 7638) identifies the material. ``identity`` identifies the key
    as published (material, ``kid``, ``use``, ``alg``): the token cache remembers the
    identities a decision depended on and drops the decision as soon as one of them is
    no longer published, so a cached decision never outlives a change of what a key
    may be used for.
    """

    kid: str
    kty: str
    use: str | None
    alg: str | None
    private: bool
    thumbprint: str
    jwk: Any  # a joserfc RSAKey / ECKey / OKPKey / OctKey
    origin: str
    identity: str = ""

    def __post_init__(self) -> None:
        if not self.identity:
            identity = key_identity(self.thumbprint, self.kid, self.use, self.alg)
            object.__setattr__(self, "identity", identity)

    def usable_for(self, use: str, alg: str) -> bool:
        """Whether this key may serve ``use`` (``enc``/``sig``) with algorithm ``alg``.

        A key declaring ``use`` serves only that use; a key declaring ``alg`` serves
        only that algorithm (RFC 7517 §4.2, §4.4). Decryption needs the private half.
        """
        if self.use is not None and self.use != use:
            return False
        if self.alg is not None and self.alg != alg:
            return False
        return not (use == "enc" and not self.private)

    def public_dict(self) -> dict[str, Any]:
        """The public JWK (for ``keygen --public`` and JWKS publication)."""
        data = dict(self.jwk.as_dict(private=False))
        data["kid"] = self.kid
        return data


def _unique_members(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(items)
    if len(out) != len(items):
        raise ValueError("duplicate JSON member")
    return out


def _bad_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise ValueError("JSON integer too large")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > 40:
        raise ValueError("JSON number too long")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("JSON number out of range")
    return value


#: duplicate members, NaN/Infinity and number sizes are refused as the document is
#: decoded; a decoder is immutable and shared
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_members, parse_constant=_bad_constant, parse_float=_bounded_float,
    parse_int=_bounded_int,
)  # fmt: skip
#: the decoder's scanner (set by its constructor; typeshed does not declare it)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
#: JSON's whitespace (RFC 8259 §2)
_JSON_SPACE = " \t\n\r"
#: a ``\\uD800``-``\\uDFFF`` escape: with a raw surrogate (impossible in text decoded
#: from strict UTF-8), the only way a lone surrogate reaches a parsed string
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def strict_json_loads(data: bytes | str) -> Any:
    """``json.loads`` that refuses duplicate members, NaN/Infinity, absurd numbers, lone
    surrogates and nesting deeper than :data:`MAX_JSON_DEPTH`.

    A token's headers and claims are parsed on every unique token, so the common text
    skips the walk of the parsed tree: no more ``{``/``[`` than the depth bound cannot
    nest too deep, and text with neither a raw surrogate nor an escape of one cannot
    hold a lone surrogate. Any other text is walked.
    """
    if isinstance(data, bytes | bytearray):
        if data[:3] == b"\xef\xbb\xbf":
            raise ValueError("byte-order mark")
        data = bytes(data).decode("utf-8")  # strict: UTF-16/32 and invalid UTF-8 refused
    try:  # the decoder's scanner, without its two Python-level wrappers
        value, end = _SCAN(data, 0)
    except StopIteration:  # leading whitespace, or no JSON value: the full decoder decides
        value = _DECODER.decode(data)
    else:
        if end != len(data) and data[end:].strip(_JSON_SPACE):
            raise ValueError("data after the JSON value")
    if (
        data.count("{") + data.count("[") > MAX_JSON_DEPTH
        or (not data.isascii() and _SURROGATE.search(data))
        or ("\\u" in data and _SURROGATE_ESCAPE.search(data))
    ):
        _check_depth(value)
    return value


#: deepest nesting of objects/arrays accepted in any JSON we parse (headers, claims, keys)
MAX_JSON_DEPTH = 32


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_depth(value: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH`, and strings holding lone
    UTF-16 surrogates (``"\\ud800"``: valid JSON, but no valid text; it cannot become
    a header value). Iterative: no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise ValueError("lone surrogate in a JSON string")
            continue
        if isinstance(node, dict):
            children: Any = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError("JSON nested too deeply")
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, dict | list | str)
        )


#: RSA keys shorter than this are refused for any use (RFC 7518 §3.3, §4.3)
MIN_RSA_BITS = 2048


def _b64int(value: Any) -> int:
    if not isinstance(value, str) or not value or "=" in value:
        raise ValueError("RSA parameter is not base64url")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _import_rsa_private(data: Mapping[str, Any]) -> Any:
    """An RSA private JWK with its CRT parameters, imported without OpenSSL's full key
    check (primality tests: 50-100 ms per key, which made start-up with 100 keys take
    many seconds). The arithmetic that ties the parameters together is checked here
    instead, so an inconsistent key is still refused; the keys come from the operator's
    own Secrets and files, never from a request. None when CRT parameters are missing
    (then joserfc recovers them, with the full check)."""
    if "oth" in data or not all(k in data for k in ("p", "q", "dp", "dq", "qi")):
        return None
    n, e, d = _b64int(data["n"]), _b64int(data["e"]), _b64int(data["d"])
    p, q = _b64int(data["p"]), _b64int(data["q"])
    dp, dq, qi = _b64int(data["dp"]), _b64int(data["dq"]), _b64int(data["qi"])
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1) if p > 1 and q > 1 else 0
    if not (
        p > 1 and q > 1 and n == p * q and e > 1 and e % 2 == 1
        and (d * e) % lam == 1 and dp == d % (p - 1) and dq == d % (q - 1)
        and (qi * q) % p == 1
    ):  # fmt: skip
        raise ValueError("inconsistent RSA private key parameters")
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=dp, dmq1=dq, iqmp=qi, public_numbers=rsa.RSAPublicNumbers(e, n)
    )
    native = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    params = {k: data[k] for k in ("kid", "use", "alg", "key_ops") if k in data}
    return jwk.RSAKey.import_key(native, parameters=params)  # type: ignore[arg-type]


#: RFC 7518 §3.2: an HMAC key must be at least as long as the hash output
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def hmac_key_long_enough(size: int, alg: str) -> bool:
    """Whether an ``oct`` key of ``size`` bytes may serve ``alg`` (True for non-HMAC)."""
    return size >= HMAC_MIN_BYTES.get(alg, 0)


def _check_hmac_length(size: int, use: str | None, alg: str | None, origin: str) -> None:
    """Refuse an ``oct`` signing key shorter than its hash output (RFC 7518 §3.2).

    A key declaring ``HS*`` needs that hash's length; a ``use: sig`` key without
    ``alg`` needs at least 32 bytes (HS256). A key declaring neither may still be a
    key-wrapping key (16 bytes for ``A128KW``): the verifier refuses it for any ``HS*``
    it is too short for.
    """
    if alg in HMAC_MIN_BYTES:
        need = HMAC_MIN_BYTES[alg]
    elif use == "sig" and alg is None:
        need = HMAC_MIN_BYTES["HS256"]
    else:
        return
    if size < need:
        raise KeyMaterialError(
            f"{origin}: an HMAC key needs at least {need} bytes ({8 * need} bits)"
        )


def key_from_jwk(data: Mapping[str, Any], origin: str) -> Key:
    """One JWK dict -> :class:`Key`. Raises :class:`KeyMaterialError`."""
    if not isinstance(data, Mapping):
        raise KeyMaterialError(f"{origin}: a JWK must be a JSON object")
    kty = data.get("kty")
    if kty not in KEY_TYPES:
        raise KeyMaterialError(f"{origin}: unsupported key type {kty!r}")
    use = data.get("use")
    if use is not None and use not in ("enc", "sig"):
        raise KeyMaterialError(f"{origin}: unsupported key use {use!r}")
    alg = data.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise KeyMaterialError(f"{origin}: alg must be a string")
    kid = data.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise KeyMaterialError(f"{origin}: kid must be a non-empty string")
    try:
        if kty == "RSA" and _b64int(data.get("n")).bit_length() < MIN_RSA_BITS:
            raise KeyMaterialError(f"{origin}: RSA keys need at least {MIN_RSA_BITS} bits")
        key = _import_rsa_private(data) if kty == "RSA" and "d" in data else None
        if key is None:
            key = jwk.import_key(dict(data))
        thumbprint = key.thumbprint()
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise KeyMaterialError(f"{origin}: invalid {kty} key") from exc
    if isinstance(key, jwk.OctKey):
        _check_hmac_length(len(key.raw_value), use, alg, origin)
    return Key(
        kid=kid or thumbprint,
        kty=kty,
        use=use,
        alg=alg,
        private=bool(key.is_private),
        thumbprint=thumbprint,
        jwk=key,
        origin=origin,
    )


def _pem_key_type(native: Any) -> str:
    """The JWK ``kty`` of a ``cryptography`` key object."""
    if isinstance(native, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RSA"
    if isinstance(native, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "EC"
    okp = (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey, x25519.X25519PrivateKey,
           x25519.X25519PublicKey, ed448.Ed448PrivateKey, ed448.Ed448PublicKey,
           x448.X448PrivateKey, x448.X448PublicKey)  # fmt: skip
    if isinstance(native, okp):
        return "OKP"
    raise KeyMaterialError(f"unsupported PEM key type {type(native).__name__}")


def key_from_pem(data: bytes, origin: str) -> Key:
    """A PEM private key, public key or X.509 certificate -> :class:`Key`."""
    native: Any
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            native = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY-----" in data:
            native = serialization.load_pem_private_key(data, password=None)
        else:
            native = serialization.load_pem_public_key(data)
        if isinstance(native, rsa.RSAPrivateKey | rsa.RSAPublicKey) and (
            native.key_size < MIN_RSA_BITS
        ):
            raise KeyMaterialError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        importer: Any = jwk.import_key  # overloads need a literal kty; ours is computed
        key = importer(native, _pem_key_type(native))
        thumbprint = key.thumbprint()
    except KeyMaterialError as exc:
        raise KeyMaterialError(f"{origin}: {exc}") from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise KeyMaterialError(f"{origin}: not a usable PEM key") from exc
    kty = key.key_type
    if kty not in KEY_TYPES:
        raise KeyMaterialError(f"{origin}: unsupported key type {kty!r}")
    return Key(
        kid=thumbprint,
        kty=kty,
        use=None,
        alg=None,
        private=bool(key.is_private),
        thumbprint=thumbprint,
        jwk=key,
        origin=origin,
    )


class MaterialMemo:
    """Parsed key material of ONE source, by origin (a file, a Secret entry).

    Importing an RSA private key costs tens of milliseconds (the key is validated), and
    a rotation re-reads every entry of a Secret: unchanged bytes are not parsed again.
    Only the latest version of each origin is kept, so superseded keys (a removed
    private key among them) are freed; the source drops an origin that disappears.
    Each source owns its memo: nothing here is process-wide. Thread-safe.
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[str, bool], tuple[bytes, tuple[Key, ...]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._latest)

    def parse(self, data: bytes, origin: str, *, strict: bool = True) -> list[Key]:
        """:func:`parse_key_material`, memoized on the exact bytes of ``origin``."""
        data = bytes(data)
        slot = (origin, strict)
        with self._lock:
            latest = self._latest.get(slot)
        if latest is not None and latest[0] == data:
            return list(latest[1])
        keys = tuple(parse_key_material(data, origin, strict=strict))
        with self._lock:
            self._latest[slot] = (data, keys)
        return list(keys)

    def forget(self, origin_prefix: str) -> None:
        """Drop the origins under ``origin_prefix`` (a removed file or Secret)."""
        with self._lock:
            for slot in [s for s in self._latest if s[0].startswith(origin_prefix)]:
                del self._latest[slot]


def parse_key_material(data: bytes, origin: str, *, strict: bool = True) -> list[Key]:
    """Bytes of a JWK, a JWKS or a PEM key -> keys (sources memoize through
    :class:`MaterialMemo`)."""
    return _parse_uncached(bytes(data), origin, strict=strict)


def _parse_uncached(data: bytes, origin: str, *, strict: bool = True) -> list[Key]:
    """Bytes of a JWK, a JWKS or a PEM key -> keys.

    ``strict``: one bad key in a JWKS makes the whole document invalid (the source
    then keeps its last good keys). Non-strict (fetched JWKS of an identity provider)
    skips keys of types we do not support and raises only if nothing usable is left.
    """
    if len(data) > MAX_MATERIAL_BYTES:
        raise KeyMaterialError(f"{origin}: key material larger than {MAX_MATERIAL_BYTES} bytes")
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        return [key_from_pem(stripped, origin)]
    try:
        doc = strict_json_loads(stripped)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KeyMaterialError(f"{origin}: not valid JSON or PEM") from exc
    if not isinstance(doc, dict):
        raise KeyMaterialError(f"{origin}: expected a JWK or JWKS object")
    if "keys" in doc:
        items = doc["keys"]
        if not isinstance(items, list):
            raise KeyMaterialError(f"{origin}: 'keys' must be an array")
        if len(items) > MAX_KEYS_PER_SET:
            raise KeyMaterialError(f"{origin}: more than {MAX_KEYS_PER_SET} keys")
        keys: list[Key] = []
        for index, item in enumerate(items):
            try:
                keys.append(key_from_jwk(item, f"{origin}#{index}"))
            except KeyMaterialError:
                if strict:
                    raise
        if not keys and items:
            raise KeyMaterialError(f"{origin}: no usable key in the set")
        return keys
    return [key_from_jwk(doc, origin)]
