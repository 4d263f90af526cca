"""Route rules: matching, anonymous routes, scopes, claims, context_extensions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from extauthz.errors import ConfigError, Reason

from .support import (
    MANAGED_HEADERS,
    OTHER_ISSUER,
    Env,
    Kit,
    assert_allow_invariants,
    build_config,
    claims,
    response_header,
    sign,
)

NewEnv = Callable[..., Env]

RULES: list[dict[str, Any]] = [
    {"name": "public", "path_prefix": "/public/", "anonymous": True},
    {"name": "public-shadowed", "path_prefix": "/public/secret", "require_scopes": ["never"]},
    {
        "name": "admin",
        "path_prefix": "/admin/",
        "methods": ["POST", "put", "DELETE"],
        "require_scopes": ["admin"],
    },
    {"name": "health", "path_exact": "/health/deep", "require_scopes": ["ops"]},
    {
        "name": "orders",
        "path_regex": "/orders/[0-9]+",
        "require_claims": {"roles": ["buyer", "seller"]},
    },
    {"name": "reports", "path_prefix": "/reports/", "require_scopes": ["read", "reports"]},
    {
        "name": "tenant",
        "path_prefix": "/tenant/",
        "require_claims": {"roles": "admin", "org.tenant": ["t1", "t2"]},
    },
    {"name": "typed", "path_prefix": "/typed/", "require_claims": {"verified": True, "level": [2]}},
    {"name": "other-only", "path_prefix": "/partner/", "providers": ["other"]},
    {"name": "by-name-only", "path_exact": "/unreachable", "require_scopes": ["named"]},
]


@pytest.fixture(scope="module")
def policy_env(new_env: NewEnv) -> Env:
    """One pipeline with the rule table above (rules hold no per-request state)."""
    return new_env({"rules": RULES})


def token(kit: Kit, **extra: Any) -> str:
    """A valid plain JWS for provider ``idp`` with extra claims."""
    return sign(claims(**extra), kit.sig_rsa)


# -- matching --------------------------------------------------------------------------


def test_first_matching_rule_wins(policy_env: Env) -> None:
    """``/public/secret`` matches both public rules: the first one (anonymous) applies."""
    decision = policy_env.check(path="/public/secret/x")
    assert (decision.allowed, decision.rule, decision.reason) == (True, "public", Reason.ANONYMOUS)


def test_no_matching_rule_means_any_valid_token(policy_env: Env, kit: Kit) -> None:
    """Unmatched paths use the ``default`` rule: a valid token suffices, none is 401."""
    decision = policy_env.check(token(kit), path="/anything")
    assert (decision.allowed, decision.rule) == (True, "default")
    decision = policy_env.check(path="/anything")
    assert (decision.status, decision.reason, decision.rule) == (
        401,
        Reason.MISSING_TOKEN,
        "default",
    )


def test_methods_restrict_a_rule(policy_env: Env, kit: Kit) -> None:
    """A rule with ``methods`` applies to those methods only (config case-insensitive)."""
    plain = token(kit)
    assert policy_env.check(plain, method="GET", path="/admin/users").rule == "default"
    for method in ("POST", "PUT", "DELETE"):
        decision = policy_env.check(plain, method=method, path="/admin/users")
        assert (decision.rule, decision.status) == ("admin", 403)
    assert policy_env.check(token(kit, scope="admin"), method="PUT", path="/admin/users").allowed


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/public/page?next=/admin/", "public"),
        ("/page?x=/public/", "default"),
        ("/page#/public/", "default"),
        ("/health/deep", "health"),
        ("/health/deep?verbose=1", "health"),
        ("/health/deep/", "default"),
        ("/health/deeper", "default"),
        ("/orders/12", "orders"),
        ("/orders/12?x=y", "orders"),
        ("/orders/12/items", "default"),
        ("/orders/abc", "default"),
        ("/x/orders/12", "default"),
    ],
)
def test_paths_are_matched_without_the_query_string(
    policy_env: Env, kit: Kit, path: str, rule: str
) -> None:
    """prefix / exact / regex (full match) see the path without query or fragment."""
    assert policy_env.check(token(kit), path=path).rule == rule


@pytest.mark.parametrize(
    ("method", "path", "with_token"),
    [
        pytest.param("POST", "/public/../admin/users", False),
        pytest.param("POST", "/public/%2e%2e/admin/users", False),
        pytest.param("POST", "//admin/users", True),
        pytest.param("POST", "/%61dmin/users", True),
        pytest.param("POST", "/admin/users", True),
    ],
)
def test_a_path_that_resolves_under_a_protected_prefix_gets_its_rule(
    policy_env: Env, kit: Kit, method: str, path: str, with_token: bool
) -> None:
    """``/public/../admin/x`` is ``/admin/x`` to any RFC 3986 upstream: never anonymous, and
    never without the admin scope (normalised for matching, or refused)."""
    decision = policy_env.check(token(kit) if with_token else None, method=method, path=path)
    assert not decision.allowed


def test_a_host_matcher_is_refused_rather_than_ignored() -> None:
    """A rule may not name ``hosts``: ignoring it would open a host-restricted rule to all
    hosts (and the ``:authority`` Istio's Envoy sends is Envoy-internal, not to be trusted)."""
    rule = {
        "name": "public-site",
        "hosts": ["public.example.test"],
        "path_prefix": "/",
        "anonymous": True,
    }
    with pytest.raises(ConfigError) as caught:
        build_config({"rules": [rule]})
    assert caught.value.path == "rules[0].hosts"


# -- anonymous -------------------------------------------------------------------------


def test_anonymous_without_token_allows_and_removes_every_claim_header(policy_env: Env) -> None:
    """Missing token on an anonymous route: allow, no claim headers, all of them removed."""
    smuggled = dict.fromkeys(MANAGED_HEADERS, "forged")
    decision = policy_env.check(path="/public/a", headers=smuggled)
    assert_allow_invariants(decision)
    assert decision.reason is Reason.ANONYMOUS
    assert decision.upstream_headers == ()
    assert set(decision.remove_headers) >= MANAGED_HEADERS
    assert decision.metadata["decision"] == "allow"
    assert decision.metadata["reason"] == "anonymous"


def test_anonymous_with_valid_token_allows_with_claim_headers(policy_env: Env, kit: Kit) -> None:
    """A valid token on an anonymous route is used: claim headers are set."""
    decision = policy_env.check(token(kit, email="u@example.test"), path="/public/a")
    assert_allow_invariants(decision)
    assert decision.reason is Reason.OK
    assert ("x-auth-subject", "user-1") in decision.upstream_headers
    assert ("x-auth-email", "u@example.test") in decision.upstream_headers


@pytest.mark.parametrize(
    "make",
    [
        lambda kit: sign(claims(), kit.attacker, header={"kid": "sig-rsa"}),
        lambda kit: sign(claims(exp=1), kit.sig_rsa),
        lambda kit: "not-a-token",
    ],
    ids=["bad-signature", "expired", "garbage"],
)
def test_anonymous_with_invalid_token_is_401(
    policy_env: Env, kit: Kit, make: Callable[[Kit], str]
) -> None:
    """A token presented on an anonymous route must be valid (Envoy ``allow_missing``)."""
    decision = policy_env.check(make(kit), path="/public/a")
    assert (decision.allowed, decision.status) == (False, 401)
    assert decision.rule == "public"


# -- scopes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "allowed"),
    [
        ({"scope": "read"}, False),
        ({"scope": "reports"}, False),
        ({"scope": "read reports"}, True),
        ({"scope": "reports   read other"}, True),
        ({"scp": ["read", "reports"]}, True),
        ({"scp": ["read"]}, False),
        ({"scope": "read", "scp": ["reports"]}, True),
        ({"scope": "read-reports"}, False),
        ({}, False),
    ],
)
def test_require_scopes_needs_all_of_them(
    policy_env: Env, kit: Kit, extra: dict[str, Any], allowed: bool
) -> None:
    """``require_scopes`` needs ALL scopes, from ``scope`` (string) and/or ``scp`` (array)."""
    decision = policy_env.check(token(kit, **extra), path="/reports/q1")
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.status, decision.reason) == (403, Reason.INSUFFICIENT_SCOPE)
        challenge = response_header(decision, "www-authenticate")
        assert (
            challenge == 'Bearer realm="extauthz", error="insufficient_scope", scope="read reports"'
        )


