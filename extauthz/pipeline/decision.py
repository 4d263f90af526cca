"""The :class:`Decision` value and everything that shapes it.

A deny is a value, not an exception: the edge (``server/``) turns a Decision into
a ``CheckResponse`` without any further judgement.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauthz.config import Config, ProviderConfig
from extauthz.errors import DESCRIPTIONS, STATUS, PolicyError, Reason
from extauthz.pipeline import claims as claims_mod
from extauthz.pipeline.memo import Memo

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one Check."""

    allowed: bool
    status: int  # 200 on allow; 401 / 403 / 503 on deny
    reason: Reason
    rule: str
    #: allow: headers set on the upstream request (OVERWRITE_IF_EXISTS_OR_ADD)
    upstream_headers: Headers = ()
    #: allow: headers removed from the upstream request (never one we also set)
    remove_headers: tuple[str, ...] = ()
    #: headers for the client response (allow: response_headers_to_add; deny: headers)
    response_headers: Headers = ()
    body: str = ""
    sub: str = ""
    iss: str = ""
    kid: str = ""
    enc_kid: str = ""
    #: the token's ``jti`` (decision log only; "" when none)
    jti: str = ""
    #: operator-facing detail for the log line; never sent to the client
    detail: str = ""
    #: claim headers whose value was dropped (size, control characters)
    dropped: tuple[str, ...] = ()

    @property
    def metadata(self) -> dict[str, str]:
        """``dynamic_metadata`` for Envoy's access log (computed: cached Decisions are
        kept per token, and a dict each would cost memory for nothing)."""
        return metadata(
            "allow" if self.allowed else "deny", self.reason, self.rule, self.sub, self.iss,
            self.kid, self.enc_kid,
        )  # fmt: skip


#: bound on memoized deny decisions (their detail may echo attacker-chosen alg names)
DENY_MEMO_MAX = 1024


def metadata(
    decision: str, reason: Reason, rule: str, sub: str = "", iss: str = "",
    kid: str = "", enc_kid: str = "",
) -> dict[str, str]:  # fmt: skip
    """``dynamic_metadata`` for Envoy's access log (allow and deny alike)."""
    data = {"decision": decision, "reason": reason.value, "rule": rule,
            "sub": sub, "iss": iss, "kid": kid}  # fmt: skip
    if enc_kid:
        data["enc_kid"] = enc_kid
    return data


