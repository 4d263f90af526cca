"""Shared pieces of the pipeline tests: keys, an in-memory service, token builders.

Everything here drives the real pipeline with no server: a :class:`Config` parsed from
a YAML-shaped dict, a real :class:`KeyStore` fed by :class:`StaticSource` sinks, and an
:class:`Evaluator` with an injected clock. Tokens are minted with joserfc directly (not
with ``extauthz.mint``) so a test can omit ``kid``, add any header, or sign with a key
whose JWK says something else — the things an attacker would do.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc import jwe, jwk, jws
from joserfc.jwa import JWERegistry, JWSRegistry

from extauthz import mint
from extauthz.config import Config, parse
from extauthz.errors import Reason, TokenError
from extauthz.keys.keyset import DECRYPTION, KeySink, KeyStore, provider_purpose
from extauthz.keys.material import Key, key_from_jwk
from extauthz.keys.sources.static import StaticSource
from extauthz.pipeline.decision import Decision
from extauthz.pipeline.evaluate import Evaluator
from extauthz.pipeline.request import CheckInput

ISSUER = "https://idp.example.test"
OTHER_ISSUER = "https://other.example.test"
AUDIENCE = "api://orders"
#: the injected "now" of every test (2027-01-15), far from the real clock on purpose
NOW = 1_800_000_000
IDP = provider_purpose("idp")
OTHER = provider_purpose("other")

#: the documented example config, minus what a unit test does not need (listen, logging)
BASE_CONFIG: dict[str, Any] = {
    "apiVersion": "extauthz/v1",
    "decryption": {"keys": [{"directory": "./keys/decrypt"}]},
    "providers": [
        {
            "name": "idp",
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "keys": [{"directory": "./keys/verify"}],
            "required_claims": ["exp", "sub"],
            "claims_to_headers": {
                "sub": "x-auth-subject",
                "email": "x-auth-email",
                "scope": "x-auth-scope",
                "roles": "x-auth-roles",
            },
        },
        {
            "name": "other",
            "issuer": OTHER_ISSUER,
            "audiences": [AUDIENCE],
            "keys": [{"directory": "./keys/other"}],
            "claims_to_headers": {"sub": "x-other-subject"},
        },
    ],
}

#: every claim header name BASE_CONFIG manages
MANAGED_HEADERS = frozenset(
    {"x-auth-subject", "x-auth-email", "x-auth-scope", "x-auth-roles", "x-other-subject"}
)


# -- encoding --------------------------------------------------------------------------


def b64(data: bytes | str) -> str:
    """base64url without padding (RFC 7515 §2)."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    """Lenient base64url decoding, for tests that take tokens apart."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact_json(value: Any) -> str:
    """JSON without spaces, as issuers emit it."""
    return json.dumps(value, separators=(",", ":"))


def raw_jws(
    header: Mapping[str, Any] | str,
    payload: Mapping[str, Any] | str | bytes,
    signature: bytes = b"\x00" * 32,
) -> str:
    """A compact JWS with exactly these parts and a made-up signature (not signed)."""
    h = header if isinstance(header, str) else compact_json(header)
    if isinstance(payload, Mapping):
        payload = compact_json(payload)
    return f"{b64(h)}.{b64(payload)}.{b64(signature)}"


def segments(token: str) -> list[str]:
    """The dot-separated segments of a compact token."""
    return token.split(".")


def header_of(token: str) -> dict[str, Any]:
    """The decoded protected header of a compact token."""
    value: dict[str, Any] = json.loads(unb64(token.split(".")[0]))
    return value


def flip(segment: str, index: int = 0) -> str:
    """``segment`` with one decoded byte changed, re-encoded canonically."""
    raw = bytearray(unb64(segment))
    raw[index % len(raw)] ^= 0x01
    return b64(bytes(raw))


def replace_segment(token: str, index: int, value: str) -> str:
    """``token`` with segment ``index`` replaced."""
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


# -- keys ------------------------------------------------------------------------------


def key(data: Mapping[str, Any], origin: str = "test") -> Key:
    """A :class:`Key` from a JWK dict, through the product's own key parser."""
    return key_from_jwk(data, origin)


