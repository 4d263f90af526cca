"""Decisions: claim headers, upstream options, deny responses, metadata."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from extauthz.errors import STATUS, ConfigError, Reason
from extauthz.keys.keyset import KeyStore
from extauthz.keys.sources.static import StaticSource
from extauthz.pipeline.decision import Decision, Denials, header_value
from extauthz.pipeline.evaluate import Evaluator
from extauthz.pipeline.request import CheckInput

from .support import (
    ISSUER,
    MANAGED_HEADERS,
    Env,
    Kit,
    assert_allow_invariants,
    body,
    build_config,
    claims,
    encrypt,
    nested,
    response_header,
    sign,
    unb64,
)

NewEnv = Callable[..., Env]

CLAIM_HEADERS = {
    "n": "x-n",
    "f": "x-f",
    "flag": "x-flag",
    "no": "x-no",
    "mixed": "x-mixed",
    "obj": "x-obj",
    "a.b.c": "x-abc",
    "crlf": "x-crlf",
    "lf": "x-lf",
    "cr": "x-cr",
    "nul": "x-nul",
    "big": "x-big",
    "edge": "x-edge",
    "wide": "x-wide",
    "nothing": "x-nothing",
    "absent": "x-absent",
    "text": "x-text",
}
LIMIT = 8192
VALUES: dict[str, Any] = {
    "email": "u@example.test",
    "scope": "read write",
    "roles": ["admin", "ops"],
    "n": 42,
    "f": 1.5,
    "flag": True,
    "no": False,
    "mixed": [1, "a", None],
    "obj": {"b": [1, 2], "a": "x"},
    "a": {"b": {"c": "deep"}},
    "crlf": "a\r\nx-injected: 1",
    "lf": "a\nb",
    "cr": "a\rb",
    "nul": "a\x00b",
    "big": "b" * (LIMIT + 1),
    "edge": "e" * LIMIT,
    "wide": "\u00e9" * (LIMIT // 2 + 1),
    "nothing": None,
    "text": "caf\u00e9 \t ok",
}


@pytest.fixture(scope="module")
def header_env(new_env: NewEnv) -> Env:
    """A pipeline mapping many claim shapes to headers (tokens up to 64 KiB)."""
    return new_env(
        {"token": {"max_bytes": 65536, "max_header_bytes": 131072}},
        idp={"claims_to_headers": CLAIM_HEADERS},
    )


@pytest.fixture(scope="module")
def rendered(header_env: Env, kit: Kit) -> Decision:
    """The allow decision for a token carrying every claim shape."""
    decision = header_env.check(sign(claims(**VALUES), kit.sig_rsa))
    assert decision.allowed, decision.reason
    return decision


def upstream(decision: Decision) -> dict[str, str]:
    """Headers set on the upstream request, as a dict."""
    return dict(decision.upstream_headers)


# -- claim header values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("x-auth-subject", "user-1"),
        ("x-auth-email", "u@example.test"),
        ("x-auth-scope", "read write"),
        ("x-text", "caf\u00e9 \t ok"),
        ("x-n", "42"),
        ("x-f", "1.5"),
        ("x-flag", "true"),
        ("x-no", "false"),
        ("x-auth-roles", "admin,ops"),
        ("x-abc", "deep"),
        ("x-edge", "e" * LIMIT),
    ],
)
def test_claim_header_values(rendered: Decision, header: str, expected: str) -> None:
    """Strings as is, numbers/bools as JSON, string arrays joined with ``,``, a.b.c nested."""
    assert upstream(rendered)[header] == expected


def test_objects_and_mixed_arrays_are_json(rendered: Decision) -> None:
    """Objects and arrays that are not all strings are rendered as JSON."""
    assert json.loads(upstream(rendered)["x-obj"]) == VALUES["obj"]
    assert json.loads(upstream(rendered)["x-mixed"]) == VALUES["mixed"]


@pytest.mark.parametrize("header", ["x-crlf", "x-lf", "x-cr", "x-nul"])
def test_control_characters_drop_the_value(rendered: Decision, header: str) -> None:
    """CR, LF and NUL are never emitted: the header is dropped, and removed upstream."""
    assert header not in upstream(rendered)
    assert header in rendered.remove_headers
    assert header in rendered.dropped


@pytest.mark.parametrize("header", ["x-big", "x-wide"])
def test_values_over_8_kib_are_dropped(rendered: Decision, header: str) -> None:
    """Over 8 KiB (in UTF-8 bytes) the value is dropped and the header removed."""
    assert header not in upstream(rendered)
    assert header in rendered.remove_headers
    assert header in rendered.dropped


def test_every_unfilled_claim_header_is_removed(rendered: Decision) -> None:
    """Absent, null or dropped claims: their headers (of every provider) are removed."""
    for header in ("x-nothing", "x-absent", "x-other-subject", "x-big", "x-crlf"):
        assert header in rendered.remove_headers
    assert "x-nothing" not in rendered.dropped  # null is absent, not dropped
    configured = set(CLAIM_HEADERS.values()) | MANAGED_HEADERS
    filled = set(upstream(rendered))
    assert configured - filled <= set(rendered.remove_headers)


def test_no_header_is_both_set_and_removed(rendered: Decision) -> None:
    """``headers_to_remove`` is applied after ``headers`` in Envoy: never list one we set."""
    assert_allow_invariants(rendered)


def _allow_or_refused_at_load(
    new_env: NewEnv, kit: Kit, overrides: dict[str, Any], idp: dict[str, Any] | None = None
) -> Decision | None:
    """The allow for a valid token under this config, or None if the config is refused."""
    try:
        env = new_env(overrides, idp=idp)
    except ConfigError:
        return None
    return env.check(sign(claims(), kit.sig_rsa))


def test_claims_header_never_collides_with_a_claim_header(new_env: NewEnv, kit: Kit) -> None:
    """A header is set at most once: a colliding ``claims_header`` is refused at load."""
    decision = _allow_or_refused_at_load(
        new_env, kit, {"upstream": {"claims_header": "x-auth-subject"}}
    )
    if decision is not None:
        assert_allow_invariants(decision)


@pytest.mark.parametrize("mode", ["remove", "inner"])
def test_a_claim_header_cannot_target_the_authorization_header(
    new_env: NewEnv, kit: Kit, mode: str
) -> None:
    """Never both set and removed, never set twice, whatever ``upstream.authorization`` says."""
    decision = _allow_or_refused_at_load(
        new_env,
        kit,
        {"upstream": {"authorization": mode}},
        idp={"claims_to_headers": {"sub": "authorization"}},
    )
    if decision is not None:
        assert_allow_invariants(decision)


def test_header_value_unit_rules() -> None:
    """The value rules, on their own."""
    assert header_value("x", 10) == "x"
    assert header_value(None, 10) is None
    assert header_value(["a", "b"], 10) == "a,b"
    assert header_value(0, 10) == "0"
    assert header_value(12345678901234567890, 100) == "12345678901234567890"
    assert header_value("x" * 11, 10) is None
    assert header_value("a\x7fb", 10) is None
    assert header_value({"k": "line\nbreak"}, 100) == '{"k":"line\\nbreak"}'


def test_claim_header_limit_is_configurable(new_env: NewEnv, kit: Kit) -> None:
    """``upstream.max_header_value_bytes`` sets the drop threshold."""
    env = new_env({"upstream": {"max_header_value_bytes": 16}})
    decision = env.check(sign(claims(email="x" * 17), kit.sig_rsa))
    assert "x-auth-email" not in upstream(decision)
    assert "x-auth-email" in decision.remove_headers


# -- upstream.authorization, claims_header, strip_header_prefixes ----------------------


def test_authorization_keep_is_the_default(env: Env, kit: Kit) -> None:
    """``keep``: the client's authorization header goes upstream untouched."""
    decision = env.check(nested(kit))
    assert "authorization" not in upstream(decision)
    assert "authorization" not in decision.remove_headers


