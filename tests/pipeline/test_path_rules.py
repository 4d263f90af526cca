"""Rules match what the upstream serves: path canonicalization, letter case, methods.

The core is one table: path forms an attacker would try, times the way real upstreams
read a path (Envoy-normalized, a servlet container, Go net/http, Express,
Flask/Werkzeug, ASP.NET). Each upstream model below is written from that server's
documented behaviour, independently of the product's own normalizer. The assertion:
no form reaches the resource of a protected rule under a less protected rule — if
ANY upstream would serve a form from ``/admin/``, the form needs the admin scope
here; if any would serve it outside ``/public/``, it needs a token.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest

from extauthz.errors import Reason

from .support import Env, Kit, claims, sign

NewEnv = Callable[..., Env]

RULES: list[dict[str, Any]] = [
    {"name": "public", "path_prefix": "/public/", "anonymous": True},
    {"name": "admin", "path_prefix": "/admin/", "require_scopes": ["admin"]},
]


@pytest.fixture(scope="module")
def rules_env(new_env: NewEnv) -> Env:
    """The table's pipeline: an anonymous ``/public/``, an ``/admin/`` needing ``admin``."""
    return new_env({"rules": RULES})


def token(kit: Kit, **extra: Any) -> str:
    """A valid plain JWS for provider ``idp``."""
    return sign(claims(**extra), kit.sig_rsa)


# -- how upstreams read a path ---------------------------------------------------------

_UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


def _remove_dots(path: str) -> str:
    """RFC 3986 §5.2.4 remove_dot_segments."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = path.endswith(("/..", "/.")) and out
    return "/" + "/".join(out) + ("/" if trailing else "")


def _merge_slashes(path: str) -> str:
    return re.sub("/{2,}", "/", path)


def _decode_unreserved(path: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else match.group(0)

    return re.sub("%([0-9A-Fa-f]{2})", one, path)


def envoy_normalized(path: str) -> tuple[str, bool]:
    """An RFC 3986 server behind Envoy's normalize_path + merge_slashes: case-sensitive."""
    return _remove_dots(_merge_slashes(_decode_unreserved(path))), False


def servlet(path: str) -> tuple[str, bool]:
    """Tomcat / Jetty / Spring: ``;params`` dropped from every segment, then decoded,
    then dot segments resolved (so ``/public/..;/admin`` is ``/admin``)."""
    segments = [segment.split(";", 1)[0] for segment in path.split("/")]
    decoded = unquote("/".join(segments), errors="replace")
    return _remove_dots(_merge_slashes(decoded)), False


def go_net_http(path: str) -> tuple[str, bool]:
    """Go: ``URL.Path`` is fully decoded; ServeMux cleans it (path.Clean)."""
    return _remove_dots(_merge_slashes(unquote(path, errors="replace"))), False


def express(path: str) -> tuple[str, bool]:
    """Express (default): case-insensitive routing, ``%xx`` of unreserved decoded, ``;``
    kept as a literal, no dot resolution by Node itself."""
    return _decode_unreserved(path), True


def flask_werkzeug(path: str) -> tuple[str, bool]:
    """Werkzeug: PATH_INFO fully decoded by the WSGI server (``%2F`` too), slashes merged."""
    return _merge_slashes(unquote(path, errors="replace")), False


def aspnet(path: str) -> tuple[str, bool]:
    """ASP.NET Core (Kestrel/IIS): ``\\`` is ``/``, decoded except ``%2F``, dots resolved,
    case-insensitive routing."""
    text = path.replace("\\", "/")
    text = re.sub("%(?!2[Ff])([0-9A-Fa-f]{2})", lambda m: unquote(m.group(0)), text)
    return _remove_dots(_merge_slashes(text.replace("\\", "/"))), True


UPSTREAMS: dict[str, Callable[[str], tuple[str, bool]]] = {
    "envoy-normalized": envoy_normalized,
    "servlet": servlet,
    "go-net-http": go_net_http,
    "express": express,
    "flask-werkzeug": flask_werkzeug,
    "aspnet": aspnet,
}

#: protection levels, weakest first
PUBLIC, TOKEN, ADMIN = 0, 1, 2


