"""Faster variants of product functions, patched in at run time to measure a proposal.

    python bench/check_cost.py --try fast-json [--try fast-log]

The product code is untouched: :func:`apply` replaces a function in the running
process only, after checking that the variant accepts and refuses exactly what the
original does on a set of tricky inputs (a faster wrong answer measures nothing).
What measures well here is proposed as a product change in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# --------------------------------------------------------------------------- fast-json

#: a ``\\uD800``-``\\uDFFF`` escape: the only way a surrogate reaches a parsed string
#: (strict UTF-8 decoding refuses encoded surrogates, and json joins valid pairs)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
#: an integer literal long enough for the original's ``parse_int`` bound to matter
_LONG_DIGITS = re.compile(r"\d{21}")


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in items:
        if k in out:
            raise ValueError("duplicate JSON member")
        out[k] = v
    return out


def _bad_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _bounded_float(text: str) -> float:
    if len(text) > 40:
        raise ValueError("JSON number too long")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("JSON number out of range")
    return value


_FAST = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_bad_constant,
                         parse_float=_bounded_float)  # fmt: skip


def fast_strict_json_loads(original: Callable[[Any], Any], depth: int) -> Callable[[Any], Any]:
    """``strict_json_loads`` with one decoder built once, and the integer-size hook and
    the tree walk (depth, lone surrogates) run only when the raw text could fail them;
    any other text goes to ``original``."""

    def loads(data: bytes | str) -> Any:
        if isinstance(data, bytes | bytearray):
            if data[:3] == b"\xef\xbb\xbf":
                raise ValueError("byte-order mark")
            data = bytes(data).decode("utf-8")
        if (
            data.count("{") + data.count("[") > depth
            or ("\\u" in data and _SURROGATE_ESCAPE.search(data))
            or _LONG_DIGITS.search(data)
        ):
            return original(data)
        return _FAST.decode(data)

    return loads


_JSON_CASES = [
    '{"a": 1}', '{"a": 1, "a": 2}', '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}',
    '{"a": 1e999}', '{"a": 123456789012345678901}', '{"a": 12345678901234567890}',
    '{"a": "\\ud800"}', '{"a": "\\ud83d\\ude00"}', '{"a": "\\uDFFF"}', "[" * 33 + "]" * 33,
    "[" * 32 + "]" * 32, '{"a": [1, 2, {"b": null}]}', '"text"', "1", "[]", "{}",
    '{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
    '{"x": 1.0000000000000000000000000000000000000001}',
    "\ufeff{}", '{"a":1}garbage', "", "{", '{"a" 1}', '{"a": tru}', '{"\\u00e9": "é"}',
]  # fmt: skip


def _outcome(fn: Callable[[Any], Any], text: str) -> tuple[str, Any]:
    try:
        return "ok", fn(text.encode("utf-8", "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return "error", type(exc).__name__


# --------------------------------------------------------------------------- fast-log


class FastDecisionLog:
    """The decision line without structlog's processor chain: the product's own
    ``redact`` on the fields (they are built by extauthz), one ``orjson.dumps``, into a
    buffered binary stream. The timestamp text is reused within a millisecond, so it
    has millisecond precision (structlog's has microseconds)."""

    def __init__(self, stream: Any) -> None:
        import orjson

        from extauthz.logging import redact

        self.dumps = orjson.dumps
        self.redact = redact
        self.out = stream
        self.ms = -1
        self.stamp = ""

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        import time
        from datetime import UTC, datetime

        now = time.time()
        ms = int(now * 1000)
        if ms != self.ms:
            self.ms = ms
            self.stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        fields = dict(self.redact(None, level, fields))
        fields["event"], fields["level"], fields["timestamp"] = event, level, self.stamp
        self.out.write(self.dumps(fields) + b"\n")

    def info(self, event: str, **fields: Any) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)


PROTOTYPES = ("fast-json", "fast-log")


def apply(names: list[str]) -> list[str]:
    """Install the named variants; returns what was installed."""
    installed = []
    for name in names:
        if name not in PROTOTYPES:
            raise SystemExit(f"unknown prototype {name!r}; known: {', '.join(PROTOTYPES)}")
        if name == "fast-log":
            import os

            from extauthz.server import decisions

            sink = open(os.devnull, "wb", buffering=1 << 16)  # noqa: SIM115 - lives with the process
            decisions.__dict__["log"] = FastDecisionLog(sink)
            installed.append(name)
            continue
        from extauthz.keys import material
        from extauthz.pipeline import tokens

        fast = fast_strict_json_loads(material.strict_json_loads, material.MAX_JSON_DEPTH)
        for case in _JSON_CASES:
            want, got = _outcome(material.strict_json_loads, case), _outcome(fast, case)
            if want != got:
                raise SystemExit(f"fast-json differs on {case!r}: {want} vs {got}")
        tokens.__dict__["strict_json_loads"] = fast  # the name tokens.py calls
        installed.append(name)
    return installed
