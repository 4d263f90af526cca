"""TLS and mTLS on both authorization listeners, through a real Envoy with an mTLS
cluster: every test runs over gRPC and over Envoy's HTTP protocol (``listen.tls``
applies to both listeners).

Behaviours (optional TLS / mTLS, certificates reloaded when the files change):

- Envoy, presenting a client certificate of the trusted CA, gets allow and deny
  decisions over TLS (the handshake counters prove TLS was used);
- a client without a certificate, with a certificate of another CA, or speaking
  plaintext is refused at the handshake;
- a server certificate rotated while traffic flows (a kubelet-style atomic swap of
  the mounted files) fails no request, and every new handshake presents the new
  certificate (read from the handshake itself, by serial number);
- a CA rotation in the documented order (clients trust old+new CA first, then the
  server moves to a certificate of the new CA and accepts clients of both, then drops
  the old client CA) fails no request, and the old CA's clients are refused at the end;
- a non-atomic in-place rewrite (certificate first, key a moment later), as a
  hand-run ``cp`` does, breaks no handshake: the mismatched pair is never used, the
  previous one serves until the key matches.

Envoy opens a new connection every few Checks (``max_requests_per_connection``), so
Envoy itself performs many handshakes across each rotation.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from cryptography import x509

from extauthz import config as config_mod
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2
from extauthz.client import build_request
from extauthz.server.app import App
from extauthz.server.authz import METHOD
from tests.envoy_harness import BOOTSTRAP_TEMPLATE, HTTP_BOOTSTRAP_TEMPLATE, EchoUpstream, http_get
from tests.hardening.envoy_variants import (
    Bootstrap,
    VariantEnvoy,
    add_mtls,
    cluster,
    limit_requests_per_connection,
)
from tests.service_client import wait_for

pytestmark = [pytest.mark.e2e]

SERVER_NAME = "extauthz.test"


class MountedTls:
    """A TLS Secret mounted the way the kubelet does it: ``tls.crt``, ``tls.key`` and
    ``ca.crt`` are symlinks into ``..data``, which is swapped atomically on update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def cert_file(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.root / "tls.key"

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    def publish(self, leaf: trustme.LeafCert, client_cas: list[trustme.CA]) -> None:
        """Write a new version and swap ``..data`` to it in one rename."""
        self.generation += 1
        target = self.root / f"..{self.generation}"
        target.mkdir()
        (target / "tls.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        (target / "tls.key").write_bytes(leaf.private_key_pem.bytes())
        (target / "ca.crt").write_bytes(b"".join(ca.cert_pem.bytes() for ca in client_cas))
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.root / "..data")
        for name in ("tls.crt", "tls.key", "ca.crt"):
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")


def serial(leaf: trustme.LeafCert) -> int:
    """Serial number of a trustme leaf certificate."""
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


def write_pem(path: Path, *parts: bytes) -> Path:
    path.write_bytes(b"".join(parts))
    return path


def presented_serial(port: int, trust: Path, client: tuple[Path, Path]) -> int:
    """Handshake with the gRPC port (ALPN h2, client certificate) and return the serial
    of the certificate the server presented."""
    context = ssl.create_default_context(cafile=str(trust))
    context.load_cert_chain(str(client[0]), str(client[1]))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def direct_check(
    port: int, trust: bytes | None, client: trustme.LeafCert | None = None,
    transport: str = "grpc",
) -> str:  # fmt: skip
    """One Check on a fresh connection (a new handshake): ``"answered"``, or the gRPC
    code (``UNAVAILABLE`` over HTTP too, when the handshake or connection fails)."""
    if transport == "http":
        return _direct_http_check(port, trust, client)
    if trust is None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=trust,
            private_key=client.private_key_pem.bytes() if client else None,
            certificate_chain=client.cert_chain_pems[0].bytes() if client else None,
        )
        channel = grpc.secure_channel(
            f"127.0.0.1:{port}", credentials,
            options=[("grpc.ssl_target_name_override", SERVER_NAME)],
        )  # fmt: skip
    try:
        call = channel.unary_unary(
            METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        try:
            call(build_request({}, "/"), timeout=3)
        except grpc.RpcError as error:
            return str(error.code().name)
        return "answered"
    finally:
        channel.close()


def _direct_http_check(port: int, trust: bytes | None, client: trustme.LeafCert | None) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        try:
            if trust is None:
                raw.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                answer = raw.recv(100)
            else:
                context = ssl.create_default_context(cadata=trust.decode())
                if client is not None:
                    client.configure_cert(context)
                with context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    answer = tls.recv(100)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return "UNAVAILABLE"
    return "answered" if answer.startswith(b"HTTP/1.1 401 ") else "UNAVAILABLE"


class Traffic:
    """Requests through Envoy in background threads, every outcome counted."""

    def __init__(self, url: str, token: str, threads: int = 2) -> None:
        self.url = url
        self.token = token
        self.outcomes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"traffic-{i}", daemon=True)
            for i in range(threads)
        ]

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            valid = n % 4 != 0
            headers = {"authorization": f"Bearer {self.token}"} if valid else {}
            try:
                status, _, _ = http_get(self.url + "/orders/1", headers, timeout=5)
            except OSError as exc:
                self._record(f"error:{type(exc).__name__}")
                continue
            expected = 200 if valid else 401
            self._record("ok" if status == expected else f"status:{status}")

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    @property
    def failures(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self.outcomes.items() if k != "ok"}

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def new_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def mounted(tmp_path: Path, ca: trustme.CA) -> MountedTls:
    tls = MountedTls(tmp_path / "tls")
    tls.publish(ca.issue_cert(SERVER_NAME), [ca])
    return tls


