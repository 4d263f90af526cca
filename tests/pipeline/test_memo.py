"""The bounded memo every pipeline and edge memo is: a dict that never holds more than
its limit, starts over when a new key would exceed it, and hands back what it keeps."""

from __future__ import annotations

from extauthz.pipeline.memo import Memo


def test_keep_returns_the_value_and_the_memo_reads_as_a_dict() -> None:
    memo: Memo[str, int] = Memo(3)
    assert memo.keep("a", 1) == 1
    assert memo.get("a") == 1
    assert memo.get("b") is None
    assert dict(memo) == {"a": 1}


def test_the_limit_holds_and_a_full_memo_starts_over() -> None:
    memo: Memo[int, int] = Memo(3)
    for i in range(3):
        memo.keep(i, i)
    assert len(memo) == 3
    memo.keep(99, 99)  # full: cleared, then this one kept
    assert dict(memo) == {99: 99}
    for i in range(1000):
        memo.keep(i, i)
        assert len(memo) <= 3
