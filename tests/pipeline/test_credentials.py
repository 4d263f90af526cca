"""Finding the token (``token.sources``, both of Envoy's header forms): first match wins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from extauthz.config import TokenConfig, TokenSourceConfig
from extauthz.errors import Reason, TokenError
from extauthz.pipeline import credentials
from extauthz.pipeline.request import CheckInput

from .support import Env, Kit, build_config, claims, sign

NewEnv = Callable[..., Env]

DEFAULT = TokenConfig()
BEARER = TokenSourceConfig(header="authorization", prefix="Bearer ")
COOKIE = TokenSourceConfig(cookie="access_token")


def extract(
    headers: dict[str, str] | None = None,
    raw: Sequence[tuple[str, str]] = (),
    sources: Sequence[TokenSourceConfig] | None = None,
) -> str | None:
    """Run the credentials phase alone."""
    config = DEFAULT if sources is None else TokenConfig(sources=tuple(sources))
    request = CheckInput(headers=headers or {}, raw_headers=tuple(raw))
    return credentials.extract(request, config)


def extract_reason(*args: Any, **kwargs: Any) -> Reason:
    """The reason class the credentials phase raises."""
    with pytest.raises(TokenError) as caught:
        extract(*args, **kwargs)
    return caught.value.reason


# -- header source ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    """The default source reads ``authorization: Bearer`` in any letter case."""
    assert extract({"authorization": f"{scheme} a.b.c"}) == "a.b.c"


def test_surrounding_blanks_are_trimmed() -> None:
    """Spaces and tabs around the credentials are not part of the token."""
    assert extract({"authorization": "Bearer    a.b.c \t"}) == "a.b.c"


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearertoken", "Token a.b.c"])
def test_other_schemes_are_no_token(value: str) -> None:
    """A header with another scheme (or no separator) is not a bearer token."""
    assert extract({"authorization": value}) is None


@pytest.mark.parametrize("value", ["Bearer ", "Bearer    ", "Bearer \t"])
def test_empty_bearer_credentials_are_malformed(value: str) -> None:
    """``Bearer`` followed by nothing is a malformed request, not a missing token."""
    assert extract_reason({"authorization": value}) is Reason.MALFORMED


@pytest.mark.parametrize(
    "value",
    ["Bearer a.b.c,Bearer d.e.f", "Bearer a.b.c, Bearer d.e.f", "Bearer a.b.c,", "Bearer ,a.b.c"],
)
def test_authorization_headers_joined_with_comma_are_malformed(value: str) -> None:
    """Envoy joins two ``authorization`` headers with ``,``: ambiguous, so denied."""
    assert extract_reason({"authorization": value}) is Reason.MALFORMED


def test_joined_headers_are_malformed_whatever_comes_first() -> None:
    """A second ``Bearer`` credential after a joined comma is ambiguity too."""
    assert extract_reason({"authorization": "Basic dXNlcg==, Bearer a.b.c"}) is Reason.MALFORMED


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="u", realm="r", nonce="n", response="x"',
        "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=c",
    ],
)
def test_another_schemes_parameters_fall_through_to_the_next_source(value: str) -> None:
    """Only a comma next to *our* scheme is ambiguity; other schemes are simply not ours."""
    headers = {"authorization": value, "cookie": "access_token=c.c.c"}
    assert extract(headers, sources=[BEARER, COOKIE]) == "c.c.c"


def test_header_source_without_prefix_takes_the_whole_value() -> None:
    """A header source with no ``prefix`` reads the raw value (e.g. ``x-access-token``)."""
    source = TokenSourceConfig(header="x-access-token")
    assert extract({"x-access-token": "a.b.c"}, sources=[source]) == "a.b.c"


# -- header_map (encode_raw_headers) form ----------------------------------------------


def test_raw_header_form_works() -> None:
    """With ``encode_raw_headers`` the token is read from ``header_map`` entries."""
    assert extract(raw=[(":path", "/"), ("authorization", "Bearer a.b.c")]) == "a.b.c"


def test_raw_header_form_with_two_occurrences_is_malformed() -> None:
    """Two ``authorization`` entries in ``header_map`` are ambiguous, whatever their schemes."""
    raw = [("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")]
    assert extract_reason(raw=raw) is Reason.MALFORMED
    raw = [("authorization", "Basic dXNlcg=="), ("authorization", "Bearer a.b.c")]
    assert extract_reason(raw=raw) is Reason.MALFORMED


def test_raw_header_form_wins_over_the_joined_map() -> None:
    """When ``header_map`` is present it is the source of truth (the map is empty there)."""
    request = CheckInput(
        headers={"authorization": "Bearer from.map.x"},
        raw_headers=(("authorization", "Bearer from.raw.x"),),
    )
    assert credentials.extract(request, DEFAULT) == "from.raw.x"


# -- cookie source ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cookie",
    [
        "access_token=a.b.c",
        "theme=dark; access_token=a.b.c; lang=en",
        'access_token="a.b.c"',
        "x_access_token=nope; access_token=a.b.c",
    ],
)
def test_cookie_source_reads_the_named_cookie(cookie: str) -> None:
    """A cookie source finds its cookie among others (quotes removed, names exact)."""
    assert extract({"cookie": cookie}, sources=[COOKIE]) == "a.b.c"


def test_cookie_split_over_several_headers_is_read() -> None:
    """HTTP/2 may split cookies over several ``cookie`` headers (raw form)."""
    raw = [("cookie", "theme=dark"), ("cookie", "access_token=a.b.c")]
    assert extract(raw=raw, sources=[COOKIE]) == "a.b.c"


@pytest.mark.parametrize(
    "headers",
    [
        {"cookie": "access_token=a.b.c; access_token=d.e.f"},
        {"cookie": "access_token=a.b.c, access_token=d.e.f"},
    ],
)
def test_repeated_token_cookie_is_malformed(headers: dict[str, str]) -> None:
    """The token cookie twice is ambiguous."""
    assert extract_reason(headers, sources=[COOKIE]) is Reason.MALFORMED


def test_empty_token_cookie_is_malformed() -> None:
    """An empty token cookie is malformed."""
    assert extract_reason({"cookie": "access_token="}, sources=[COOKIE]) is Reason.MALFORMED


def test_absent_cookie_is_no_token() -> None:
    """No such cookie: the source is simply not present."""
    assert extract({"cookie": "theme=dark"}, sources=[COOKIE]) is None


# -- order -----------------------------------------------------------------------------


def test_first_present_source_wins() -> None:
    """Sources are tried in order; the first one present supplies the token."""
    both = {"authorization": "Bearer from.header.x", "cookie": "access_token=from.cookie.x"}
    assert extract(both, sources=[BEARER, COOKIE]) == "from.header.x"
    assert extract(both, sources=[COOKIE, BEARER]) == "from.cookie.x"
    assert extract({"cookie": "access_token=c.c.c"}, sources=[BEARER, COOKIE]) == "c.c.c"


def test_a_header_of_another_scheme_falls_through_to_the_next_source() -> None:
    """``authorization: Basic`` is not this source's token: the cookie is used."""
    headers = {"authorization": "Basic dXNlcg==", "cookie": "access_token=c.c.c"}
    assert extract(headers, sources=[BEARER, COOKIE]) == "c.c.c"