# -- claims ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        ("buyer", True),
        ("seller", True),
        (["guest", "seller"], True),
        (["guest"], False),
        ("guest", False),
        ("buyers", False),
        ([], False),
        (None, False),
        (["BUYER"], False),
    ],
)
def test_require_claims_any_of_with_array_containment(
    policy_env: Env, kit: Kit, roles: Any, allowed: bool
) -> None:
    """Each required claim equals, or (array claim) contains, ANY of its listed values."""
    decision = policy_env.check(token(kit, roles=roles), path="/orders/7")
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.status, decision.reason) == (403, Reason.INSUFFICIENT_SCOPE)


def test_require_claims_needs_every_listed_claim(policy_env: Env, kit: Kit) -> None:
    """Several ``require_claims`` entries must all hold; nested names use dots."""
    both = token(kit, roles=["admin"], org={"tenant": "t2"})
    assert policy_env.check(both, path="/tenant/x").allowed
    assert not policy_env.check(token(kit, roles=["admin"]), path="/tenant/x").allowed
    assert not policy_env.check(token(kit, org={"tenant": "t1"}), path="/tenant/x").allowed
    wrong = token(kit, roles="admin", org={"tenant": "t3"})
    assert policy_env.check(wrong, path="/tenant/x").status == 403


@pytest.mark.parametrize(
    ("extra", "allowed"),
    [
        ({"verified": True, "level": 2}, True),
        ({"verified": True, "level": 2.0}, True),
        ({"verified": 1, "level": 2}, False),
        ({"verified": True, "level": "2"}, False),
        ({"verified": "true", "level": 2}, False),
        ({"verified": True, "level": True}, False),
    ],
)
def test_require_claims_compare_json_types(
    policy_env: Env, kit: Kit, extra: dict[str, Any], allowed: bool
) -> None:
    """Booleans match booleans only; numbers match numbers, never strings or booleans."""
    assert policy_env.check(token(kit, **extra), path="/typed/x").allowed is allowed


