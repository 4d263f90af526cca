"""Claims validation (RFC 7519 §4.1, RFC 9068): dates with leeway, iss, aud, required."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from extauthz.config import ProviderConfig
from extauthz.errors import Reason, TokenError
from extauthz.pipeline import claims as claims_mod

from .support import AUDIENCE, ISSUER, NOW, Env, Kit, claims, nested, sign

NewEnv = Callable[..., Env]

PROVIDER = ProviderConfig(
    name="idp",
    issuer=ISSUER,
    audiences=(AUDIENCE,),
    leeway_seconds=30,
    required_claims=("exp", "sub"),
)
EXP = NOW + 300


def validate(data: dict[str, Any], now: float = NOW, **provider: Any) -> float:
    """Run the claims phase alone."""
    return claims_mod.validate(data, PROVIDER.model_copy(update=provider), now)


def reason(data: dict[str, Any], now: float = NOW, **provider: Any) -> Reason:
    """The reason class of the claims phase (``ok`` when valid)."""
    try:
        validate(data, now, **provider)
    except TokenError as error:
        return error.reason
    return Reason.OK


def test_valid_claims_return_the_last_valid_instant() -> None:
    """A valid claims set passes and reports ``exp + leeway`` (the cache bound)."""
    assert validate(claims()) == EXP + 30


# -- exp -------------------------------------------------------------------------------


def test_exp_is_required_by_default() -> None:
    """No ``exp`` -> ``missing_claim``, even if ``required_claims`` omits it."""
    data = claims(exp=None)
    assert reason(data) is Reason.MISSING_CLAIM
    assert reason(data, required_claims=()) is Reason.MISSING_CLAIM


@pytest.mark.parametrize(
    "value",
    ["1800000300", True, False, float("nan"), float("inf"), -1, 10**30, 1e300, [EXP], {"t": EXP}],
    ids=[
        "string",
        "true",
        "false",
        "nan",
        "inf",
        "negative",
        "huge-int",
        "huge-float",
        "array",
        "object",
    ],
)
def test_exp_must_be_a_sane_numeric_date(value: Any) -> None:
    """``exp`` as string, bool, NaN, infinity, negative or absurd -> ``invalid_claim``."""
    assert reason(claims(exp=value)) is Reason.INVALID_CLAIM


def test_exp_may_be_a_fraction() -> None:
    """NumericDate may be non-integer (RFC 7519 §2)."""
    assert reason(claims(exp=EXP + 0.5)) is Reason.OK


def test_expired_within_leeway_is_accepted() -> None:
    """Up to ``leeway_seconds`` past ``exp`` the token is still valid (clock skew)."""
    assert reason(claims(), now=EXP + 29) is Reason.OK
    assert reason(claims(), now=EXP + 29.999) is Reason.OK


def test_expired_beyond_leeway_is_expired() -> None:
    """Past ``exp + leeway`` -> ``expired``."""
    assert reason(claims(), now=EXP + 30.001) is Reason.EXPIRED
    assert reason(claims(), now=EXP + 31) is Reason.EXPIRED
    assert reason(claims(), now=EXP + 1, leeway_seconds=0) is Reason.EXPIRED


def test_exp_is_exclusive_at_the_leeway_boundary() -> None:
    """At exactly ``exp + leeway`` the token has expired (RFC 7519: now MUST be before exp)."""
    assert reason(claims(), now=EXP, leeway_seconds=0) is Reason.EXPIRED
    assert reason(claims(), now=EXP + 30) is Reason.EXPIRED


# -- nbf / iat -------------------------------------------------------------------------


def test_nbf_within_leeway_is_accepted_at_the_boundary() -> None:
    """``nbf`` up to ``leeway`` in the future is fine, the boundary included."""
    assert reason(claims(nbf=NOW + 30)) is Reason.OK
    assert reason(claims(nbf=NOW + 29)) is Reason.OK


def test_nbf_beyond_leeway_is_not_yet_valid() -> None:
    """``nbf`` more than ``leeway`` ahead -> ``not_yet_valid``."""
    assert reason(claims(nbf=NOW + 31)) is Reason.NOT_YET_VALID
    assert reason(claims(nbf=NOW + 30.5)) is Reason.NOT_YET_VALID
    assert reason(claims(nbf=NOW + 1), leeway_seconds=0) is Reason.NOT_YET_VALID


def test_iat_in_the_future_beyond_leeway_is_not_yet_valid() -> None:
    """A token issued in the future (beyond skew) is refused; at the boundary it passes."""
    assert reason(claims(iat=NOW + 30)) is Reason.OK
    assert reason(claims(iat=NOW + 31)) is Reason.NOT_YET_VALID


@pytest.mark.parametrize("name", ["nbf", "iat"])
@pytest.mark.parametrize("value", ["0", True, float("nan"), -5, 10**20, None])
def test_nbf_and_iat_must_be_numeric_dates(name: str, value: Any) -> None:
    """Wrong-typed ``nbf``/``iat`` are ``invalid_claim``; absent (null) ones are ignored."""
    expected = Reason.OK if value is None else Reason.INVALID_CLAIM
    data = claims()
    data[name] = value
    assert reason(data) is expected


def test_leeway_is_per_provider() -> None:
    """A provider's ``leeway_seconds`` is the skew applied to all three dates."""
    assert reason(claims(), now=EXP + 100, leeway_seconds=120) is Reason.OK
    assert reason(claims(nbf=NOW + 100), leeway_seconds=120) is Reason.OK