def test_no_source_present_is_no_token() -> None:
    """Nothing configured is present: None (the pipeline makes that ``missing_token``)."""
    assert extract({"x-other": "1"}, sources=[BEARER, COOKIE]) is None


# -- bounds ----------------------------------------------------------------------------


def test_header_count_is_bounded() -> None:
    """More than ``token.max_headers`` headers is ``too_large`` (either header form)."""
    config = TokenConfig(max_headers=4)
    ok = {f"h{i}": "v" for i in range(4)}
    credentials.check_bounds(CheckInput(headers=ok), config)
    with pytest.raises(TokenError) as caught:
        credentials.check_bounds(CheckInput(headers={**ok, "h9": "v"}), config)
    assert caught.value.reason is Reason.TOO_LARGE
    raw = tuple(("same", "v") for _ in range(5))
    with pytest.raises(TokenError) as caught:
        credentials.check_bounds(CheckInput(raw_headers=raw), config)
    assert caught.value.reason is Reason.TOO_LARGE


def test_header_bytes_are_bounded() -> None:
    """Names plus values over ``token.max_header_bytes`` is ``too_large``."""
    config = TokenConfig(max_header_bytes=1024)
    credentials.check_bounds(CheckInput(headers={"x": "v" * 1023}), config)
    with pytest.raises(TokenError) as caught:
        credentials.check_bounds(CheckInput(headers={"x": "v" * 1024}), config)
    assert caught.value.reason is Reason.TOO_LARGE


# -- through the pipeline --------------------------------------------------------------


def test_no_token_is_401_missing_token(env: Env) -> None:
    """No credentials at all -> 401 ``missing_token``."""
    decision = env.check(headers={"cookie": "theme=dark"})
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        401,
        Reason.MISSING_TOKEN,
    )


def test_pipeline_reads_the_cookie_source(new_env: NewEnv, kit: Kit) -> None:
    """With the example config's sources, a token in the ``access_token`` cookie is accepted."""
    env = new_env(
        {
            "token": {
                "sources": [
                    {"header": "authorization", "prefix": "Bearer "},
                    {"cookie": "access_token"},
                ]
            }
        }
    )
    token = sign(claims(), kit.sig_rsa)
    assert env.check(headers={"cookie": f"a=1; access_token={token}"}).allowed


def test_pipeline_denies_two_authorization_headers(env: Env, kit: Kit) -> None:
    """Two valid bearer tokens joined by Envoy are 401 ``malformed``, never an allow."""
    token = sign(claims(), kit.sig_rsa)
    decision = env.check(headers={"authorization": f"Bearer {token}, Bearer {token}"})
    assert (decision.status, decision.reason) == (401, Reason.MALFORMED)
    raw = [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    decision = env.check(raw_headers=raw)
    assert (decision.status, decision.reason) == (401, Reason.MALFORMED)


def test_pipeline_reads_the_raw_header_form(env: Env, kit: Kit) -> None:
    """An ``encode_raw_headers`` request with one authorization entry is allowed."""
    token = sign(claims(), kit.sig_rsa)
    assert env.check(raw_headers=[("authorization", f"Bearer {token}")]).allowed


def test_pipeline_bounds_headers_before_reading_the_token(new_env: NewEnv, kit: Kit) -> None:
    """A request over the header bounds is ``too_large`` even with a valid token."""
    env = new_env({"token": {"max_headers": 8}})
    headers = {f"x-h{i}": "v" for i in range(8)}
    decision = env.check(sign(claims(), kit.sig_rsa), headers=headers)
    assert (decision.status, decision.reason) == (401, Reason.TOO_LARGE)


def test_default_sources_when_the_section_is_omitted() -> None:
    """Omitting ``token.sources`` means ``authorization`` with the Bearer scheme."""
    assert build_config().token.sources == (BEARER,)