def protection(resource: str, case_insensitive: bool) -> int:
    """What the operator meant to require for ``resource`` as one upstream serves it."""
    seen = resource.lower() if case_insensitive else resource
    if seen.startswith("/admin/"):
        return ADMIN
    if seen.startswith("/public/"):
        return PUBLIC
    return TOKEN


def strictest(form: str) -> int:
    """The protection of ``form`` under the upstream that serves the most protected thing."""
    return max(protection(*read(form)) for read in UPSTREAMS.values())


FORMS = [
    # plain
    "/public/x",
    "/admin/x",
    "/orders/1",
    # letter case
    "/ADMIN/x",
    "/Admin/x",
    "/aDmIn/x",
    "/PUBLIC/x",
    "/PUBLIC/../admin/x",
    # dot segments, raw and encoded
    "/public/../admin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2E/admin/x",
    "/public/.%2e/admin/x",
    "/public/%2e./admin/x",
    "/public/x/../../admin/x",
    "/./admin/x",
    "/admin/%2e%2e/public/x",
    # path parameters (servlet containers drop them before resolving "..")
    "/public/..;/admin/x",
    "/public/%2e%2e;/admin/x",
    "/public/..;a=b/admin/x",
    "/admin;x=1/users",
    "/public;x=1/x",
    "/public/%2e%2e%3b/admin/x",
    # encoded and raw separators
    "/public/..%2fadmin/x",
    "/public/..%2Fadmin/x",
    "/public%2f..%2fadmin/x",
    "/public/..%5cadmin/x",
    "/public/..\\admin/x",
    "/public\\..\\admin\\x",
    "/ADMIN%2fx",
    # merged slashes
    "//admin/x",
    "/public//../admin/x",
    # encoded letters
    "/%61dmin/x",
    "/%41DMIN/x",
    "/%70ublic/x",
    # double and overlong encodings, control characters
    "/public/%252e%252e/admin/x",
    "/public/%c0%ae%c0%ae/admin/x",
    "/admin%00/x",
    "/public/%00/../admin/x",
    "/public/\t/../admin/x",
]


def test_the_table_has_teeth() -> None:
    """The upstream models disagree on many forms, and some forms look public as
    written but reach ``/admin/`` upstream: the table tests something."""
    disagree = [f for f in FORMS if len({protection(*read(f)) for read in UPSTREAMS.values()}) > 1]
    assert len(disagree) >= 10
    sneaky = [f for f in FORMS if f.startswith("/public") and strictest(f) == ADMIN]
    assert len(sneaky) >= 8


@pytest.mark.parametrize("form", FORMS)
def test_no_form_reaches_a_protected_resource_under_a_weaker_rule(
    rules_env: Env, kit: Kit, form: str
) -> None:
    """Whatever the upstream, a form is at least as protected as what it serves."""
    need = strictest(form)
    anonymous = rules_env.check(path=form)
    plain = rules_env.check(token(kit), path=form)
    admin = rules_env.check(token(kit, scope="admin"), path=form)
    for decision in (anonymous, plain, admin):
        assert decision.reason is not Reason.INTERNAL_ERROR
        if decision.reason is Reason.BAD_PATH:
            assert (decision.allowed, decision.status) == (False, 400)
    if need >= TOKEN:
        assert not anonymous.allowed, f"{form}: no token reaches a protected resource"
    if need >= ADMIN:
        assert not plain.allowed, f"{form}: a token without admin reaches /admin/"


@pytest.mark.parametrize(
    ("form", "rule"),
    [
        ("/public/x", "public"),
        ("/%70ublic/x", "public"),
        ("/public/a/../b", "public"),
        ("/public/a/./b", "public"),
        ("/public//x", "public"),
        ("/public/caf%C3%A9", "public"),
        ("/public/%25", "public"),
    ],
)
def test_unambiguous_forms_still_reach_their_rule(rules_env: Env, form: str, rule: str) -> None:
    """Canonicalization does not deny what every upstream reads the same way."""
    decision = rules_env.check(path=form)
    assert (decision.allowed, decision.reason, decision.rule) == (True, Reason.ANONYMOUS, rule)


