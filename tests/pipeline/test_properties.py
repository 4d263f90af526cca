"""Property-based smoke over the evaluator: arbitrary input is always a Decision.

Random bytes and text as the credentials, random header maps, and valid tokens mutated
at random (a character flipped, inserted or deleted, segments swapped, dropped or
duplicated, the text truncated, a decoded bit flipped). Whatever comes in: a Decision,
never an exception or an ``internal_error``, and never an allow unless the mutated
token is the original one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz.errors import Reason
from extauthz.pipeline.decision import Decision
from extauthz.pipeline.request import CheckInput, normalize_path

from .support import Env, Kit, b64, claims, encrypt, nested, sign, unb64

NewEnv = Callable[..., Env]

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: characters a mutation may write: the token alphabet and its usual impostors
MUTATION_CHARS = B64URL + ".=+/ \t\n\x00,\u00e9\uff10"


@pytest.fixture(scope="module")
def prop_env(new_env: NewEnv) -> Env:
    """The default pipeline (cache on: a mutated token must never hit the original's entry)."""
    return new_env()


@pytest.fixture(scope="module")
def originals(kit: Kit, prop_env: Env) -> list[str]:
    """Valid tokens of several shapes, each checked to be allowed before mutating it."""
    inner = sign(claims(), kit.sig_rsa)
    tokens = [
        nested(kit),
        inner,
        sign(claims(), kit.sig_ec["P-256"], kid=False),
        encrypt(inner, kit.enc_oct[256], "dir", enc="A128CBC-HS256"),
        encrypt(sign(claims(), kit.sig_rsa_any, "PS256"), kit.enc_ec, "ECDH-ES+A128KW"),
        encrypt(inner, kit.enc_oct[128], "A128KW", enc="A128GCM", cty=None),
    ]
    for token in tokens:
        assert prop_env.check(token).allowed
    return tokens


def assert_sane(decision: object) -> Decision:
    """Any input gives a Decision with a known status; never an internal error."""
    assert isinstance(decision, Decision)
    assert decision.reason is not Reason.INTERNAL_ERROR, decision.detail
    assert decision.status in (200, 400, 401, 403)
    assert (decision.status == 400) is (decision.reason is Reason.BAD_PATH)
    return decision


# -- mutations -------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, originals: list[str]) -> tuple[str, str]:
    """(original, mutation of it)."""
    original = draw(st.sampled_from(originals))
    parts = original.split(".")
    kind = draw(
        st.sampled_from(
            ["flip", "insert", "delete", "swap", "drop", "duplicate", "truncate", "bit", "multi"]
        )
    )
    if kind in ("flip", "insert", "delete"):
        text = list(original)
        index = draw(st.integers(0, len(text) - 1))
        char = draw(st.sampled_from(MUTATION_CHARS))
        if kind == "flip":
            text[index] = char
        elif kind == "insert":
            text.insert(index, char)
        else:
            del text[index]
        return original, "".join(text)
    if kind == "swap":
        i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
        parts[i], parts[j] = parts[j], parts[i]
    elif kind == "drop":
        del parts[draw(st.integers(0, len(parts) - 1))]
    elif kind == "duplicate":
        index = draw(st.integers(0, len(parts) - 1))
        parts.insert(draw(st.integers(0, len(parts))), parts[index])
    elif kind == "truncate":
        return original, original[: draw(st.integers(0, len(original) - 1))]
    elif kind == "bit":
        index = draw(st.integers(0, len(parts) - 1))
        raw = bytearray(unb64(parts[index]))
        if raw:
            bit = draw(st.integers(0, len(raw) * 8 - 1))
            raw[bit // 8] ^= 1 << (bit % 8)
        parts[index] = b64(bytes(raw))
    else:  # several random edits at once
        text = list(original)
        for _ in range(draw(st.integers(2, 6))):
            text[draw(st.integers(0, len(text) - 1))] = draw(st.sampled_from(MUTATION_CHARS))
        return original, "".join(text)
    return original, ".".join(parts)


@SETTINGS
@given(data=st.data())
def test_a_mutated_token_is_never_allowed(
    prop_env: Env, originals: list[str], data: st.DataObject
) -> None:
    """Any mutation of a valid token is denied (unless it changed nothing)."""
    original, token = data.draw(mutated(originals))
    decision = assert_sane(prop_env.check(token))
    if decision.allowed:
        # credentials trim blanks around the token (HTTP OWS); nothing else may differ
        assert token.strip(" \t") == original, (original, token)


# -- arbitrary credentials and headers -------------------------------------------------


@SETTINGS
@given(raw=st.binary(max_size=2048))
def test_random_bytes_as_authorization(prop_env: Env, raw: bytes) -> None:
    """Random bytes (as Envoy would hand them over, latin-1) never crash or allow."""
    value = raw.decode("latin-1")
    for header in (value, f"Bearer {value}"):
        decision = assert_sane(prop_env.check(headers={"authorization": header}))
        assert not decision.allowed


@SETTINGS
@given(text=st.text(max_size=2048))
def test_random_text_as_bearer_token(prop_env: Env, text: str) -> None:
    """Random Unicode after ``Bearer`` never crashes or allows."""
    decision = assert_sane(prop_env.check(headers={"authorization": f"Bearer {text}"}))
    assert not decision.allowed


@SETTINGS
@given(text=st.text(alphabet=B64URL + ".", max_size=4096))
def test_random_token_shaped_text(prop_env: Env, text: str) -> None:
    """Random strings over the token alphabet (the parser's hot path) never crash or allow."""
    decision = assert_sane(prop_env.check(headers={"authorization": f"Bearer {text}"}))
    assert not decision.allowed


HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "authorization",
            "cookie",
            ":path",
            ":authority",
            "x-auth-subject",
            "content-type",
            "Authorization",
        ]
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-:_", min_size=1, max_size=24),
)


