"""Verification keys of one provider from its JWKS URL, or found by OIDC discovery.

This is the only module that talks HTTP, and the only one that imports urllib3
(see ``docs/jwks.md`` for why urllib3 and not httpx). Its exceptions are wrapped in
:class:`~extauthz.errors.KeySourceError` here.

The model, in one place (``docs/jwks.md`` has the long form):

- **Fetch.** ``GET`` with ``Accept: application/json`` over HTTPS (system trust store
  plus an optional CA file; plain ``http`` only when allowed), at most
  ``max_redirects`` redirects and never from ``https`` to anything else, connect and
  read timeouts plus one wall-clock deadline per fetch, and a size cap enforced while
  the body streams in (and again after any ``gzip``/``deflate`` decoding).
- **Select.** Only verification keys are published: a JWK with private members (its
  private half is public, so it is compromised), ``use: enc``, ``key_ops`` without
  ``verify``, or an unsupported/invalid key is dropped *alone* and logged; the rest of
  the set is used. A document that is not a JWK Set, or leaves no usable key, is a
  failed fetch.
- **Cache.** A good set is refetched in the background when its lifetime ends:
  ``Cache-Control: max-age`` minus ``Age``, clamped to ``[min_refresh, max_refresh]``
  (``min_refresh`` when the header is absent or says ``no-cache``/``no-store``). The
  ceiling defaults to one hour, so a key the IdP withdraws stops working within the
  hour whatever cache lifetime it announces. Checks never wait for a scheduled
  refresh; the last good keys serve meanwhile.
- **Unknown kid.** :meth:`JwksSource.request_refresh` sets one flag and wakes the
  thread; it never blocks and never fetches itself. The thread fetches at most once per
  ``refetch_interval`` for such requests, so any number of concurrent misses, or a
  flood of random ``kid`` values, costs one fetch per interval. Every successful fetch
  publishes (even an unchanged set) and every failed one reports ``failed``, so a
  caller waiting in the store wakes up either way; while the last fetch failed,
  :meth:`JwksSource.request_refresh` tells callers not to wait. The store lets at
  most one caller per source wait, for at most 0.5 s.
- **Failure.** A failed or malformed fetch calls ``sink.failed`` and keeps the last
  good keys; retries follow :class:`Backoff`. Before the first good fetch nothing is
  published, so the service stays not ready. A key that is gone from a good fetch is
  gone from the published list.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import structlog
import urllib3
import urllib3.exceptions

from extauthz import __version__
from extauthz.errors import ConfigError, KeyMaterialError, KeySourceError
from extauthz.keys.keyset import KeySink
from extauthz.keys.material import (
    KEY_TYPES,
    MAX_KEYS_PER_SET,
    Key,
    key_from_jwk,
    strict_json_loads,
)
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.net import keepalive_socket_options

log = structlog.get_logger("extauthz.keys.jwks")

USER_AGENT = f"extauthz/{__version__}"

#: 512 KiB: the largest public JWKS seen in the wild is a few tens of KiB (Azure AD,
#: Google ~ 2-10 KiB); this leaves room for big certificate chains (``x5c``) while
#: bounding what a broken or hostile endpoint can make us hold in memory.
DEFAULT_MAX_BYTES = 512 * 1024

#: Retries after a failed fetch: 0.5 s, 1 s, 2 s ... capped at 30 s, half-jittered.
DEFAULT_BACKOFF = Backoff()

#: The OIDC discovery document path (OpenID Connect Discovery 1.0, section 4).
DISCOVERY_PATH = "/.well-known/openid-configuration"

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 16 * 1024
#: JWK members that only a private (or symmetric, i.e. secret) key carries.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: Longest ``kid`` we copy into a log line (a kid comes from an untrusted token).
_LOG_KID_CHARS = 64


# --------------------------------------------------------------------------- caching


def cache_lifetime(
    cache_control: str | None, age: str | None, *, floor: float, ceiling: float
) -> float:
    """Seconds a fetched document stays fresh, clamped to ``[floor, ceiling]``.

    ``max-age`` (the smallest, if repeated) minus ``Age``. No header, no valid
    ``max-age``, ``no-cache`` or ``no-store`` give ``floor``: we cannot revalidate on
    every request, and the unknown-``kid`` refetch covers new keys anyway.
    """
    if not cache_control:
        return floor
    max_age: int | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-cache", "no-store"):
            return floor
        if name == "max-age":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit() and len(value) <= 12:
                seconds = int(value)
                max_age = seconds if max_age is None else min(max_age, seconds)
    if max_age is None:
        return floor
    elapsed = 0
    if age is not None:
        text = age.strip()
        if text.isascii() and text.isdigit() and len(text) <= 12:
            elapsed = int(text)
    return float(min(ceiling, max(floor, max_age - elapsed)))


# ----------------------------------------------------------------------- key choice


@dataclass(frozen=True, slots=True)
class Ignored:
    """A JWK of a fetched set that is not used, and why (``reason`` is a fixed word)."""

    kid: str
    reason: str  # private | enc | key_ops | unsupported | invalid


def select_verification_keys(body: bytes, origin: str) -> tuple[list[Key], list[Ignored]]:
    """The verification keys of a JWK Set document, and the members left out.

    Raises :class:`KeyMaterialError` if ``body`` is not a JWK Set (strict JSON, an
    object with a ``keys`` array of at most ``MAX_KEYS_PER_SET``) or if no usable key
    is left: the source then keeps its last good keys.

    A JWK with private members is dropped entirely, public half included: a private
    key served on a public URL is compromised, and trusting its public half would
    accept tokens anyone can forge. The other keys of the set are unaffected.
    """
    try:
        doc = strict_json_loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KeyMaterialError(f"{origin}: not valid JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeyMaterialError(f"{origin}: not a JWK Set (an object with a 'keys' array)")
    items: list[Any] = doc["keys"]
    if len(items) > MAX_KEYS_PER_SET:
        raise KeyMaterialError(f"{origin}: more than {MAX_KEYS_PER_SET} keys")
    keys: list[Key] = []
    ignored: list[Ignored] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            ignored.append(Ignored("", "invalid"))
            continue
        raw_kid = item.get("kid")
        kid = raw_kid[:_LOG_KID_CHARS] if isinstance(raw_kid, str) else ""
        reason = _unusable(item)
        if reason is None:
            try:
                key = key_from_jwk(item, f"{origin}#{index}")
            except KeyMaterialError:
                reason = "unsupported" if item.get("kty") not in KEY_TYPES else "invalid"
            else:
                if key.private:
                    reason = "private"
                else:
                    keys.append(key)
        if reason is not None:
            ignored.append(Ignored(kid, reason))
    if not keys:
        summary = ", ".join(sorted({i.reason for i in ignored})) or "empty set"
        raise KeyMaterialError(f"{origin}: no usable verification key ({summary})")
    return keys, ignored


def _unusable(item: dict[str, Any]) -> str | None:
    """Why a JWK can never verify a signature, judged from its members alone."""
    if _PRIVATE_MEMBERS & item.keys():
        return "private"
    if item.get("use") == "enc":
        return "enc"
    ops = item.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops"
    return None


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class Document:
    """One fetched body and the response headers that matter for caching."""

    url: str  # after redirects
    body: bytes
    cache_control: str | None
    age: str | None


class HttpFetcher:
    """``GET`` a small JSON document with every bound of a key fetch. The urllib3 edge.

    Not thread-safe: one :class:`JwksSource` thread uses it; :meth:`abort` may be
    called from another thread to interrupt a read in progress.
    """

    def __init__(
        self,
        *,
        ca_file: Path | None,
        allow_http: bool,
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int,
        max_redirects: int,
    ) -> None:
        context = ssl.create_default_context()  # system trust store, TLS >= 1.2
        if ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("ca_file", f"cannot load CA certificates from {ca_file}") from exc
        self._schemes = frozenset({"https", "http"} if allow_http else {"https"})
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._current: urllib3.BaseHTTPResponse | None = None
        self._pool = urllib3.PoolManager(
            num_pools=4,
            ssl_context=context,
            socket_options=keepalive_socket_options(),
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                "User-Agent": USER_AGENT,
                # A fetch every few minutes gains nothing from keep-alive, and a stale
                # pooled connection would turn into a spurious failed fetch.
                "Connection": "close",
            },
        )

    def check_url(self, url: str) -> None:
        """Raise :class:`KeySourceError` unless ``url`` is absolute with an allowed scheme."""
        parts = urlsplit(url)
        if parts.scheme not in self._schemes or not parts.hostname:
            allowed = " or ".join(sorted(self._schemes))
            raise KeySourceError(f"{url}: not an absolute {allowed} URL")

    def get(self, url: str) -> Document:
        """Fetch ``url`` (following bounded redirects) or raise :class:`KeySourceError`."""
        deadline = time.monotonic() + self._connect_timeout + self._read_timeout
        current = url
        for _hop in range(self._max_redirects + 1):
            self.check_url(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KeySourceError(f"{url}: timed out")
            timeout = urllib3.Timeout(
                connect=min(self._connect_timeout, remaining),
                read=min(self._read_timeout, remaining),
            )
            try:
                response = self._pool.request(
                    "GET",
                    current,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=False,
                    timeout=timeout,
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise KeySourceError(f"{current}: {_describe(exc)}") from exc
            self._current = response
            try:
                if response.status in _REDIRECTS:
                    current = self._redirect_target(current, response.headers.get("Location"))
                    continue
                if response.status != 200:
                    raise KeySourceError(f"{current}: HTTP status {response.status}")
                body = self._read_body(response, current, deadline)
                return Document(
                    url=current,
                    body=body,
                    cache_control=response.headers.get("Cache-Control"),
                    age=response.headers.get("Age"),
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise KeySourceError(f"{current}: {_describe(exc)}") from exc
            finally:
                self._current = None
                response.close()
                response.release_conn()
        raise KeySourceError(f"{url}: more than {self._max_redirects} redirects")

    def abort(self) -> None:
        """Interrupt a body read in progress (from another thread), e.g. on stop."""
        response = self._current
        if response is not None:
            response.shutdown()

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()

    @staticmethod
    def _redirect_target(current: str, location: str | None) -> str:
        if not location:
            raise KeySourceError(f"{current}: redirect without a Location")
        target = urljoin(current, location.strip())
        if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
            # A downgrade would hand the key set to anyone on the path.
            raise KeySourceError(f"{current}: redirect from https to a non-https URL refused")
        return target

    def _read_body(self, response: urllib3.BaseHTTPResponse, url: str, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None:
            if not (declared.strip().isascii() and declared.strip().isdigit()):
                raise KeySourceError(f"{url}: invalid Content-Length")
            if int(declared) > self._max_bytes:
                raise KeySourceError(f"{url}: response larger than {self._max_bytes} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            # read1 returns after one socket read (bounded by the read timeout), so a
            # server that drips bytes still hits the deadline.
            if time.monotonic() > deadline:
                raise KeySourceError(f"{url}: timed out reading the response")
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > self._max_bytes:
                raise KeySourceError(f"{url}: response larger than {self._max_bytes} bytes")
            chunks.append(chunk)
        return _decode(
            b"".join(chunks), response.headers.get("Content-Encoding"), url, self._max_bytes
        )


def _decode(raw: bytes, encoding: str | None, url: str, max_bytes: int) -> bytes:
    """Undo a ``gzip``/``deflate`` content coding, never inflating past ``max_bytes``.

    We ask for ``identity``; some CDNs compress anyway. Decoding here (rather than by
    urllib3) keeps the size cap on the decoded bytes whatever urllib3 version is used.
    """
    coding = (encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise KeySourceError(f"{url}: unsupported Content-Encoding {coding[:32]!r}")
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib header
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise KeySourceError(f"{url}: corrupt {coding} body") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise KeySourceError(f"{url}: decoded response larger than {max_bytes} bytes")
    if not inflater.eof:
        raise KeySourceError(f"{url}: truncated {coding} body")
    return out


def _describe(exc: BaseException) -> str:
    """A short operator-facing cause: a category, then the tail of urllib3's message
    (which starts with a connection-pool repr that helps nobody)."""
    e = urllib3.exceptions
    if isinstance(exc, e.SSLError):
        category = "TLS error (set ca_file for a private CA)"
    elif isinstance(exc, e.NewConnectionError):  # before its base, ConnectTimeoutError
        category = "cannot connect"
    elif isinstance(exc, e.ConnectTimeoutError):
        category = "connect timed out"
    elif isinstance(exc, e.ReadTimeoutError):
        return "read timed out"
    elif isinstance(exc, e.ProtocolError):
        category = "connection broken"
    else:
        category = type(exc).__name__
    detail = str(exc).rsplit(">: ", 1)[-1].strip()
    return f"{category}: {detail[:160]}" if detail else category


# -------------------------------------------------------------------------- source


class JwksSource:
    """A provider's verification keys from ``uri``, or via OIDC discovery of ``issuer``.

    Implements :class:`~extauthz.keys.keyset.KeySource` and
    :class:`~extauthz.keys.keyset.RefreshHook`. All times are seconds of ``clock``.

    Construction validates the arguments and raises
    :class:`~extauthz.errors.ConfigError` whose ``path`` is the config key of the
    ``jwks_uri`` item (``jwks_uri``, ``ca_file``, ``refresh_min_seconds``, ...), for the
    config loader to prefix with the item's own path.
    """

    kind = "jwks"

    def __init__(
        self,
        uri: str | None,
        *,
        issuer: str,
        discovery: bool = False,
        ca_file: Path | None = None,
        allow_http: bool = False,
        min_refresh: float = 300.0,
        max_refresh: float = 3600.0,
        refetch_interval: float = 10.0,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = 3,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _validate(
            uri=uri,
            issuer=issuer,
            discovery=discovery,
            allow_http=allow_http,
            min_refresh=min_refresh,
            max_refresh=max_refresh,
            refetch_interval=refetch_interval,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_bytes=max_bytes,
            max_redirects=max_redirects,
        )
        self.uri = uri
        self.issuer = issuer
        self.discovery = discovery
        self.description = f"jwks {uri}" if uri is not None else f"oidc-discovery {issuer}"
        self._min_refresh = float(min_refresh)
        self._max_refresh = float(max_refresh)
        self._refetch_interval = float(refetch_interval)
        self._backoff = backoff
        self._clock = clock
        self._http = HttpFetcher(
            ca_file=ca_file,
            allow_http=allow_http,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_bytes=max_bytes,
            max_redirects=max_redirects,
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._crashed = False
        # schedule (in clock seconds); only the source thread (or a test driving
        # poll()) writes these, request_refresh() only sets the pending flag.
        self._next_at = -math.inf
        self._last_attempt: float | None = None
        self._failures = 0
        self._pending = False
        self._pending_kid = ""
        self._fetching = False
        self._known: frozenset[str] = frozenset()
        self._jwks_uri = uri
        self._discovered_until = -math.inf
        self._last_ignored: frozenset[Ignored] = frozenset()
        #: fetch attempts so far (each may be 1-2 requests with discovery)
        self.fetches = 0

    # -- KeySource -------------------------------------------------------------------

    def start(self, sink: KeySink) -> None:
        """Start the background thread; the first fetch begins at once."""
        if self._thread is not None:
            raise RuntimeError(f"{self.description}: already started")
        self._thread = threading.Thread(
            target=self._run, args=(sink,), name=f"keys-jwks:{self.issuer}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop: interrupt the wait and any body read, join briefly, close connections."""
        self._stop.set()
        self._wake.set()
        self._http.abort()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._http.close()

    def alive(self) -> bool:
        """False if the background thread died of an unexpected exception."""
        return not self._crashed

    # -- RefreshHook -----------------------------------------------------------------

    def request_refresh(self, kid: str) -> bool:
        """A token named ``kid``, which the caller does not hold: refetch, rate-limited.

        Never blocks and never does I/O: it sets a flag and wakes the source thread.
        Returns True when a fetch is under way (in flight, or due now and starting)
        whose publish the caller may wait for; False when the caller should not wait:
        rate-limited (the fetch is deferred to the end of the interval), stopped, the
        last fetch failed (nobody waits on an IdP that is down), or
        ``kid`` is one we already publish (a token whose alg fits none of our keys
        must not make every Check wait for a fetch that cannot help).
        """
        if self._stop.is_set() or kid in self._known:
            return False
        if not self._pending:
            self._pending_kid = kid[:_LOG_KID_CHARS] if isinstance(kid, str) else ""
            self._pending = True
            self._wake.set()  # the thread recomputes its wait with the pending request
        if self._failures:
            # the last fetch failed: the IdP is down or broken, and a caller that waits
            # would only hold a worker; the (rate-limited) retry still happens
            return False
        if self._fetching:
            return True  # its publish wakes the waiter; the pending flag asks for one more
        if self._clock() >= self.next_due():
            self._wake.set()
            return True
        return False

    # -- the schedule ----------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        """True while a fetch is running (for diagnostics and tests)."""
        return self._fetching

    def next_due(self) -> float:
        """Clock time of the next fetch: the scheduled one, or a rate-limited refetch."""
        due = self._next_at
        if self._pending and self._last_attempt is not None:
            due = min(due, self._last_attempt + self._refetch_interval)
        return due

    def poll(self, sink: KeySink) -> float:
        """Do the fetch that is due now, if any; return seconds until the next is due.

        The background thread calls this in a loop; tests drive it directly with an
        injected clock.
        """
        now = self._clock()
        if now < self.next_due():
            return self.next_due() - now
        trigger = "initial" if self._last_attempt is None else "scheduled"
        if self._pending and now < self._next_at:
            trigger = "unknown_kid"
        kid, self._pending = self._pending_kid, False
        self._last_attempt = now
        self.fetches += 1
        self._fetching = True
        try:
            self._fetch_and_publish(sink, now, trigger, kid)
        finally:
            self._fetching = False
        return max(0.0, self.next_due() - self._clock())

    def _fetch_and_publish(self, sink: KeySink, now: float, trigger: str, kid: str) -> None:
        try:
            keys, lifetime = self._fetch(now)
        except (KeySourceError, KeyMaterialError) as exc:
            self._failures += 1
            retry_in = self._backoff.delay(self._failures - 1)
            self._next_at = self._clock() + retry_in
            self._jwks_uri = self.uri  # with discovery: discover again next time
            self._discovered_until = -math.inf
            log.warning(
                "jwks_fetch_failed",
                source=self.description,
                trigger=trigger,
                error=str(exc),
                failures=self._failures,
                retry_in=round(retry_in, 3),
                kept_keys=len(self._known),
            )
            sink.failed(exc)
        else:
            self._failures = 0
            self._next_at = self._clock() + lifetime
            log.info(
                "jwks_fetched",
                source=self.description,
                uri=self._jwks_uri,
                trigger=trigger,
                kid=kid if trigger == "unknown_kid" else None,
                keys=len(keys),
                refresh_in=lifetime,
            )
            # Publish even an unchanged set: it bumps the ring generation, which is
            # what a Check waiting for an unknown kid waits for.
            sink.publish(keys)
            # After the publish: a caller that sees its kid here finds it in the ring.
            self._known = frozenset(key.kid for key in keys)

    # -- internals -------------------------------------------------------------------

    def _run(self, sink: KeySink) -> None:
        try:
            while not self._stop.is_set():
                # Clear before poll() reads the pending flag: a request that lands
                # after this line is either seen by poll() or wakes the wait below.
                self._wake.clear()
                delay = self.poll(sink)
                if self._stop.is_set():
                    break
                self._wake.wait(delay)
        except Exception:
            self._crashed = True
            log.exception("jwks_source_crashed", source=self.description)

    def _fetch(self, now: float) -> tuple[list[Key], float]:
        if self.discovery and (self._jwks_uri is None or now >= self._discovered_until):
            self._discover()
        uri = self._jwks_uri
        if uri is None:  # set by the constructor or by _discover(); never None here
            raise KeySourceError(f"{self.description}: no JWKS URL")
        document = self._http.get(uri)
        keys, ignored = select_verification_keys(document.body, document.url)
        self._report_ignored(ignored)
        lifetime = cache_lifetime(
            document.cache_control,
            document.age,
            floor=self._min_refresh,
            ceiling=self._max_refresh,
        )
        return keys, lifetime

    def _discover(self) -> None:
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        document = self._http.get(url)
        try:
            meta = strict_json_loads(document.body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise KeySourceError(f"{url}: not valid JSON") from exc
        if not isinstance(meta, dict):
            raise KeySourceError(f"{url}: not a JSON object")
        discovered = meta.get("issuer")
        if discovered != self.issuer:
            # OIDC Discovery 1.0 section 4.3: must be identical, or the document
            # describes some other issuer and its keys must not vouch for ours.
            log.error(
                "oidc_issuer_mismatch",
                source=self.description,
                configured=self.issuer,
                discovered=discovered[:256] if isinstance(discovered, str) else None,
                url=url,
            )
            raise KeySourceError(f"{url}: discovered issuer differs from the configured issuer")
        jwks_uri = meta.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeySourceError(f"{url}: no jwks_uri in the discovery document")
        self._http.check_url(jwks_uri)
        if jwks_uri != self._jwks_uri:
            log.info("oidc_jwks_uri_discovered", source=self.description, jwks_uri=jwks_uri)
        self._jwks_uri = jwks_uri
        self._discovered_until = self._clock() + cache_lifetime(
            document.cache_control,
            document.age,
            floor=self._min_refresh,
            ceiling=self._max_refresh,
        )

    def _report_ignored(self, ignored: Sequence[Ignored]) -> None:
        current = frozenset(ignored)
        for item in ignored:
            if item.reason == "private":
                # Every time: someone must take that key out of service.
                log.error(
                    "jwks_private_key_ignored",
                    source=self.description,
                    kid=item.kid,
                    detail="the set publishes a private key; that key is compromised "
                    "and never used",
                )
            elif current != self._last_ignored:
                log.info(
                    "jwks_key_ignored",
                    source=self.description,
                    kid=item.kid,
                    reason=item.reason,
                )
        self._last_ignored = current


def _validate(
    *,
    uri: str | None,
    issuer: str,
    discovery: bool,
    allow_http: bool,
    min_refresh: float,
    max_refresh: float,
    refetch_interval: float,
    connect_timeout: float,
    read_timeout: float,
    max_bytes: int,
    max_redirects: int,
) -> None:
    """Raise :class:`ConfigError` (path = the config key) for an unusable argument."""
    schemes = {"https", "http"} if allow_http else {"https"}
    if uri is None and not discovery:
        raise ConfigError("jwks_uri", "a JWKS URL is required unless discovery is enabled")
    if uri is not None and discovery:
        raise ConfigError("jwks_uri", "give either a JWKS URL or discovery, not both")
    if uri is not None:
        parts = urlsplit(uri)
        if parts.scheme not in schemes or not parts.hostname:
            hint = "" if allow_http else " (plain http needs allow_http: true)"
            raise ConfigError("jwks_uri", f"must be an absolute https URL{hint}")
    if discovery:
        parts = urlsplit(issuer)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError("discovery", "the issuer must be an https URL to be discovered")
    if not min_refresh > 0:
        raise ConfigError("refresh_min_seconds", "must be > 0")
    if not max_refresh >= min_refresh:
        raise ConfigError("refresh_max_seconds", "must be >= refresh_min_seconds")
    if not refetch_interval > 0:
        raise ConfigError("refetch_interval_seconds", "must be > 0")
    if not (connect_timeout > 0 and read_timeout > 0):
        raise ConfigError("timeout_seconds", "must be > 0")
    if max_bytes <= 0:
        raise ConfigError("max_bytes", "must be > 0")
    if max_redirects < 0:
        raise ConfigError("max_redirects", "must be >= 0")