@pytest.mark.parametrize(
    "form",
    [
        "/public/..;/admin/x",
        "/admin;x=1/users",
        "/public/%2e%2e;/admin/x",
        "/public/a%3Bb",
        "/public/%252e%252e/admin/x",
        "/public/%c0%ae",
        "/public/%e2%82",
        "/public/a%0Ab",
        "/public/a\x7fb",
    ],
)
def test_an_ambiguous_path_is_400_bad_path_before_any_token_work(
    rules_env: Env, kit: Kit, form: str
) -> None:
    """``;`` parameters, double or non-UTF-8 encoding, controls: 400 ``bad_path``, with
    the JSON body, whatever the token (none, valid, admin)."""
    for credentials in (None, token(kit), token(kit, scope="admin")):
        decision = rules_env.check(credentials, path=form)
        assert (decision.allowed, decision.status, decision.reason) == (
            False, 400, Reason.BAD_PATH,
        )  # fmt: skip
        assert '"reason": "bad_path"' in decision.body


@pytest.mark.parametrize(
    "form", ["/admin/../public/x", "/admin/%2e%2e/public/x", "/admin/./../public/x"]
)
def test_dot_segments_need_the_rules_of_both_the_resolved_and_the_literal_path(
    rules_env: Env, kit: Kit, form: str
) -> None:
    """Envoy and RFC 3986 servers resolve ``..`` (``/public/x``), Express and Werkzeug
    route the literal path under ``/admin/``: the request must satisfy both rules."""
    decision = rules_env.check(path=form)
    assert (decision.status, decision.reason) == (401, Reason.MISSING_TOKEN)
    assert not rules_env.check(token(kit), path=form).allowed
    allowed = rules_env.check(token(kit, scope="admin"), path=form)
    assert (allowed.allowed, allowed.rule) == (True, "public+admin")


# -- letter case -----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["/ADMIN/x", "/Admin/users", "/admin/X"])
def test_an_upper_case_path_needs_the_rule_of_its_lower_case_reading(
    rules_env: Env, kit: Kit, form: str
) -> None:
    """``/ADMIN/x`` is ``/admin/x`` to a case-insensitive router: it needs ``admin``."""
    decision = rules_env.check(token(kit), path=form)
    assert (decision.status, decision.reason) == (403, Reason.INSUFFICIENT_SCOPE)
    assert rules_env.check(token(kit, scope="admin"), path=form).allowed


def test_an_upper_case_public_path_needs_a_token(rules_env: Env, kit: Kit) -> None:
    """``/PUBLIC/x`` is not ``/public/`` to a case-sensitive upstream: the stricter
    reading (any valid token) wins over the anonymous one."""
    decision = rules_env.check(path="/PUBLIC/x")
    assert (decision.status, decision.reason) == (401, Reason.MISSING_TOKEN)
    assert rules_env.check(token(kit), path="/PUBLIC/x").allowed


def test_both_readings_combine_the_requirements_of_two_rules(new_env: NewEnv, kit: Kit) -> None:
    """When the two readings pick different rules, the request must satisfy both."""
    env = new_env(
        {
            "rules": [
                {"name": "lower", "path_prefix": "/reports/", "require_scopes": ["b"]},
                {"name": "upper", "path_prefix": "/Reports/", "require_scopes": ["a"]},
            ]
        }
    )
    for scope in ("a", "b"):
        assert not env.check(token(kit, scope=scope), path="/Reports/x").allowed
    both = env.check(token(kit, scope="a b"), path="/Reports/x")
    assert both.allowed
    assert both.rule == "upper+lower"
    assert env.check(token(kit, scope="b"), path="/reports/x").allowed


def test_path_regex_runs_case_insensitively_in_the_lower_case_reading(
    new_env: NewEnv, kit: Kit
) -> None:
    """``path_regex`` in the second reading matches whatever the letter case."""
    env = new_env(
        {"rules": [{"name": "orders", "path_regex": "/orders/[0-9]+", "require_scopes": ["o"]}]}
    )
    assert not env.check(token(kit), path="/ORDERS/12").allowed
    assert env.check(token(kit, scope="o"), path="/ORDERS/12").allowed