def test_authorization_remove(new_env: NewEnv, kit: Kit) -> None:
    """``remove``: the authorization header is removed from the upstream request."""
    decision = new_env({"upstream": {"authorization": "remove"}}).check(nested(kit))
    assert_allow_invariants(decision)
    assert "authorization" in decision.remove_headers
    assert "authorization" not in upstream(decision)


def test_authorization_inner_replaces_the_jwe_with_the_signed_jwt(
    new_env: NewEnv, kit: Kit
) -> None:
    """``inner``: upstream receives ``Bearer <inner JWS>``, verifiable without our keys."""
    env = new_env({"upstream": {"authorization": "inner"}})
    inner = sign(claims(), kit.sig_rsa)
    decision = env.check(encrypt(inner, kit.enc_rsa))
    assert_allow_invariants(decision)
    assert upstream(decision)["authorization"] == f"Bearer {inner}"
    plain = env.check(inner)
    assert upstream(plain)["authorization"] == f"Bearer {inner}"


def test_claims_header_is_base64url_of_the_claims(new_env: NewEnv, kit: Kit) -> None:
    """``claims_header``: base64url (no padding) of the validated claims as JSON."""
    env = new_env({"upstream": {"claims_header": "x-auth-claims"}})
    data = claims(email="u@example.test", nested={"k": [1, 2]})
    decision = env.check(nested(kit, data))
    value = upstream(decision)["x-auth-claims"]
    assert "=" not in value
    assert json.loads(unb64(value)) == data
    anonymous = new_env(
        {
            "upstream": {"claims_header": "x-auth-claims"},
            "rules": [{"name": "pub", "path_prefix": "/", "anonymous": True}],
        }
    )
    assert "x-auth-claims" in anonymous.check(path="/").remove_headers


