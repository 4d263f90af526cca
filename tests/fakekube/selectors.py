"""Label and field selectors, parsed and matched the way the API server does.

Label selectors (``labelSelector=``): comma-separated requirements, all of which must
hold: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists),
``!k`` (does not exist). ``k!=v`` and ``notin`` also match objects without the label,
as in Kubernetes.

Field selectors (``fieldSelector=``) on Secrets support ``metadata.name``,
``metadata.namespace`` and ``type`` with ``=``, ``==`` and ``!=``; any other field is
a 400, as on a real server ("field label not supported").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


class SelectorError(ValueError):
    """The selector does not parse; the server answers 400 BadRequest."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" match when the label is absent, as in Kubernetes
        return not present or value not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced parenthesis")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SelectorError("unbalanced parenthesis")
    parts.append("".join(current))
    return parts


def _check_key(key: str) -> str:
    if not re.fullmatch(_KEY, key) or len(key) > 317:
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if not re.fullmatch(_VALUE, value) or len(value) > 63:
        raise SelectorError(f"invalid label value {value!r}")
    return value


def _parse_requirement(text: str) -> _Requirement:
    text = text.strip()
    if not text:
        raise SelectorError("empty requirement")
    set_based = re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", text)
    if set_based:
        key, op, raw = set_based.groups()
        values = frozenset(_check_value(v.strip()) for v in raw.split(","))
        return _Requirement(_check_key(key), op, values)
    for op in ("!=", "==", "="):
        if op in text:
            key, _, value = text.partition(op)
            return _Requirement(
                _check_key(key.strip()),
                "!=" if op == "!=" else "=",
                frozenset({_check_value(value.strip())}),
            )
    if text.startswith("!"):
        return _Requirement(_check_key(text[1:].strip()), "!", frozenset())
    return _Requirement(_check_key(text), "exists", frozenset())


def label_selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """Parse a label selector into a predicate over an object's labels."""
    if text is None or not text.strip():
        return lambda labels: True
    requirements = [_parse_requirement(part) for part in _split_top_level(text)]
    return lambda labels: all(r.matches(labels) for r in requirements)


#: the fields a Secret can be selected by, and how to read them
SECRET_FIELDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "metadata.name": lambda obj: str(obj["metadata"]["name"]),
    "metadata.namespace": lambda obj: str(obj["metadata"]["namespace"]),
    "type": lambda obj: str(obj.get("type", "")),
}


def field_selector(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """Parse a field selector (Secret fields only) into a predicate over an object."""
    if text is None or not text.strip():
        return lambda obj: True
    checks: list[tuple[Callable[[Mapping[str, Any]], str], bool, str]] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*", part)
        if not match:
            raise SelectorError(f"invalid field selector {part!r}")
        field, op, value = match.groups()
        if field not in SECRET_FIELDS:
            raise SelectorError(f"field label not supported: {field}")
        checks.append((SECRET_FIELDS[field], op != "!=", value))
    return lambda obj: all((read(obj) == value) is equal for read, equal, value in checks)