def jwk_dict(k: Key, *, private: bool = True) -> dict[str, Any]:
    """The JWK of ``k`` with its ``kid``, ``use`` and ``alg`` as published."""
    data = dict(k.jwk.as_dict(private=private))
    data["kid"] = k.kid
    if k.use:
        data["use"] = k.use
    if k.alg:
        data["alg"] = k.alg
    return data


_BARE: dict[tuple[str, str, bool], Any] = {}


def bare(k: Key) -> Any:
    """The joserfc key of ``k`` without ``use``/``alg``/``key_ops``.

    Minting with the bare key lets a test sign RS256 with a key whose JWK says RS384,
    or encrypt to a ``use: sig`` key: exactly what a verifier must then refuse.
    """
    memo = (k.thumbprint, k.kid, k.private)
    if memo not in _BARE:  # importing a private RSA key re-validates it: slow, so once
        data = {
            name: value
            for name, value in k.jwk.as_dict(private=k.private).items()
            if name not in ("use", "alg", "key_ops", "kid")
        }
        _BARE[memo] = jwk.import_key(data)
    return _BARE[memo]


def oct_jwk(
    bits: int,
    kid: str,
    *,
    use: str | None = "enc",
    alg: str | None = None,
    secret: bytes | None = None,
) -> dict[str, Any]:
    """A symmetric JWK of ``bits`` bits (random unless ``secret`` is given)."""
    data: dict[str, Any] = {"kty": "oct", "k": b64(secret or os.urandom(bits // 8)), "kid": kid}
    if use:
        data["use"] = use
    if alg:
        data["alg"] = alg
    return data


def generated(use: str, alg: str, kid: str, *, pin_alg: bool = True) -> Key:
    """A freshly generated private key; ``pin_alg=False`` drops the JWK's ``alg``."""
    data = mint.generate_jwk(use, alg, kid)
    if not pin_alg:
        del data["alg"]
    return key(data)


@dataclass(frozen=True)
class Kit:
    """The keys every pipeline test shares (generated once per session)."""

    enc_rsa: Key  # RSA, use enc, alg RSA-OAEP-256
    enc_rsa_any: Key  # RSA, use enc, no alg: serves every RSA-OAEP variant
    enc_ec: Key  # P-256, use enc, no alg: ECDH-ES*
    enc_oct: Mapping[int, Key]  # bits -> oct key, use enc, no alg: A*KW, A*GCMKW, dir
    sig_rsa: Key  # RSA, use sig, alg RS256
    sig_rsa_any: Key  # RSA, use sig, no alg: RS*/PS*
    sig_ec: Mapping[str, Key]  # "P-256" / "P-384" / "P-521", use sig, no alg
    sig_ed: Key  # Ed25519, use sig, no alg
    other_sig: Key  # provider "other": RSA, use sig, alg RS256
    attacker: Key  # RSA, alg RS256, never published
    extra_rsa: tuple[Key, ...]  # four more RS256 keys, for kid-less search limits

    @property
    def decryption_keys(self) -> list[Key]:
        """What the default environment publishes for decryption."""
        return [self.enc_rsa, self.enc_rsa_any, self.enc_ec, *self.enc_oct.values()]

    @property
    def idp_keys(self) -> list[Key]:
        """What the default environment publishes for provider ``idp``."""
        return [self.sig_rsa, self.sig_rsa_any, *self.sig_ec.values(), self.sig_ed]

    @property
    def all_kids(self) -> set[str]:
        """Every key id of the kit (a deny body must contain none of them)."""
        keys = [
            *self.decryption_keys,
            *self.idp_keys,
            self.other_sig,
            self.attacker,
            *self.extra_rsa,
        ]
        return {k.kid for k in keys}


def make_kit() -> Kit:
    """Generate the shared keys (RSA keygen dominates: ~10 keys)."""
    return Kit(
        enc_rsa=generated("enc", "RSA-OAEP-256", "enc-rsa"),
        enc_rsa_any=generated("enc", "RSA-OAEP", "enc-rsa-any", pin_alg=False),
        enc_ec=generated("enc", "ECDH-ES", "enc-ec", pin_alg=False),
        enc_oct={bits: key(oct_jwk(bits, f"enc-oct-{bits}")) for bits in (128, 192, 256, 384, 512)},
        sig_rsa=generated("sig", "RS256", "sig-rsa"),
        sig_rsa_any=generated("sig", "PS256", "sig-rsa-any", pin_alg=False),
        sig_ec={
            "P-256": generated("sig", "ES256", "sig-p256", pin_alg=False),
            "P-384": generated("sig", "ES384", "sig-p384", pin_alg=False),
            "P-521": generated("sig", "ES512", "sig-p521", pin_alg=False),
        },
        sig_ed=generated("sig", "EdDSA", "sig-ed25519", pin_alg=False),
        other_sig=generated("sig", "RS256", "other-sig"),
        attacker=generated("sig", "RS256", "attacker"),
        extra_rsa=tuple(generated("sig", "RS256", f"extra-{i}", pin_alg=False) for i in range(4)),
    )


# -- tokens ----------------------------------------------------------------------------


def claims(
    subject: str = "user-1",
    *,
    now: float = NOW,
    ttl: int = 300,
    issuer: str = ISSUER,
    audience: Any = AUDIENCE,
    **extra: Any,
) -> dict[str, Any]:
    """A valid access-token claims set at ``now`` (pass ``name=None`` to drop a claim)."""
    data = mint.claims_for(issuer, audience, subject, ttl=ttl, now=now)
    if audience is None:
        data.pop("aud", None)
    data.update(extra)
    return {name: value for name, value in data.items() if value is not None}


def default_alg(k: Key) -> str:
    """A signature algorithm that fits ``k``."""
    if k.alg:
        return k.alg
    if k.kty == "RSA":
        return "RS256"
    if k.kty == "OKP":
        return "EdDSA"
    return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[k.jwk.as_dict()["crv"]]


def sign(
    payload: Mapping[str, Any] | bytes | str,
    k: Key | Any,
    alg: str | None = None,
    header: Mapping[str, Any] | None = None,
    *,
    kid: bool = True,
) -> str:
    """A compact JWS of ``payload`` (claims dict, or exact bytes) signed by ``k``.

    ``kid=False`` omits the ``kid`` header; ``header`` adds or overrides members.
    ``k`` may be a :class:`Key` or a bare joserfc key.
    """
    if isinstance(k, Key):
        alg = alg or default_alg(k)
        signer = bare(k)
        kid_value: str | None = k.kid
    else:
        assert alg is not None
        signer, kid_value = k, None
    protected: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid and kid_value:
        protected["kid"] = kid_value
    protected.update(header or {})
    body = compact_json(payload).encode() if isinstance(payload, Mapping) else payload
    registry = JWSRegistry(algorithms=[alg], strict_check_header=False)
    return jws.serialize_compact(protected, body, signer, registry=registry)


def encrypt(
    plaintext: str | bytes,
    k: Key,
    alg: str | None = None,
    enc: str = "A256GCM",
    header: Mapping[str, Any] | None = None,
    *,
    kid: bool = True,
    cty: str | None = "JWT",
) -> str:
    """A compact JWE of ``plaintext`` for ``k`` (``cty: JWT`` unless told otherwise)."""
    alg = (
        alg
        or k.alg
        or {"RSA": "RSA-OAEP-256", "EC": "ECDH-ES", "OKP": "ECDH-ES"}.get(k.kty, "A256KW")
    )
    protected: dict[str, Any] = {"alg": alg, "enc": enc}
    if cty is not None:
        protected["cty"] = cty
    if kid:
        protected["kid"] = k.kid
    protected.update(header or {})
    registry = JWERegistry(algorithms=[alg, enc, "DEF"], strict_check_header=False)
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    return jwe.encrypt_compact(protected, data, bare(k), registry=registry)


# -- the service under test ------------------------------------------------------------


def deep_merge(base: Any, override: Any) -> Any:
    """``override`` merged into a copy of ``base`` (mappings recursively; else replaced)."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(copy.deepcopy(base))
        for name, value in override.items():
            out[name] = deep_merge(out.get(name), value) if name in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def build_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    idp: Mapping[str, Any] | None = None,
    other: Mapping[str, Any] | None = None,
) -> Config:
    """BASE_CONFIG with ``overrides`` merged in; ``idp``/``other`` patch one provider."""
    data = deep_merge(BASE_CONFIG, overrides or {})
    if idp or other:
        providers = list(data["providers"])
        if idp:
            providers[0] = deep_merge(providers[0], idp)
        if other:
            providers[1] = deep_merge(providers[1], other)
        data["providers"] = providers
    return parse(data, Path("/nonexistent-config-dir"))


class Clock:
    """An injectable clock: epoch seconds that move only when a test says so."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass
class Env:
    """A configured pipeline with its key store, sinks and clock."""

    config: Config
    store: KeyStore
    evaluator: Evaluator
    clock: Clock
    sinks: dict[str, KeySink] = field(default_factory=dict)

    def publish(self, purpose: str, keys: Iterable[Key]) -> None:
        """Replace every key of ``purpose`` (as a source publishing its full list does)."""
        self.sinks[purpose].publish(list(keys))

    def request(
        self,
        token: str | None = None,
        *,
        method: str = "GET",
        path: str = "/",
        headers: Mapping[str, str] | None = None,
        raw_headers: Sequence[tuple[str, str]] = (),
        context: Mapping[str, str] | None = None,
    ) -> CheckInput:
        """A Check input; ``token`` goes into ``authorization: Bearer ...``."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        return CheckInput(
            method=method,
            path=path,
            headers=all_headers,
            raw_headers=tuple(raw_headers),
            context=dict(context or {}),
        )

    def check(self, token: str | None = None, **kwargs: Any) -> Decision:
        """Decide one request (see :meth:`request` for the arguments)."""
        decision, _ = self.evaluator.check(self.request(token, **kwargs))
        return decision


def reason_of(env: Env, token: str) -> Reason:
    """The reason class the verifier alone gives ``token`` (``ok`` when it verifies)."""
    try:
        env.evaluator.verifier.verify(token, env.store.ring)
    except TokenError as error:
        return error.reason
    return Reason.OK


def make_env(
    kit: Kit,
    overrides: Mapping[str, Any] | None = None,
    *,
    idp: Mapping[str, Any] | None = None,
    other: Mapping[str, Any] | None = None,
    decryption_keys: Sequence[Key] | None = None,
    idp_keys: Sequence[Key] | None = None,
    other_keys: Sequence[Key] | None = None,
    now: float = NOW,
    config: Config | None = None,
    purge: bool = True,
) -> Env:
    """A ready pipeline: config, one static source per purpose, keys published.

    ``purge`` wires the cache purge to key changes, as the app does.
    """
    cfg = config or build_config(overrides, idp=idp, other=other)
    store = KeyStore()
    clock = Clock(now)
    published = {
        DECRYPTION: kit.decryption_keys if decryption_keys is None else list(decryption_keys),
        IDP: kit.idp_keys if idp_keys is None else list(idp_keys),
        OTHER: [kit.other_sig] if other_keys is None else list(other_keys),
    }
    sinks: dict[str, KeySink] = {}
    for purpose, keys in published.items():
        sink = store.attach(purpose, StaticSource(keys, purpose))
        sink.publish(keys)
        sinks[purpose] = sink
    evaluator = Evaluator(cfg, store, clock=clock)
    if purge:
        store.on_change(evaluator.cache.purge)
    return Env(config=cfg, store=store, evaluator=evaluator, clock=clock, sinks=sinks)


def nested(kit: Kit, payload: Mapping[str, Any] | None = None, **enc_kwargs: Any) -> str:
    """The typical token: RS256 JWS (``sig-rsa``) inside RSA-OAEP-256 + A256GCM (``enc-rsa``)."""
    inner = sign(claims() if payload is None else payload, kit.sig_rsa)
    return encrypt(inner, kit.enc_rsa, **enc_kwargs)


def assert_allow_invariants(decision: Decision) -> None:
    """What every allow must satisfy."""
    assert decision.allowed
    assert decision.status == 200
    set_names = [name for name, _ in decision.upstream_headers]
    assert len(set_names) == len(set(set_names)), "a header is set twice"
    assert not set(set_names) & set(decision.remove_headers), "a header is both set and removed"
    for name, value in decision.upstream_headers:
        assert not any(c in value for c in "\r\n\0"), f"{name} carries a control character"


def body(decision: Decision) -> dict[str, Any]:
    """The deny body, parsed."""
    value: dict[str, Any] = json.loads(decision.body)
    return value


def response_header(decision: Decision, name: str) -> str | None:
    """The value of one client response header, or None."""
    values = [v for n, v in decision.response_headers if n == name]
    assert len(values) <= 1, f"{name} appears {len(values)} times"
    return values[0] if values else None
