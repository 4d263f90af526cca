"""What a new token shares with the tokens before it is worked out once: its parsed
protected headers, joserfc's acceptance of a JWS header per provider, and the keys
that fit a (kid, use, alg). None of it may change a verdict: a memoized header still
has its signature, ciphertext and claims checked; a refused header is refused every
time; the memos stay bounded whatever headers clients send; and a key rotation is
seen at once."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jws import JWSRegistry

from extauthz.errors import Reason
from extauthz.keys.keyset import DECRYPTION
from extauthz.pipeline import tokens

from .support import (
    IDP,
    OTHER,
    OTHER_ISSUER,
    Env,
    Kit,
    b64,
    claims,
    encrypt,
    jwk_dict,
    key,
    nested,
    reason_of,
    sign,
)


def test_one_header_text_is_parsed_once_per_verifier(
    env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    original = tokens.parse_header

    def counting(segment: bytes) -> dict[str, Any]:
        parsed.append(segment)
        return original(segment)

    monkeypatch.setattr(tokens, "parse_header", counting)
    for i in range(20):
        assert reason_of(env, nested(kit, claims(subject=f"user-{i}"))) is Reason.OK
    assert len(parsed) == 2  # the JWE header and the JWS header, each once
    shared = env.evaluator.verifier._headers[parsed[0]]
    with pytest.raises(TypeError):  # shared between Checks and threads: read-only
        shared["alg"] = "none"  # type: ignore[index]


def test_a_memoized_header_does_not_spare_the_signature_or_the_ciphertext(
    env: Env, kit: Kit
) -> None:
    good = nested(kit)
    assert reason_of(env, good) is Reason.OK
    # the same JWS header text, another key's signature
    forged = sign(claims(), key({**jwk_dict(kit.sig_rsa_any), "kid": kit.sig_rsa.kid}))
    assert forged.split(".")[0] == sign(claims(), kit.sig_rsa).split(".")[0]
    assert reason_of(env, forged) is Reason.BAD_SIGNATURE
    assert reason_of(env, encrypt(forged, kit.enc_rsa)) is Reason.BAD_SIGNATURE
    # the same JWE header text, a tampered ciphertext
    parts = good.split(".")
    parts[3] = parts[3][:-2] + ("AA" if parts[3][-2:] != "AA" else "BA")
    assert reason_of(env, ".".join(parts)) in (Reason.DECRYPT_FAILED, Reason.MALFORMED)


def test_a_refused_header_is_refused_every_time_and_never_kept(env: Env, kit: Kit) -> None:
    body = sign(claims(), kit.sig_rsa).split(".", 1)[1]
    duplicate = b64(b'{"alg":"RS256","alg":"none"}')
    verifier = env.evaluator.verifier
    for _ in range(3):
        assert reason_of(env, f"{duplicate}.{body}") is Reason.MALFORMED
    assert duplicate.encode() not in verifier._headers


def test_ecdh_es_headers_are_not_kept(env: Env, kit: Kit) -> None:
    """Each ECDH-ES token brings a new ephemeral key: keeping its header would only push
    the shared ones out."""
    verifier = env.evaluator.verifier
    for _ in range(5):
        token = encrypt(sign(claims(), kit.sig_rsa), kit.enc_ec, "ECDH-ES")
        assert reason_of(env, token) is Reason.OK
        assert token.split(".")[0].encode() not in verifier._headers
    assert all("epk" not in header for header in verifier._headers.values())


def test_the_memos_stay_bounded_whatever_headers_arrive(env: Env, kit: Kit) -> None:
    verifier = env.evaluator.verifier
    fits = env.store.ring.get(IDP).fits
    for i in range(tokens.HEADER_MEMO_MAX * 2):
        # a new header text each time, an unknown kid each time
        token = sign(claims(), kit.sig_rsa, header={"kid": f"unknown-{i}"})
        assert reason_of(env, token) is Reason.UNKNOWN_KID
        assert len(verifier._headers) <= tokens.HEADER_MEMO_MAX
    for i in range(tokens.HEADER_MEMO_MAX * 2):
        token = sign(claims(), kit.sig_rsa, header={"x-n": i})  # a known kid, new text
        assert reason_of(env, token) is Reason.OK
        assert len(verifier._accepted) <= tokens.HEADER_MEMO_MAX
    # unknown kids are not memoized: what fits is kept per kid the set holds only
    assert all(memo[0] is None or env.store.ring.get(IDP).by_kid(memo[0]) for memo in fits)
    assert len(fits) <= 4


def test_joserfcs_header_check_is_kept_per_provider(
    env: Env, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[Any] = []
    original = JWSRegistry.check_header

    def counting(self: Any, header: dict[str, Any]) -> None:
        checked.append(self)
        original(self, header)

    shared = key({**jwk_dict(kit.other_sig), "kid": "shared"})
    env.publish(IDP, [shared])
    env.publish(OTHER, [shared])
    signed = [
        sign(claims() if issuer is None else claims(issuer=issuer), kit.other_sig,
             header={"kid": "shared"})
        for issuer in (None, None, OTHER_ISSUER, OTHER_ISSUER)
    ]  # fmt: skip
    assert len({token.split(".")[0] for token in signed}) == 1  # one header text
    monkeypatch.setattr(JWSRegistry, "check_header", counting)
    for token in signed:
        assert reason_of(env, token) is Reason.OK
    assert len(checked) == 2  # once for each provider's registry
    assert checked[0] is not checked[1]


def test_a_rotated_key_is_seen_at_once(env: Env, kit: Kit) -> None:
    """The keys that fit are memoized in the key set; a publication makes a new set."""
    token = nested(kit)
    assert reason_of(env, token) is Reason.OK
    env.publish(IDP, [kit.sig_rsa_any])  # the signing key rotated away
    assert reason_of(env, nested(kit)) is Reason.UNKNOWN_KID
    env.publish(DECRYPTION, [kit.enc_ec])  # the decryption key too
    assert reason_of(env, token) is Reason.UNKNOWN_KID
