"""The config file: YAML in, one typed, frozen model out.

Every key is declared once below, with its default, its unit and why. The model is
pydantic, chosen over msgspec because it reports *every* error of a file at once, each
at its location, and generates the JSON Schema (``extauthz config schema``) that editors
and the Helm chart's ``values.schema.json`` use; its import cost (~60 ms) is paid once,
at start-up.

Validation happens in two passes, both reporting every problem with its full key path
(``providers[0].keys[1].ca_file: no such file``):

1. the model: types, ranges, choices, unknown keys, files that must be readable;
2. cross-checks that need the whole file (duplicate names, header collisions, rules that
   name unknown providers, anonymous rules that also demand scopes).

Relative paths are resolved against the config file's directory. Errors are raised as
one :class:`ConfigErrors` (a :class:`~extauthz.errors.ConfigError` listing them all).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema

from extauthz.errors import ConfigError

API_VERSION = "extauthz/v1"

# -- algorithm policy --------------------------------------------------------------------

DEFAULT_KEY_ALGORITHMS = (
    "RSA-OAEP-256", "RSA-OAEP-384", "RSA-OAEP-512", "RSA-OAEP",
    "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW",
    "A128KW", "A256KW", "A256GCMKW", "dir",
)  # fmt: skip
#: key management algorithms that may be enabled explicitly (beyond the defaults)
OPTIONAL_KEY_ALGORITHMS = (
    "ECDH-ES+A192KW", "A192KW", "A128GCMKW", "A192GCMKW",
    "PBES2-HS256+A128KW", "PBES2-HS384+A192KW", "PBES2-HS512+A256KW",
)  # fmt: skip
DEFAULT_CONTENT_ALGORITHMS = (
    "A128GCM", "A192GCM", "A256GCM", "A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512",
)  # fmt: skip
DEFAULT_SIGNATURE_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
#: symmetric signatures: only with ``oct`` keys a provider lists, only when named explicitly
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
#: joserfc refuses PBES2 counts above this; a larger cap would silently have no effect
PBES2_MAX_ITERATIONS = 300_000
#: never accepted, whatever the config says
FORBIDDEN_ALGORITHMS = frozenset({"none", "RSA1_5"})

# -- value types ---------------------------------------------------------------------------

_TCHAR = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+.^_`|~-")
_COOKIE_CHARS = _TCHAR | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
#: headers Envoy or HTTP itself owns: never set by us, never a claim header
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _header_name(value: str) -> str:
    if not value or not set(value) <= _TCHAR:
        raise ValueError("must be a lower-case HTTP header name")
    if value in _RESERVED_HEADERS:
        raise ValueError(f"{value!r} cannot be set")
    return value


def _cookie_name(value: str) -> str:
    if not value or not set(value) <= _COOKIE_CHARS:
        raise ValueError("invalid cookie name")
    return value


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port")
    return value


def _single_line(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError("must be a single-line string")
    return value


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    """Relative paths are relative to the config file's directory."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty path")
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


def _readable_file(path: Path) -> Path:
    """A file the service must read at start: checked now, so the error has a key path."""
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"not readable: {path}")
    return path


def _pairs(value: Any) -> Any:
    """Accept ``[(k, v), ...]`` as well as a mapping (code builds configs that way)."""
    if isinstance(value, list | tuple):
        try:
            return dict(value)
        except (TypeError, ValueError):
            raise ValueError("must be a mapping") from None
    return value


def _upper(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.upper() for v in values)


def _lower(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.lower() for v in values)


Text = Annotated[StrictStr, Field(min_length=1)]
HeaderName = Annotated[
    StrictStr,
    AfterValidator(_header_name),
    WithJsonSchema({"type": "string", "pattern": r"^[a-z0-9!#$%&'*+.^_`|~-]+$"}),
]
Address = Annotated[StrictStr, AfterValidator(_address)]
PathValue = Annotated[Path, BeforeValidator(_resolve_path)]
ReadableFile = Annotated[Path, BeforeValidator(_resolve_path), AfterValidator(_readable_file)]
Seconds = Annotated[float, Field(strict=True, ge=0)]
Count = Annotated[StrictInt, Field(ge=0)]
Strings = tuple[Text, ...]


