"""Find the access token in the request (``token.sources``).

Sources are tried in order; the first one *present* wins. A header source matches
when the header is present and starts with its prefix (case-insensitive scheme);
a cookie source when the cookie is present. Ambiguity is a deny, never a guess:
two ``authorization`` headers (Envoy joins them with ``,``, or sends two entries in
``header_map``), or the same cookie twice, are ``malformed``.
"""

from __future__ import annotations

from collections.abc import Sequence

from extauthz.config import TokenConfig, TokenSourceConfig
from extauthz.errors import Reason, TokenError
from extauthz.pipeline.request import CheckInput


def header_values(request: CheckInput, name: str) -> list[str]:
    """Every occurrence of header ``name`` (lower-case) in either form Envoy uses."""
    if request.raw_headers:
        return [value for key, value in request.raw_headers if key == name]
    value = request.headers.get(name)
    return [] if value is None else [value]


def check_bounds(request: CheckInput, config: TokenConfig) -> None:
    """Refuse requests whose header count, total header size or path length exceed the
    configured bounds. Runs before any rule is evaluated (a ``path_regex`` never sees
    an unbounded path)."""
    count = len(request.raw_headers) or len(request.headers)
    if count > config.max_headers:
        raise TokenError(Reason.TOO_LARGE, "too many headers")
    if len(request.path) > config.max_header_bytes:
        # the path is a header too (``:path``); over HTTP it arrives on the request line
        raise TokenError(Reason.TOO_LARGE, "path too long")
    size = request.header_bytes
    if not size:
        pairs: Sequence[tuple[str, str]] = request.raw_headers or tuple(request.headers.items())
        size = sum(len(k) + len(v) for k, v in pairs)
    if size > config.max_header_bytes:
        raise TokenError(Reason.TOO_LARGE, "headers too large")


def _from_header(request: CheckInput, source: TokenSourceConfig) -> str | None:
    if source.header is None:
        return None
    values = header_values(request, source.header)
    if not values:
        return None
    if len(values) > 1:
        raise TokenError(Reason.MALFORMED, f"{source.header} header repeated")
    value = values[0]
    prefix = source.prefix or ""
    if "," in value:
        # Envoy joins repeated headers with ","; a JWT never contains one. If any part
        # is ours ("Basic x, Bearer <jwt>"), that is ambiguity: deny. A header of some
        # other scheme with commas in its syntax (Digest, SigV4) is simply not ours.
        parts = [p.strip() for p in value.split(",")]
        scheme = prefix.rstrip().lower()
        if not scheme or any(p[: len(scheme)].lower() == scheme for p in parts):
            raise TokenError(Reason.MALFORMED, f"{source.header} header repeated")
        return None
    if prefix:
        if value[: len(prefix)].lower() != prefix.lower():
            return None
        value = value[len(prefix) :]
    token = value.strip(" \t")
    if not token:
        raise TokenError(Reason.MALFORMED, "empty credentials")
    return token


def _from_cookie(request: CheckInput, source: TokenSourceConfig) -> str | None:
    found: list[str] = []
    for header in header_values(request, "cookie"):
        # split cookie headers may arrive joined by ";" or ","; a JWT holds neither
        for part in header.replace(",", ";").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == source.cookie:
                found.append(value.strip().strip('"'))
    if not found:
        return None
    if len(found) > 1:
        raise TokenError(Reason.MALFORMED, "token cookie repeated")
    if not found[0]:
        raise TokenError(Reason.MALFORMED, "empty credentials")
    return found[0]


def locate(request: CheckInput, config: TokenConfig) -> tuple[str, TokenSourceConfig] | None:
    """The token and the source it came from, or None when no source is present.

    Raises TokenError on ambiguity. The source matters after the decision too:
    ``upstream.authorization: remove | inner`` takes the token out of where it was.
    """
    for source in config.sources:
        token = _from_header(request, source) if source.header else _from_cookie(request, source)
        if token is not None:
            return token, source
    return None


def extract(request: CheckInput, config: TokenConfig) -> str | None:
    """The token, or None when no source is present. Raises TokenError on ambiguity."""
    found = locate(request, config)
    return None if found is None else found[0]
