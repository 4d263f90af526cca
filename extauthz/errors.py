"""The one exception tree of extauthz, and the stable reason codes of a decision.

::

    ExtauthzError
    ├── ConfigError            a config file or value is wrong; carries the key path
    ├── KeyMaterialError       a JWK / JWKS / PEM could not be turned into a usable key
    ├── KeySourceError         a key source could not load (I/O, API, HTTP); wraps the cause
    └── AuthError              a request is denied; carries a stable ``Reason``
        ├── TokenError         the token itself is bad  -> 401 invalid_token
        └── PolicyError        the token is good, the rule is not met -> 403

``AuthError`` never escapes the pipeline: the pipeline turns it into a deny
``Decision``. A path that means different things to different upstreams is denied
``bad_path`` (400) before any rule or token is looked at. The mapping of a reason
to an HTTP status lives in :data:`STATUS`.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Reason classes of a decision: the metric label, the log field, the description."""

    OK = "ok"
    ANONYMOUS = "anonymous"
    MISSING_TOKEN = "missing_token"  # noqa: S105 - a reason code, not a secret
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    UNSUPPORTED_CRIT = "unsupported_crit"
    ENCRYPTION_REQUIRED = "encryption_required"
    UNKNOWN_KID = "unknown_kid"
    DECRYPT_FAILED = "decrypt_failed"
    BAD_SIGNATURE = "bad_signature"
    UNSIGNED = "unsigned"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_ISSUER = "bad_issuer"
    BAD_AUDIENCE = "bad_audience"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    REVOKED = "revoked"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    UNKNOWN_RULE = "unknown_rule"
    BAD_PATH = "bad_path"
    NOT_READY = "not_ready"
    INTERNAL_ERROR = "internal_error"


#: HTTP status of each deny reason. Everything not listed is a 401 ``invalid_token``.
STATUS: dict[Reason, int] = {
    Reason.MISSING_TOKEN: 401,
    Reason.INSUFFICIENT_SCOPE: 403,
    Reason.UNKNOWN_RULE: 403,
    Reason.BAD_PATH: 400,
    Reason.NOT_READY: 503,
    Reason.INTERNAL_ERROR: 401,
}

#: Short human explanations, safe to send to a client: no key ids, no library text.
DESCRIPTIONS: dict[Reason, str] = {
    Reason.MISSING_TOKEN: "no access token was presented",
    Reason.MALFORMED: "the token is not a well-formed JWS or JWE",
    Reason.TOO_LARGE: "the token exceeds the size limit",
    Reason.ALG_NOT_ALLOWED: "the token uses an algorithm that is not allowed",
    Reason.UNSUPPORTED_CRIT: "the token has a critical header that is not understood",
    Reason.ENCRYPTION_REQUIRED: "the token must be encrypted",
    Reason.UNKNOWN_KID: "no key matches the token",
    Reason.DECRYPT_FAILED: "the token could not be decrypted",
    Reason.BAD_SIGNATURE: "the token signature is invalid",
    Reason.UNSIGNED: "the token is not signed",
    Reason.EXPIRED: "the token has expired",
    Reason.NOT_YET_VALID: "the token is not valid yet",
    Reason.BAD_ISSUER: "the token issuer is not trusted",
    Reason.BAD_AUDIENCE: "the token is not meant for this audience",
    Reason.MISSING_CLAIM: "the token lacks a required claim",
    Reason.INVALID_CLAIM: "the token has a claim with an invalid value",
    Reason.REVOKED: "the token has been revoked",
    Reason.INSUFFICIENT_SCOPE: "the token does not grant the required scope",
    Reason.UNKNOWN_RULE: "the route names an unknown rule",
    Reason.BAD_PATH: "the request path is ambiguous",
    Reason.NOT_READY: "the service is not ready",
    Reason.INTERNAL_ERROR: "the request could not be authorized",
}


class ExtauthzError(Exception):
    """Root of every error raised on purpose by extauthz."""


class ConfigError(ExtauthzError):
    """A configuration value is wrong; ``path`` is the full key path (``providers[0].issuer``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class KeyMaterialError(ExtauthzError):
    """A key file or Secret entry holds no usable key (bad JSON, unsupported kty, ...)."""


class KeySourceError(ExtauthzError):
    """A key source failed to load; the source keeps its last good keys."""


class AuthError(ExtauthzError):
    """A request is denied for ``reason``. Never leaves the pipeline as an exception."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason.value if not detail else f"{reason.value}: {detail}")
        self.reason = reason
        #: operator-facing detail for the log line; never sent to the client
        self.detail = detail


class TokenError(AuthError):
    """The token is missing, malformed, not trusted or not valid."""


class PolicyError(AuthError):
    """The token is valid but the matched rule is not satisfied."""

    def __init__(self, reason: Reason, detail: str = "", required: tuple[str, ...] = ()) -> None:
        super().__init__(reason, detail)
        #: scopes that would have satisfied the rule (for ``www-authenticate``)
        self.required = required