class _Model(BaseModel):
    """Shared settings: frozen, unknown keys refused, field docstrings become schema
    descriptions, code may build a model with attribute names (``path=``) as well as
    with the file's keys (``directory:``)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=False,
    )


@dataclass(frozen=True)
class _OneOf:
    """An entry of an algorithm allow-list: one of ``allowed`` (an enum in the schema),
    never a forbidden algorithm; the error names the offending entry."""

    allowed: tuple[str, ...]

    def check(self, name: str) -> str:
        if name in FORBIDDEN_ALGORITHMS or name.lower() == "none":
            raise ValueError(f"{name!r} is never accepted")
        if name not in self.allowed:
            raise ValueError(f"unknown or unsupported algorithm {name!r}")
        return name

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, _schema: Any, _handler: Any) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.allowed)}


_ALL_KEY_ALGORITHMS = DEFAULT_KEY_ALGORITHMS + OPTIONAL_KEY_ALGORITHMS
_ALL_SIGNATURE_ALGORITHMS = DEFAULT_SIGNATURE_ALGORITHMS + HMAC_ALGORITHMS
_NonEmpty = Field(min_length=1)
KeyAlgorithms = Annotated[tuple[Annotated[StrictStr, _OneOf(_ALL_KEY_ALGORITHMS)], ...], _NonEmpty]
ContentAlgorithms = Annotated[
    tuple[Annotated[StrictStr, _OneOf(DEFAULT_CONTENT_ALGORITHMS)], ...], _NonEmpty
]
SignatureAlgorithms = Annotated[
    tuple[Annotated[StrictStr, _OneOf(_ALL_SIGNATURE_ALGORITHMS)], ...], _NonEmpty
]


# -- key sources ------------------------------------------------------------------------


class DirectorySourceConfig(_Model):
    """Every ``*.json`` (JWK or JWKS) and ``*.pem`` file in a directory; follows the
    kubelet's ``..data`` symlink swap of mounted Secrets and ConfigMaps."""

    path: PathValue = Field(alias="directory")
    """The directory (relative to the config file)."""
    interval_seconds: Annotated[float, Field(strict=True, ge=0.05)] = 1.0
    """Seconds between checks for changes (a change is noticed within two intervals)."""


class KubernetesSourceConfig(_Model):
    """Secrets (or, for revocation lists, ConfigMaps) by name or label selector, watched
    live through the API server."""

    namespace: Text | None = None
    """Namespace of the objects; default: the pod's own namespace."""
    secrets: Strings = ()
    """Secret names (each watched on its own; a Role can name them in resourceNames)."""
    configmaps: Strings = ()
    """ConfigMap names (revocation lists only)."""
    label_selector: Text | None = None
    """Every object of ``kind`` matching this selector (one watch, any number)."""
    kind: Literal["secret", "configmap"] = "secret"
    """What ``label_selector`` selects. Revocation sources default to ``configmap``."""

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        # the file says `- kubernetes: {...}`; code may pass the inner mapping directly
        if isinstance(data, Mapping) and "kubernetes" in data:
            extra = sorted(str(k) for k in data if k != "kubernetes")
            if extra:
                raise ValueError(f"unknown key {extra[0]!r} next to kubernetes")
            return data["kubernetes"]
        return data

    @model_validator(mode="after")
    def _one_selection(self) -> KubernetesSourceConfig:
        named = bool(self.secrets) or bool(self.configmaps)
        if named == bool(self.label_selector):
            raise ValueError("needs exactly one of secrets, configmaps, label_selector")
        if self.secrets and self.configmaps:
            raise ValueError("needs exactly one of secrets, configmaps, label_selector")
        if self.configmaps and self.kind != "configmap":
            object.__setattr__(self, "kind", "configmap")
        if self.secrets and self.kind != "secret":
            raise ValueError("kind: must be secret when secrets are named")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The named objects (Secrets or ConfigMaps), empty in label mode."""
        return self.secrets or self.configmaps


class JwksSourceConfig(_Model):
    """A provider's published JWKS (verification keys only)."""

    uri: Text | None = Field(default=None, alias="jwks_uri")
    """The JWKS URL (``https://``); none: found by OIDC discovery from the issuer."""
    ca_file: ReadableFile | None = None
    """PEM bundle of CAs trusted for this URL, in addition to the system store."""
    allow_http: StrictBool = False
    """Permit an ``http://`` URL (tests, a sidecar on loopback); never for production."""
    refresh_min_seconds: Annotated[float, Field(strict=True, ge=1)] = 300.0
    """Floor of the IdP's Cache-Control max-age: not more often than every 5 minutes."""
    refresh_max_seconds: Annotated[float, Field(strict=True, ge=1)] = 3600.0
    """Ceiling of the cache lifetime: a key the IdP withdrew stops working within an hour."""
    refetch_interval_seconds: Annotated[float, Field(strict=True, ge=0.1)] = 10.0
    """At most one refetch for an unknown kid per this many seconds (bounds load on the IdP)."""
    timeout_seconds: Annotated[float, Field(strict=True, ge=0.1)] = 5.0
    """Connect and read timeout of one fetch."""

    @model_validator(mode="after")
    def _checks(self) -> JwksSourceConfig:
        if self.uri is not None and not (
            self.uri.startswith("https://") or (self.allow_http and self.uri.startswith("http://"))
        ):
            raise ValueError("jwks_uri: must be https:// (or allow_http: true)")
        if self.refresh_max_seconds < self.refresh_min_seconds:
            raise ValueError("refresh_max_seconds: must be at least refresh_min_seconds")
        return self