def test_rule_providers_restrict_issuers(policy_env: Env, kit: Kit) -> None:
    """A rule listing ``providers`` refuses tokens of other providers."""
    decision = policy_env.check(token(kit), path="/partner/x")
    assert (decision.status, decision.reason) == (401, Reason.BAD_ISSUER)
    partner = sign(claims(issuer=OTHER_ISSUER), kit.other_sig)
    assert policy_env.check(partner, path="/partner/x").allowed


# -- context_extensions ----------------------------------------------------------------


def test_context_rule_selects_a_named_rule(policy_env: Env, kit: Kit) -> None:
    """``context_extensions.rule`` picks the rule by name, whatever the path and method."""
    decision = policy_env.check(token(kit), path="/", context={"rule": "by-name-only"})
    assert (decision.rule, decision.status, decision.reason) == (
        "by-name-only",
        403,
        Reason.INSUFFICIENT_SCOPE,
    )
    assert policy_env.check(token(kit, scope="named"), context={"rule": "by-name-only"}).allowed
    anonymous = policy_env.check(path="/admin/x", method="POST", context={"rule": "public"})
    assert (anonymous.allowed, anonymous.rule) == (True, "public")


@pytest.mark.parametrize("with_token", [True, False])
def test_unknown_context_rule_is_403_unknown_rule(
    policy_env: Env, kit: Kit, with_token: bool
) -> None:
    """A route naming a rule that does not exist is a configuration error: 403, always."""
    decision = policy_env.check(token(kit) if with_token else None, context={"rule": "nope"})
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, Reason.UNKNOWN_RULE)


def test_context_scopes_add_required_scopes(policy_env: Env, kit: Kit) -> None:
    """``context_extensions.scopes`` (space-separated) adds to the rule's scopes."""
    ctx = {"scopes": "write  delete"}
    decision = policy_env.check(token(kit, scope="write"), context=ctx)
    assert (decision.status, decision.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert response_header(decision, "www-authenticate") == (
        'Bearer realm="extauthz", error="insufficient_scope", scope="write delete"'
    )
    assert policy_env.check(token(kit, scope="delete write"), context=ctx).allowed


def test_context_scopes_combine_with_the_rules_own(policy_env: Env, kit: Kit) -> None:
    """Named rule plus extra scopes: the token needs both sets."""
    ctx = {"rule": "admin", "scopes": "audit admin"}
    assert not policy_env.check(token(kit, scope="admin"), context=ctx).allowed
    decision = policy_env.check(token(kit, scope="audit"), context=ctx)
    assert response_header(decision, "www-authenticate") == (
        'Bearer realm="extauthz", error="insufficient_scope", scope="admin audit"'
    )
    allowed = policy_env.check(token(kit, scope="admin audit"), context=ctx)
    assert (allowed.allowed, allowed.rule) == (True, "admin")


@pytest.mark.parametrize(
    "context",
    [{"scopes": "extra"}, {"rule": "public", "scopes": "extra"}, {"scopes": "   extra "}],
)
def test_context_scopes_make_a_missing_token_401_even_on_an_anonymous_route(
    policy_env: Env, kit: Kit, context: dict[str, str]
) -> None:
    """Scopes added by the route require a token: a missing token never gets more than a
    token that lacks the scope (which is a 403)."""
    decision = policy_env.check(path="/public/x", context=context)
    assert (decision.allowed, decision.status, decision.reason) == (
        False, 401, Reason.MISSING_TOKEN,
    )  # fmt: skip
    lacking = policy_env.check(token(kit), path="/public/x", context=context)
    assert (lacking.status, lacking.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert policy_env.check(token(kit, scope="extra"), path="/public/x", context=context).allowed


@pytest.mark.parametrize("path", ["/public%2F..%2Fadmin/users", "/public/a%5Cb", "/a\\b", "/%zz"])
def test_a_path_whose_meaning_depends_on_the_upstream_is_denied(
    policy_env: Env, kit: Kit, path: str
) -> None:
    """Encoded slashes/backslashes and broken %-encoding are denied ``bad_path`` (400)."""
    decision = policy_env.check(token(kit), path=path)
    assert (decision.allowed, decision.status, decision.reason) == (False, 400, Reason.BAD_PATH)
