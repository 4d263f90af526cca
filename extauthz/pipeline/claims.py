"""Validate a verified token's claims (RFC 7519 §4.1, RFC 9068 §4).

joserfc's ``jwt.decode`` checks no claim, so every rule is ours:
``exp`` (required), ``nbf``, ``iat``, ``iss``, ``aud``, required claims, with the
provider's leeway. Numeric dates must be JSON numbers (not strings, not booleans)
and within a sane range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from extauthz.config import ProviderConfig
from extauthz.errors import Reason, TokenError

#: NumericDate bounds: 0 .. year 9999; anything else is a malformed claim
_MAX_DATE = 253402300799


def _date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(Reason.INVALID_CLAIM, f"{name} is not a number")
    if not math.isfinite(value) or not 0 <= value <= _MAX_DATE:
        raise TokenError(Reason.INVALID_CLAIM, f"{name} is out of range")
    return float(value)


def audiences(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``aud`` claim as a tuple (a string or an array of strings)."""
    aud = claims.get("aud")
    if aud is None:
        return ()
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return tuple(aud)
    raise TokenError(Reason.INVALID_CLAIM, "aud is not a string or an array of strings")


def validate(claims: Mapping[str, Any], provider: ProviderConfig, now: float) -> float:
    """Raise :class:`TokenError` unless the claims are valid at ``now``.

    Returns the instant (epoch seconds) after which the token stops being valid,
    i.e. ``exp + leeway``; the token cache never keeps a decision past it.
    """
    leeway = provider.leeway_seconds
    for name in provider.required_claims:
        if claims.get(name) is None:  # JSON null is as good as absent
            raise TokenError(Reason.MISSING_CLAIM, f"{name} is missing")
    exp = _date(claims, "exp")
    if exp is None:
        raise TokenError(Reason.MISSING_CLAIM, "exp is missing")
    if now >= exp + leeway:  # RFC 7519 §4.1.4: valid only *before* exp
        raise TokenError(Reason.EXPIRED, "exp is in the past")
    nbf = _date(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise TokenError(Reason.NOT_YET_VALID, "nbf is in the future")
    iat = _date(claims, "iat")
    if iat is not None and now + leeway < iat:
        raise TokenError(Reason.NOT_YET_VALID, "iat is in the future")
    if claims.get("iss") != provider.issuer:
        raise TokenError(Reason.BAD_ISSUER, "iss does not match the provider")
    if provider.audiences:
        if not set(audiences(claims)) & set(provider.audiences):
            raise TokenError(Reason.BAD_AUDIENCE, "no accepted audience")
    else:
        audiences(claims)
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise TokenError(Reason.INVALID_CLAIM, "sub is not a string")
    for name in ("scope",):
        if name in claims and not isinstance(claims[name], str):
            raise TokenError(Reason.INVALID_CLAIM, f"{name} is not a string")
    scp = claims.get("scp")
    if scp is not None and not (
        isinstance(scp, str) or (isinstance(scp, list) and all(isinstance(s, str) for s in scp))
    ):
        raise TokenError(Reason.INVALID_CLAIM, "scp is not a string or an array of strings")
    return exp + leeway


def lookup(claims: Mapping[str, Any], path: str) -> Any:
    """The value of a nested claim ``a.b.c``; None when any step is missing."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """Granted scopes: ``scope`` (space-separated) and/or ``scp`` (array or string).

    A scope string is split on U+0020 only (RFC 6749 §3.3): a tab, a newline or any
    other character is part of a scope, so ``"read\nadmin"`` never grants ``admin``.
    """
    out: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        out.update(s for s in scope.split(" ") if s)
    scp = claims.get("scp")
    if isinstance(scp, str):
        out.update(s for s in scp.split(" ") if s)
    elif isinstance(scp, list):
        out.update(s for s in scp if isinstance(s, str))
    return frozenset(out)