@pytest.fixture
def envoy_client(tmp_path: Path, ca: trustme.CA, new_ca: trustme.CA) -> dict[str, Path]:
    """Envoy's client certificate (old CA) and a trust bundle of both CAs."""
    leaf = ca.issue_cert("envoy.client.test")
    base = tmp_path / "envoy-pki"
    base.mkdir()
    return {
        "cert": write_pem(base / "client.crt", leaf.cert_chain_pems[0].bytes()),
        "key": write_pem(base / "client.key", leaf.private_key_pem.bytes()),
        "trust": write_pem(base / "trust.pem", ca.cert_pem.bytes(), new_ca.cert_pem.bytes()),
    }


@pytest.fixture(params=["grpc", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def authz_port(app: App, transport: str) -> int:
    """The port of ``app``'s authorization listener for ``transport``."""
    if transport == "grpc":
        return app.grpc_port
    assert app.http_authz is not None
    return app.http_authz.port


@pytest.fixture
def tls_app(write_config: Callable[..., Path], mounted: MountedTls) -> Iterator[App]:
    path = write_config(listen={
        "grpc": "127.0.0.1:0",
        "http_authz": "127.0.0.1:0",
        "tls": {"cert_file": str(mounted.cert_file), "key_file": str(mounted.key_file),
                "client_ca_file": str(mounted.ca_file)},
    })  # fmt: skip
    app = App(config_mod.load(path))
    app.start()
    assert wait_for(app.is_ready, 10)
    yield app
    app.stop_now()


@pytest.fixture
def envoy(
    tmp_path: Path, tls_app: App, envoy_client: dict[str, Path], transport: str
) -> Iterator[VariantEnvoy]:
    def transform(doc: Bootstrap) -> None:
        add_mtls(doc, cert_file=envoy_client["cert"], key_file=envoy_client["key"],
                 ca_file=envoy_client["trust"], server_name=SERVER_NAME,
                 alpn="h2" if transport == "grpc" else "http/1.1")  # fmt: skip
        limit_requests_per_connection(doc, 8)
        # the HTTP example health-checks the plaintext /readyz port, which an mTLS
        # cluster cannot reach: this test has one replica and needs none
        cluster(doc).pop("health_checks", None)

    template = BOOTSTRAP_TEMPLATE if transport == "grpc" else HTTP_BOOTSTRAP_TEMPLATE
    with EchoUpstream() as upstream, VariantEnvoy(
        tmp_path / "envoy", transform=transform, template=template,
        extauthz_port=authz_port(tls_app, transport), upstream_port=upstream.port,
    ) as proxy:  # fmt: skip
        yield proxy


# -- tests -----------------------------------------------------------------------------


def test_envoy_gets_decisions_over_mtls(
    envoy: VariantEnvoy, mint_token: Callable[..., str]
) -> None:
    """Allow and deny through Envoy, with the Check carried over an mTLS connection."""
    status, _, body = http_get(envoy.url + "/orders/1", {"authorization": f"Bearer {mint_token()}"})
    assert status == 200, envoy.explain()
    assert b"x-auth-subject" in body
    status, headers, _ = http_get(envoy.url + "/orders/1")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="extauthz"'
    assert envoy.stat("cluster.extauthz.ssl.handshake") >= 1
    assert envoy.stat("cluster.extauthz.ssl.connection_error") == 0


def test_clients_without_a_trusted_certificate_are_refused(
    tls_app: App, ca: trustme.CA, new_ca: trustme.CA, transport: str
) -> None:
    """No certificate, another CA's certificate, or plaintext: refused at the handshake."""
    trust = ca.cert_pem.bytes()
    port = authz_port(tls_app, transport)
    check = functools.partial(direct_check, port, transport=transport)
    assert check(trust, ca.issue_cert("client.test")) == "answered"
    assert check(trust, None) == "UNAVAILABLE"
    assert check(trust, new_ca.issue_cert("client.test")) == "UNAVAILABLE"
    assert check(None) == "UNAVAILABLE"


@pytest.mark.slow
def test_certificate_rotation_under_traffic_fails_no_request(
    envoy: VariantEnvoy, tls_app: App, mounted: MountedTls, ca: trustme.CA,
    envoy_client: dict[str, Path], mint_token: Callable[..., str], transport: str,
) -> None:  # fmt: skip
    """A new certificate of the same CA, swapped in while Envoy sends Checks: no failed
    request, and new handshakes (Envoy's and ours) use the new certificate."""
    client = (envoy_client["cert"], envoy_client["key"])
    trust = envoy_client["trust"]
    first = presented_serial(authz_port(tls_app, transport), trust, client)
    with Traffic(envoy.url, mint_token()) as traffic:
        assert wait_for(lambda: traffic.total >= 30, 10)
        handshakes_before = envoy.stat("cluster.extauthz.ssl.handshake")
        leaf = ca.issue_cert(SERVER_NAME)
        mounted.publish(leaf, [ca])
        assert wait_for(
            lambda: presented_serial(authz_port(tls_app, transport), trust, client) == serial(leaf),
            3,
        )
        seen = traffic.total
        assert wait_for(lambda: traffic.total >= seen + 60, 15)
    assert first != serial(leaf)
    assert traffic.failures == {}, traffic.outcomes
    assert envoy.stat("cluster.extauthz.ssl.handshake") >= handshakes_before + 3
    assert envoy.stat("cluster.extauthz.ssl.connection_error") == 0


@pytest.mark.slow
def test_ca_rotation_in_the_documented_order_fails_no_request(
    envoy: VariantEnvoy, tls_app: App, mounted: MountedTls, ca: trustme.CA,
    new_ca: trustme.CA, envoy_client: dict[str, Path], mint_token: Callable[..., str],
    transport: str,
) -> None:  # fmt: skip
    """Clients trust old+new CA (Envoy's bundle) -> the server moves to a certificate of
    the new CA and accepts client certificates of both -> the old client CA is dropped."""
    client = (envoy_client["cert"], envoy_client["key"])
    trust = envoy_client["trust"]
    both = ca.cert_pem.bytes() + new_ca.cert_pem.bytes()
    with Traffic(envoy.url, mint_token()) as traffic:
        assert wait_for(lambda: traffic.total >= 30, 10)
        leaf = new_ca.issue_cert(SERVER_NAME)
        mounted.publish(leaf, [ca, new_ca])
        assert wait_for(
            lambda: presented_serial(authz_port(tls_app, transport), trust, client) == serial(leaf),
            3,
        )
        seen = traffic.total
        assert wait_for(lambda: traffic.total >= seen + 60, 15)
        assert (
            direct_check(
                authz_port(tls_app, transport), both, new_ca.issue_cert("c.test"), transport
            )
            == "answered"
        )
        assert (
            direct_check(authz_port(tls_app, transport), both, ca.issue_cert("c.test"), transport)
            == "answered"
        )
    assert traffic.failures == {}, traffic.outcomes
    assert envoy.stat("cluster.extauthz.ssl.connection_error") == 0
    # last step, once every client holds a certificate of the new CA
    mounted.publish(leaf, [new_ca])
    assert wait_for(
        lambda: (
            direct_check(authz_port(tls_app, transport), both, ca.issue_cert("c.test"), transport)
            == "UNAVAILABLE"
        ),
        3,
    )
    assert (
        direct_check(authz_port(tls_app, transport), both, new_ca.issue_cert("c.test"), transport)
        == "answered"
    )


@pytest.mark.slow
def test_a_half_rewritten_certificate_pair_breaks_no_handshake(
    envoy: VariantEnvoy, tls_app: App, mounted: MountedTls, ca: trustme.CA,
    envoy_client: dict[str, Path], mint_token: Callable[..., str], transport: str,
) -> None:  # fmt: skip
    """``cp new.crt tls.crt; ...; cp new.key tls.key`` (same files, one at a time): while
    the pair does not match, handshakes keep the previous pair (grpc-core refuses a key
    that does not fit the certificate and keeps its current one); once the key is
    written too, the new pair is used. No request fails."""
    client = (envoy_client["cert"], envoy_client["key"])
    trust = envoy_client["trust"]
    old = presented_serial(authz_port(tls_app, transport), trust, client)
    leaf = ca.issue_cert(SERVER_NAME)
    with Traffic(envoy.url, mint_token()) as traffic:
        assert wait_for(lambda: traffic.total >= 30, 10)
        mounted.cert_file.resolve().write_bytes(leaf.cert_chain_pems[0].bytes())
        seen = traffic.total
        assert wait_for(lambda: traffic.total >= seen + 40, 15)  # handshakes in the gap
        assert presented_serial(authz_port(tls_app, transport), trust, client) == old
        mounted.key_file.resolve().write_bytes(leaf.private_key_pem.bytes())
        assert wait_for(
            lambda: presented_serial(authz_port(tls_app, transport), trust, client) == serial(leaf),
            3,
        )
        seen = traffic.total
        assert wait_for(lambda: traffic.total >= seen + 40, 15)
    assert traffic.failures == {}, traffic.outcomes
    assert envoy.stat("cluster.extauthz.ssl.connection_error") == 0