_KINDS = ("directory", "kubernetes", "jwks_uri")


def _source_kind(value: Any) -> str | None:
    if isinstance(value, DirectorySourceConfig):
        return "<directory>"
    if isinstance(value, KubernetesSourceConfig):
        return "kubernetes"
    if isinstance(value, JwksSourceConfig):
        return "<jwks_uri>"
    if isinstance(value, Mapping):
        kinds = [k for k in _KINDS if k in value]
        if len(kinds) == 1:
            return {"directory": "<directory>", "jwks_uri": "<jwks_uri>"}.get(kinds[0], kinds[0])
    return None


#: one ``keys:`` item; the tag in angle brackets is dropped from error paths
KeySourceConfig = Annotated[
    Annotated[DirectorySourceConfig, Tag("<directory>")]
    | Annotated[KubernetesSourceConfig, Tag("kubernetes")]
    | Annotated[JwksSourceConfig, Tag("<jwks_uri>")],
    Discriminator(
        _source_kind,
        custom_error_type="key_source",
        custom_error_message="must have exactly one of directory, kubernetes, jwks_uri",
    ),
]

#: one ``revocation.sources`` item: a directory or Kubernetes objects
RevocationSourceConfig = Annotated[
    Annotated[DirectorySourceConfig, Tag("<directory>")]
    | Annotated[KubernetesSourceConfig, Tag("kubernetes")],
    Discriminator(
        _source_kind,
        custom_error_type="revocation_source",
        custom_error_message="must be a mapping with exactly one of directory, kubernetes",
    ),
]


def _secrets_only(keys: tuple[Any, ...]) -> tuple[Any, ...]:
    for item in keys:
        if isinstance(item, KubernetesSourceConfig) and item.kind != "secret":
            raise ValueError("keys are read from Secrets only (not ConfigMaps)")
    return keys


KeySources = Annotated[tuple[KeySourceConfig, ...], AfterValidator(_secrets_only)]

#: one ``decryption.keys`` item: the service's private keys never come from a URL
DecryptionKeySourceConfig = Annotated[
    Annotated[DirectorySourceConfig, Tag("<directory>")]
    | Annotated[KubernetesSourceConfig, Tag("kubernetes")],
    Discriminator(
        _source_kind,
        custom_error_type="decryption_key_source",
        custom_error_message=(
            "must have exactly one of directory, kubernetes (jwks_uri is for providers)"
        ),
    ),
]
DecryptionKeySources = Annotated[
    tuple[DecryptionKeySourceConfig, ...], AfterValidator(_secrets_only)
]

# -- sections -----------------------------------------------------------------------------


class TlsConfig(_Model):
    """TLS (mTLS when ``client_ca_file`` is set) on both authorization listeners; the
    files are re-read when they change."""

    cert_file: ReadableFile
    key_file: ReadableFile
    client_ca_file: ReadableFile | None = None
    """Clients must present a certificate signed by one of these CAs."""


