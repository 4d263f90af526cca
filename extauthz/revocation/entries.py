"""Revocation list documents: ``{"revoked": [ENTRY, ...]}``, parsed strictly.

A document is JSON or YAML (a ConfigMap data entry, a Secret data entry, a file of a
directory). Each ENTRY is exactly one of three forms; times are Unix seconds:

- ``{"jti": "...", "iss": "...", "exp": 1767225600}``: that token. ``iss`` is
  optional (without it the ``jti`` is revoked under every issuer); ``exp`` is the
  token's own expiry, after which the entry is ignored, so lists do not grow forever.
- ``{"token_sha256": "<64 hex digits>", "exp": ...}``: that exact token string. An
  operator holding a leaked JWE cannot read its ``jti``, but can hash it.
- ``{"iss": "...", "sub": "...", "issued_before": 1767225600}``: every token of that
  subject whose ``iat`` is earlier than that time, or that has no ``iat``.

Anything else is an error that names the entry (``revoked[3]: ...``): an unknown
field, a missing one, a wrong type, a time out of range, a duplicate key in a
mapping. :func:`parse_document` never raises anything but :class:`ListError`, so a
hostile or mistyped list is always a clean, logged rejection and never a crash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import yaml

#: NumericDate bounds: 0 .. year 9999 (as for token claims)
MAX_TIME = 253402300799
#: a document larger than this is rejected before parsing (a ConfigMap holds 1 MiB)
MAX_DOCUMENT_BYTES = 64 << 20

_HEX = frozenset("0123456789abcdef")
_FORMS: dict[str, frozenset[str]] = {
    "token_sha256": frozenset({"token_sha256", "exp"}),
    "jti": frozenset({"jti", "iss", "exp"}),
    "sub": frozenset({"sub", "iss", "issued_before"}),
}


class ListError(ValueError):
    """A revocation list document is not valid; the message says where and why."""


class JtiEntry(NamedTuple):
    """A token by its ``jti`` (``iss`` empty: under every issuer)."""

    jti: str
    iss: str = ""
    exp: float | None = None


class DigestEntry(NamedTuple):
    """A token by the SHA-256 of its exact string."""

    digest: bytes
    exp: float | None = None


class SubjectEntry(NamedTuple):
    """Every token of ``(iss, sub)`` issued before ``issued_before`` (or without ``iat``)."""

    iss: str
    sub: str
    issued_before: float


#: entries are named tuples: a list of 100,000 is built several times faster than with
#: frozen dataclasses, and they are as immutable
Entry = JtiEntry | DigestEntry | SubjectEntry


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ListError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(value: str) -> Any:
    raise ListError(f"{value} is not a number")


class _StrictLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """Safe YAML that refuses duplicate keys (the last one would silently win)."""


def _construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in out
        except TypeError as exc:  # an unhashable key (a list as a key)
            raise ListError("a mapping key is not a string") from exc
        if duplicate:
            raise ListError(f"duplicate key {key!r}")
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_text(data: bytes, where: str) -> Any:
    """The JSON (when it starts with ``{``) or YAML value of ``data``."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ListError(f"{where}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ListError(f"{where}: not UTF-8 text") from exc
    if text.startswith("\ufeff"):
        raise ListError(f"{where}: starts with a byte order mark")
    try:
        if text.lstrip().startswith("{"):
            return json.loads(
                text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
            )
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a safe loader subclass
    except ListError as exc:
        raise ListError(f"{where}: {exc}") from exc
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        kind = "JSON" if text.lstrip().startswith("{") else "YAML"
        raise ListError(f"{where}: not valid {kind}") from exc


def _text(item: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise ListError(f"{key} is required")
        return ""
    if not isinstance(value, str) or not value:
        raise ListError(f"{key} must be a non-empty string")
    if len(value) > 4096:
        raise ListError(f"{key} is longer than 4096 characters")
    return value


def _time(item: Mapping[str, Any], key: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ListError(f"{key} must be a number (Unix seconds)")
    if not math.isfinite(value) or not 0 <= value <= MAX_TIME:
        raise ListError(f"{key} is out of range")
    return float(value)


def _entry(item: Any) -> Entry:
    # messages here name the field; the caller prefixes where the entry is (formatting
    # that for each of 100,000 valid entries would cost more than parsing them)
    if not isinstance(item, Mapping):
        raise ListError("must be a mapping")
    keys = [k for k in ("token_sha256", "jti", "sub") if k in item]
    if len(keys) != 1:
        raise ListError("needs exactly one of jti, token_sha256, sub")
    form = keys[0]
    if not item.keys() <= _FORMS[form]:
        unknown = sorted(str(k) for k in item if k not in _FORMS[form])
        raise ListError(f"unknown field {unknown[0]!r} in a {form} entry")
    if form == "jti":
        return JtiEntry(
            jti=_text(item, "jti"), iss=_text(item, "iss", required=False), exp=_time(item, "exp")
        )
    if form == "token_sha256":
        digest = _text(item, "token_sha256").lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise ListError("token_sha256 must be 64 hexadecimal digits")
        return DigestEntry(bytes.fromhex(digest), _time(item, "exp"))
    issued_before = _time(item, "issued_before")
    if issued_before is None:
        raise ListError("issued_before is required")
    return SubjectEntry(iss=_text(item, "iss"), sub=_text(item, "sub"), issued_before=issued_before)


def parse_entry(item: Any, where: str) -> Entry:
    """One ENTRY; raises :class:`ListError` naming ``where`` when it is not valid."""
    try:
        return _entry(item)
    except ListError as exc:
        raise ListError(f"{where}: {exc}") from None


def parse_document(data: bytes, where: str) -> tuple[Entry, ...]:
    """Every entry of one list document, or :class:`ListError` for the first bad one.

    ``where`` names the document in messages (``extauthz-revoked[revoked.json]``).
    """
    value = load_text(data, where)
    if not isinstance(value, Mapping):
        raise ListError(f'{where}: must be a mapping {{"revoked": [...]}}')
    unknown = sorted(str(k) for k in value if k != "revoked")
    if unknown:
        raise ListError(f"{where}: unknown key {unknown[0]!r} (only 'revoked')")
    items = value.get("revoked")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ListError(f"{where}: revoked must be a list")
    out: list[Entry] = []
    try:
        for item in items:
            out.append(_entry(item))
    except ListError as exc:
        raise ListError(f"{where}: revoked[{len(out)}]: {exc}") from None
    return tuple(out)


def to_dict(entry: Entry) -> dict[str, Any]:
    """An entry as it is written in a document (the inverse of :func:`parse_entry`)."""
    out: dict[str, Any]
    if isinstance(entry, JtiEntry):
        out = {"jti": entry.jti}
        if entry.iss:
            out["iss"] = entry.iss
        if entry.exp is not None:
            out["exp"] = _number(entry.exp)
    elif isinstance(entry, DigestEntry):
        out = {"token_sha256": entry.digest.hex()}
        if entry.exp is not None:
            out["exp"] = _number(entry.exp)
    else:
        out = {"iss": entry.iss, "sub": entry.sub, "issued_before": _number(entry.issued_before)}
    return out


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value