def test_case_sensitive_matching_can_be_chosen(new_env: NewEnv, kit: Kit) -> None:
    """``path_matching: {case: sensitive}``: for upstreams that are all case-sensitive,
    ``/ADMIN/x`` is simply another path (the default rule: any valid token)."""
    env = new_env({"rules": RULES, "path_matching": {"case": "sensitive"}})
    decision = env.check(token(kit), path="/ADMIN/x")
    assert (decision.allowed, decision.rule) == (True, "default")
    assert not env.check(token(kit), path="/admin/x").allowed


# -- methods ---------------------------------------------------------------------------

METHOD_RULES: list[dict[str, Any]] = [
    {"name": "write", "path_prefix": "/items/", "methods": ["DELETE", "POST"],
     "require_scopes": ["write"]},
    {"name": "read", "path_prefix": "/items/", "methods": ["GET"], "require_scopes": ["read"]},
    {"name": "open", "path_prefix": "/items/", "anonymous": True},
]  # fmt: skip


@pytest.fixture(scope="module")
def methods_env(new_env: NewEnv) -> Env:
    """Rules that differ by method only."""
    return new_env({"rules": METHOD_RULES})


@pytest.mark.parametrize("method", ["delete", "Delete", "DELETE", "post"])
def test_methods_are_compared_upper_cased(methods_env: Env, kit: Kit, method: str) -> None:
    """HTTP/2 lets a client send ``delete``; frameworks upper-case it: so do we."""
    decision = methods_env.check(path="/items/1", method=method)
    assert (decision.rule, decision.status, decision.reason) == (
        "write", 401, Reason.MISSING_TOKEN,
    )  # fmt: skip
    assert methods_env.check(token(kit, scope="write"), path="/items/1", method=method).allowed


@pytest.mark.parametrize("method", ["HEAD", "head", "GET"])
def test_a_get_rule_covers_head(methods_env: Env, kit: Kit, method: str) -> None:
    """Every framework answers ``HEAD`` with its ``GET`` handler: a GET rule covers it."""
    decision = methods_env.check(token(kit), path="/items/1", method=method)
    assert (decision.rule, decision.status) == ("read", 403)
    assert methods_env.check(token(kit, scope="read"), path="/items/1", method=method).allowed


def test_other_methods_fall_through(methods_env: Env) -> None:
    """A method no rule lists gets the next matching rule."""
    decision = methods_env.check(path="/items/1", method="OPTIONS")
    assert (decision.allowed, decision.rule) == (True, "open")


# -- path_regex: linear time, after the bounds -----------------------------------------

#: the classic catastrophic pattern: Python's re takes seconds on a 32-character path
EVIL_REGEX = r"/users/(\w+\.?)+/profile"


def test_path_regex_cannot_be_made_to_backtrack(new_env: NewEnv, kit: Kit) -> None:
    """A pattern with nested quantifiers costs microseconds on a hostile path (RE2);
    a backtracking engine needs over a second of CPU for this 33-character path."""
    env = new_env({"rules": [{"name": "p", "path_regex": EVIL_REGEX, "require_scopes": ["p"]}]})
    hostile = "/users/" + "a" * 25 + "!"
    valid = token(kit)
    assert env.check(valid, path="/users/warm").allowed  # token verified and cached
    started = time.process_time()
    decision = env.check(valid, path=hostile)
    cpu = time.process_time() - started
    assert decision.allowed  # no match: the default rule
    assert cpu < 0.25, f"{cpu:.3f}s of CPU for one check"
    assert not env.check(valid, path="/users/a.b/profile").allowed


def test_an_over_long_path_is_refused_before_any_rule_runs(new_env: NewEnv) -> None:
    """A path over ``token.max_header_bytes`` is ``too_large`` before matching."""
    env = new_env(
        {
            "token": {"max_header_bytes": 4096},
            "rules": [{"name": "p", "path_regex": EVIL_REGEX, "anonymous": True}],
        }
    )
    decision = env.check(path="/users/" + "a" * 5000 + "/profile")
    assert (decision.allowed, decision.reason, decision.rule) == (False, Reason.TOO_LARGE,
                                                                  "default")  # fmt: skip