class ListenConfig(_Model):
    """Where the service listens (``host:port``)."""

    grpc: Address = "127.0.0.1:9001"
    """Envoy ext_authz v3 over gRPC, plus grpc.health.v1 and reflection; always on."""
    http_authz: Address | None = None
    """Envoy's HTTP authorization protocol (``http_service``); omit to disable."""
    http_authz_path_prefix: StrictStr = ""
    """The ``path_prefix`` set in Envoy's ``http_service``: removed before rules match."""
    http_authz_metadata: StrictBool = True
    """Send ``x-extauthz-*`` metadata headers over HTTP (off for gateways that cannot keep
    them from the client or the upstream)."""
    http_authz_header_timeout_seconds: Annotated[float, Field(strict=True, gt=0)] = 10.0
    """A client (Envoy) must send a whole request head within this time (slow clients)."""
    http_authz_idle_timeout_seconds: Annotated[float, Field(strict=True, gt=0)] = 900.0
    """An idle keep-alive connection is closed after this; keep it longer than the idle
    timeout of Envoy's cluster, so Envoy closes first and never reuses a closing one."""
    http: Address | None = None
    """``/metrics``, ``/healthz``, ``/readyz``; omit to disable."""
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _checks(self) -> ListenConfig:
        prefix = self.http_authz_path_prefix
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError("http_authz_path_prefix: must start with / and not end with /")
        used = [a for a in (self.grpc, self.http_authz, self.http) if a]
        ports = [a for a in used if not a.endswith(":0")]
        if len(set(ports)) != len(ports):
            raise ValueError("http_authz: grpc, http_authz and http need different addresses")
        return self


class DecryptionConfig(_Model):
    """The service's own private keys and the JWE algorithm policy."""

    keys: DecryptionKeySources = ()
    """Where the decryption keys come from."""
    key_algorithms: KeyAlgorithms = DEFAULT_KEY_ALGORITHMS
    """Allowed JWE key management algorithms."""
    content_algorithms: ContentAlgorithms = DEFAULT_CONTENT_ALGORITHMS
    """Allowed JWE content encryption algorithms."""
    required: StrictBool = False
    """True: plain signed tokens are refused (``encryption_required``)."""
    pbes2_max_iterations: Annotated[StrictInt, Field(ge=0, le=PBES2_MAX_ITERATIONS)] = 0
    """PBES2 is off unless enabled with this iteration cap (each iteration costs CPU)."""
    zip_max_bytes: Count = 0
    """``zip: DEF`` is off unless enabled with a cap on the inflated size, in bytes."""

    @model_validator(mode="after")
    def _checks(self) -> DecryptionConfig:
        if any(a.startswith("PBES2") for a in self.key_algorithms) and not (
            self.pbes2_max_iterations
        ):
            raise ValueError("key_algorithms: PBES2 needs pbes2_max_iterations (an iteration cap)")
        if self.required and not self.keys:
            raise ValueError("keys: decryption.required needs at least one key source")
        return self


_ClaimName = Annotated[StrictStr, Field(pattern=r"^[^.]+(\.[^.]+)*$")]


