"""Exact key authority and bounded work: regression tests, one class of attack each.

Each test here is a class of attack the previous code let through: a key shared with
one sender minting unsigned tokens for another issuer, a cached allow outliving a key
re-published for another use, HMAC keys too short for their hash, scope strings split
on any whitespace, loosely typed ``require_claims``, a token left in its custom header
or cookie after ``upstream.authorization: remove``, ``typ`` unchecked, and a PBES2
token costing one iteration budget per key tried.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwe as joserfc_jwe
from joserfc import jws
from joserfc.jws import JWSRegistry

from extauthz.errors import KeyMaterialError, Reason
from extauthz.keys.material import Key

from .support import (
    IDP,
    OTHER_ISSUER,
    Env,
    Kit,
    bare,
    claims,
    compact_json,
    encrypt,
    jwk_dict,
    key,
    nested,
    oct_jwk,
    sign,
)

NewEnv = Callable[..., Env]


# -- unsigned inner tokens: only under the decryption keys a provider names ------------


def unsigned(k: Key, alg: str = "dir", **extra: Any) -> str:
    """A bare claims set (no signature) encrypted to ``k``."""
    return encrypt(json.dumps(claims(**extra)), k, alg)


def test_unsigned_inner_is_refused_under_a_symmetric_key_the_provider_does_not_name(
    new_env: NewEnv, kit: Kit
) -> None:
    """``enc-oct-128`` is shared with the sender of provider ``other``; the sender holds
    it, so it can wrap any claims. Under it, only ``other``'s unsigned tokens pass —
    never a claims set naming ``idp`` as issuer, whatever scope it grants itself."""
    env = new_env(
        idp={"allow_unsigned_inner": ["enc-oct-256"]},
        other={"allow_unsigned_inner": ["enc-oct-128"]},
    )
    forged = unsigned(kit.enc_oct[128], "A128KW", scope="admin", sub="root")
    decision = env.check(forged)
    assert (decision.allowed, decision.reason) == (False, Reason.UNSIGNED)
    assert env.check(unsigned(kit.enc_oct[256])).allowed
    partner = unsigned(kit.enc_oct[128], "A128KW", issuer=OTHER_ISSUER)
    assert env.check(partner).allowed
    # and the idp's named key does not let the idp's sender speak for ``other``
    assert env.check(unsigned(kit.enc_oct[256], issuer=OTHER_ISSUER)).reason is Reason.UNSIGNED


def test_a_named_kid_under_public_key_wrapping_is_still_refused(new_env: NewEnv, kit: Kit) -> None:
    """Anyone can encrypt to a public key: naming it never allows unsigned tokens."""
    env = new_env(idp={"allow_unsigned_inner": ["enc-rsa", "enc-ec"]})
    body = json.dumps(claims())
    assert env.check(encrypt(body, kit.enc_rsa)).reason is Reason.UNSIGNED
    assert env.check(encrypt(body, kit.enc_ec, "ECDH-ES")).reason is Reason.UNSIGNED


# -- a cached allow depends on the full identity of its keys ---------------------------


def republished(k: Key, **changes: Any) -> Key:
    """The same public material as ``k``, published with other ``kid``/``use``/``alg``."""
    data = jwk_dict(k, private=False)
    data.update(changes)
    return key({name: value for name, value in data.items() if value is not None})


@pytest.mark.parametrize(
    "changes",
    [{"use": "enc"}, {"alg": "RS384"}, {"kid": "sig-rsa-renamed"}],
    ids=["use-enc", "other-alg", "other-kid"],
)
@pytest.mark.parametrize("purge", [True, False], ids=["purged", "checked-on-hit"])
def test_a_cached_allow_stops_when_its_key_is_republished_differently(
    new_env: NewEnv, kit: Kit, changes: dict[str, Any], purge: bool
) -> None:
    """Same material, another ``use``, ``alg`` or ``kid``: the cached decision stops at
    once, exactly as for an uncached token (both through the purge on key change and
    through the check every cache hit makes)."""
    env = new_env(purge=purge)
    token = nested(kit)
    assert env.check(token).allowed
    assert env.check(token).allowed  # now served from the cache
    others = [k for k in kit.idp_keys if k is not kit.sig_rsa]
    env.publish(IDP, [*others, republished(kit.sig_rsa, **changes)])
    fresh = new_env(idp_keys=[*others, republished(kit.sig_rsa, **changes)])
    expected = fresh.check(token)
    assert not expected.allowed
    decision = env.check(token)
    assert (decision.allowed, decision.reason) == (False, expected.reason)


def test_a_cached_allow_survives_an_identical_republication(env: Env, kit: Kit) -> None:
    """Re-publishing the very same key (a Secret touched, a JWKS refetched) keeps the
    cache: identity is the key as published, not the object."""
    token = nested(kit)
    assert env.check(token).allowed
    env.publish(IDP, [*kit.idp_keys[1:], republished(kit.sig_rsa)])
    digest = hashlib.sha256(token.encode()).digest()
    assert env.evaluator.cache.get(digest, env.store.ring, env.clock()) is not None
    assert env.check(token).allowed


def test_decryption_key_identity_counts_too(env: Env, kit: Kit) -> None:
    """The JWE key is part of the decision as well: re-published with ``use: sig`` it
    stops the cached allow."""
    token = nested(kit)
    assert env.check(token).allowed
    moved = republished(kit.enc_rsa, use="sig")
    assert moved.identity != kit.enc_rsa.identity
    env.publish("decryption", [k for k in kit.decryption_keys if k is not kit.enc_rsa] + [moved])
    assert not env.check(token).allowed


# -- HMAC keys at least as long as the hash output -------------------------------------


@pytest.mark.parametrize(
    ("bits", "alg", "use"),
    [(128, "HS256", None), (248, "HS256", "sig"), (256, "HS384", None), (384, "HS512", "sig"),
     (128, None, "sig")],
)  # fmt: skip
def test_a_short_hmac_key_is_refused_at_load(bits: int, alg: str | None, use: str | None) -> None:
    """RFC 7518 §3.2: an ``HS*`` key shorter than the hash output is not a key."""
    with pytest.raises(KeyMaterialError):
        key(oct_jwk(bits, "short", use=use, alg=alg))


@pytest.mark.parametrize(
    ("bits", "alg", "use"),
    [(256, "HS256", "sig"), (384, "HS384", None), (512, "HS512", "sig"), (256, None, "sig"),
     (128, None, "enc"), (128, "A128KW", None)],
)  # fmt: skip
def test_long_enough_hmac_and_key_wrapping_keys_load(
    bits: int, alg: str | None, use: str | None
) -> None:
    """Keys of the right length load; a 128-bit wrapping key is not an HMAC key."""
    assert key(oct_jwk(bits, "fine", use=use, alg=alg)).kty == "oct"


def test_a_key_without_use_or_alg_never_verifies_a_longer_hash(new_env: NewEnv) -> None:
    """A 256-bit ``oct`` key without ``use``/``alg`` serves HS256, never HS384/HS512."""
    secret = os.urandom(32)
    published = key(oct_jwk(256, "hmac", use=None, secret=secret))
    env = new_env(idp={"algorithms": ["HS256", "HS384"]}, idp_keys=[published])
    assert env.check(sign(claims(), published, "HS256")).allowed
    decision = env.check(sign(claims(), published, "HS384"))
    assert (decision.allowed, decision.reason) == (False, Reason.UNKNOWN_KID)


# -- require_claims compares JSON values with their types ------------------------------


@pytest.mark.parametrize(
    ("required", "value", "allowed"),
    [
        (True, True, True),
        (True, "true", False),
        (True, 1, False),
        (1, True, False),
        ("1", 1, False),
        (1, 1.0, True),  # one JSON number, two spellings
        ([1, True], 1.0, True),
        ([1, True], True, True),
        ([12345678901234567890, True], 12345678901234567890, True),
        (12345678901234567891, 12345678901234567890, False),
        (9007199254740993, 9007199254740992, False),
        (9007199254740993, 9007199254740992.0, False),
        ("admin", ["user", "admin"], True),
        ("admin", [["admin"]], False),
        ("admin", {"admin": True}, False),
    ],
)
def test_require_claims_compares_typed_json_values(
    new_env: NewEnv, kit: Kit, required: Any, value: Any, allowed: bool
) -> None:
    """``true``, ``"true"`` and ``1`` differ; large integers compare exactly."""
    env = new_env({"rules": [{"name": "c", "path_prefix": "/", "require_claims": {"v": required}}]})
    decision = env.check(sign(claims(v=value), kit.sig_rsa))
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.status, decision.reason) == (403, Reason.INSUFFICIENT_SCOPE)


# -- upstream.authorization applies to where the token came from -----------------------

SOURCES = {
    "token": {
        "sources": [
            {"header": "authorization", "prefix": "Bearer "},
            {"header": "x-access-token"},
            {"cookie": "access_token"},
        ]
    }
}


def checked(env: Env, token: str, where: str) -> Any:
    """Decide a request carrying ``token`` in ``where`` (header name, or ``cookie``)."""
    if where == "cookie":
        headers = {"cookie": f"theme=dark; access_token={token}; csrf=abc"}
    elif where == "authorization":
        headers = {"authorization": f"Bearer {token}"}
    else:
        headers = {where: token}
    decision = env.check(headers=headers)
    assert decision.allowed, decision.reason
    names = [name for name, _ in decision.upstream_headers]
    assert not set(names) & set(decision.remove_headers)
    assert len(decision.remove_headers) == len(set(decision.remove_headers))
    return decision


@pytest.mark.parametrize(
    ("where", "removed"),
    [("authorization", "authorization"), ("x-access-token", "x-access-token"),
     ("cookie", "cookie")],
)  # fmt: skip
def test_remove_takes_the_token_out_of_its_own_source(
    new_env: NewEnv, kit: Kit, where: str, removed: str
) -> None:
    """``remove``: the header the token came from is removed; for a cookie, the whole
    ``cookie`` header (rewriting it minus one cookie would rely on the upstream splitting
    cookies exactly as we do)."""
    env = new_env({**SOURCES, "upstream": {"authorization": "remove"}})
    decision = checked(env, nested(kit), where)
    assert removed in decision.remove_headers
    assert "authorization" not in dict(decision.upstream_headers)


@pytest.mark.parametrize("where", ["authorization", "x-access-token", "cookie"])
def test_inner_moves_the_signed_token_to_authorization(
    new_env: NewEnv, kit: Kit, where: str
) -> None:
    """``inner``: the inner JWS goes upstream as ``authorization: Bearer``, and the
    source that held the JWE is removed (unless it is ``authorization`` itself)."""
    env = new_env({**SOURCES, "upstream": {"authorization": "inner"}})
    token = nested(kit)
    decision = checked(env, token, where)
    value = dict(decision.upstream_headers)["authorization"]
    assert value.startswith("Bearer ")
    assert value.removeprefix("Bearer ").count(".") == 2
    if where == "authorization":
        assert "authorization" not in decision.remove_headers
    else:
        assert where in decision.remove_headers


def test_keep_leaves_every_source_alone(new_env: NewEnv, kit: Kit) -> None:
    """``keep`` (the default) removes no token source."""
    env = new_env(SOURCES)
    for where in ("authorization", "x-access-token", "cookie"):
        decision = checked(env, nested(kit), where)
        assert not {"authorization", "x-access-token", "cookie"} & set(decision.remove_headers)


def test_one_cached_token_from_two_sources_gets_two_answers(new_env: NewEnv, kit: Kit) -> None:
    """The per-token decision memo keys on the source too: a token first seen in a header
    and then in a cookie has the cookie removed the second time."""
    env = new_env({**SOURCES, "upstream": {"authorization": "remove"}})
    token = nested(kit)
    assert "x-access-token" in checked(env, token, "x-access-token").remove_headers
    assert "cookie" in checked(env, token, "cookie").remove_headers


# -- typ: an optional per-provider check -----------------------------------------------


@pytest.mark.parametrize(
    ("types", "typ", "allowed"),
    [
        ((), "anything", True),
        ((), None, True),
        (("at+jwt",), "at+jwt", True),
        (("at+jwt",), "AT+JWT", True),
        (("at+jwt",), "application/at+jwt", True),
        (("at+jwt",), "JWT", False),
        (("at+jwt",), None, False),
        (("at+jwt", "jwt"), "JWT", True),
        (("at+jwt", "jwt"), "jose", False),
    ],
)
def test_token_types_check_the_typ_of_the_signed_token(
    new_env: NewEnv, kit: Kit, types: tuple[str, ...], typ: str | None, allowed: bool
) -> None:
    """``token_types`` (RFC 9068 §4): off by default; when set, ``typ`` must be listed
    (case-insensitive, ``application/`` optional); a missing ``typ`` fails it."""
    env = new_env(idp={"token_types": list(types)} if types else None)
    header = {"typ": typ} if typ is not None else {}
    inner = sign(claims(), kit.sig_rsa, header=header)
    if typ is None:
        inner = typless(kit)
    decision = env.check(encrypt(inner, kit.enc_rsa))
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason is Reason.INVALID_CLAIM


def typless(kit: Kit) -> str:
    """A valid token of ``idp`` whose header has no ``typ`` member."""
    registry = JWSRegistry(algorithms=["RS256"], strict_check_header=False)
    return jws.serialize_compact(
        {"alg": "RS256", "kid": kit.sig_rsa.kid}, compact_json(claims()).encode(),
        bare(kit.sig_rsa), registry=registry,
    )  # fmt: skip


# -- PBES2: one iteration budget per Check ---------------------------------------------


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")
@pytest.mark.parametrize(("p2c", "tries"), [(1000, 1), (500, 2), (334, 2), (250, 3)])
def test_pbes2_spends_one_iteration_budget_per_check(
    new_env: NewEnv, kit: Kit, monkeypatch: pytest.MonkeyPatch, p2c: int, tries: int
) -> None:
    """A PBES2 token without ``kid`` may be tried against several keys; each try costs
    ``p2c`` iterations. The keys tried are cut so the whole Check stays within
    ``pbes2_max_iterations`` (before: up to ``max_keys_tried`` times the cap)."""
    cap = 1000
    keys = [key(oct_jwk(256, f"pw-{i}")) for i in range(3)]
    env = new_env(
        {"decryption": {"key_algorithms": ["PBES2-HS256+A128KW"], "pbes2_max_iterations": cap}},
        decryption_keys=keys,
    )
    calls: list[int] = []
    real = joserfc_jwe.decrypt_compact

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(joserfc_jwe, "decrypt_compact", counting)
    stranger = key(oct_jwk(256, "stranger"))
    token = encrypt(sign(claims(), kit.sig_rsa), stranger, "PBES2-HS256+A128KW",
                    header={"p2c": p2c}, kid=False)  # fmt: skip
    decision = env.check(token)
    assert decision.reason is Reason.DECRYPT_FAILED
    assert len(calls) == tries
    assert len(calls) * p2c <= cap


def test_pbes2_within_budget_still_decrypts_with_the_right_key(new_env: NewEnv, kit: Kit) -> None:
    """The right key first in line still decrypts (the budget only cuts extra tries)."""
    keys = [key(oct_jwk(256, f"pw-{i}")) for i in range(3)]
    env = new_env(
        {"decryption": {"key_algorithms": ["PBES2-HS256+A128KW"], "pbes2_max_iterations": 1000}},
        decryption_keys=keys,
    )
    token = encrypt(sign(claims(), kit.sig_rsa), keys[0], "PBES2-HS256+A128KW",
                    header={"p2c": 1000}, kid=False)  # fmt: skip
    assert env.check(token).allowed


@pytest.mark.parametrize(("typ", "allowed"), [("at+jwt", True), ("JWT", False), (None, False)])
def test_token_types_check_the_jwe_typ_of_an_unsigned_inner_token(
    new_env: NewEnv, kit: Kit, typ: str | None, allowed: bool
) -> None:
    """An unsigned inner token has no signed header: the JWE's ``typ`` is checked."""
    env = new_env(idp={"allow_unsigned_inner": ["enc-oct-256"], "token_types": ["at+jwt"]})
    header = {"typ": typ} if typ is not None else {}
    token = encrypt(json.dumps(claims()), kit.enc_oct[256], "dir", header=header)
    decision = env.check(token)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason is Reason.INVALID_CLAIM
