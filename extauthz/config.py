"""The config file (SPEC §5): YAML in, frozen dataclasses out.

Every error names the full key path (``providers[0].audiences``). Unknown keys are
errors too: a typo in a security setting must never be silently ignored. Relative
paths are resolved against the config file's directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from extauthz.errors import ConfigError

API_VERSION = "extauthz/v1"

# -- algorithm policy (SPEC §2) ------------------------------------------------------

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

SourceKind = Literal["directory", "kubernetes", "jwks_uri"]


@dataclass(frozen=True, slots=True)
class DirectorySourceConfig:
    """Every ``*.json`` / ``*.pem`` file in ``path``."""

    path: Path
    #: seconds between checks; SPEC promises a change is noticed within 2 s
    interval_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class KubernetesSourceConfig:
    """Secrets by name or by label selector, watched live."""

    namespace: str | None
    secrets: tuple[str, ...] = ()
    label_selector: str | None = None


@dataclass(frozen=True, slots=True)
class JwksSourceConfig:
    """A provider's published JWKS (verification keys only)."""

    uri: str | None  # None: found by OIDC discovery from the provider's issuer
    ca_file: Path | None = None
    allow_http: bool = False
    #: clamp of the IdP's Cache-Control max-age: not more often than 5 min, at least daily
    refresh_min_seconds: float = 300.0
    refresh_max_seconds: float = 86400.0
    #: at most one refetch for an unknown kid per this many seconds (DoS bound on the IdP)
    refetch_interval_seconds: float = 10.0
    #: connect and read timeout of one fetch
    timeout_seconds: float = 5.0


KeySourceConfig = DirectorySourceConfig | KubernetesSourceConfig | JwksSourceConfig


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS (and mTLS when ``client_ca_file`` is set) on the gRPC listener."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Listen addresses, ``host:port``."""

    grpc: str = "127.0.0.1:9001"
    http: str | None = None
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class DecryptionConfig:
    """The service's own private keys and the JWE algorithm policy."""

    keys: tuple[KeySourceConfig, ...] = ()
    key_algorithms: tuple[str, ...] = DEFAULT_KEY_ALGORITHMS
    content_algorithms: tuple[str, ...] = DEFAULT_CONTENT_ALGORITHMS
    #: true: plain JWS tokens are rejected with ``encryption_required``
    required: bool = False
    #: PBES2 is off unless enabled here with an iteration cap (each iteration costs CPU)
    pbes2_max_iterations: int = 0
    #: ``zip: DEF`` is off unless enabled with a cap on the inflated size, in bytes
    zip_max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """A trusted issuer: its keys, audiences and what its claims become upstream."""

    name: str
    issuer: str
    audiences: tuple[str, ...] = ()
    keys: tuple[KeySourceConfig, ...] = ()
    discovery: bool = False
    algorithms: tuple[str, ...] = DEFAULT_SIGNATURE_ALGORITHMS
    #: seconds of clock skew tolerated on exp/nbf/iat; 30 s covers NTP-synced fleets
    leeway_seconds: int = 30
    required_claims: tuple[str, ...] = ("exp",)
    claims_to_headers: tuple[tuple[str, str], ...] = ()
    #: accept an unsigned inner token, only under symmetric (dir / A*KW) key management
    allow_unsigned_inner: bool = False


