"""Process lifecycle: key sources, the two authorization listeners (gRPC, and
Envoy's HTTP protocol when ``listen.http_authz`` is set), the HTTP endpoints,
liveness, signals.

Start-up: health NOT_SERVING -> start every key source -> when each has loaded
once, SERVING. SIGTERM: NOT_SERVING at once (gRPC health and ``/readyz``; the HTTP
listener closes each connection after its answer), keep answering for
``shutdown.drain_seconds`` so Envoy and Kubernetes stop sending, then stop
accepting and let in-flight Checks finish within ``shutdown.grace_seconds``, on
both listeners at once; exit 0. A key source whose background work dies makes the
process exit non-zero, so Kubernetes restarts it.

The gRPC listener is extauthz's own call loop on gRPC core (``server.grpc_server:
core``, the default; :mod:`.grpc_core`). ``server.grpc_server: grpcio`` runs grpcio's
sync server instead, its calls on :class:`~.callpool.CallPool` rather than a
``ThreadPoolExecutor`` (see that module), at about twice the CPU per cached Check;
grpc.aio measured slower still for this workload (``bench/server_models.py``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from extauthz import metrics
from extauthz.config import Config, KeySourceConfig, TlsConfig
from extauthz.errors import ConfigError, KeySourceError
from extauthz.keys.keyset import DECRYPTION, KeySink, KeySource, KeyStore, provider_purpose
from extauthz.keys.sources.factory import build_source
from extauthz.pipeline.evaluate import Evaluator
from extauthz.revocation.service import Revocation
from extauthz.server import grpc_core
from extauthz.server.authz import SERVICE, Authorizer
from extauthz.server.callpool import CallPool
from extauthz.server.http import HttpEndpoints
from extauthz.server.http_authz import HttpAuthzServer
from extauthz.server.liveness import Liveness, LivenessTimings, Probe, liveness_timings
from extauthz.server.workers import worker_heartbeat_file

log = structlog.get_logger("extauthz.server")

#: largest CheckRequest we accept; Envoy sends no body unless configured to
MAX_REQUEST_BYTES = 1 << 20
#: the gRPC health service name of liveness (gRPC probes); "" and the Authorization
#: service report readiness
LIVENESS_SERVICE = "liveness"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass
class Sources:
    """The key sources of a config, attached to one store."""

    store: KeyStore
    items: list[KeySource] = field(default_factory=list)
    sinks: list[KeySink] = field(default_factory=list)
    #: the config key path of each source (``providers[0].keys[1]``), for start-up errors
    paths: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Config, store: KeyStore | None = None) -> Sources:
        """Build (not start) every configured source."""
        sources = cls(store or KeyStore())
        wiring: list[tuple[str, KeySourceConfig, str | None, str]] = [
            (DECRYPTION, item, None, f"decryption.keys[{i}]")
            for i, item in enumerate(config.decryption.keys)
        ]
        for p, provider in enumerate(config.providers):
            wiring.extend((provider_purpose(provider.name), item, provider.issuer,
                           f"providers[{p}].keys[{i}]")
                          for i, item in enumerate(provider.keys))  # fmt: skip
        for purpose, item, issuer, path in wiring:
            try:
                source = build_source(item, issuer=issuer)
            except (KeySourceError, OSError, ValueError) as exc:
                raise ConfigError(path, f"cannot start this key source: {exc}") from exc
            sources.items.append(source)
            sources.sinks.append(sources.store.attach(purpose, source))
            sources.paths.append(path)
        return sources

    def start(self) -> None:
        """Start every source's background loading; a source that cannot start (no
        Kubernetes client configuration, say) is a :class:`ConfigError` naming its key."""
        for source, sink, path in zip(self.items, self.sinks, self.paths, strict=True):
            try:
                source.start(sink)
            except (KeySourceError, OSError) as exc:
                self.stop()
                raise ConfigError(path, f"cannot start this key source: {exc}") from exc

    def stop(self) -> None:
        """Stop every source."""
        for source in self.items:
            source.stop()

    def dead(self) -> list[str]:
        """Descriptions of sources whose background work died."""
        return [s.description for s in self.items if not s.alive()]


class _TlsReloader:
    """Serves the current certificate files to gRPC; reloads them when they change."""

    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self._stamp = self._read_stamp()
        self.initial = self._load()

    def _read_stamp(self) -> tuple[tuple[int, int], ...]:
        paths = [self.tls.cert_file, self.tls.key_file]
        if self.tls.client_ca_file:
            paths.append(self.tls.client_ca_file)
        out = []
        for path in paths:
            st = Path(path).stat()
            out.append((st.st_ino, st.st_mtime_ns))
        return tuple(out)

    def _load(self) -> Any:
        cert = Path(self.tls.cert_file).read_bytes()
        key = Path(self.tls.key_file).read_bytes()
        ca = Path(self.tls.client_ca_file).read_bytes() if self.tls.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> Any:
        """Called by gRPC on each handshake: a new configuration if the files changed."""
        try:
            stamp = self._read_stamp()
            if stamp == self._stamp:
                return None
            config = self._load()
        except (OSError, ValueError) as exc:
            log.error("tls_reload_failed", error=str(exc))  # noqa: TRY400 - keep old certs
            return None
        self._stamp = stamp
        log.info("tls_reloaded", cert_file=str(self.tls.cert_file))
        return config

    def credentials(self) -> grpc.ServerCredentials:
        """Dynamic server credentials (mTLS when a client CA is configured)."""
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch,
            require_client_authentication=self.tls.client_ca_file is not None,
        )  # fmt: skip


class App:
    """One extauthz process."""

    def __init__(
        self, config: Config, *, reuse_port: bool = False, serve_http: bool = True,
        ready_file: Path | None = None, heartbeat_file: Path | None = None,
        liveness: LivenessTimings | None = None, supervisor: int | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        #: the pid of the workers supervisor this worker exits without (None: none)
        self.supervisor = supervisor
        self.sources = Sources.from_config(config)
        self.store = self.sources.store
        #: revocation lists (None when none is configured); ready only once loaded
        self.revocation = Revocation.from_config(config)
        self.evaluator = Evaluator(
            config, self.store, revocation=self.revocation.store if self.revocation else None
        )
        self.store.on_change(self.evaluator.cache.purge)
        self.authorizer = Authorizer(self.evaluator, config.logging)
        self.health = health.HealthServicer()
        self._stopping = threading.Event()
        self._draining = threading.Event()
        self.grpc_port = 0
        self.reuse_port = reuse_port
        self._pool = CallPool(config.server.threads, thread_name_prefix="check")
        self.server = self._build_server()
        listen = config.listen
        self.http_authz: HttpAuthzServer | None = None
        if listen.http_authz:
            try:
                self.http_authz = HttpAuthzServer(
                    self.evaluator, config.logging, listen.http_authz,
                    path_prefix=listen.http_authz_path_prefix,
                    metadata=listen.http_authz_metadata, tls=listen.tls,
                    reuse_port=reuse_port, threads=config.server.threads,
                    header_timeout=listen.http_authz_header_timeout_seconds,
                    idle_timeout=listen.http_authz_idle_timeout_seconds,
                )  # fmt: skip
            except OSError as exc:
                self.server.stop(0)
                raise ConfigError(
                    "listen.http_authz", f"cannot listen on {listen.http_authz}: {exc.strerror}"
                ) from exc
        self.ready_file = ready_file
        self.liveness = Liveness(
            self._probes(), liveness or liveness_timings(config.server.liveness_interval_seconds),
            heartbeat=heartbeat_file or worker_heartbeat_file(), on_change=self._set_live,
        )  # fmt: skip
        self.http: HttpEndpoints | None = None
        if listen.http and serve_http:
            try:
                self.http = HttpEndpoints(listen.http, ready=self.is_ready, live=self.liveness.live)
            except OSError as exc:
                self.server.stop(0)
                if self.http_authz is not None:
                    self.http_authz.stop(0)
                raise ConfigError(
                    "listen.http", f"cannot listen on {listen.http}: {exc.strerror}"
                ) from exc
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._set_live(True)
        metrics.set_build_info(_version())

    def _build_server(self) -> Any:
        options = [
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
        server: Any
        if self.config.server.grpc_server == "core" and grpc_core.available():
            # health Check on the loop: probes answer even while every other thread
            # serves a Watch stream
            server = grpc_core.CoreServer(self.authorizer.fast_method(), self._pool,
                                          options=options, inline=(HEALTH_CHECK,))  # fmt: skip
        else:
            if self.config.server.grpc_server == "core":
                log.warning("grpc_core_unavailable", using="grpcio",
                            grpcio=grpc.__version__)  # fmt: skip
            server = grpc.server(
                self._pool,
                handlers=[self.authorizer.handler()],
                options=options,
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = self.config.listen.grpc
        try:
            if self.config.listen.tls:
                self.grpc_port = server.add_secure_port(
                    address, _TlsReloader(self.config.listen.tls).credentials()
                )
            else:
                self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc says only that the bind failed
            raise ConfigError("listen.grpc", f"cannot listen on {address}") from exc
        return server

    def _set_health(self, status: Any) -> None:
        for name in ("", SERVICE):
            self.health.set(name, status)

    def _set_live(self, live: bool) -> None:
        status = health_pb2.HealthCheckResponse
        self.health.set(LIVENESS_SERVICE, status.SERVING if live else status.NOT_SERVING)

    def _probes(self) -> dict[str, Probe]:
        """Self-checks of each authorization listener (see :mod:`.liveness`)."""
        probes: dict[str, Probe] = {"grpc": self._probe_grpc}
        if self.http_authz is not None:
            probes["http_authz"] = self.http_authz.ping
        return probes

    def _probe_grpc(self, deadline: float) -> bool:
        # the handler pool must run a task: a pool whose threads are all stuck answers
        # nothing; then, when this process alone owns the port, a real Check of the
        # health service over loopback must answer
        started = time.monotonic()
        ran = threading.Event()
        try:
            self._pool.submit(ran.set)
        except RuntimeError:  # shut down
            return False
        if not ran.wait(deadline):
            return False
        if isinstance(self.server, grpc_core.CoreServer) and not self.server.alive(deadline):
            return False
        if self.reuse_port or self.config.listen.tls is not None:
            return True
        left = max(deadline - (time.monotonic() - started), 0.1)
        host = _loopback_host(self.config.listen.grpc)
        with grpc.insecure_channel(f"{host}:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=left)
            except grpc.RpcError:
                return False
        return True

    def is_ready(self) -> bool:
        """Ready: the service can decide (every key source loaded once, no named Secret
        missing, a usable key for every provider and for decryption; every revocation
        list loaded) and it is not draining. Once ready, a later key loss does not flip
        it back (the store latches); draining does."""
        revoked_ready = self.revocation is None or self.revocation.ready
        return self.store.ready and revoked_ready and not self._draining.is_set()

    def start(self) -> None:
        """Start sources, servers, and the readiness watcher. Returns at once."""
        self.sources.start()
        if self.revocation is not None:
            try:
                self.revocation.start()
            except (KeySourceError, OSError) as exc:
                self.sources.stop()
                raise ConfigError(
                    "revocation.sources", f"cannot start a revocation source: {exc}"
                ) from exc
        self.server.start()
        if self.http_authz is not None:
            self.http_authz.start()
        if self.http is not None:
            self.http.start()
        self.liveness.start()
        metrics.start_flusher()
        threading.Thread(target=self._await_ready, name="readiness", daemon=True).start()
        listen = self.config.listen
        log.info("listening", grpc=listen.grpc, grpc_port=self.grpc_port,
                 http_authz=listen.http_authz,
                 http_authz_port=self.http_authz.port if self.http_authz else None,
                 http=listen.http, tls=listen.tls is not None)  # fmt: skip

    def _await_ready(self) -> None:
        waited = 0.0
        while not self._stopping.is_set():
            if self.store.wait_ready(timeout=1.0) and (
                self.revocation is None or self.revocation.wait_ready(timeout=1.0)
            ):
                if not self._draining.is_set():
                    self._set_health(health_pb2.HealthCheckResponse.SERVING)
                    if self.ready_file is not None:
                        self.ready_file.touch()
                    log.info("serving", keys_generation=self.store.ring.generation)
                return
            waited += 1.0
            if waited in (5.0, 30.0) or waited % 60 == 0:
                pending = self.store.pending() + (
                    self.revocation.pending() if self.revocation is not None else []
                )
                log.warning("not_ready", waiting_for=pending, seconds=waited)

    def drain_and_stop(self) -> None:
        """The SIGTERM sequence: NOT_SERVING, drain, stop with grace, stop sources."""
        if self._draining.is_set():
            return
        self._draining.set()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.http_authz is not None:
            self.http_authz.begin_drain()
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
        shutdown = self.config.shutdown
        log.info("draining", drain_seconds=shutdown.drain_seconds,
                 grace_seconds=shutdown.grace_seconds)  # fmt: skip
        time.sleep(shutdown.drain_seconds)
        stopped = self.server.stop(grace=shutdown.grace_seconds)
        if self.http_authz is not None:
            self.http_authz.stop(shutdown.grace_seconds)
        stopped.wait(shutdown.grace_seconds + 1)
        self.stop_background()
        log.info("stopped")

    def stop_background(self) -> None:
        """Stop sources and the HTTP endpoints."""
        self._stopping.set()
        self.liveness.stop()
        self.sources.stop()
        if self.revocation is not None:
            self.revocation.stop()
        if self.http is not None:
            self.http.stop()
        metrics.stop_flusher()

    def stop_now(self) -> None:
        """Immediate stop (tests)."""
        self._draining.set()
        self.server.stop(grace=0).wait(5)
        if self.http_authz is not None:
            self.http_authz.stop(0)
        self.stop_background()

    def run(self) -> int:
        """Start, then block until SIGTERM/SIGINT (exit 0) or a dead source (exit 1)."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not stop.wait(0.5):
            dead = self.sources.dead() + (self.revocation.dead() if self.revocation else [])
            if dead:
                log.error("key_source_died", sources=dead)
                self.stop_now()
                return 1
            if self.supervisor is not None and os.getppid() != self.supervisor:
                # the supervisor was killed (not stopped: it would have sent SIGTERM);
                # a worker never outlives it holding the port
                log.error("supervisor_gone", supervisor=self.supervisor)
                self.stop_now()
                return 1
        self.drain_and_stop()
        return 0


def _loopback_host(address: str) -> str:
    """Where this process reaches its own listener bound to ``address``."""
    host = address.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "*"):  # a wildcard bind
        return "[::1]" if host == "[::]" else "127.0.0.1"
    return host


def _version() -> str:
    from extauthz import __version__

    return __version__
