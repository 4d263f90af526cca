"""The pipeline's view of a Check: a frozen value built at the edge from protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
    def path_only(self) -> str:
        """The path without query string or fragment (Envoy puts the query in ``path``)."""
        cut = len(self.path)
        for sep in ("?", "#"):
            index = self.path.find(sep)
            if index != -1:
                cut = min(cut, index)
        return self.path[:cut] or "/"
