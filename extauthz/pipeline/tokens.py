"""Decrypt (JWE, RFC 7516) and verify (JWS, RFC 7515) a compact token.

We parse every header ourselves, strictly, *before* joserfc sees the token:
base64url without padding or foreign characters, JSON objects without duplicate
members, NaN or absurd numbers; ``alg``/``enc`` against the allow-lists; ``crit``;
``zip``; the PBES2 iteration count. joserfc then only does the cryptography, with
the one key we chose. Every failure is a :class:`~extauthz.errors.TokenError` with
a reason class; nothing else escapes :meth:`TokenVerifier.verify`.

Key choice: ``kid`` present -> only keys with that ``kid``; absent -> the
keys whose type and declared ``alg`` fit, at most ``token.max_keys_tried`` of them.
A key is used only for its declared ``use`` and ``alg``. A verification key is
looked up only among the keys of the provider named by the token's ``iss``.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from joserfc import jwe
from joserfc.errors import ExceededSizeError, JoseError

from extauthz.config import Config, ProviderConfig
from extauthz.errors import Reason, TokenError
from extauthz.keys.keyset import DECRYPTION, KeyRing, KeySet, provider_purpose
from extauthz.keys.material import Key, hmac_key_long_enough, strict_json_loads
from extauthz.pipeline import b64url, jwe_direct
from extauthz.pipeline.algorithms import (
    ES_CURVES,
    MAX_HEADER_BYTES,
    SYMMETRIC_KEY_MANAGEMENT,
    JWEPolicy,
    JWSPolicy,
    key_types_for_encryption,
    key_types_for_signature,
)
from extauthz.pipeline.memo import Memo

_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
#: headers that name where to *fetch* a key or carry one: never trusted, never fetched
_UNTRUSTED_KEY_HEADERS = ("jku", "x5u", "jwk", "x5c")
#: critical header parameters we implement (none: b64=false etc. are refused)
_UNDERSTOOD_CRIT: frozenset[str] = frozenset()
#: bound on the memos of parsed and accepted headers (they start over when full)
HEADER_MEMO_MAX = 256
#: exceptions joserfc and its helpers raise on malformed input
_CRYPTO_ERRORS = (JoseError, ValueError, TypeError, KeyError, binascii.Error, IndexError)


@dataclass(frozen=True, slots=True)
class Verified:
    """A token whose encryption and signature checked out (claims not yet validated)."""

    claims: Mapping[str, Any]
    provider: ProviderConfig
    kid: str | None  # of the JWS key used
    enc_kid: str | None  # of the JWE key used, when encrypted
    inner: str  # the compact JWS (the token itself when not encrypted)
    encrypted: bool
    #: (purpose, identity) of every key the result depends on (see ``Key.identity``)
    depends: tuple[tuple[str, str], ...]


def media_type(value: str) -> str:
    """A ``typ``/``cty`` value compared as JOSE does: lower-case, ``application/`` optional."""
    value = value.strip().lower()
    return value.removeprefix("application/")


def b64decode(segment: bytes) -> bytes:
    """Strict base64url: RFC 7515 §2 alphabet, no padding, canonical (see :mod:`b64url`)."""
    try:
        return b64url.decode(segment)
    except ValueError as exc:
        raise TokenError(Reason.MALFORMED, "bad base64url") from exc


def parse_header(segment: bytes) -> dict[str, Any]:
    """Decode and strictly parse a protected header into a JSON object."""
    if len(segment) > MAX_HEADER_BYTES:
        raise TokenError(Reason.MALFORMED, "header too large")
    raw = b64decode(segment)
    try:
        header = strict_json_loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TokenError(Reason.MALFORMED, "header is not strict JSON") from exc
    if not isinstance(header, dict):
        raise TokenError(Reason.MALFORMED, "header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise TokenError(Reason.MALFORMED, "header without alg")
    kid = header.get("kid")
    if "kid" in header and (not isinstance(kid, str) or not kid):  # null is no string either
        raise TokenError(Reason.MALFORMED, "kid is not a string")
    crit = header.get("crit")
    if crit is not None:
        if not isinstance(crit, list) or not crit or not all(isinstance(c, str) for c in crit):
            raise TokenError(Reason.MALFORMED, "crit is not a list of names")
        if any(name not in _UNDERSTOOD_CRIT or name not in header for name in crit):
            raise TokenError(Reason.UNSUPPORTED_CRIT, "critical header not understood")
    for name in ("typ", "cty"):
        if name in header and not isinstance(header[name], str):
            raise TokenError(Reason.MALFORMED, f"{name} is not a string")
    return header


def parse_claims(payload: bytes) -> dict[str, Any]:
    """Strictly parse a JWT claims set."""
    try:
        claims = strict_json_loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TokenError(Reason.MALFORMED, "claims are not strict JSON") from exc
    if not isinstance(claims, dict):
        raise TokenError(Reason.MALFORMED, "claims are not a JSON object")
    return claims


def _candidates(
    keys: KeySet,
    kid: str | None,
    use: str,
    alg: str,
    ktys: tuple[str, ...],
    limit: int,
    alias: str | None = None,
) -> tuple[Key, ...]:
    """Keys that may serve (use, alg): by kid only, or the first ``limit`` that fit.

    ``alias``: a second ``alg`` value a key may declare for this use — a ``dir`` key
    often declares the content algorithm it is the CEK for (RFC 7520 §5.6).

    Memoized in the (immutable) key set; ``alg`` was checked against the policy before,
    and a kid the set does not hold is not memoized, so the memo stays as small as the
    set times its algorithms.
    """
    memo = (kid, use, alg, ktys, limit, alias)
    found = keys.fits.get(memo)
    if found is not None:
        return found
    pool = keys.by_kid(kid) if kid is not None else keys.keys
    fit = tuple(
        k for k in pool
        if k.kty in ktys
        and (k.usable_for(use, alg) or (alias is not None and k.usable_for(use, alias)))
        and (alg not in ES_CURVES or k.jwk.get("crv") == ES_CURVES[alg])
        and (k.kty != "oct" or hmac_key_long_enough(len(k.jwk.raw_value), alg))
    )  # fmt: skip
    fit = fit[:limit] if kid is None else fit
    if pool:
        keys.fits[memo] = fit
    return fit


class TokenVerifier:
    """Decrypts and verifies tokens under one config's policy."""

    def __init__(
        self,
        config: Config,
        refresh: Callable[[str, str, int], KeyRing | None] | None = None,
    ) -> None:
        self.max_bytes = config.token.max_bytes
        self.max_keys_tried = config.token.max_keys_tried
        self.decryption_required = config.decryption.required
        self.jwe = JWEPolicy(config.decryption)
        self.providers: dict[str, tuple[ProviderConfig, JWSPolicy, str]] = {
            p.issuer: (p, JWSPolicy(p), provider_purpose(p.name)) for p in config.providers
        }
        #: provider name -> accepted ``typ`` values (empty: no check)
        self._types = {
            p.name: frozenset(media_type(t) for t in p.token_types) for p in config.providers
        }
        self._depends: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        #: parsed protected headers by their text: an issuer's tokens share one header
        #: (alg, kid, typ), so a new token's headers are decoded and strictly parsed
        #: once. Not kept: a header with an ``epk`` (new in every ECDH-ES token).
        #: Shared, so read-only (a mapping proxy).
        self._headers: Memo[bytes, Mapping[str, Any]] = Memo(HEADER_MEMO_MAX)
        #: (JWS header text, provider) that joserfc's header check accepted
        self._accepted: Memo[tuple[bytes, str], bool] = Memo(HEADER_MEMO_MAX)
        #: ``refresh(purpose, kid, generation)`` -> a newer ring after a refetch, or None
        self._refresh = refresh

    def verify(self, token: str, ring: KeyRing) -> Verified:
        """Decrypt if needed, verify the signature, return the claims. Raises TokenError."""
        if len(token) > self.max_bytes:
            raise TokenError(Reason.TOO_LARGE, "token over max_bytes")
        if not _TOKEN_CHARS.fullmatch(token):
            raise TokenError(Reason.MALFORMED, "characters outside base64url and '.'")
        dots = token.count(".")
        if dots == 4:
            inner, enc_header, enc_kid, enc_id = self._decrypt(token, ring)
            return self._verify_inner(inner, ring, enc_header, enc_kid, enc_id)
        if dots == 2:
            if self.decryption_required:
                raise TokenError(Reason.ENCRYPTION_REQUIRED, "plain JWS while decryption.required")
            return self._verify_jws(token, ring, encrypted=None)
        raise TokenError(Reason.MALFORMED, "neither 3 (JWS) nor 5 (JWE) segments")

    def _header(self, segment: bytes) -> Mapping[str, Any]:
        """:func:`parse_header`, memoized (see ``_headers``); raises TokenError."""
        header = self._headers.get(segment)
        if header is None:
            parsed = parse_header(segment)
            if "epk" in parsed:
                return parsed
            header = self._headers.keep(segment, MappingProxyType(parsed))
        return header

    # -- JWE ---------------------------------------------------------------------------

    def _decrypt(self, token: str, ring: KeyRing) -> tuple[bytes, Mapping[str, Any], str, str]:
        """(plaintext, protected header, kid and identity of the key that decrypted)."""
        raw = token.encode("ascii")
        segments = raw.split(b".")
        header = self._header(segments[0])
        for segment in segments[1:]:  # the alphabet was checked over the whole token
            if len(segment) % 4 == 1:
                raise TokenError(Reason.MALFORMED, "bad base64url")
        alg, enc = header["alg"], header.get("enc")
        if not isinstance(enc, str):
            raise TokenError(Reason.MALFORMED, "JWE without enc")
        policy = self.jwe
        if alg not in policy.key_algorithms or enc not in policy.content_algorithms:
            raise TokenError(Reason.ALG_NOT_ALLOWED, f"JWE alg {alg!r} enc {enc!r}")
        if "zip" in header and (header["zip"] != "DEF" or policy.zip_max_bytes <= 0):
            raise TokenError(Reason.ALG_NOT_ALLOWED, "zip not enabled")
        # PBES2: one iteration budget per Check, not per key tried (each key costs p2c)
        pbes2_keys = 0
        if alg.startswith("PBES2"):
            p2c = header.get("p2c")
            if not isinstance(p2c, int) or isinstance(p2c, bool) or p2c < 1:
                raise TokenError(Reason.MALFORMED, "PBES2 without a valid p2c")
            if p2c > policy.pbes2_max_iterations:
                raise TokenError(Reason.TOO_LARGE, "PBES2 iteration count over the cap")
            pbes2_keys = policy.pbes2_max_iterations // p2c
        cty = header.get("cty")
        if cty is not None and cty.lower() not in ("jwt", "application/jwt"):
            raise TokenError(Reason.MALFORMED, "JWE content type is not JWT")
        kid = header.get("kid")
        keys = _candidates(
            ring.get(DECRYPTION), kid, "enc", alg, key_types_for_encryption(alg),
            self.max_keys_tried, alias=enc if alg == "dir" else None,
        )  # fmt: skip
        if not keys:
            raise TokenError(Reason.UNKNOWN_KID, "no decryption key fits")
        if pbes2_keys:
            keys = keys[:pbes2_keys]
        registry = policy.registry
        try:
            registry.validate_compact_value_size(raw)
            registry.validate_protected_header_size(segments[0])
            registry.validate_encrypted_key_size(segments[1])
            registry.validate_initialization_vector_size(segments[2])
            registry.validate_ciphertext_size(segments[3])
            registry.validate_auth_tag_size(segments[4])
        except ExceededSizeError as exc:
            raise TokenError(Reason.TOO_LARGE, "a JWE part exceeds its size bound") from exc
        for key in keys:
            # the plain ECDH-ES / RSA-OAEP + AES-GCM shapes directly; any other
            # token, and any key the direct path does not handle, through joserfc
            try:
                plaintext = jwe_direct.decrypt(header, segments, key)
            except (*_CRYPTO_ERRORS, InvalidTag):
                continue
            if plaintext is not None:
                return plaintext, header, key.kid, key.identity
            try:
                result = jwe.decrypt_compact(token, key.jwk, registry=registry)
            except ExceededSizeError as exc:
                # the key was right (the tag verified); the inflated plaintext is too big
                raise TokenError(Reason.TOO_LARGE, "inflated plaintext over the cap") from exc
            except _CRYPTO_ERRORS:
                continue
            plaintext = result.plaintext
            if plaintext is None:
                break
            return plaintext, header, key.kid, key.identity
        raise TokenError(Reason.DECRYPT_FAILED, "no key decrypted the token")

    def _verify_inner(
        self, plaintext: bytes, ring: KeyRing, enc_header: Mapping[str, Any], enc_kid: str,
        enc_id: str,
    ) -> Verified:  # fmt: skip
        if len(plaintext) > self.max_bytes:
            raise TokenError(Reason.TOO_LARGE, "plaintext over max_bytes")
        try:
            text = plaintext.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        encrypted = (enc_kid, enc_id)
        if text and _TOKEN_CHARS.fullmatch(text):
            dots = text.count(".")
            if dots == 2:
                return self._verify_jws(text, ring, encrypted=encrypted)
            if dots == 4:
                raise TokenError(Reason.MALFORMED, "nested JWE: one level of nesting only")
            raise TokenError(Reason.MALFORMED, "plaintext is not a compact JWS")
        stripped = plaintext.lstrip()
        if not stripped.startswith(b"{"):
            raise TokenError(Reason.MALFORMED, "plaintext is not a JWT")
        # an unsigned claims set: only for a provider that allows it, under symmetric key
        # management, and only under a decryption key that this provider names: a key
        # shared with one sender never lets it mint tokens for another issuer
        claims = parse_claims(plaintext)
        provider, _, _ = self._provider(claims)
        if (
            enc_header["alg"] not in SYMMETRIC_KEY_MANAGEMENT
            or enc_kid not in provider.allow_unsigned_inner
        ):
            raise TokenError(Reason.UNSIGNED, "inner token is not signed")
        self._check_type(provider, enc_header)
        return Verified(
            claims=claims, provider=provider, kid=None, enc_kid=enc_kid, inner="",
            encrypted=True, depends=((DECRYPTION, enc_id),),
        )  # fmt: skip

    # -- JWS ---------------------------------------------------------------------------

    def _check_type(self, provider: ProviderConfig, header: Mapping[str, Any]) -> None:
        """The provider's optional ``typ`` allow-list (RFC 9068 §4: ``at+jwt``).

        Compared case-insensitively, with or without the ``application/`` prefix
        (RFC 7515 §4.1.9). A token without ``typ`` fails a configured check.
        """
        allowed = self._types[provider.name]
        if not allowed:
            return
        typ = header.get("typ")
        if not isinstance(typ, str) or media_type(typ) not in allowed:
            raise TokenError(Reason.INVALID_CLAIM, "token type (typ) not accepted")

    def _provider(self, claims: Mapping[str, Any]) -> tuple[ProviderConfig, JWSPolicy, str]:
        iss = claims.get("iss")
        if iss is None:
            raise TokenError(Reason.MISSING_CLAIM, "iss is missing")
        if not isinstance(iss, str):
            raise TokenError(Reason.INVALID_CLAIM, "iss is not a string")
        found = self.providers.get(iss)
        if found is None:
            raise TokenError(Reason.BAD_ISSUER, "issuer is not configured")
        return found

    def _verify_jws(self, token: str, ring: KeyRing, encrypted: tuple[str, str] | None) -> Verified:
        raw = token.encode("ascii")
        head, payload_b64, signature = raw.split(b".")
        header = self._header(head)
        alg = header["alg"]
        if alg.lower() == "none":
            if encrypted is not None:
                raise TokenError(Reason.UNSIGNED, "inner token has alg none")
            raise TokenError(Reason.ALG_NOT_ALLOWED, "alg none")
        if not signature:
            raise TokenError(Reason.MALFORMED, "empty signature")
        if header.get("b64") is not None:
            raise TokenError(Reason.UNSUPPORTED_CRIT, "unencoded payload is not supported")
        claims = parse_claims(b64decode(payload_b64))
        provider, policy, purpose = self._provider(claims)
        if alg not in policy.algorithms:
            raise TokenError(Reason.ALG_NOT_ALLOWED, f"JWS alg {alg!r}")
        self._check_type(provider, header)
        kid = header.get("kid")
        ktys = key_types_for_signature(alg)
        keys = _candidates(ring.get(purpose), kid, "sig", alg, ktys, self.max_keys_tried)
        if not keys and kid is not None and self._refresh is not None:
            # an unknown kid may be a fresh rotation at the IdP: one rate-limited refetch
            fresh = self._refresh(purpose, kid, ring.generation)
            if fresh is not None:
                keys = _candidates(fresh.get(purpose), kid, "sig", alg, ktys, self.max_keys_tried)
        if not keys:
            raise TokenError(Reason.UNKNOWN_KID, "no verification key fits")
        registry = policy.registry
        try:  # joserfc's own bounds, as its compact deserialization would check them
            registry.validate_compact_value_size(raw)
            registry.validate_header_size(head)
            registry.validate_signature_size(signature)
            registry.validate_payload_size(payload_b64)
        except ExceededSizeError as exc:
            raise TokenError(Reason.TOO_LARGE, "a JWS part exceeds its size bound") from exc
        # joserfc verifies with the header we parsed (its compact deserialization
        # would decode and parse the header again): its header checks, its algorithm
        # object, its key checks, per key
        try:
            accepted = (head, provider.name)
            if accepted not in self._accepted:
                registry.check_header(cast(dict[str, Any], header))  # only read there
                self._accepted.keep(accepted, True)
            algorithm = registry.get_alg(alg)
            raw_signature = b64url.decode(signature)
        except _CRYPTO_ERRORS as exc:
            raise TokenError(Reason.BAD_SIGNATURE, "signature did not verify") from exc
        signing_input = head + b"." + payload_b64
        for key in keys:
            try:
                algorithm.check_key(key.jwk)
                if not algorithm.verify(signing_input, raw_signature, key.jwk):
                    continue
            except _CRYPTO_ERRORS:
                continue
            depends: tuple[tuple[str, str], ...] = ((purpose, key.identity),)
            if encrypted is not None:
                depends += ((DECRYPTION, encrypted[1]),)
            # one shared tuple per key combination (cached tokens each hold one)
            depends = self._depends.setdefault(depends, depends)
            return Verified(
                claims=claims, provider=provider, kid=key.kid,
                enc_kid=encrypted[0] if encrypted else None, inner=token,
                encrypted=encrypted is not None, depends=depends,
            )  # fmt: skip
        raise TokenError(Reason.BAD_SIGNATURE, "signature did not verify")