#: control characters but horizontal tab: never in a header value
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def header_value(value: Any, limit: int) -> str | None:
    """A claim rendered as a header value (strings as is, arrays of strings joined with ``,``,
    other values as JSON), or None when it must be dropped."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    if text.isascii():  # one byte per character, no surrogate: no need to encode
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            return None  # a lone surrogate: not text, never a header
    if size > limit:
        return None
    if _CONTROL.search(text):
        return None  # CR, LF, NUL and other controls never reach a header
    return text


@dataclass(frozen=True, slots=True)
class HeaderShape:
    """Which claim headers a token fills, which managed ones are removed, which were
    dropped: few combinations exist, so tokens of one shape share one object and each
    cached token keeps only its header values (in the order of ``names``)."""

    names: tuple[str, ...]
    remove: tuple[str, ...]
    dropped: tuple[str, ...]

    def pairs(self, values: tuple[str, ...]) -> Headers:
        """The ``(header, value)`` pairs of one token of this shape."""
        return tuple(zip(self.names, values, strict=True))


#: bound on shared :class:`HeaderShape` objects (the memo starts over when full)
_SHAPES_MAX = 4096


class ClaimHeaders:
    """Precomputed claim -> header mapping of one provider, plus the shared extras."""

    def __init__(self, config: Config) -> None:
        self.limit = config.upstream.max_header_value_bytes
        self.claims_header = config.upstream.claims_header
        self.by_provider: dict[str, tuple[tuple[str, str], ...]] = {
            p.name: p.claims_to_headers for p in config.providers
        }
        names: set[str] = {h for p in config.providers for _, h in p.claims_to_headers}
        if self.claims_header:
            names.add(self.claims_header)
        #: every header we may fill: removed whenever we do not fill it
        self.all_names = tuple(sorted(names))
        self._shapes: Memo[tuple[tuple[str, ...], tuple[str, ...]], HeaderShape] = Memo(_SHAPES_MAX)

    def render(
        self, provider: ProviderConfig, claims: Mapping[str, Any]
    ) -> tuple[HeaderShape, tuple[str, ...]]:
        """The shape of the token's claim headers (set, removed, dropped) and the values
        of the headers it sets."""
        names: list[str] = []
        values: list[str] = []
        dropped: list[str] = []
        for claim, header in self.by_provider.get(provider.name, ()):
            # a top-level claim (the usual case) by one lookup; a dotted path step by step
            raw = claims.get(claim) if "." not in claim else claims_mod.lookup(claims, claim)
            value = header_value(raw, self.limit)
            if value is None:
                if raw is not None:
                    dropped.append(header)
                continue
            names.append(header)
            values.append(value)
        if self.claims_header:
            encoded = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
            value = base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()
            if len(value) <= self.limit:
                names.append(self.claims_header)
                values.append(value)
            else:
                dropped.append(self.claims_header)
        return self.shape(tuple(names), tuple(dropped)), tuple(values)

    def shape(self, names: tuple[str, ...], dropped: tuple[str, ...]) -> HeaderShape:
        """The shared shape for headers ``names`` set and ``dropped``."""
        key = (names, dropped)
        found = self._shapes.get(key)
        if found is None:
            filled = set(names)
            remove = tuple(h for h in self.all_names if h not in filled)
            found = self._shapes.keep(key, HeaderShape(names, remove, dropped))
        return found


class Denials:
    """Builds deny decisions; bodies and challenges are precomputed per reason."""

    def __init__(self, config: Config) -> None:
        self.realm = config.token.realm
        self.response_headers: Headers = config.response.headers
        self._bodies = {reason: self._body(reason) for reason in Reason}
        self._memo: dict[tuple[Any, ...], Decision] = {}

    @staticmethod
    def _body(reason: Reason) -> str:
        if reason in (Reason.OK, Reason.ANONYMOUS):
            return ""
        status = STATUS.get(reason, 401)
        if reason is Reason.INSUFFICIENT_SCOPE:
            error = "insufficient_scope"
        elif status == 401 and reason is not Reason.MISSING_TOKEN:
            error = "invalid_token"
        else:
            error = reason.value
        body = {"error": error, "error_description": DESCRIPTIONS[reason], "reason": reason.value}
        return json.dumps(body)

    def challenge(self, reason: Reason, required: tuple[str, ...] = ()) -> str:
        """The ``www-authenticate`` value for a deny (RFC 6750 §3)."""
        realm = f'Bearer realm="{self.realm}"'
        if reason is Reason.MISSING_TOKEN:
            return realm
        if reason is Reason.INSUFFICIENT_SCOPE:
            scope = f', scope="{" ".join(required)}"' if required else ""
            return f'{realm}, error="insufficient_scope"{scope}'
        if STATUS.get(reason, 401) == 401:
            return f'{realm}, error="invalid_token", error_description="{reason.value}"'
        return realm

    def deny(
        self, reason: Reason, rule: str, detail: str = "", *, required: tuple[str, ...] = (),
        sub: str = "", iss: str = "", kid: str = "", enc_kid: str = "", jti: str = "",
    ) -> Decision:  # fmt: skip
        """A deny decision with status, challenge, JSON body and metadata.

        Anonymous denies (no subject known) are memoized, so their response bytes
        are built once; the memo is bounded.
        """
        key = None if (sub or iss or kid or enc_kid or jti) else (reason, rule, detail, required)
        if key is not None:
            cached = self._memo.get(key)
            if cached is not None:
                return cached
        status = STATUS.get(reason, 401)
        headers: list[tuple[str, str]] = [("content-type", "application/json")]
        if status in (401, 403):
            headers.append(("www-authenticate", self.challenge(reason, required)))
        if status == 503:
            headers.append(("retry-after", "1"))
        headers.extend(self.response_headers)
        decision = Decision(
            allowed=False, status=status, reason=reason, rule=rule,
            response_headers=tuple(headers), body=self._bodies[reason],
            sub=sub, iss=iss, kid=kid, enc_kid=enc_kid, jti=jti, detail=detail,
        )  # fmt: skip
        if key is not None and len(self._memo) < DENY_MEMO_MAX:
            self._memo[key] = decision
        return decision

    def from_policy(self, error: PolicyError, rule: str, **who: str) -> Decision:
        """A 403 for a valid token that does not meet the rule."""
        return self.deny(error.reason, rule, error.detail, required=error.required, **who)