class ProviderConfig(_Model):
    """A trusted issuer: its keys, audiences and what its claims become upstream."""

    name: Text
    """Short name, used in logs, metrics and rules."""
    issuer: Text
    """The exact ``iss`` of its tokens."""
    audiences: Strings = ()
    """Accepted ``aud`` values (any one must match); empty: not checked."""
    keys: KeySources = ()
    """Its verification keys."""
    discovery: StrictBool = False
    """Also find the JWKS by OIDC discovery from ``issuer``."""
    algorithms: SignatureAlgorithms = DEFAULT_SIGNATURE_ALGORITHMS
    """Allowed JWS algorithms (HS* only with ``oct`` keys listed here)."""
    leeway_seconds: Count = 30
    """Clock skew tolerated on exp/nbf/iat; 30 s covers NTP-synced fleets."""
    required_claims: Strings = ("exp",)
    """Claims every token must carry."""
    claims_map: Annotated[dict[_ClaimName, HeaderName], BeforeValidator(_pairs)] = Field(
        default_factory=dict, alias="claims_to_headers"
    )
    """Claim (nested as ``a.b.c``) → upstream header name."""
    allow_unsigned_inner: Strings = ()
    """Decryption key ids under which this provider's unsigned inner tokens are accepted
    (symmetric key management only); empty: the inner token must be signed."""
    token_types: Annotated[Strings, AfterValidator(_lower)] = ()
    """Accepted ``typ`` of the signed token (e.g. ``[at+jwt, JWT]``, any case); empty: not
    checked, since many identity providers still send ``JWT``."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_unsigned(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("allow_unsigned_inner"), bool):
            raise ValueError(  # noqa: TRY004 - a value error with a key path for the user
                "allow_unsigned_inner: is now a list of decryption key ids (kid), not a flag"
            )
        return data

    @model_validator(mode="after")
    def _discovered(self) -> ProviderConfig:
        if self.discovery:
            object.__setattr__(self, "keys", (*self.keys, JwksSourceConfig(uri=None)))
        return self

    @property
    def claims_to_headers(self) -> tuple[tuple[str, str], ...]:
        """``(claim, header)`` pairs, in file order."""
        return tuple(self.claims_map.items())


class TokenSourceConfig(_Model):
    """Where a token may be found: a header (with an optional scheme prefix) or a cookie."""

    header: HeaderName | None = None
    prefix: StrictStr | None = None
    """Scheme prefix, e.g. ``"Bearer "`` (compared case-insensitively)."""
    cookie: Annotated[StrictStr, AfterValidator(_cookie_name)] | None = None

    @model_validator(mode="after")
    def _one(self) -> TokenSourceConfig:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("needs exactly one of header, cookie")
        if self.cookie is not None and self.prefix is not None:
            raise ValueError("prefix: applies to a header source only")
        return self


def _realm(value: str) -> str:
    if '"' in value or "\\" in value:
        raise ValueError("must not contain quotes or backslashes")
    return _single_line(value)


class TokenConfig(_Model):
    """Token discovery and input bounds."""

    sources: Annotated[tuple[TokenSourceConfig, ...], Field(min_length=1)] = (
        TokenSourceConfig(header="authorization", prefix="Bearer "),
    )
    """First match wins. Default: the authorization header, Bearer scheme."""
    max_bytes: Annotated[StrictInt, Field(ge=64)] = 16384
    """Checked before any parsing; 16 KiB holds any sane nested JWE."""
    realm: Annotated[Text, AfterValidator(_realm)] = "extauthz"
    """``realm`` of the ``www-authenticate`` challenge."""
    max_keys_tried: Annotated[StrictInt, Field(ge=1)] = 3
    """Keys tried for a token without ``kid``: small, so such a token costs little."""
    max_headers: Annotated[StrictInt, Field(ge=1)] = 256
    """Requests with more headers than this are denied before anything else."""
    max_header_bytes: Annotated[StrictInt, Field(ge=1024)] = 65536
    """Requests whose headers add up to more than this are denied before anything else."""


class UpstreamConfig(_Model):
    """What the upstream receives on allow."""

    authorization: Literal["keep", "remove", "inner"] = "keep"
    """The token's source header/cookie: kept, removed, or (``inner``) replaced by the
    inner signed JWT as ``authorization: Bearer``."""
    claims_header: HeaderName | None = None
    """Header carrying base64url of the validated claims JSON; none: not sent."""
    strip_header_prefixes: tuple[HeaderName, ...] = ()
    """Client headers with these prefixes never reach the upstream (e.g. ``[x-auth-]``)."""
    max_header_value_bytes: Annotated[StrictInt, Field(ge=1)] = 8192
    """Claim header values larger than this are dropped (and logged)."""


def _claim_values(value: Any) -> Any:
    scalar = (str, int, float)  # bool is an int
    if isinstance(value, scalar):
        return value
    if isinstance(value, list) and value and all(isinstance(v, scalar) for v in value):
        return value
    raise ValueError("must be a scalar or a non-empty list of scalars")


_SCALAR_SCHEMA: dict[str, Any] = {"type": ["string", "number", "integer", "boolean"]}
RequiredClaimValues = Annotated[
    Any,
    AfterValidator(_claim_values),
    WithJsonSchema({"anyOf": [
        _SCALAR_SCHEMA, {"type": "array", "items": _SCALAR_SCHEMA, "minItems": 1},
    ]}),
]  # fmt: skip


class RuleConfig(_Model):
    """A route rule; the first match wins, no match = any valid token."""

    name: Text
    path_prefix: Text | None = None
    path_exact: Text | None = Field(
        default=None, validation_alias=AliasChoices("path", "path_exact")
    )
    """Exactly this path (``path``; ``path_exact`` is accepted as well)."""
    path_regex: Text | None = None
    """RE2 syntax (linear time), matched against the whole normalized path."""
    methods: Annotated[Strings, AfterValidator(_upper)] = ()
    """Empty: any method. GET also covers HEAD."""
    anonymous: StrictBool = False
    """The token is optional here (missing: allow without claim headers)."""
    require_scopes: Strings = ()
    """All of these scopes (from ``scope`` or ``scp``)."""
    claims_required: dict[Text, RequiredClaimValues] = Field(
        default_factory=dict, alias="require_claims"
    )
    """Each claim must equal (or, for an array claim, contain) any listed value, compared
    as typed JSON values."""
    providers: Strings = ()
    """Only tokens of these providers; empty: any provider."""

    @model_validator(mode="before")
    @classmethod
    def _pairs_in(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("require_claims"), list | tuple):
            data = dict(data)
            data["require_claims"] = {k: list(v) for k, v in data["require_claims"]}
        return data

    @model_validator(mode="after")
    def _checks(self) -> RuleConfig:
        if self.path_regex is not None:
            import re2  # type: ignore[import-untyped]

            try:
                re2.compile(self.path_regex)
            except re2.error as exc:
                raise ValueError(f"path_regex: invalid RE2 pattern ({exc})") from None
        if self.anonymous and (self.require_scopes or self.claims_required):
            raise ValueError("anonymous: a rule cannot be anonymous and require scopes or claims")
        return self

    @property
    def require_claims(self) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        """``(claim, accepted values)`` pairs."""
        return tuple(
            (k, tuple(v) if isinstance(v, list) else (v,)) for k, v in self.claims_required.items()
        )


class PathMatchingConfig(_Model):
    """How rule paths are compared."""

    case: Literal["both", "sensitive"] = "both"
    """``both``: a request must satisfy the rule chosen by the path as written AND by the
    lower-cased path (case-insensitive upstreams serve ``/ADMIN`` as ``/admin``);
    ``sensitive``: only as written, for upstreams that are all case-sensitive."""


class ResponseConfig(_Model):
    """Headers added to client responses, allow and deny (over gRPC only where the
    application did not set them; over HTTP Envoy appends them)."""

    headers_map: dict[HeaderName, Annotated[StrictStr, AfterValidator(_single_line)]] = Field(
        default_factory=dict, alias="headers"
    )

    @model_validator(mode="before")
    @classmethod
    def _pairs_in(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("headers"), list | tuple):
            return {**data, "headers": _pairs(data["headers"])}
        return data

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """``(name, value)`` pairs."""
        return tuple(self.headers_map.items())


class CacheConfig(_Model):
    """The verified-token cache."""

    max_entries: Count = 10000
    """0 disables the cache; 10k entries of ~1 KiB each stay well under 20 MB."""
    max_ttl_seconds: Annotated[StrictInt, Field(ge=1)] = 300
    """An entry never outlives the token's exp, nor this many seconds."""