@dataclass(frozen=True, slots=True)
class TokenSourceConfig:
    """Where a token may be found: a header (with an optional scheme prefix) or a cookie."""

    header: str | None = None
    prefix: str | None = None
    cookie: str | None = None


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """Token discovery and input bounds."""

    sources: tuple[TokenSourceConfig, ...] = (
        TokenSourceConfig(header="authorization", prefix="Bearer "),
    )
    #: checked before any parsing; 16 KiB holds any sane nested JWE
    max_bytes: int = 16384
    realm: str = "extauthz"
    #: keys tried for a token without ``kid``; small so a kid-less token costs little
    max_keys_tried: int = 3
    #: bound on the number and total size of request headers we look at
    max_headers: int = 256
    max_header_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """What the upstream receives on allow."""

    authorization: Literal["keep", "remove", "inner"] = "keep"
    claims_header: str | None = None
    strip_header_prefixes: tuple[str, ...] = ()
    #: claim header values larger than this are dropped (and logged)
    max_header_value_bytes: int = 8192


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """A route rule; first match wins."""

    name: str
    path_prefix: str | None = None
    path_exact: str | None = None
    path_regex: str | None = None
    methods: tuple[str, ...] = ()
    anonymous: bool = False
    require_scopes: tuple[str, ...] = ()
    require_claims: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    providers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResponseConfig:
    """Headers added to every client response, allow and deny."""

    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The verified-token cache."""

    #: 0 disables the cache; 10k entries of ~1 KiB each stay well under 20 MB
    max_entries: int = 10000
    #: an entry never outlives the token's exp, nor this many seconds
    max_ttl_seconds: int = 300


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Structured logging."""

    level: str = "info"
    format: Literal["json", "console"] = "json"
    #: ``all`` | ``deny`` (only denies) | ``sample`` (all denies, allows at ``allow_sample_rate``)
    decisions: Literal["all", "deny", "sample"] = "all"
    allow_sample_rate: float = 0.01


