"""``strict_json_loads`` (every header, claims set and key document we parse): its
fast path — one C decode when the text cannot fail the checks made after decoding —
accepts and refuses exactly what the full checks do."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz.keys.material import MAX_JSON_DEPTH, strict_json_loads

_LONE = re.compile("[\ud800-\udfff]")


def reference(data: bytes | str) -> Any:
    """Every check, the plain way: hooks on every value, then a walk of the tree."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError("duplicate")
            out[k] = v
        return out

    def bad(name: str) -> Any:
        raise ValueError(name)

    def bounded_int(text: str) -> int:
        if len(text) > 20:
            raise ValueError("int")
        return int(text)

    def bounded_float(text: str) -> float:
        value = float(text)
        if len(text) > 40 or value in (float("inf"), float("-inf")):
            raise ValueError("float")
        return value

    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            raise ValueError("bom")
        data = data.decode("utf-8")
    value = json.loads(data, object_pairs_hook=pairs, parse_constant=bad,
                       parse_int=bounded_int, parse_float=bounded_float)  # fmt: skip
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _LONE.search(node):
                raise ValueError("surrogate")
        elif isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError("depth")
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)
    return value


def outcome(fn: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "refused", None


DEEP = MAX_JSON_DEPTH
CASES = [
    '{"a": 1}', '{"a": 1, "a": 2}', '{"a": {"b": 1, "b": 1}}', '{"a": NaN}', '{"a": Infinity}',
    '{"a": -Infinity}', '{"a": 1e999}', '{"a": -1e999}', '{"a": 123456789012345678901}',
    '{"a": 12345678901234567890}', '{"a": -12345678901234567890}', '{"a": -1234567890123456789}',
    '{"a": "12345678901234567890123"}', '{"a": "\\ud800"}', '{"a": "\\ud83d\\ude00"}',
    '{"a": "\\uDFFF"}', '{"\\udc00": 1}', '{"a": "\\\\ud800"}', '{"a": "x\\ud800y"}',
    "[" * (DEEP + 1) + "]" * (DEEP + 1), "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP, '{"a":' * (DEEP + 1) + "1" + "}" * (DEEP + 1),
    '{"a": "' + "[" * 40 + '"}', '{"x": 1.0000000000000000000000000000000000000001}',
    '{"x": 1.5e3}', "\ufeff{}", '{"a":1}garbage', "", "{", '{"a" 1}', '{"a": tru}',
    '{"\\u00e9": "é"}', '"text"', "1", "[]", "{}", " {} ", '{"a": [1, 2, {"b": null}]}',
]  # fmt: skip


@pytest.mark.parametrize("text", CASES)
def test_the_same_answer_as_every_check_made_the_plain_way(text: str) -> None:
    for data in (text, text.encode("utf-8", "surrogatepass")):
        assert outcome(strict_json_loads, data) == outcome(reference, data)


def test_raw_surrogates_and_bad_bytes_are_refused() -> None:
    assert outcome(strict_json_loads, '{"a": "\ud800"}')[0] == "refused"  # a str argument
    assert outcome(strict_json_loads, b'{"a": "\xed\xa0\x80"}')[0] == "refused"  # CESU bytes
    assert outcome(strict_json_loads, b"\xef\xbb\xbf{}")[0] == "refused"
    assert outcome(strict_json_loads, '{"a": 1}'.encode("utf-16"))[0] == "refused"


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\\\ud800", "eyJ"]),
)  # fmt: skip


def _render(value: Any) -> str:
    """JSON text, with raw escape snippets (strings from the sample list) kept as is."""
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, tuple):  # an object, possibly with duplicate names
        return "{" + ",".join(f"{_render(k)}:{_render(v)}" for k, v in value) + "}"
    if isinstance(value, str) and "\\" in value:
        return f'"{value}"'
    return json.dumps(value)


_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(st.sampled_from(["a", "b", "\\ud800", "sub"]), inner), max_size=4).map(
            tuple
        ),
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(_documents, st.integers(min_value=0, max_value=DEEP + 2))
def test_generated_documents_get_the_same_answer(value: Any, nesting: int) -> None:
    text = "[" * nesting + _render(value) + "]" * nesting
    for data in (text, text.encode("utf-8", "surrogatepass")):
        assert outcome(strict_json_loads, data) == outcome(reference, data), text