# -- iss / aud / required --------------------------------------------------------------


def test_iss_must_be_the_providers() -> None:
    """The claims phase re-checks ``iss`` against the provider that verified the token."""
    assert reason(claims(issuer="https://elsewhere.test")) is Reason.BAD_ISSUER


@pytest.mark.parametrize("aud", [AUDIENCE, [AUDIENCE], ["api://other", AUDIENCE]])
def test_aud_string_or_list_containing_ours_is_accepted(aud: Any) -> None:
    """``aud`` may be a string or an array; one accepted audience suffices."""
    assert reason(claims(audience=aud)) is Reason.OK


@pytest.mark.parametrize("aud", ["api://other", ["api://other"], [], None, AUDIENCE.upper()])
def test_aud_without_ours_is_bad_audience(aud: Any) -> None:
    """No accepted audience (or none at all) -> ``bad_audience``; comparison is exact."""
    assert reason(claims(audience=aud)) is Reason.BAD_AUDIENCE


@pytest.mark.parametrize("aud", [[AUDIENCE, 1], 7, {"aud": AUDIENCE}, [[AUDIENCE]], True])
def test_aud_of_another_type_is_invalid_claim(aud: Any) -> None:
    """``aud`` that is neither a string nor an array of strings is ``invalid_claim``."""
    assert reason(claims(audience=aud)) is Reason.INVALID_CLAIM
    assert reason(claims(audience=aud), audiences=()) is Reason.INVALID_CLAIM


def test_provider_without_audiences_accepts_any_aud() -> None:
    """With no ``audiences`` configured, ``aud`` is not restricted (but must be well-typed)."""
    assert reason(claims(audience="anything"), audiences=()) is Reason.OK
    assert reason(claims(audience=None), audiences=()) is Reason.OK


def test_required_claims_must_be_present() -> None:
    """Every claim in ``required_claims`` must be present."""
    assert reason(claims(sub=None, subject=None)) is Reason.MISSING_CLAIM
    assert reason(claims(), required_claims=("exp", "sub", "email")) is Reason.MISSING_CLAIM
    assert reason(claims(email="a@b.c"), required_claims=("exp", "email")) is Reason.OK