def test_claims_header_too_large_is_dropped_and_removed(new_env: NewEnv, kit: Kit) -> None:
    """A claims header over the limit is dropped like any other value."""
    env = new_env({"upstream": {"claims_header": "x-auth-claims", "max_header_value_bytes": 64}})
    decision = env.check(sign(claims(), kit.sig_rsa))
    assert "x-auth-claims" not in upstream(decision)
    assert "x-auth-claims" in decision.remove_headers


def test_strip_header_prefixes_removes_client_headers(new_env: NewEnv, kit: Kit) -> None:
    """Client headers with a stripped prefix are removed, except those we set."""
    env = new_env({"upstream": {"strip_header_prefixes": ["x-auth-", "x-internal-"]}})
    client = {
        "x-auth-role": "admin",
        "x-auth-subject": "forged",
        "x-internal-trace": "1",
        "x-authz": "kept",
        "x-other": "kept",
    }
    decision = env.check(sign(claims(), kit.sig_rsa), headers=client)
    assert_allow_invariants(decision)
    assert {"x-auth-role", "x-internal-trace"} <= set(decision.remove_headers)
    assert upstream(decision)["x-auth-subject"] == "user-1"
    assert "x-authz" not in decision.remove_headers
    assert "x-other" not in decision.remove_headers
    raw = list(client.items())
    raw.append(("authorization", f"Bearer {sign(claims(), kit.sig_rsa)}"))
    from_raw = env.check(raw_headers=raw)
    assert {"x-auth-role", "x-internal-trace"} <= set(from_raw.remove_headers)


def test_strip_header_prefixes_applies_to_anonymous_allows(new_env: NewEnv) -> None:
    """An anonymous allow strips prefixed client headers too."""
    env = new_env(
        {
            "upstream": {"strip_header_prefixes": ["x-auth-"]},
            "rules": [{"name": "pub", "path_prefix": "/", "anonymous": True}],
        }
    )
    decision = env.check(headers={"x-auth-admin": "true"})
    assert_allow_invariants(decision)
    assert "x-auth-admin" in decision.remove_headers


# -- response headers ------------------------------------------------------------------

SECURITY = {
    "x-content-type-options": "nosniff",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
}


@pytest.fixture(scope="module")
def secure_env(new_env: NewEnv) -> Env:
    """A pipeline with ``response.headers`` and an admin rule."""
    return new_env(
        {
            "response": {"headers": SECURITY},
            "rules": [{"name": "admin", "path_prefix": "/admin/", "require_scopes": ["admin"]}],
        }
    )


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda kit: sign(claims(), kit.sig_rsa), 200),
        (lambda kit: None, 401),
        (lambda kit: "x.y.z", 401),
    ],
    ids=["allow", "missing", "invalid"],
)
def test_response_headers_on_allow_and_deny(
    secure_env: Env, kit: Kit, make: Any, status: int
) -> None:
    """Configured ``response.headers`` are added to the client response every time."""
    decision = secure_env.check(make(kit))
    assert decision.status == status
    for name, value in SECURITY.items():
        assert response_header(decision, name) == value


def test_response_headers_on_403(secure_env: Env, kit: Kit) -> None:
    """...including a 403."""
    decision = secure_env.check(sign(claims(), kit.sig_rsa), path="/admin/x")
    assert decision.status == 403
    assert response_header(decision, "x-content-type-options") == "nosniff"


# -- deny responses --------------------------------------------------------------------


def test_missing_token_response(env: Env) -> None:
    """No token: 401, bare Bearer challenge, ``missing_token`` body."""
    decision = env.check()
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        401,
        Reason.MISSING_TOKEN,
    )
    assert response_header(decision, "www-authenticate") == 'Bearer realm="extauthz"'
    assert response_header(decision, "content-type") == "application/json"
    assert body(decision)["error"] == "missing_token"
    assert body(decision)["error_description"]


