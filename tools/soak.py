"""Soak with faults: continuous Checks while decryption keys rotate in a Kubernetes
Secret whose API server drops, cuts, stalls, 410s and restarts its watches.

What runs:

- a fake Kubernetes API server (``tests/fakekube``, real HTTP on loopback) holding the
  Secret ``auth/extauthz-decryption-keys`` (a JWKS of EC P-256 keys, ``ECDH-ES+A256KW``);
- ``python -m extauthz serve`` (the real CLI) reading that Secret through the real
  ``kubernetes`` client (a kubeconfig pointing at the fake), verification keys from a
  directory;
- a rotator: every ``--rotate-every`` seconds the Secret goes from ``{K(n), K(n+1)}`` to
  ``{K(n+1), K(n+2)}`` in one write (K(n+2) added, K(n) removed at the same instant);
- a fault injector: every ``--fault-every`` seconds the next fault of a shuffled cycle:
  ``close`` (watch ended cleanly), ``abort`` (cut mid-chunk), ``gone-event`` (compaction,
  then an ERROR 410 event), ``gone-rewatch`` (compaction, watch closed, the re-watch
  gets 410), ``stall`` (watches silent for 1.5 s, connection kept), ``fail`` (the next
  two requests within 1 s answer 500), ``outage`` (every request dropped unanswered for 0.5 s),
  ``restart`` (API server down 0.3 s, same port), ``too-large`` (the re-watch answers
  504 "Too large resource version", as after an etcd restore), ``throttle`` (the
  re-watch answers 429 with ``Retry-After: 1``), ``hang`` (a silent peer for 1.5 s:
  open watches send nothing, new requests are never answered, nothing is closed),
  ``lose-history`` (a restart whose watch cache lost the history: the re-watch is 410);
- ``--clients`` threads sending Checks over gRPC, each a *probe* whose correct answer
  is known at every instant: a valid token for a key in the Secret now (``current``),
  for a key removed earlier (``retired``) or not written yet (``future``); and tokens
  that are never valid: ``expired``, ``forged`` (attacker's signature), ``audience``
  (another audience), ``tampered`` (a flipped character), ``garbage``;
- a sampler reading the service's ``/proc/PID`` every second: RSS, threads, open fds.

Wrong decisions. Key K is *live* from its write until its removal, by the API server's
clock (here: the moments the store commits). A decision is **wrong** when it allows
a never-valid probe, allows a token of K whose Check completed before K was written
(zero tolerance: the service cannot know a key before it exists), or allows a token of
K sent after ``removed(K) + tolerance``. It is **late** when it denies a valid token
of K sent after ``added(K) + tolerance`` and answered before K's removal.

Tolerance (the rotation contract): a Secret update is in force within 1 s of the API
server's event; a removed key stops working at once once the source *sees* the event.
Under a fault the source sees it only after recovering: a watch that had lasted 1 s or
brought changes is re-opened at once, anything else backs off
``U(0.5, 1) * min(30, 0.5 * 2^n)`` s (extauthz/keys/sources/backoff.py). Each of our
faults costs at most two failed attempts (``fail``: two 500s; ``outage``/``restart``: a
0.5 s / 0.3 s gap, at most two refused attempts; a ``stall`` delivers at release), so
recovery takes at most 0.5 + 1.0 s of backoff, plus 0.5 s for the relist and the event:
2 s after the fault ends. Hence: a change at ``t`` must be in force by ``t + 1 s``, or,
when a fault was under way or started before then, by ``end of that fault + 2 s`` (one
fault deep: a transitive extension over a stream of faults would excuse anything).
The report also gives the *measured* lag of every change, so the tolerance is never
what hides a slow propagation.

Resource growth: samples of the first ``max(3 s, 20 %)`` of the run are warm-up (the gRPC
pool fills, the token cache reaches ``cache.max_entries``, which is set to 500 here so
the plateau comes early). After it, RSS may grow at most ``max(16 MiB, 15 %)``, threads
at most 4 and open fds at most 8 over the first steady sample (faults open and close
API connections; a leak grows without bound).

Usage::

    .venv/bin/python tools/soak.py --seconds 180             # a few minutes
    .venv/bin/python tools/soak.py --seconds 20 --json r.json  # what the test runs

Exit status 0 when there was no wrong or late decision, the growth stayed in bounds,
and the service exited 0 on SIGTERM; 1 otherwise. ``--json`` writes the full report.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository: `tests` is a package

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from extauthz import mint  # noqa: E402
from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2  # noqa: E402
from extauthz.client import build_request  # noqa: E402
from extauthz.server.authz import METHOD, SERVICE  # noqa: E402
from tests.fakekube import FakeKube  # noqa: E402
from tests.fakekube import server as fakekube_server  # noqa: E402

ISSUER = "https://idp.example.test"
AUDIENCE = "api://orders"
NAMESPACE = "auth"
SECRET = "extauthz-decryption-keys"
PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "k")

#: the rotation contract: an updated Secret is in force within 1 s of the API server's event
PROPAGATION = 1.0
#: recovery after a fault: two backoff attempts at their longest (0.5 + 1 s), + 0.5 s
RECOVERY = 2.0
#: growth bounds after warm-up
RSS_GROWTH_BYTES = 16 << 20
RSS_GROWTH_RATIO = 0.15
THREAD_GROWTH = 4
FD_GROWTH = 8

NEVER_VALID = ("expired", "forged", "audience", "tampered", "garbage")


# connections the faults cut are expected: no traceback on stderr for each of them
fakekube_server._Server.handle_error = lambda *_args: None  # type: ignore[method-assign]


def public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k not in PRIVATE}


# -- timeline ------------------------------------------------------------------------------


@dataclass
class Window:
    """A fault: what, and when (monotonic seconds)."""

    kind: str
    start: float
    end: float


@dataclass
class KeyLife:
    """When a decryption key was written to and removed from the Secret."""

    kid: str
    added: tuple[float, float] | None = None  # (before the write, after it)
    removed: tuple[float, float] | None = None


def deadline(change_end: float, faults: list[Window]) -> float:
    """The instant by which a change committed at ``change_end`` must be in force.

    A fault counts if it began before the deadline computed so far and the source may
    still have been recovering from it at the change. Two passes, not a fixpoint: a
    fault that began while the source recovered from another (faults come every two or
    three seconds here, so chains of two happen) extends the deadline once more; a
    transitive closure would grow without bound and excuse anything.
    """
    limit = change_end + PROPAGATION
    for _ in range(2):
        extended = limit
        for fault in faults:
            recovered = fault.end + RECOVERY
            if fault.start <= limit and recovered > change_end:
                extended = max(extended, recovered)
        limit = extended
    return limit


@dataclass
class Probe:
    """One Check and its answer."""

    kind: str
    kid: str
    sent: float
    done: float
    allowed: bool
    reason: str


# -- the service under test ------------------------------------------------------------------


class Service:
    """``python -m extauthz serve`` with its stdout read line by line."""

    def __init__(self, workdir: Path, kube_url: str, verify_dir: Path,
                 grpc_server: str | None = None) -> None:  # fmt: skip
        self.workdir = workdir
        self.port = _free_port()
        self.http_port = _free_port()
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": kube_url}}],
            "users": [{"name": "soak", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "soak"}}],
        }))  # fmt: skip
        config = {
            "apiVersion": "extauthz/v1",
            "listen": {"grpc": f"127.0.0.1:{self.port}", "http": f"127.0.0.1:{self.http_port}"},
            "decryption": {
                "keys": [{"kubernetes": {"namespace": NAMESPACE, "secrets": [SECRET]}}],
                "required": True,
            },
            "providers": [{
                "name": "idp", "issuer": ISSUER, "audiences": [AUDIENCE],
                "keys": [{"directory": str(verify_dir)}],
                "claims_to_headers": {"sub": "x-auth-subject"},
            }],
            "cache": {"max_entries": 500},
            "logging": {"level": "info", "format": "json", "decisions": "deny"},
            "shutdown": {"drain_seconds": 0.5, "grace_seconds": 3},
        }  # fmt: skip
        if grpc_server is not None:
            config["server"] = {"grpc_server": grpc_server}
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(json.dumps(config))
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.deny_lines = 0
        self._reader: threading.Thread | None = None
        self.log_path = workdir / "service.log"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "extauthz", "serve", "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name="service-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with self.log_path.open("wb") as keep:
            for line in self.proc.stdout:
                if b'"event": "check"' in line:
                    self.deny_lines += 1
                    continue
                keep.write(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self.events.append((time.monotonic(), event))

    def wait_serving(self, timeout: float) -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if self.proc is not None and self.proc.poll() is not None:
                    return False
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return True
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        return False

    def sample(self) -> dict[str, float] | None:
        """RSS (bytes), threads and open fds of the service, from /proc."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        base = Path(f"/proc/{self.proc.pid}")
        try:
            status = (base / "status").read_text()
            fds = len(os.listdir(base / "fd"))
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {
            "rss": int(fields["VmRSS"].split()[0]) * 1024,
            "threads": int(fields["Threads"]),
            "fds": fds,
        }

    def metrics(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.http_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            code = None
        if self._reader is not None:
            self._reader.join(5)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the soak ----------------------------------------------------------------------------------


@dataclass
class Soak:
    seconds: float
    rotate_every: float
    fault_every: float
    clients: int
    seed: int
    workdir: Path
    grpc_server: str | None = None  # None: the service's default
    log: Callable[[str], None] = print
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.lives: dict[str, KeyLife] = {}
        self.faults: list[Window] = []
        self.probes: list[Probe] = []
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.errors: Counter[str] = Counter()
        self.generation = 0  # n: the Secret holds K(n), K(n+1)
        self.tokens: dict[str, list[str]] = {}

    # -- keys and tokens ----------------------------------------------------------------------

    def key(self, n: int) -> dict[str, Any]:
        """The private JWK of K(n) (made on first use: EC keys are cheap)."""
        kid = f"k{n:03d}"
        with self.lock:
            if kid not in self._keys:
                jwk = mint.generate_jwk("enc", "ECDH-ES+A256KW", kid)
                self._keys[kid] = jwk
                # imported once: importing a key (an RSA one above all) costs milliseconds
                self._public[kid] = mint.import_key(public(jwk))
            return self._keys[kid]

    def token(self, n: int, *, signer: Any = None, **claims: Any) -> str:
        """A nested token for K(n): valid, unless ``signer``/``claims`` say otherwise."""
        self.key(n)
        data = mint.claims_for(ISSUER, AUDIENCE, f"user-{n}", ttl=600)
        data.update(claims)
        return mint.encrypt(mint.sign(data, signer or self.sig), self._public[f"k{n:03d}"])

    def tokens_for(self, n: int, count: int = 3) -> list[str]:
        """The reusable valid tokens of K(n) (minted once)."""
        kid = f"k{n:03d}"
        if kid not in self.tokens:
            self.tokens[kid] = [self.token(n) for _ in range(count)]
        return self.tokens[kid]

    def secret_data(self, n: int) -> dict[str, bytes]:
        jwks = {"keys": [self.key(n), self.key(n + 1)]}
        return {"jwks.json": json.dumps(jwks).encode()}

    def write(self, n: int) -> None:
        """Make the Secret hold K(n), K(n+1); record what was added and removed."""
        before = time.monotonic()
        self.kube.store.put_secret(NAMESPACE, SECRET, self.secret_data(n))
        after = time.monotonic()
        with self.lock:
            for m in (n, n + 1):
                life = self.lives.setdefault(f"k{m:03d}", KeyLife(f"k{m:03d}"))
                if life.added is None:
                    life.added = (before, after)
            for kid, life in self.lives.items():
                if life.removed is None and kid not in (f"k{n:03d}", f"k{n + 1:03d}"):
                    life.removed = (before, after)
            self.generation = n

    # -- threads ------------------------------------------------------------------------------

    def rotator(self) -> None:
        n = self.generation
        while not self.stop.wait(self.rotate_every):
            n += 1
            for m in (n + 1, n + 2, n + 3):  # tokens ready before their keys are written
                self.tokens_for(m)
            self.write(n)

    def injector(self) -> None:
        cycle = ["close", "abort", "gone-event", "gone-rewatch", "stall", "fail", "outage",
                 "restart", "too-large", "throttle", "hang", "lose-history"]  # fmt: skip
        self.rng.shuffle(cycle)
        if self.stop.wait(self.fault_every / 2):
            return
        for kind in itertools.cycle(cycle):
            start = time.monotonic()
            try:
                self.inject(kind)
            except Exception as exc:  # a harness fault must not end the soak
                self.errors[f"inject {kind}: {type(exc).__name__}"] += 1
            with self.lock:
                self.faults.append(Window(kind, start, time.monotonic()))
            if self.stop.wait(max(0.0, self.fault_every - (time.monotonic() - start))):
                return

    def inject(self, kind: str) -> None:
        kube = self.kube
        if kind == "close":
            kube.close_watches()
        elif kind == "abort":
            kube.abort_watches()
        elif kind == "gone-event":
            kube.store.compact()
            kube.error_watches(410)
        elif kind == "gone-rewatch":
            kube.store.compact()
            kube.close_watches()
        elif kind == "stall":
            kube.stall_watches()
            time.sleep(1.5)
            kube.release_watches()
        elif kind == "fail":
            kube.fail_requests(2, 500, ttl=1.0)
            kube.close_watches()
        elif kind == "outage":
            kube.outage("drop")
            time.sleep(0.5)
            kube.recover()
        elif kind == "restart":
            kube.restart(down_for=0.3)
        elif kind == "too-large":
            # what a watch meets after an etcd restore: 504 Too large resource version
            kube.fail_requests(1, 504, lambda r: r.is_watch, ttl=1.0)
            kube.close_watches()
        elif kind == "throttle":
            kube.fail_requests(1, 429, lambda r: r.is_watch, retry_after=1, ttl=1.0)
            kube.close_watches()
        elif kind == "hang":
            kube.outage("hang")  # a silent peer: nothing sent, nothing closed
            time.sleep(1.5)
            kube.recover()
        elif kind == "lose-history":
            kube.store.put_secret("elsewhere", "tick", {"t": str(time.monotonic()).encode()})
            kube.restart(down_for=0.3, lose_history=True)

    def sampler(self) -> None:
        while not self.stop.wait(1.0):
            sample = self.service.sample()
            if sample is not None:
                with self.lock:
                    self.samples.append((time.monotonic(), sample))

    def client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        channel = grpc.insecure_channel(f"127.0.0.1:{self.service.port}")
        call = channel.unary_unary(
            METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        kinds = ["current"] * 6 + ["retired"] * 2 + ["future"] * 2 + list(NEVER_VALID)
        try:
            while not self.stop.is_set():
                kind = rng.choice(kinds)
                n = self.generation
                kid, token = self.pick(kind, n, rng)
                sent = time.monotonic()
                try:
                    answer = call(build_request({"authorization": f"Bearer {token}"}), timeout=5)
                except grpc.RpcError as error:
                    self.errors[f"rpc {error.code().name}"] += 1
                    continue
                done = time.monotonic()
                allowed = answer.status.code == 0
                reason = answer.dynamic_metadata.fields["reason"].string_value
                with self.lock:
                    self.probes.append(Probe(kind, kid, sent, done, allowed, reason))
        finally:
            channel.close()

    def pick(self, kind: str, n: int, rng: random.Random) -> tuple[str, str]:
        """A token for probe ``kind`` while the Secret holds K(n), K(n+1)."""
        if kind == "current":
            m = n + rng.randint(0, 1)
            if rng.random() < 0.05:  # now and then a fresh token: cache misses
                return f"k{m:03d}", self.token(m)
            return f"k{m:03d}", rng.choice(self.tokens_for(m))
        if kind == "retired":
            m = n - rng.randint(1, 3)
            if m < 0:
                return "", "garbage.token.x"
            return f"k{m:03d}", rng.choice(self.tokens_for(m))
        if kind == "future":
            m = n + 2
            return f"k{m:03d}", rng.choice(self.tokens_for(m))
        values = self.invalid[kind]
        return "", values[(n + rng.randint(0, 1)) % len(values)]

    # -- run ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self._keys: dict[str, dict[str, Any]] = {}
        self._public: dict[str, Any] = {}
        sig = mint.generate_jwk("sig", "RS256", "sig-1")
        self.sig = mint.import_key(sig)
        attacker = mint.import_key(mint.generate_jwk("sig", "RS256", "sig-1"))  # same kid
        verify = self.workdir / "verify"
        verify.mkdir()
        (verify / "idp.json").write_text(json.dumps({"keys": [public(sig)]}))
        self.kube = FakeKube()
        self.kube.start()
        self.service = Service(self.workdir, self.kube.url, verify, self.grpc_server)
        threads: list[threading.Thread] = []
        try:
            for m in range(0, 4):
                self.tokens_for(m)
            self.write(0)
            now = int(time.time())
            valid = self.tokens["k000"][0]
            # never valid, whatever the keys: encrypted to keys that will be live at some
            # point of the run, so decryption succeeds and the inner checks must refuse
            span = range(int(self.seconds / self.rotate_every) + 2)
            self.invalid = {
                "expired": [self.token(m, iat=now - 3600, nbf=now - 3600, exp=now - 3000)
                            for m in span],
                "forged": [self.token(m, signer=attacker) for m in span],
                "audience": [self.token(m, aud="api://other") for m in span],
                "tampered": [valid[:200] + ("A" if valid[200] != "A" else "B") + valid[201:]],
                "garbage": ["x.y.z", "e30.e30.e30.e30.e30", "a" * 17000,
                            "eyJhbGciOiJub25lIn0.e30."],
            }  # fmt: skip
            self.service.start()
            if not self.service.wait_serving(30):
                raise RuntimeError(
                    "extauthz did not become ready:\n" + self.service.log_path.read_text()
                )
            started = time.monotonic()
            self.log(f"soak: extauthz pid {self.service.proc.pid if self.service.proc else '?'} "
                     f"ready; {self.seconds:.0f} s, rotation every {self.rotate_every} s, "
                     f"fault every {self.fault_every} s, {self.clients} clients")  # fmt: skip
            threads = [
                threading.Thread(target=self.rotator, name="rotator", daemon=True),
                threading.Thread(target=self.injector, name="faults", daemon=True),
                threading.Thread(target=self.sampler, name="sampler", daemon=True),
                *(threading.Thread(target=self.client, args=(i,), name=f"client-{i}", daemon=True)
                  for i in range(self.clients)),
            ]  # fmt: skip
            sample = self.service.sample()
            if sample is not None:
                self.samples.append((time.monotonic(), sample))
            for thread in threads:
                thread.start()
            self.stop.wait(self.seconds)
            self.stop.set()
            for thread in threads:
                thread.join(10)
            self.kube.release_watches()
            self.kube.recover()
            metrics = self.service.metrics()
            code, stop_seconds = self.service.terminate(10)
            return self.report(started, code, stop_seconds, metrics)
        finally:
            self.stop.set()
            self.service.kill()
            self.kube.stop()

    # -- verdict ------------------------------------------------------------------------------

    def report(self, started: float, code: int | None, stop_seconds: float,
               metrics: str) -> dict[str, Any]:  # fmt: skip
        lives = self.lives
        faults = self.faults
        wrong: list[dict[str, Any]] = []
        late: list[dict[str, Any]] = []
        by_kind: Counter[str] = Counter()
        for p in self.probes:
            by_kind[f"{p.kind}:{'allow' if p.allowed else 'deny'}"] += 1
            life = lives.get(p.kid)
            if p.kind in NEVER_VALID or not p.kid:
                if p.allowed:
                    wrong.append(self._row(p, "never valid"))
                continue
            if life is None or life.added is None:
                if p.allowed:
                    wrong.append(self._row(p, "key never written"))
                continue
            if p.allowed and p.done < life.added[0]:
                wrong.append(self._row(p, "allowed before its key was written"))
            elif p.allowed and life.removed and p.sent > deadline(life.removed[1], faults):
                wrong.append(self._row(p, "allowed after its key's removal + tolerance"))
            elif (
                not p.allowed
                and p.sent > deadline(life.added[1], faults)
                and (life.removed is None or p.done < life.removed[0])
            ):
                late.append(self._row(p, f"denied ({p.reason}) a live key's token"))
        lags = self._lags()
        steady = self._growth(started)
        reloads = {
            line.split("{", 1)[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("extauthz_key_reloads_total{")
        }
        report: dict[str, Any] = {
            "seconds": self.seconds,
            "checks": len(self.probes),
            "checks_per_second": round(len(self.probes) / max(self.seconds, 1e-9)),
            "by_kind": dict(sorted(by_kind.items())),
            "wrong_decisions": len(wrong),
            "late_denies": len(late),
            "wrong_examples": wrong[:10],
            "late_examples": late[:10],
            "rotations": sum(1 for life in lives.values() if life.removed),
            "faults": Counter(f.kind for f in faults),
            "propagation": lags,
            "client_errors": dict(self.errors),
            "resources": steady,
            "key_reloads": reloads,
            "service_exit_code": code,
            "service_stop_seconds": round(stop_seconds, 2),
            "deny_log_lines": self.service.deny_lines,
            "service_errors": [e for _, e in self.service.events if e.get("level") == "error"][:10],
        }
        report["ok"] = bool(
            report["wrong_decisions"] == 0
            and report["late_denies"] == 0
            and steady["within_bounds"]
            and code == 0
            and not self.errors
            and report["checks"] > 0
        )
        return report

    def _row(self, p: Probe, why: str) -> dict[str, Any]:
        life = self.lives.get(p.kid)
        t0 = self.probes[0].sent if self.probes else 0.0
        return {
            "why": why, "kind": p.kind, "kid": p.kid, "reason": p.reason,
            "sent": round(p.sent - t0, 3), "done": round(p.done - t0, 3),
            "added": [round(t - t0, 3) for t in life.added] if life and life.added else None,
            "removed": [round(t - t0, 3) for t in life.removed] if life and life.removed else None,
        }  # fmt: skip

    def _lags(self) -> dict[str, Any]:
        """Measured time from each write to the first Check that showed it."""
        adds: list[float] = []
        removes: list[float] = []
        faulted: list[float] = []
        for life in self.lives.values():
            mine = [p for p in self.probes if p.kid == life.kid]
            if life.added and life.added[0] > (self.probes[0].sent if self.probes else 0):
                first = next((p.done for p in sorted(mine, key=lambda p: p.done)
                              if p.allowed and p.sent >= life.added[1]), None)  # fmt: skip
                if first is not None:
                    lag = first - life.added[1]
                    adds.append(lag)
                    if deadline(life.added[1], self.faults) > life.added[1] + PROPAGATION:
                        faulted.append(lag)
            if life.removed:
                last = max((p.sent for p in mine if p.allowed and p.sent >= life.removed[1]),
                           default=None)  # fmt: skip
                lag = (last - life.removed[1]) if last is not None else 0.0
                removes.append(lag)
                if deadline(life.removed[1], self.faults) > life.removed[1] + PROPAGATION:
                    faulted.append(lag)

        def summary(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            return {"n": len(values), "max_s": round(max(values), 3),
                    "median_s": round(statistics.median(values), 3)}  # fmt: skip

        return {"new_key_in_force": summary(adds), "removed_key_refused": summary(removes),
                "changes_during_faults": summary(faulted)}  # fmt: skip

    def _growth(self, started: float) -> dict[str, Any]:
        warm = max(3.0, 0.2 * self.seconds)
        steady = [s for t, s in self.samples if t - started >= warm]
        out: dict[str, Any] = {"samples": len(self.samples), "warmup_s": warm}
        for name in ("rss", "threads", "fds"):
            values = [s[name] for _, s in self.samples]
            if values:
                out[name] = {"min": min(values), "max": max(values), "last": values[-1],
                             "series": values}  # fmt: skip
        if len(steady) < 2:
            out["within_bounds"] = False
            out["why"] = "too few steady samples"
            return out
        first = steady[0]
        rss_bound = max(RSS_GROWTH_BYTES, RSS_GROWTH_RATIO * first["rss"])
        checks = {
            "rss": max(s["rss"] for s in steady) - first["rss"] <= rss_bound,
            "threads": max(s["threads"] for s in steady) - first["threads"] <= THREAD_GROWTH,
            "fds": max(s["fds"] for s in steady) - first["fds"] <= FD_GROWTH,
        }
        out["steady_first"] = first
        out["bounds"] = {"rss_bytes": int(rss_bound), "threads": THREAD_GROWTH, "fds": FD_GROWTH}
        out["checks"] = checks
        out["within_bounds"] = all(checks.values())
        return out


def _print_summary(report: dict[str, Any]) -> None:
    res = report["resources"]

    def span(name: str, scale: float = 1.0, unit: str = "") -> str:
        data = res.get(name, {})
        if not data:
            return "n/a"
        return (f"min {data['min'] / scale:.1f}{unit} max {data['max'] / scale:.1f}{unit} "
                f"last {data['last'] / scale:.1f}{unit}")  # fmt: skip

    print(f"checks: {report['checks']} ({report['checks_per_second']}/s)  "
          f"rotations: {report['rotations']}  faults: {dict(report['faults'])}")  # fmt: skip
    print(f"wrong decisions: {report['wrong_decisions']}  late denies: {report['late_denies']}  "
          f"client errors: {report['client_errors']}")  # fmt: skip
    print(f"propagation: {report['propagation']}")
    print(f"RSS: {span('rss', 1 << 20, ' MiB')}  threads: {span('threads')}  fds: {span('fds')}  "
          f"within bounds: {res.get('within_bounds')}")  # fmt: skip
    print(f"by kind: {report['by_kind']}")
    print(f"key reloads: {report['key_reloads']}  SIGTERM -> exit {report['service_exit_code']} "
          f"in {report['service_stop_seconds']} s")  # fmt: skip
    for row in report["wrong_examples"] + report["late_examples"]:
        print("  ", row)
    print("OK" if report["ok"] else "FAILED")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="duration (default 180)")
    parser.add_argument("--rotate-every", type=float, default=3.0, help="seconds per rotation")
    parser.add_argument("--fault-every", type=float, default=2.5, help="seconds per fault")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--grpc-server",
        choices=("grpcio", "core"),
        default=None,
        help="the service's server.grpc_server (default: the service's default, core)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        soak = Soak(
            args.seconds,
            args.rotate_every,
            args.fault_every,
            args.clients,
            seed,
            workdir,
            args.grpc_server,
        )
        report = soak.run()
    report["seed"] = seed
    report["grpc_server"] = args.grpc_server or "default"
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    _print_summary(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