class LoggingConfig(_Model):
    """Structured logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    decisions: Literal["all", "deny", "sample"] = "all"
    """Decision lines: ``all``, only denies, or all denies and a sample of allows."""
    allow_sample_rate: Annotated[float, Field(strict=True, ge=0, le=1)] = 0.01
    """With ``decisions: sample``: the fraction of allows logged."""


class ShutdownConfig(_Model):
    """SIGTERM behaviour."""

    drain_seconds: Seconds = 3.0
    """Keep answering this long after turning not-ready, so Envoy and Kubernetes stop
    sending."""
    grace_seconds: Seconds = 10.0
    """Then finish in-flight Checks within this many seconds."""


class ServerConfig(_Model):
    """Process model."""

    workers: Annotated[StrictInt, Field(ge=1)] = 1
    """Processes sharing the listeners with SO_REUSEPORT (each with its own key sources)."""
    threads: Annotated[StrictInt, Field(ge=1)] = 8
    """Check threads per process for tokens that must be verified (and the gRPC handler
    threads of ``grpc_server: grpcio``); the HTTP listener has as many."""
    grpc_server: Literal["core", "grpcio"] = "core"
    """The gRPC listener's call handling: ``core``, extauthz's own call loop on gRPC core
    (cached Checks answered on the loop, about half the CPU per cached Check);
    ``grpcio``, grpcio's standard sync server. Both serve the same methods, ports, TLS
    and options; ``core`` falls back to ``grpcio`` when the installed grpcio lacks what
    its loop uses (a warning says so)."""
    liveness_interval_seconds: Annotated[float, Field(strict=True, ge=0.05)] = 5.0
    """Seconds between self-checks of the authorization listeners (also the deadline of
    one); ``/healthz`` fails after two failed rounds in a row."""


class RevocationConfig(_Model):
    """Revoked tokens, watched like keys (entries by jti, by token hash, by subject)."""

    sources: tuple[RevocationSourceConfig, ...] = ()
    """Where the lists come from; each object/file holds ``{"revoked": [...]}``."""
    max_entries: Annotated[StrictInt, Field(ge=1)] = 100000
    """Bound on the total number of entries; a larger list is a failed update."""

    @model_validator(mode="before")
    @classmethod
    def _configmaps_by_default(cls, data: Any) -> Any:
        # revocation lists live in ConfigMaps unless a source says otherwise
        if not isinstance(data, Mapping) or not isinstance(data.get("sources"), list):
            return data
        sources = []
        for item in data["sources"]:
            inner = item.get("kubernetes") if isinstance(item, Mapping) else None
            if isinstance(inner, Mapping) and "kind" not in inner and "secrets" not in inner:
                item = {**item, "kubernetes": {**inner, "kind": "configmap"}}
            sources.append(item)
        return {**data, "sources": sources}


class Config(_Model):
    """The whole validated configuration."""

    api_version: Literal["extauthz/v1"] = Field(default="extauthz/v1", alias="apiVersion")
    listen: ListenConfig = Field(default_factory=ListenConfig)
    decryption: DecryptionConfig = Field(default_factory=DecryptionConfig)
    providers: tuple[ProviderConfig, ...] = ()
    """Trusted issuers (at least one)."""
    token: TokenConfig = Field(default_factory=TokenConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    path_matching: PathMatchingConfig = Field(default_factory=PathMatchingConfig)
    rules: tuple[RuleConfig, ...] = ()
    """Route rules; first match wins; no match = any valid token."""
    response: ResponseConfig = Field(default_factory=ResponseConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    revocation: RevocationConfig = Field(default_factory=RevocationConfig)

    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _drop_nulls(data)

    @property
    def source(self) -> Path | None:
        """The file this config was read from (workers re-read it)."""
        return self._source


#: mappings whose null values are errors, never "use the default": a requirement or a
#: header mapping that vanished silently would weaken the policy
_KEEP_NULLS = frozenset({"require_claims", "claims_to_headers", "headers"})


def _drop_nulls(data: Any, keep: bool = False) -> Any:
    """A key written with nothing after it (YAML null, e.g. a list whose items are all
    commented out) means "the default", as if it were omitted; inside the mappings of
    ``_KEEP_NULLS`` a null value stays, and is refused."""
    if isinstance(data, Mapping):
        return {
            k: _drop_nulls(v, keep=k in _KEEP_NULLS)
            for k, v in data.items()
            if v is not None or keep
        }
    if isinstance(data, list):
        return [_drop_nulls(v) for v in data]
    return data


# -- errors --------------------------------------------------------------------------


class ConfigErrors(ConfigError):
    """Every problem found in one config, each a :class:`ConfigError` with its path."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = tuple(errors)
        first = self.errors[0]
        super().__init__(first.path, first.message)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __iter__(self) -> Iterator[ConfigError]:
        return iter(self.errors)


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("<") or part.startswith("function-"):
            continue  # union tags and validator names are not keys of the file
        else:
            out += f".{part}" if out else part
    return out


