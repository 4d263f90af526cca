"""The pipeline's view of a Check: a frozen value built at the edge from protobuf."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)


def normalize_path(path: str) -> str | None:
    """The path as rules see it (RFC 3986 §6.2.2): %-encoded unreserved characters
    decoded, runs of slashes merged, dot segments removed (§5.2.4).

    Rules must match what the upstream will serve, not the raw bytes a client chose:
    ``/public/../admin``, ``//admin`` and ``/%61dmin`` are all ``/admin``. Returns None
    for a path whose meaning depends on the upstream — an encoded ``/`` or ``\\``, a raw
    backslash, a control character or broken %-encoding — which is denied.
    """
    if "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return None
    if "%" in path:
        out: list[str] = []
        i = 0
        while i < len(path):
            c = path[i]
            if c != "%":
                out.append(c)
                i += 1
                continue
            pair = path[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                return None
            char = chr(int(pair, 16))
            if char in "/\\" or ord(char) < 0x20 or ord(char) == 0x7F:
                return None
            out.append(char if char in _UNRESERVED else "%" + pair.upper())
            i += 3
        path = "".join(out)
    if not path.startswith("/"):
        path = "/" + path
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
    def path_only(self) -> str:
        """The path without query string or fragment (Envoy puts the query in ``path``)."""
        cut = len(self.path)
        for sep in ("?", "#"):
            index = self.path.find(sep)
            if index != -1:
                cut = min(cut, index)
        return self.path[:cut] or "/"
