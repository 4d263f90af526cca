"""The pipeline's view of a Check: a frozen value built at the edge from protobuf."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
#: decoded from a %-escape, these change how upstreams split or resolve the path
_AMBIGUOUS_DECODED = frozenset("/\\;%")


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or ord(char) == 0x7F


def _valid_utf8(data: bytearray) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_escapes(path: str) -> str | None:
    """Decode %-escaped unreserved characters; keep every other escape (upper-cased).

    None when the result would depend on the upstream's decoder: a broken escape, an
    escaped ``/``, ``\\``, ``;`` or control character, an escaped ``%`` that starts
    another escape (``%252e``: double encoding, which a chain of two decoders turns
    into ``.``), or escaped bytes that are not UTF-8 (``%c0%ae``, an overlong ``.``
    that some decoders accept).
    """
    out: list[str] = []
    high = bytearray()  # a run of escaped bytes >= 0x80: must be well-formed UTF-8
    i = 0
    size = len(path)
    while i < size:
        c = path[i]
        if c != "%":
            if high and not _valid_utf8(high):
                return None
            high.clear()
            out.append(c)
            i += 1
            continue
        pair = path[i + 1 : i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            return None
        value = int(pair, 16)
        if value >= 0x80:
            high.append(value)
        else:
            if high and not _valid_utf8(high):
                return None
            high.clear()
            char = chr(value)
            if char in _AMBIGUOUS_DECODED or _is_control(char):
                following = path[i + 3 : i + 5]
                double = len(following) == 2 and set(following) <= _HEX
                if char != "%" or double:
                    return None
            if char in _UNRESERVED:
                out.append(char)
                i += 3
                continue
        out.append("%" + pair.upper())
        i += 3
    if high and not _valid_utf8(high):
        return None
    return "".join(out)


def _canonical(path: str) -> str | None:
    """The path with unreserved escapes decoded and a leading ``/``; None if ambiguous."""
    if "\\" in path or ";" in path or any(_is_control(c) for c in path):
        return None
    if "%" in path:
        decoded = _decode_escapes(path)
        if decoded is None:
            return None
        path = decoded
    return path if path.startswith("/") else "/" + path


def _resolve(path: str) -> str:
    """Runs of slashes merged, dot segments removed (RFC 3986 §5.2.4)."""
    if "//" not in path and "/." not in path:
        return path
    segments: list[str] = []
    parts = path.split("/")[1:]
    for index, segment in enumerate(parts):
        last = index == len(parts) - 1
        if segment == "..":
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif segment == ".":
            if last:
                segments.append("")
        elif segment or last:
            segments.append(segment)
    return "/" + "/".join(segments)


def normalize_path(path: str) -> str | None:
    """The path as rules see it (RFC 3986 §6.2.2): %-encoded unreserved characters
    decoded, runs of slashes merged, dot segments removed (RFC 3986 §5.2.4).

    Rules must match what the upstream will serve, not the raw bytes a client chose:
    ``/public/../admin``, ``//admin`` and ``/%61dmin`` are all ``/admin``. Returns None
    (denied ``bad_path``) for a path whose meaning depends on the upstream:

    - ``;`` path parameters: servlet containers (Tomcat, Jetty, Spring) drop ``;...``
      from each segment before resolving ``..`` (``/public/..;/admin`` is ``/admin``
      there), other servers keep them as part of the name;
    - a ``\\`` (some servers treat it as ``/``) or an encoded ``/`` / ``\\``;
    - a control character, raw or encoded;
    - broken or ambiguous %-encoding (see :func:`_decode_escapes`).
    """
    canonical = _canonical(path)
    return None if canonical is None else _resolve(canonical)


def path_readings(path: str) -> tuple[str, ...] | None:
    """Every way an upstream may read ``path``: resolved (dot segments removed, slashes
    merged, as Envoy's normalization and RFC 3986 servers do) and, when different,
    literal (Express, Werkzeug and others route ``/admin/../public/x`` under
    ``/admin/``). A rule check must pass under each reading. None: ambiguous (see
    :func:`normalize_path`)."""
    canonical = _canonical(path)
    if canonical is None:
        return None
    resolved = _resolve(canonical)
    return (resolved,) if resolved == canonical else (resolved, canonical)


@dataclass(frozen=True, slots=True)
class CheckInput:
    """What the pipeline needs from Envoy's ``CheckRequest``.

    ``headers`` is Envoy's joined map (lower-case names; repeated headers joined with
    ``,``). ``raw_headers`` is the ``header_map`` form (one entry per occurrence), used
    when Envoy runs with ``encode_raw_headers: true``; the edge fills whichever Envoy
    sent, and :func:`extauthz.pipeline.credentials.header_values` reads both.
    """

    method: str = "GET"
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    raw_headers: tuple[tuple[str, str], ...] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    #: serialized size of the request headers (bounded by ``token.max_header_bytes``)
    header_bytes: int = 0

    @property
    def route_path(self) -> str | None:
        """The normalized path rules match on (None: ambiguous, see :func:`normalize_path`)."""
        return normalize_path(self.path_only)

    @property
    def route_paths(self) -> tuple[str, ...] | None:
        """Every reading rules must pass (None: ambiguous, see :func:`path_readings`)."""
        return path_readings(self.path_only)

    @property
    def path_only(self) -> str:
        """The path without query string or fragment (Envoy puts the query in ``path``)."""
        cut = len(self.path)
        for sep in ("?", "#"):
            index = self.path.find(sep)
            if index != -1:
                cut = min(cut, index)
        return self.path[:cut] or "/"
