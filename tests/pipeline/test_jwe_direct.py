"""The direct decryption of plain ECDH-ES / RSA-OAEP + AES-GCM tokens gives joserfc's
answer: the same plaintext for every valid token, a failure wherever joserfc fails —
tampered segments, a foreign or wrong-curve ephemeral key, an off-curve point, odd
header members, the wrong key, a key whose ``key_ops`` forbid decryption — and it
steps aside (None) for every shape it does not handle, so joserfc judges those."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from extauthz.config import DecryptionConfig
from extauthz.errors import TokenError
from extauthz.keys.material import Key, key_from_jwk
from extauthz.pipeline import jwe_direct
from extauthz.pipeline.algorithms import JWEPolicy
from extauthz.pipeline.tokens import parse_header

CURVES = ("P-256", "P-384", "P-521")
ENCS = ("A128GCM", "A192GCM", "A256GCM")
PLAINTEXT = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"


@cache
def keys() -> dict[str, Key]:
    """Private decryption keys (and a second of each kind: the wrong key)."""
    out: dict[str, Any] = {}
    for name in CURVES:
        for n in (1, 2):
            out[f"{name}/{n}"] = ECKey.generate_key(name, private=True)
    for n in (1, 2):
        out[f"RSA/{n}"] = RSAKey.generate_key(2048, private=True)
    restricted = dict(out["RSA/1"].as_dict(private=True), key_ops=["sign"])
    found = {name: key_from_jwk(k.as_dict(private=True), "test") for name, k in out.items()}
    found["RSA/1-sign-only"] = key_from_jwk(restricted, "test")
    found["P-256/1-public"] = key_from_jwk(out["P-256/1"].as_dict(private=False), "test")
    return found


@cache
def registry() -> Any:
    return JWEPolicy(DecryptionConfig()).registry


def seal(alg: str, enc: str, key: Key, **header: Any) -> str:
    """A compact JWE made by joserfc."""
    protected = {"alg": alg, "enc": enc, **header}
    value = jwe.encrypt_compact(protected, PLAINTEXT, key.jwk, registry=registry())
    return value if isinstance(value, str) else value.decode()


def reference(token: str, key: Key) -> tuple[str, bytes]:
    try:
        result = jwe.decrypt_compact(token, key.jwk, registry=registry())
    except (JoseError, ValueError, TypeError, KeyError, IndexError):
        return "failed", b""
    return "ok", result.plaintext or b""


def direct(token: str, key: Key) -> tuple[str, bytes] | None:
    segments = token.encode().split(b".")
    try:
        header = parse_header(segments[0])
    except TokenError:
        return None  # the verifier refuses it before any key is tried
    try:
        plaintext = jwe_direct.decrypt(header, segments, key)
    except (JoseError, ValueError, TypeError, KeyError, IndexError, InvalidTag):
        return "failed", b""
    return None if plaintext is None else ("ok", plaintext)


def cases() -> list[tuple[str, str, str]]:
    """(alg, enc, key name) for every plain shape the direct path handles."""
    found = [("ECDH-ES", enc, f"{c}/1") for c in CURVES for enc in ENCS]
    found += [(alg, enc, "RSA/1") for alg in ("RSA-OAEP", "RSA-OAEP-256") for enc in ENCS]
    return found


@pytest.mark.parametrize(("alg", "enc", "name"), cases())
def test_every_plain_token_decrypts_directly_to_joserfcs_plaintext(
    alg: str, enc: str, name: str
) -> None:
    key = keys()[name]
    for extra in ({}, {"kid": "k1", "typ": "JWT", "cty": "JWT"}):
        token = seal(alg, enc, key, **extra)
        assert direct(token, key) == reference(token, key) == ("ok", PLAINTEXT)
    if alg == "ECDH-ES":
        token = seal(alg, enc, key, apu="QWxpY2U", apv="Qm9i")
        assert direct(token, key) == reference(token, key) == ("ok", PLAINTEXT)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _reheader(token: str, change: Any) -> str:
    """The token with its protected header rewritten (the tag then fails, unless the
    change is refused earlier)."""
    head, *rest = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    change(header)
    return ".".join([_b64(json.dumps(header).encode()), *rest])


def _set(name: str, value: Any) -> Any:
    def change(header: dict[str, Any]) -> None:
        header[name] = value

    return change


#: an ephemeral key for the RSA tokens, where any epk is a foreign member
_SOME_EPK = {"kty": "EC", "crv": "P-256", "x": _b64(bytes(32)), "y": _b64(bytes(32))}


def _epk(name: str, value: Any) -> Any:
    def change(header: dict[str, Any]) -> None:
        header["epk"] = dict(header.get("epk", _SOME_EPK), **{name: value})

    return change


def _off_curve(header: dict[str, Any]) -> None:
    header.setdefault("epk", dict(_SOME_EPK))
    x = header["epk"]["x"]
    raw = bytearray(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    raw[-1] ^= 1
    header["epk"]["x"] = _b64(bytes(raw))


def _swap(header: dict[str, Any]) -> None:
    header.setdefault("epk", dict(_SOME_EPK, y=_b64(b"\x01" * 32)))
    header["epk"]["x"], header["epk"]["y"] = header["epk"]["y"], header["epk"]["x"]


HEADER_CHANGES = {
    "unknown member": _set("x-extra", "1"),
    "zip": _set("zip", "DEF"),
    "kid not a string": _set("kid", 7),
    "enc changed": _set("enc", "A128CBC-HS256"),
    "apu changed": _set("apu", "QWxpY2U"),
    "apu not base64url": _set("apu", "QWxp+2U"),
    "apu padded": _set("apu", "QWxpY2U="),
    "epk from another curve": _epk("crv", "P-384"),
    "epk off the curve": _off_curve,
    "epk coordinates swapped": _swap,
    "epk with a private part": _epk("d", "AAAA"),
    "epk of another type": _epk("kty", "OKP"),
    "epk x short": _epk("x", "AAAA"),
    "epk without y": lambda h: h.setdefault("epk", dict(_SOME_EPK)).pop("y"),
    "epk not an object": _set("epk", "x"),
}


@pytest.mark.parametrize("change", sorted(HEADER_CHANGES))
@pytest.mark.parametrize(
    ("alg", "enc", "name"),
    [("ECDH-ES", "A256GCM", "P-256/1"), ("RSA-OAEP-256", "A256GCM", "RSA/1")],
)
def test_a_changed_header_fails_or_steps_aside_as_joserfc_fails(
    change: str, alg: str, enc: str, name: str
) -> None:
    key = keys()[name]
    token = _reheader(seal(alg, enc, key), HEADER_CHANGES[change])
    got = direct(token, key)
    assert got is None or got == reference(token, key)
    assert reference(token, key)[0] == "failed"


@pytest.mark.parametrize(("alg", "enc", "name"), cases()[::3])
def test_the_wrong_key_or_a_forbidden_one_fails_like_joserfc(alg: str, enc: str, name: str) -> None:
    token = seal(alg, enc, keys()[name])
    others = [keys()[name.replace("/1", "/2")]]
    if alg.startswith("RSA"):
        others.append(keys()["RSA/1-sign-only"])
    else:
        others.append(keys()["P-384/1" if name.startswith("P-256") else "P-256/1"])
        if name.startswith("P-256"):
            others.append(keys()["P-256/1-public"])
    for other in others:
        got = direct(token, other)
        assert got is None or got == reference(token, other)
        assert reference(token, other)[0] == "failed"


def test_segments_of_the_wrong_size_fail_like_joserfc() -> None:
    key = keys()["P-256/1"]
    head, ek, iv, ciphertext, tag = seal("ECDH-ES", "A128GCM", key).split(".")
    for token in (
        f"{head}.{ek}.{iv[:-2]}.{ciphertext}.{tag}", f"{head}.{ek}.{iv}AA.{ciphertext}.{tag}",
        f"{head}.{ek}.{iv}.{ciphertext}.{tag[:-4]}", f"{head}.{ek}.{iv}.{ciphertext}.{tag}AAAA",
        f"{head}.{ek}.{iv}.{ciphertext}.", f"{head}.AAAA.{iv}.{ciphertext}.{tag}",
        f"{head}.{ek}.{iv}.{ciphertext[:-3]}.{tag}",
    ):  # fmt: skip
        got = direct(token, key)
        assert got is None or got == reference(token, key)
        assert reference(token, key)[0] == "failed"
    rsa = keys()["RSA/1"]
    head, ek, iv, ciphertext, tag = seal("RSA-OAEP-256", "A128GCM", rsa).split(".")
    empty_key = f"{head}..{iv}.{ciphertext}.{tag}"
    assert direct(empty_key, rsa) is None  # joserfc decides
    assert reference(empty_key, rsa)[0] == "failed"


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(cases()), st.integers(min_value=0, max_value=4),
    st.integers(min_value=0), st.sampled_from(_ALPHABET),
)  # fmt: skip
def test_any_tampered_character_gives_joserfcs_answer(
    case: tuple[str, str, str], segment: int, position: int, char: str
) -> None:
    alg, enc, name = case
    key = keys()[name]
    parts = seal(alg, enc, key).split(".")
    if not parts[segment]:
        return
    index = position % len(parts[segment])
    part = parts[segment]
    parts[segment] = part[:index] + char + part[index + 1 :]
    token = ".".join(parts)
    got = direct(token, key)
    assert got is None or got == reference(token, key), (segment, index, char)