@dataclass(frozen=True, slots=True)
class ShutdownConfig:
    """SIGTERM behaviour (SPEC §7)."""

    #: keep answering this long after NOT_SERVING so Envoy/Kubernetes stop sending
    drain_seconds: float = 3.0
    #: then finish in-flight Checks within this many seconds
    grace_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Process model."""

    #: processes sharing the gRPC port with SO_REUSEPORT (each with its own key sources)
    workers: int = 1
    #: gRPC handler threads per process
    threads: int = 8


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    listen: ListenConfig = field(default_factory=ListenConfig)
    decryption: DecryptionConfig = field(default_factory=DecryptionConfig)
    providers: tuple[ProviderConfig, ...] = ()
    token: TokenConfig = field(default_factory=TokenConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    rules: tuple[RuleConfig, ...] = ()
    response: ResponseConfig = field(default_factory=ResponseConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    source: Path | None = None


# -- reading ---------------------------------------------------------------------------

T = TypeVar("T")

_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class _Node:
    """A mapping in the YAML tree, with its key path and a record of keys read."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, Mapping):
            raise ConfigError(path or "(root)", "must be a mapping")
        self.value = value
        self.path = path
        self._seen: set[str] = set()

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return self.value.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.value

    def node(self, key: str) -> _Node:
        return _Node(self.get(key, {}) or {}, self.sub(key))

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self.get(key, default)
        if value is None:
            if required:
                raise ConfigError(self.sub(key), "is required")
            return None
        if not isinstance(value, str) or (required and not value):
            raise ConfigError(self.sub(key), "must be a non-empty string")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.sub(key), "must be true or false")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0, integer: bool = False) -> Any:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.sub(key), "must be a number")
        if integer and not isinstance(value, int):
            raise ConfigError(self.sub(key), "must be an integer")
        if value < minimum:
            raise ConfigError(self.sub(key), f"must be at least {minimum}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            raise ConfigError(self.sub(key), "must be a list of strings")
        if not isinstance(value, list):
            raise ConfigError(self.sub(key), "must be a list")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{self.sub(key)}[{index}]", "must be a non-empty string")
        return tuple(value)

    def items(self, key: str) -> list[tuple[str, Any]]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(self.sub(key), "must be a list")
        return [(f"{self.sub(key)}[{i}]", item) for i, item in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(map(str, self.value)) - self._seen)
        if unknown:
            raise ConfigError(self.sub(unknown[0]), "unknown key")


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _address(node: _Node, key: str, default: str | None) -> str | None:
    value: str | None = node.text(key, default)
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(node.sub(key), "must be host:port")
    return value


def _algorithms(
    node: _Node, key: str, default: tuple[str, ...], allowed: tuple[str, ...]
) -> tuple[str, ...]:
    values = node.strings(key, default)
    for index, name in enumerate(values):
        where = f"{node.sub(key)}[{index}]"
        if name in FORBIDDEN_ALGORITHMS or name.lower() == "none":
            raise ConfigError(where, f"{name!r} is never accepted")
        if name not in allowed:
            raise ConfigError(where, f"unknown or unsupported algorithm {name!r}")
    if not values:
        raise ConfigError(node.sub(key), "must not be empty")
    return values


def _key_sources(node: _Node, key: str, base: Path, *, verification: bool) -> tuple[Any, ...]:
    out: list[KeySourceConfig] = []
    for where, raw in node.items(key):
        item = _Node(raw, where)
        kinds = [k for k in ("directory", "kubernetes", "jwks_uri") if item.has(k)]
        if len(kinds) != 1:
            raise ConfigError(where, "must have exactly one of directory, kubernetes, jwks_uri")
        kind = kinds[0]
        if kind == "directory":
            out.append(
                DirectorySourceConfig(
                    path=_path(base, item.text("directory", required=True)),
                    interval_seconds=item.number("interval_seconds", 1.0, minimum=0.05),
                )
            )
        elif kind == "kubernetes":
            k8s = item.node("kubernetes")
            secrets = k8s.strings("secrets")
            selector = k8s.text("label_selector")
            if bool(secrets) == bool(selector):
                raise ConfigError(k8s.path, "needs exactly one of secrets, label_selector")
            out.append(
                KubernetesSourceConfig(
                    namespace=k8s.text("namespace"), secrets=secrets, label_selector=selector
                )
            )
            k8s.done()
        else:
            if not verification:
                raise ConfigError(item.sub("jwks_uri"), "only for providers' verification keys")
            uri = item.text("jwks_uri", required=True)
            allow_http = item.flag("allow_http", False)
            if not (uri.startswith("https://") or (allow_http and uri.startswith("http://"))):
                raise ConfigError(item.sub("jwks_uri"), "must be https:// (or allow_http: true)")
            ca = item.text("ca_file")
            if ca and not _path(base, ca).is_file():
                raise ConfigError(item.sub("ca_file"), f"no such file: {_path(base, ca)}")
            out.append(
                JwksSourceConfig(
                    uri=uri,
                    ca_file=_path(base, ca) if ca else None,
                    allow_http=allow_http,
                    refresh_min_seconds=item.number("refresh_min_seconds", 300.0, minimum=1),
                    refresh_max_seconds=item.number("refresh_max_seconds", 86400.0, minimum=1),
                    refetch_interval_seconds=item.number(
                        "refetch_interval_seconds", 10.0, minimum=0.1
                    ),
                    timeout_seconds=item.number("timeout_seconds", 5.0, minimum=0.1),
                )
            )
        item.done()
        last = out[-1] if out else None
        if isinstance(last, JwksSourceConfig) and (
            last.refresh_max_seconds < last.refresh_min_seconds
        ):
            raise ConfigError(
                item.sub("refresh_max_seconds"), "must be at least refresh_min_seconds"
            )
    return tuple(out)


def _header_name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        raise ConfigError(where, "must be a lower-case HTTP header name")
    if value.startswith(":") or value in ("host", "content-length", "transfer-encoding"):
        raise ConfigError(where, f"{value!r} cannot be set")
    return value


def _provider(where: str, raw: Any, base: Path) -> ProviderConfig:
    node = _Node(raw, where)
    name = node.text("name", required=True)
    issuer = node.text("issuer", required=True)
    discovery = node.flag("discovery", False)
    keys = _key_sources(node, "keys", base, verification=True)
    if discovery:
        keys = (*keys, JwksSourceConfig(uri=None))
    if not keys:
        raise ConfigError(node.sub("keys"), "a provider needs at least one key source")
    algorithms = _algorithms(
        node, "algorithms", DEFAULT_SIGNATURE_ALGORITHMS,
        DEFAULT_SIGNATURE_ALGORITHMS + HMAC_ALGORITHMS,
    )  # fmt: skip
    headers: list[tuple[str, str]] = []
    mapping = node.get("claims_to_headers") or {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(node.sub("claims_to_headers"), "must be a mapping of claim: header")
    for claim, header in mapping.items():
        sub = f"{node.sub('claims_to_headers')}.{claim}"
        if not isinstance(claim, str) or not claim or any(p == "" for p in claim.split(".")):
            raise ConfigError(sub, "claim names must be non-empty (nested as a.b.c)")
        headers.append((claim, _header_name(sub, header)))
    names = [h for _, h in headers]
    if len(set(names)) != len(names):
        raise ConfigError(node.sub("claims_to_headers"), "two claims map to the same header")
    provider = ProviderConfig(
        name=name,
        issuer=issuer,
        audiences=node.strings("audiences"),
        keys=keys,
        discovery=discovery,
        algorithms=algorithms,
        leeway_seconds=node.number("leeway_seconds", 30, integer=True),
        required_claims=node.strings("required_claims", ("exp",)),
        claims_to_headers=tuple(headers),
        allow_unsigned_inner=node.flag("allow_unsigned_inner", False),
    )
    node.done()
    return provider


def _rule(where: str, raw: Any) -> RuleConfig:
    node = _Node(raw, where)
    name = node.text("name", required=True)
    regex = node.text("path_regex")
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConfigError(node.sub("path_regex"), f"invalid regex: {exc}") from None
    claims: list[tuple[str, tuple[Any, ...]]] = []
    raw_claims = node.get("require_claims") or {}
    if not isinstance(raw_claims, Mapping):
        raise ConfigError(node.sub("require_claims"), "must be a mapping of claim: [values]")
    for claim, values in raw_claims.items():
        sub = f"{node.sub('require_claims')}.{claim}"
        if not isinstance(values, list):
            values = [values]
        if not values or any(isinstance(v, dict | list) or v is None for v in values):
            raise ConfigError(sub, "must be a scalar or a non-empty list of scalars")
        claims.append((str(claim), tuple(values)))
    methods = tuple(m.upper() for m in node.strings("methods"))
    rule = RuleConfig(
        name=name,
        path_prefix=node.text("path_prefix"),
        path_exact=node.text("path_exact"),
        path_regex=regex,
        methods=methods,
        anonymous=node.flag("anonymous", False),
        require_scopes=node.strings("require_scopes"),
        require_claims=tuple(claims),
        providers=node.strings("providers"),
    )
    node.done()
    return rule


def _token(node: _Node) -> TokenConfig:
    sources: list[TokenSourceConfig] = []
    for where, raw in node.items("sources"):
        item = _Node(raw, where)
        if item.has("header") == item.has("cookie"):
            raise ConfigError(where, "needs exactly one of header, cookie")
        if item.has("header"):
            header = _header_name(item.sub("header"), item.get("header"))
            prefix = item.text("prefix")
            sources.append(TokenSourceConfig(header=header, prefix=prefix))
        else:
            cookie = item.text("cookie", required=True)
            if not _COOKIE_NAME.match(cookie):
                raise ConfigError(item.sub("cookie"), "invalid cookie name")
            sources.append(TokenSourceConfig(cookie=cookie))
        item.done()
    default = TokenConfig()
    token = TokenConfig(
        sources=tuple(sources) or default.sources,
        max_bytes=node.number("max_bytes", default.max_bytes, minimum=64, integer=True),
        realm=node.text("realm", default.realm),
        max_keys_tried=node.number(
            "max_keys_tried", default.max_keys_tried, minimum=1, integer=True
        ),
        max_headers=node.number("max_headers", default.max_headers, minimum=1, integer=True),
        max_header_bytes=node.number(
            "max_header_bytes", default.max_header_bytes, minimum=1024, integer=True
        ),
    )
    if '"' in token.realm or "\\" in token.realm:
        raise ConfigError(node.sub("realm"), "must not contain quotes or backslashes")
    node.done()
    return token


def _choice(node: _Node, key: str, default: str, choices: tuple[str, ...]) -> Any:
    value = node.text(key, default)
    if value not in choices:
        raise ConfigError(node.sub(key), f"must be one of {', '.join(choices)}")
    return value


def _section(root: _Node, key: str, build: Callable[[_Node], T]) -> T:
    node = root.node(key)
    result = build(node)
    node.done()
    return result


def _check_header_names(config: Config) -> None:
    """Headers we set upstream never collide with credentials or with each other:
    a header both set and removed, or set twice, is ambiguous for Envoy (SPEC §9)."""
    credentials = {"authorization", "cookie"} | {
        s.header for s in config.token.sources if s.header
    }
    claims_header = config.upstream.claims_header
    for index, provider in enumerate(config.providers):
        for claim, header in provider.claims_to_headers:
            where = f"providers[{index}].claims_to_headers.{claim}"
            if header in credentials:
                raise ConfigError(where, f"{header!r} carries credentials; pick another header")
            if header == claims_header:
                raise ConfigError("upstream.claims_header", f"{header!r} is also a claim header")
    if claims_header in credentials:
        raise ConfigError("upstream.claims_header", f"{claims_header!r} carries credentials")


def parse(data: Any, base_dir: Path, source: Path | None = None) -> Config:
    """Validate a parsed YAML document into a :class:`Config`."""
    root = _Node(data if data is not None else {}, "")
    version = root.get("apiVersion", API_VERSION)
    if version != API_VERSION:
        raise ConfigError("apiVersion", f"must be {API_VERSION}")

    def listen(node: _Node) -> ListenConfig:
        tls = None
        if node.has("tls") and node.get("tls") is not None:
            t = node.node("tls")
            client_ca = t.text("client_ca_file")
            tls = TlsConfig(
                cert_file=_path(base_dir, t.text("cert_file", required=True)),
                key_file=_path(base_dir, t.text("key_file", required=True)),
                client_ca_file=_path(base_dir, client_ca) if client_ca else None,
            )
            t.done()
        grpc = _address(node, "grpc", "127.0.0.1:9001")
        assert grpc is not None
        return ListenConfig(grpc=grpc, http=_address(node, "http", None), tls=tls)

    def decryption(node: _Node) -> DecryptionConfig:
        default = DecryptionConfig()
        pbes2 = node.number("pbes2_max_iterations", 0, integer=True)
        if pbes2 > PBES2_MAX_ITERATIONS:
            raise ConfigError(
                node.sub("pbes2_max_iterations"),
                f"must be at most {PBES2_MAX_ITERATIONS} (the largest count joserfc decrypts)",
            )
        allowed = DEFAULT_KEY_ALGORITHMS + OPTIONAL_KEY_ALGORITHMS
        key_algs = _algorithms(node, "key_algorithms", default.key_algorithms, allowed)
        if any(a.startswith("PBES2") for a in key_algs) and pbes2 <= 0:
            raise ConfigError(
                node.sub("key_algorithms"), "PBES2 needs pbes2_max_iterations (an iteration cap)"
            )
        return DecryptionConfig(
            keys=_key_sources(node, "keys", base_dir, verification=False),
            key_algorithms=key_algs,
            content_algorithms=_algorithms(
                node, "content_algorithms", default.content_algorithms, DEFAULT_CONTENT_ALGORITHMS
            ),
            required=node.flag("required", False),
            pbes2_max_iterations=pbes2,
            zip_max_bytes=node.number("zip_max_bytes", 0, integer=True),
        )

    def upstream(node: _Node) -> UpstreamConfig:
        claims_header = node.get("claims_header")
        return UpstreamConfig(
            authorization=_choice(node, "authorization", "keep", ("keep", "remove", "inner")),
            claims_header=(
                _header_name(node.sub("claims_header"), claims_header) if claims_header else None
            ),
            strip_header_prefixes=tuple(
                _header_name(f"{node.sub('strip_header_prefixes')}[{i}]", p)
                for i, p in enumerate(node.strings("strip_header_prefixes"))
            ),
            max_header_value_bytes=node.number(
                "max_header_value_bytes", 8192, minimum=1, integer=True
            ),
        )

    def response(node: _Node) -> ResponseConfig:
        headers = node.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ConfigError(node.sub("headers"), "must be a mapping of header: value")
        out = []
        for name, value in headers.items():
            sub = f"{node.sub('headers')}.{name}"
            _header_name(sub, name)
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ConfigError(sub, "must be a single-line string")
            out.append((name, value))
        return ResponseConfig(headers=tuple(out))

    def cache(node: _Node) -> CacheConfig:
        return CacheConfig(
            max_entries=node.number("max_entries", 10000, integer=True),
            max_ttl_seconds=node.number("max_ttl_seconds", 300, minimum=1, integer=True),
        )

    def logging(node: _Node) -> LoggingConfig:
        return LoggingConfig(
            level=_choice(node, "level", "info", ("debug", "info", "warning", "error")),
            format=_choice(node, "format", "json", ("json", "console")),
            decisions=_choice(node, "decisions", "all", ("all", "deny", "sample")),
            allow_sample_rate=node.number("allow_sample_rate", 0.01),
        )

    def shutdown(node: _Node) -> ShutdownConfig:
        return ShutdownConfig(
            drain_seconds=node.number("drain_seconds", 3.0),
            grace_seconds=node.number("grace_seconds", 10.0),
        )

    def server(node: _Node) -> ServerConfig:
        return ServerConfig(
            workers=node.number("workers", 1, minimum=1, integer=True),
            threads=node.number("threads", 8, minimum=1, integer=True),
        )

    providers = tuple(_provider(w, raw, base_dir) for w, raw in root.items("providers"))
    for attr in ("name", "issuer"):
        values = [getattr(p, attr) for p in providers]
        for index, value in enumerate(values):
            if values.index(value) != index:
                raise ConfigError(f"providers[{index}].{attr}", f"duplicate {attr} {value!r}")
    rules = tuple(_rule(w, raw) for w, raw in root.items("rules"))
    names = [r.name for r in rules]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise ConfigError(f"rules[{index}].name", f"duplicate rule name {name!r}")
    provider_names = {p.name for p in providers}
    for index, rule in enumerate(rules):
        for j, pname in enumerate(rule.providers):
            if pname not in provider_names:
                raise ConfigError(f"rules[{index}].providers[{j}]", f"unknown provider {pname!r}")

    config = Config(
        listen=_section(root, "listen", listen),
        decryption=_section(root, "decryption", decryption),
        providers=providers,
        token=_token(root.node("token")),
        upstream=_section(root, "upstream", upstream),
        rules=rules,
        response=_section(root, "response", response),
        cache=_section(root, "cache", cache),
        logging=_section(root, "logging", logging),
        shutdown=_section(root, "shutdown", shutdown),
        server=_section(root, "server", server),
        source=source,
    )
    root.done()
    _check_header_names(config)
    if config.decryption.required and not config.decryption.keys:
        raise ConfigError("decryption.keys", "decryption.required needs at least one key source")
    if not providers:
        raise ConfigError("providers", "at least one provider is required")
    return config


def load(path: Path) -> Config:
    """Read and validate the config file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"invalid YAML{where}") from exc
    return parse(data, path.resolve().parent, source=path)
