"""The edges' answer memo is bounded on its own (not by the token cache): the bound
holds, an evicted answer is rendered again byte for byte, and a cached token whose
decision memo and answer were both evicted is still answered right on both edges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from extauthz.client import build_request
from extauthz.errors import Reason
from extauthz.pipeline import evaluate
from extauthz.pipeline.decision import DENY_MEMO_MAX, Decision
from extauthz.pipeline.evaluate import MEMO_MAX, Evaluator
from extauthz.pipeline.request import CheckInput
from extauthz.server.authz import Authorizer, encode_response, to_input
from extauthz.server.decisions import AnswerMemo, trace_id
from extauthz.server.http_authz import Answer, render
from tests.conftest import LoadReady


def allow(sub: str) -> Decision:
    return Decision(
        allowed=True, status=200, reason=Reason.OK, rule="default",
        upstream_headers=(("x-auth-subject", sub), ("x-auth-scope", "read write")),
        remove_headers=("x-auth-email",), response_headers=(("x-frame-options", "DENY"),),
        sub=sub, iss="https://idp", kid="sig-1", enc_kid="enc-1",
    )  # fmt: skip


def grpc_bytes(decision: Decision) -> bytes:
    return encode_response(decision)


def test_the_bound_follows_the_decision_memo_not_the_cache() -> None:
    assert AnswerMemo.size_for(100_000) == MEMO_MAX + DENY_MEMO_MAX
    assert AnswerMemo.size_for(10) == 10 + DENY_MEMO_MAX


@pytest.mark.parametrize("build", [grpc_bytes, render], ids=["grpc", "http"])
def test_the_bound_holds_and_an_evicted_answer_is_rendered_again_identically(
    build: Callable[[Decision], Any],
) -> None:
    built: list[Decision] = []

    def counted(decision: Decision) -> Any:
        built.append(decision)
        return build(decision)

    memo: AnswerMemo[Any] = AnswerMemo(counted, 16)
    first = allow("alice")
    answer = memo.get(first)
    assert memo.get(first) is answer
    for i in range(100):
        memo.get(allow(f"user-{i}"))
        assert len(memo) <= 16
    assert memo.get(first) == answer  # evicted: built again, the same bytes
    assert built.count(first) == 2
    equal = allow("alice")  # what a token re-decided after its memo was dropped gets
    assert memo.get(equal) == answer
    if isinstance(answer, Answer):
        assert (answer.head, answer.body) == (build(equal).head, build(equal).body)


def authorizer(load_ready: LoadReady) -> Authorizer:
    config, store = load_ready()
    return Authorizer(Evaluator(config, store), config.logging)


def test_a_cached_token_whose_memos_were_evicted_gets_the_same_answer(
    load_ready: LoadReady, mint_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Both memos tiny: the same gRPC bytes and HTTP answer for a returning token (no
    new verification), and every other token gets its own answer."""
    monkeypatch.setattr(evaluate, "MEMO_MAX", 2)
    auth = authorizer(load_ready)
    auth.answers = AnswerMemo(auth.answers._build, 16)
    verified: list[int] = []
    real = auth.evaluator.verifier.verify

    def counted(*args: Any, **kwargs: Any) -> Any:
        verified.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(auth.evaluator.verifier, "verify", counted)
    http_memo: AnswerMemo[Answer] = AnswerMemo(render, 16)

    def ask(token: str) -> tuple[bytes, Answer]:
        request = build_request({"authorization": f"Bearer {token}"}, "/orders/1")
        wire = auth.check(request)
        decision, _ = auth.evaluator.check(to_input(request))
        return wire, http_memo.get(decision)

    alice = mint_token(sub="alice", email="alice@example.test")
    first = ask(alice)
    others = [mint_token(sub=f"user-{i}") for i in range(40)]
    for i, token in enumerate(others):
        wire, answer = ask(token)
        assert f"user-{i}".encode() in wire
        assert f"x-auth-subject: user-{i}\r\n".encode() in answer.head
        assert len(auth.answers) <= 16
        assert len(http_memo) <= 16
    assert ask(alice) == first
    assert b"alice@example.test" in first[0]
    assert len(verified) == 41


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("headers", "raw", "expected"),
    [
        ({"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}, (), TRACE),
        ({}, (("traceparent", f"00-{TRACE}-b7ad6b7169203331-01"),), TRACE),
        ({}, (("x", "y"),), ""),
        ({}, (), ""),
        ({"traceparent": ""}, (), ""),
        ({"traceparent": "garbage"}, (), ""),
        ({"traceparent": f"00-{'0' * 32}-b7ad6b7169203331-01"}, (), ""),
        ({"traceparent": f"00-{'g' * 32}-b7ad6b7169203331-01"}, (), ""),
    ],
)
def test_trace_id_from_either_header_form(
    headers: dict[str, str], raw: tuple[tuple[str, str], ...], expected: str
) -> None:
    assert trace_id(CheckInput(headers=headers, raw_headers=raw)) == expected