@pytest.mark.parametrize("name", ["sub", "email"])
def test_a_null_required_claim_is_missing(name: str) -> None:
    """``null`` is no value: a required claim that is null is ``missing_claim``."""
    data = {**claims(), name: None}
    assert reason(data, required_claims=("exp", name)) is Reason.MISSING_CLAIM


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sub", 42),
        ("sub", ["a"]),
        ("scope", ["read"]),
        ("scope", 1),
        ("scp", [1]),
        ("scp", {"a": 1}),
    ],
)
def test_well_known_claims_have_their_types(name: str, value: Any) -> None:
    """``sub`` and ``scope`` are strings; ``scp`` is a string or an array of strings."""
    data = claims()
    data[name] = value
    assert reason(data) is Reason.INVALID_CLAIM


# -- lookup and scopes -----------------------------------------------------------------


def test_nested_claim_lookup_follows_dots() -> None:
    """``a.b.c`` addresses nested objects; any missing step or non-object gives None."""
    data = {"a": {"b": {"c": "deep", "n": 0}}, "top": "x", "list": [{"b": 1}]}
    assert claims_mod.lookup(data, "a.b.c") == "deep"
    assert claims_mod.lookup(data, "a.b.n") == 0
    assert claims_mod.lookup(data, "a.b") == {"c": "deep", "n": 0}
    assert claims_mod.lookup(data, "top") == "x"
    assert claims_mod.lookup(data, "a.x.c") is None
    assert claims_mod.lookup(data, "top.x") is None
    assert claims_mod.lookup(data, "list.b") is None
    assert claims_mod.lookup(data, "missing") is None


def test_granted_scopes_come_from_scope_and_scp() -> None:
    """``scope`` is space-separated; ``scp`` an array (or a string); both add up."""
    assert claims_mod.scopes({"scope": "read  write admin "}) == {"read", "write", "admin"}
    assert claims_mod.scopes({"scp": ["read", "write"]}) == {"read", "write"}
    assert claims_mod.scopes({"scp": "read write"}) == {"read", "write"}
    assert claims_mod.scopes({"scope": "a", "scp": ["b"]}) == {"a", "b"}
    assert claims_mod.scopes({}) == frozenset()


@pytest.mark.parametrize("separator", ["\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u2003", ","])
def test_scope_is_split_on_u0020_only(separator: str) -> None:
    """RFC 6749 §3.3: only a space separates scopes; any other whitespace or control
    character is part of a scope, so it never grants the scope after it."""
    granted = claims_mod.scopes({"scope": f"read{separator}admin", "scp": f"x{separator}ops"})
    assert granted == {f"read{separator}admin", f"x{separator}ops"}
    assert "admin" not in granted
    assert "ops" not in granted


# -- through the pipeline --------------------------------------------------------------


def test_pipeline_uses_the_injected_clock(new_env: NewEnv, kit: Kit) -> None:
    """The same token is valid, then ``expired``, as the injected clock moves."""
    env = new_env()
    token = sign(claims(), kit.sig_rsa)
    assert env.check(token).allowed
    env.clock.advance(300 + 31)
    decision = env.check(token)
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, Reason.EXPIRED)


def test_pipeline_future_token_is_not_yet_valid(env: Env, kit: Kit) -> None:
    """A token whose ``nbf`` is a minute ahead is denied 401 ``not_yet_valid``."""
    decision = env.check(nested(kit, claims(nbf=NOW + 60)))
    assert (decision.status, decision.reason) == (401, Reason.NOT_YET_VALID)


def test_pipeline_required_claims_from_config(new_env: NewEnv, kit: Kit) -> None:
    """``providers[].required_claims`` from the config file is enforced."""
    env = new_env(idp={"required_claims": ["exp", "sub", "tenant"]})
    assert env.check(sign(claims(), kit.sig_rsa)).reason is Reason.MISSING_CLAIM
    assert env.check(sign(claims(tenant="t1"), kit.sig_rsa)).allowed
