"""The HTTP edge of JwksSource against a real local server: TLS trust, plain-http
refusal, size caps (declared, streamed, inflated), redirect bounds and downgrades,
request headers, and configuration errors that name their key.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import urllib3.exceptions

from extauthz import __version__
from extauthz.errors import ConfigError, KeySourceError
from extauthz.keys.keyset import KeyStore, provider_purpose
from extauthz.keys.sources.backoff import Backoff
from extauthz.keys.sources.jwks import HttpFetcher, JwksSource
from extauthz.keys.sources.net import KEEPALIVE_COUNT, KEEPALIVE_IDLE
from tests.jwks_server import JwksServer, RecordingSink, signing_key

PURPOSE = provider_purpose("idp")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def public_key() -> dict[str, Any]:
    return signing_key("key-a")[1]


@pytest.fixture
def idp(ca: trustme.CA, public_key: dict[str, Any]) -> Iterator[JwksServer]:
    with JwksServer(ca) as server:
        server.set_keys([public_key])
        yield server


@pytest.fixture
def plain(public_key: dict[str, Any]) -> Iterator[JwksServer]:
    with JwksServer(None) as server:
        server.set_keys([public_key])
        yield server


def fetch(source: JwksSource) -> RecordingSink:
    """One fetch, synchronously; the source is closed afterwards."""
    sink = RecordingSink()
    try:
        source.poll(sink)
    finally:
        source.stop()
    return sink


def test_request_asks_for_json_and_names_the_product(idp: JwksServer) -> None:
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert sink.kids == {"key-a"}
    (request,) = idp.requests
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == f"extauthz/{__version__}"


def test_without_the_ca_file_the_private_ca_is_not_trusted(idp: JwksServer) -> None:
    """The system trust store alone does not know the test CA: TLS fails, never ready."""
    source = JwksSource(idp.jwks_url, issuer=idp.base_url, backoff=Backoff(initial=0.02, cap=0.05))
    store = KeyStore()
    sink = RecordingSink(store.attach(PURPOSE, source))
    source.start(sink)
    try:
        assert sink.wait_for(failures=2)
        assert not store.ready
        assert sink.published == []
        assert isinstance(sink.failures[0].__cause__, urllib3.exceptions.SSLError)
    finally:
        source.stop()
    assert idp.count() == 0, "no request is ever sent over an untrusted connection"


def test_a_certificate_of_another_ca_is_refused(idp: JwksServer, tmp_path: Path) -> None:
    ca_file = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=ca_file))
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert idp.count() == 0


def test_a_certificate_for_another_name_is_refused(ca: trustme.CA) -> None:
    """The CA is trusted, but the certificate does not name the host we connect to."""
    with JwksServer(ca, names=["idp.other.test"]) as server:
        sink = fetch(JwksSource(server.jwks_url, issuer=server.base_url, ca_file=server.ca_file))
        assert [type(e) for e in sink.failures] == [KeySourceError]
        assert isinstance(sink.failures[0].__cause__, urllib3.exceptions.SSLError)
        assert server.count() == 0


def test_plain_http_is_refused_unless_allowed(plain: JwksServer) -> None:
    with pytest.raises(ConfigError) as info:
        JwksSource(plain.jwks_url, issuer=plain.base_url)
    assert info.value.path == "jwks_uri"

    sink = fetch(JwksSource(plain.jwks_url, issuer=plain.base_url, allow_http=True))
    assert sink.kids == {"key-a"}


def test_a_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        JwksSource("https://idp.test/jwks", issuer="https://idp.test", ca_file=tmp_path / "no")
    assert info.value.path == "ca_file"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"uri": None}, "jwks_uri"),
        ({"uri": "https://idp.test/jwks", "discovery": True}, "jwks_uri"),
        ({"uri": "ftp://idp.test/jwks"}, "jwks_uri"),
        ({"uri": "/relative/jwks"}, "jwks_uri"),
        ({"uri": None, "discovery": True, "issuer": "idp"}, "discovery"),
        ({"min_refresh": 0}, "refresh_min_seconds"),
        ({"min_refresh": 600, "max_refresh": 60}, "refresh_max_seconds"),
        ({"refetch_interval": 0}, "refetch_interval_seconds"),
        ({"read_timeout": 0}, "timeout_seconds"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_redirects": -1}, "max_redirects"),
    ],
)
def test_unusable_arguments_are_config_errors_naming_the_key(
    kwargs: dict[str, Any], path: str
) -> None:
    args: dict[str, Any] = {"uri": "https://idp.test/jwks", "issuer": "https://idp.test"}
    args.update(kwargs)
    uri = args.pop("uri")
    with pytest.raises(ConfigError) as info:
        JwksSource(uri, **args)
    assert info.value.path == path


def test_a_declared_length_over_the_cap_is_refused_before_reading(idp: JwksServer) -> None:
    idp.body = b" " * 4096 + json.dumps({"keys": idp.keys}).encode()
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, max_bytes=4096))
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert "larger than 4096 bytes" in str(sink.failures[0])


def test_an_undeclared_body_is_capped_while_streaming(idp: JwksServer) -> None:
    """No Content-Length: the cap stops the read, the 8 MiB body is never held."""
    idp.send_length = False
    idp.body = b'{"keys": [], "pad": "' + b"x" * (8 << 20) + b'"}'
    started = time.monotonic()
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert time.monotonic() - started < 2
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert "larger than" in str(sink.failures[0])


def test_an_undeclared_body_within_the_cap_is_read_to_the_end(idp: JwksServer) -> None:
    idp.send_length = False
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert sink.kids == {"key-a"}


def test_a_gzip_body_is_decoded(idp: JwksServer) -> None:
    idp.gzip = True
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert sink.kids == {"key-a"}


def test_a_gzip_bomb_is_capped_after_decoding(idp: JwksServer) -> None:
    """~16 KiB on the wire, 16 MiB inflated: refused at max_bytes of output."""
    idp.body = gzip.compress(b'{"keys": [], "pad": "' + b" " * (16 << 20) + b'"}', 9)
    idp.extra_headers = {"Content-Encoding": "gzip"}
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert "decoded response larger than" in str(sink.failures[0])


def test_an_unknown_content_encoding_is_refused(idp: JwksServer) -> None:
    idp.extra_headers = {"Content-Encoding": "br"}
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert [type(e) for e in sink.failures] == [KeySourceError]


@pytest.mark.parametrize("status", [404, 500, 503])
def test_an_error_status_is_a_failed_fetch(idp: JwksServer, status: int) -> None:
    idp.status = status
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert sink.published == []
    assert [type(e) for e in sink.failures] == [KeySourceError]


def test_redirects_are_followed_up_to_the_bound(idp: JwksServer) -> None:
    sink = fetch(
        JwksSource(idp.hops_url(3), issuer=idp.base_url, ca_file=idp.ca_file, max_redirects=3)
    )
    assert sink.kids == {"key-a"}
    assert idp.count(None) == 4


def test_one_redirect_too_many_is_a_failed_fetch(idp: JwksServer) -> None:
    sink = fetch(
        JwksSource(idp.hops_url(4), issuer=idp.base_url, ca_file=idp.ca_file, max_redirects=3)
    )
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert idp.count() == 0
    assert idp.count(None) == 4, "the fourth redirect is not followed"


def test_a_redirect_from_https_to_http_is_never_followed(
    idp: JwksServer, plain: JwksServer
) -> None:
    """Not even with allow_http: a downgrade would expose the key set to the path."""
    idp.redirect_to = plain.jwks_url
    sink = fetch(
        JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file, allow_http=True)
    )
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert plain.count(None) == 0


def test_an_idp_that_closes_the_connection_is_a_failed_fetch(idp: JwksServer) -> None:
    idp.down = True
    sink = fetch(JwksSource(idp.jwks_url, issuer=idp.base_url, ca_file=idp.ca_file))
    assert [type(e) for e in sink.failures] == [KeySourceError]
    assert isinstance(sink.failures[0].__cause__, urllib3.exceptions.HTTPError)


def test_nothing_listening_is_a_failed_fetch(ca: trustme.CA, tmp_path: Path) -> None:
    server = JwksServer(ca).start()
    url, base = server.jwks_url, server.base_url
    server.stop()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    started = time.monotonic()
    sink = fetch(JwksSource(url, issuer=base, ca_file=ca_file))
    assert time.monotonic() - started < 2
    assert [type(e) for e in sink.failures] == [KeySourceError]


def test_idp_connections_carry_tcp_keepalive(idp: JwksServer) -> None:
    """A dead IdP peer is found by the kernel within 30 s, not after the OS default hours."""
    fetcher = HttpFetcher(
        ca_file=idp.ca_file, allow_http=False, connect_timeout=2.0, read_timeout=2.0,
        max_bytes=1 << 16, max_redirects=0,
    )  # fmt: skip
    pool = fetcher._pool.connection_from_url(idp.jwks_url)  # white-box: the pool's dialer
    conn = pool._new_conn()
    try:
        conn.connect()
        sock = conn.sock
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
    finally:
        conn.close()
        fetcher.close()