@SETTINGS
@given(
    headers=st.dictionaries(HEADER_NAMES, st.text(max_size=300), max_size=24),
    raw=st.lists(st.tuples(HEADER_NAMES, st.text(max_size=300)), max_size=12),
    method=st.sampled_from(["GET", "POST", "", "get", "\x00"]),
    path=st.text(max_size=200),
    context=st.dictionaries(st.sampled_from(["rule", "scopes", "other"]), st.text(max_size=40)),
)
def test_random_requests(
    prop_env: Env,
    headers: dict[str, str],
    raw: list[tuple[str, str]],
    method: str,
    path: str,
    context: dict[str, str],
) -> None:
    """Random header maps (both forms), methods, paths and context never crash or allow."""
    request = CheckInput(
        method=method, path=path, headers=headers, raw_headers=tuple(raw), context=context
    )
    decision, _ = prop_env.evaluator.check(request)
    assert not assert_sane(decision).allowed


@SETTINGS
@given(
    extra=st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=16).filter(
            lambda name: name not in ("authorization", "cookie")
        ),
        st.text(max_size=100),
        max_size=16,
    ),
    path=st.text(alphabet="/abcxyz?#=&%.", max_size=60),
)
def test_unrelated_headers_do_not_change_a_valid_allow(
    prop_env: Env, originals: list[str], extra: dict[str, str], path: str
) -> None:
    """A valid token stays allowed whatever unrelated headers and path come with it
    (a path whose meaning depends on the upstream is the one exception: ``bad_path``)."""
    decision = prop_env.check(originals[0], headers=extra, path=path or "/")
    if normalize_path((path or "/").split("?")[0].split("#")[0]) is None:
        assert decision.reason is Reason.BAD_PATH
        return
    assert assert_sane(decision).allowed
    set_names = {name for name, _ in decision.upstream_headers}
    assert not set_names & set(decision.remove_headers)