def test_invalid_token_response(env: Env, kit: Kit) -> None:
    """Invalid token: 401 ``invalid_token`` with the reason class as description."""
    decision = env.check(sign(claims(exp=NOW_EXPIRED), kit.sig_rsa))
    assert (decision.status, decision.reason) == (401, Reason.EXPIRED)
    assert response_header(decision, "www-authenticate") == (
        'Bearer realm="extauthz", error="invalid_token", error_description="expired"'
    )
    assert response_header(decision, "content-type") == "application/json"
    assert body(decision)["error"] == "invalid_token"


NOW_EXPIRED = 1_700_000_000


def test_insufficient_scope_response(secure_env: Env, kit: Kit) -> None:
    """Valid token, rule not met: 403 ``insufficient_scope`` naming the required scope."""
    decision = secure_env.check(sign(claims(scope="read"), kit.sig_rsa), path="/admin/x")
    assert (decision.status, decision.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert response_header(decision, "www-authenticate") == (
        'Bearer realm="extauthz", error="insufficient_scope", scope="admin"'
    )
    assert body(decision)["error"] == "insufficient_scope"


def test_realm_comes_from_config(new_env: NewEnv, kit: Kit) -> None:
    """``token.realm`` is the realm of every challenge."""
    env = new_env({"token": {"realm": "orders"}})
    assert response_header(env.check(), "www-authenticate") == 'Bearer realm="orders"'
    challenge = response_header(env.check("a.b.c"), "www-authenticate")
    assert challenge is not None
    assert challenge.startswith('Bearer realm="orders", error="invalid_token"')


def test_not_ready_is_503_with_retry_after(kit: Kit) -> None:
    """Before every key source has loaded once: 503 ``not_ready`` with ``retry-after``."""
    store = KeyStore()
    store.attach("decryption", StaticSource([], "never published"))
    evaluator = Evaluator(build_config(), store)
    request = CheckInput(headers={"authorization": f"Bearer {sign(claims(), kit.sig_rsa)}"})
    decision, _ = evaluator.check(request)
    assert (decision.allowed, decision.status, decision.reason) == (False, 503, Reason.NOT_READY)
    assert response_header(decision, "retry-after")
    assert body(decision)["error"] == "not_ready"


def test_unknown_rule_response(env: Env) -> None:
    """``context_extensions.rule`` naming no rule: 403 ``unknown_rule``."""
    decision = env.check(context={"rule": "missing"})
    assert (decision.status, decision.reason) == (403, Reason.UNKNOWN_RULE)
    assert body(decision)["error"] == "unknown_rule"


def test_unexpected_exception_fails_closed(
    env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any unexpected exception is a 401 ``internal_error`` deny; no detail leaks."""

    def explode(*_: Any) -> Any:
        raise RuntimeError("kaboom enc-rsa /etc/keys/private.pem")

    monkeypatch.setattr(env.evaluator.verifier, "verify", explode)
    decision = env.check(nested(kit))
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        401,
        Reason.INTERNAL_ERROR,
    )
    rendered = decision.body + "".join(v for _, v in decision.response_headers)
    for secret in ("kaboom", "enc-rsa", "private.pem", "Traceback", "RuntimeError"):
        assert secret not in rendered
    assert body(decision)["error"] in ("invalid_token", "internal_error")


def test_unexpected_exception_is_logged_with_its_traceback(
    env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed, but loudly: the operator gets the exception (the client never does)."""

    def explode(*_: Any) -> Any:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(env.evaluator.verifier, "verify", explode)
    with capture_logs() as logs:
        env.check(nested(kit), path="/orders?id=1")
    [entry] = [e for e in logs if e["log_level"] == "error"]
    assert entry.get("exc_info") is True
    assert entry.get("path") == "/orders"  # never the query string


def test_unknown_rule_is_logged_as_a_configuration_error(env: Env) -> None:
    """A route naming a missing rule is an operator's mistake: logged as an error."""
    with capture_logs() as logs:
        env.check(context={"rule": "missing"})
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors
    assert errors[0].get("rule") == "missing"


@pytest.mark.parametrize("reason", [r for r in Reason if r not in (Reason.OK, Reason.ANONYMOUS)])
def test_every_deny_reason_has_a_safe_response(reason: Reason) -> None:
    """Every reason class maps to 400/401/403/503, a JSON body and a challenge."""
    denials = Denials(build_config({"token": {"realm": "r"}}))
    decision = denials.deny(reason, "rule-x", "operator detail kid=enc-rsa")
    expected_status = {
        Reason.INSUFFICIENT_SCOPE: 403,
        Reason.UNKNOWN_RULE: 403,
        Reason.BAD_PATH: 400,
        Reason.NOT_READY: 503,
    }.get(reason, 401)
    assert decision.status == expected_status == STATUS.get(reason, 401)
    data = body(decision)
    assert set(data) >= {"error", "error_description"}
    assert response_header(decision, "content-type") == "application/json"
    assert "enc-rsa" not in decision.body
    assert "operator detail" not in decision.body
    challenge = response_header(decision, "www-authenticate")
    if reason is Reason.MISSING_TOKEN:
        assert challenge == 'Bearer realm="r"'
        assert data["error"] == "missing_token"
    elif reason is Reason.INSUFFICIENT_SCOPE:
        assert challenge == 'Bearer realm="r", error="insufficient_scope"'
    elif expected_status == 401:
        assert challenge == (
            f'Bearer realm="r", error="invalid_token", error_description="{reason.value}"'
        )
        if reason is not Reason.INTERNAL_ERROR:
            assert data["error"] == "invalid_token"
    elif reason is Reason.NOT_READY:
        assert data["error"] == "not_ready"
        assert response_header(decision, "retry-after")
    elif reason is Reason.BAD_PATH:
        assert (data["error"], data["reason"]) == ("bad_path", "bad_path")
        assert challenge is None  # not about credentials: no challenge


# -- dynamic metadata ------------------------------------------------------------------


def test_metadata_on_allow_of_a_nested_token(env: Env, kit: Kit) -> None:
    """Allow metadata names the decision, rule, subject, issuer and both key ids."""
    decision = env.check(nested(kit))
    assert dict(decision.metadata) == {
        "decision": "allow",
        "reason": "ok",
        "rule": "default",
        "sub": "user-1",
        "iss": ISSUER,
        "kid": "sig-rsa",
        "enc_kid": "enc-rsa",
    }


def test_metadata_on_allow_of_a_plain_jws(env: Env, kit: Kit) -> None:
    """A plain JWS has no ``enc_kid`` (or an empty one)."""
    metadata = env.check(sign(claims(), kit.sig_rsa)).metadata
    assert (metadata["decision"], metadata["kid"], metadata.get("enc_kid", "")) == (
        "allow",
        "sig-rsa",
        "",
    )


def test_metadata_on_deny_of_an_invalid_token(env: Env) -> None:
    """Deny metadata carries the decision, reason class and rule too."""
    metadata = env.check("x.y.z").metadata
    assert {"decision", "reason", "rule", "sub", "iss", "kid"} <= set(metadata)
    assert (metadata["decision"], metadata["reason"], metadata["rule"]) == (
        "deny",
        "malformed",
        "default",
    )


def test_metadata_on_403_names_the_token(secure_env: Env, kit: Kit) -> None:
    """A 403 for a valid token says who was refused, by which rule, with which keys."""
    metadata = secure_env.check(nested(kit), path="/admin/x").metadata
    assert dict(metadata) == {
        "decision": "deny",
        "reason": "insufficient_scope",
        "rule": "admin",
        "sub": "user-1",
        "iss": ISSUER,
        "kid": "sig-rsa",
        "enc_kid": "enc-rsa",
    }


def test_header_value_drops_exactly_the_control_characters_but_tab() -> None:
    """C0 controls, DEL and nothing else (a tab is allowed, as in HTTP field values)."""
    for code in [*range(0x100), 0x2028, 0xFEFF, 0x10FFFF]:
        char = chr(code)
        control = (code < 0x20 and char != "\t") or code == 0x7F
        assert (header_value(f"a{char}b", 100) is None) is control, hex(code)


def test_header_value_size_is_counted_in_utf8_bytes() -> None:
    """ASCII text is measured by its length, other text by its UTF-8 encoding, so the
    limit is in bytes either way; a lone surrogate is never a header value."""
    assert header_value("a" * 8, 8) == "a" * 8
    assert header_value("a" * 9, 8) is None
    assert header_value("é" * 4, 8) == "é" * 4  # 8 bytes
    assert header_value("é" * 4 + "a", 8) is None  # 9 bytes, 5 characters
    assert header_value("a\ud800", 100) is None
    assert header_value(["é", "a"], 4) == "é,a"  # 4 bytes