def _from_pydantic(exc: ValidationError) -> list[ConfigError]:
    errors = []
    seen = set()
    for error in exc.errors(include_url=False, include_input=False):
        path = _key_path(error["loc"])
        kind = error["type"]
        message = _MESSAGES.get(kind) or str(error["msg"])
        if kind == "value_error":
            message = str(error["ctx"]["error"]) if "ctx" in error else message
            # a model-level check names its key first: "keys: ..." -> <path>.keys
            head, sep, rest = message.partition(": ")
            if sep and head.isidentifier():
                path, message = (f"{path}.{head}" if path else head), rest
        if (path, message) not in seen:
            seen.add((path, message))
            errors.append(ConfigError(path or "(root)", message))
    return errors


def _unique(values: Sequence[str], where: str, what: str) -> Iterator[ConfigError]:
    for index, value in enumerate(values):
        if values.index(value) != index:
            yield ConfigError(where.format(index), f"duplicate {what} {value!r}")


def _cross_checks(config: Config) -> list[ConfigError]:
    """Checks that need the whole file; every failure is collected."""
    errors: list[ConfigError] = []

    def add(where: str, message: str) -> None:
        errors.append(ConfigError(where, message))

    if not config.providers:
        errors.append(ConfigError("providers", "at least one provider is required"))
    errors += _unique([p.name for p in config.providers], "providers[{}].name", "name")
    errors += _unique([p.issuer for p in config.providers], "providers[{}].issuer", "issuer")
    errors += _unique([r.name for r in config.rules], "rules[{}].name", "rule name")
    provider_names = {p.name for p in config.providers}
    for index, rule in enumerate(config.rules):
        for j, name in enumerate(rule.providers):
            if name not in provider_names:
                errors.append(
                    ConfigError(f"rules[{index}].providers[{j}]", f"unknown provider {name!r}")
                )
    credentials = {"authorization", "cookie"} | {s.header for s in config.token.sources if s.header}
    claims_header = config.upstream.claims_header
    if claims_header in credentials:
        add("upstream.claims_header", f"{claims_header!r} carries credentials")
    for index, provider in enumerate(config.providers):
        if not provider.keys:
            add(f"providers[{index}].keys", "a provider needs at least one key source")
        headers = [h for _, h in provider.claims_to_headers]
        for position, (claim, header) in enumerate(provider.claims_to_headers):
            where = f"providers[{index}].claims_to_headers.{claim}"
            if header in credentials:
                add(where, f"{header!r} carries credentials; pick another header")
            elif header == claims_header:
                errors.append(ConfigError(where, f"{header!r} is also upstream.claims_header"))
            elif header in headers[:position]:
                add(where, f"{header!r}: two claims map to the same header")
        if provider.allow_unsigned_inner and not config.decryption.keys:
            errors.append(ConfigError(
                f"providers[{index}].allow_unsigned_inner",
                "names decryption keys, but decryption.keys is empty",
            ))  # fmt: skip
    return errors


# -- entry points ------------------------------------------------------------------------


def parse(data: Any, base_dir: Path, source: Path | None = None) -> Config:
    """Validate a parsed YAML document into a :class:`Config`; raise
    :class:`ConfigErrors` listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigErrors([ConfigError("(root)", "must be a mapping")])
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigErrors(_from_pydantic(exc)) from None
    errors = _cross_checks(config)
    if errors:
        raise ConfigErrors(errors)
    config._source = source
    return config


class ConfigUnreadable(ConfigError):
    """The config file cannot be read at all (missing, no permission, not UTF-8)."""


def load(path: Path) -> Config:
    """Read and validate the config file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigUnreadable("", f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigUnreadable("", f"cannot read {path}: not UTF-8") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"invalid YAML{where}") from exc
    return parse(data, path.resolve().parent, source=path)


def _close_pattern_maps(node: Any) -> None:
    """A mapping whose keys must match a pattern refuses the keys that do not."""
    if isinstance(node, dict):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_pattern_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_maps(value)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, generated from the model."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    defs = schema["$defs"]
    # the second spelling of an exact path, accepted by the model, is valid in editors too
    rule = defs["RuleConfig"]["properties"]
    rule["path_exact"] = {**rule["path"], "description": "Same as path.", "deprecated": True}
    # the file writes a Kubernetes source as `kubernetes: {...}` (the model unwraps it)
    defs["KubernetesObjects"] = defs.pop("KubernetesSourceConfig")
    defs["KubernetesSourceConfig"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["kubernetes"],
        "properties": {"kubernetes": {"$ref": "#/$defs/KubernetesObjects"}},
        "description": "Kubernetes objects watched live: `kubernetes: {namespace, secrets | "
        "configmaps | label_selector, kind}`.",
    }
    _close_pattern_maps(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "extauthz configuration (apiVersion extauthz/v1)",
    }
