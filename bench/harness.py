"""Shared plumbing of the benchmarks: keys, configs, server processes, /proc readings.

Every benchmark runs the servers it measures as child processes (extauthz exactly as
an operator runs it: ``python -m extauthz serve --config FILE``), reads their CPU time
and memory from ``/proc``, and always stops them (a ``with`` block, plus an atexit
net), so a benchmark leaves no process behind even when it fails half-way.

The machine is shared and noisy: numbers are only compared with a baseline measured
in the same run, and every table carries the command line that produced it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable

ISSUER = "https://idp.bench"
AUDIENCE = "api://bench"
CLAIM_HEADERS = {"sub": "x-auth-subject", "email": "x-auth-email", "scope": "x-auth-scope"}

_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    """A benchmark that dies half-way still leaves no server running."""
    for proc in list(_LIVE):
        stop_process(proc, timeout=2)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM ``proc`` (and its process group), SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    _LIVE.discard(proc)


def spawn(
    command: Sequence[str], log: Path | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group (so stopping it stops its children)."""
    out: Any = subprocess.DEVNULL if log is None else log.open("wb")
    try:
        proc = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **kwargs,
        )  # fmt: skip
    finally:
        if log is not None:
            out.close()
    _LIVE.add(proc)
    return proc


def prioritise(nice: int) -> None:
    """Run this benchmark (and every process it starts) at ``nice`` (root: may be < 0).

    On a machine shared with other work, a negative value keeps the neighbours' load
    from landing in the middle of one variant and not of another.
    """
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- /proc


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU seconds of ``pid`` (and its live descendants), from /proc/PID/stat."""
    total = 0.0
    for p in descendants(pid) if tree else [pid]:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return total


def switches(pid: int) -> int:
    """Context switches (voluntary and involuntary) of every live thread of ``pid`` and
    of its live descendants, from /proc/PID/task/TID/status: how often the processes
    gave up or lost a core. A thread that ended meanwhile takes its count with it (the
    servers measured keep their threads)."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    for line in (task / "status").read_text().splitlines():
                        if "ctxt_switches:" in line:
                            total += int(line.split(":", 1)[1])
    return total


def cpu_by_process(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and of each live descendant, by pid."""
    return {p: cpu_seconds(p, tree=False) for p in descendants(pid)}


def process_label(pid: int) -> str:
    """A short name for a benchmark process: its script or ``extauthz`` role."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if "extauthz" in words:
        return "extauthz worker" if "--worker" in words else "extauthz"
    if any("resource_tracker" in w for w in words):
        return "resource tracker"  # multiprocessing's helper, idle
    if any("multiprocessing" in w for w in words):
        return "child process"
    script = next((Path(w).name for w in words[1:] if w.endswith(".py")), None)
    return script or (Path(words[0]).name if words else "?")


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import grpc
    import joserfc

    return {
        "cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "grpcio": grpc.__version__,
        "joserfc": getattr(joserfc, "__version__", "?"),
        "loadavg_at_start": os.getloadavg()[0],
    }  # fmt: skip


def command_line() -> str:
    """The command that is running, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def save(name: str, data: dict[str, Any]) -> Path:
    """Write a benchmark's raw results to ``bench/results/NAME.json`` (git-ignored)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an already sorted sequence (nearest rank)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


# --------------------------------------------------------------------------- keys, tokens


@dataclass
class KeyPair:
    """A private JWK and the :class:`extauthz.keys.material.Key` made of it."""

    jwk: dict[str, Any]
    key: Any

    @classmethod
    def generate(cls, use: str, alg: str, kid: str) -> KeyPair:
        from extauthz import mint

        data = mint.generate_jwk(use, alg, kid)
        return cls(data, mint.import_key(data))


@dataclass
class Keys:
    """The keys of one benchmark setup, written to ``enc/`` and ``sig/`` directories."""

    enc: dict[str, KeyPair] = field(default_factory=dict)  # by enc alg
    sig: dict[str, KeyPair] = field(default_factory=dict)  # by sig alg

    @classmethod
    def generate(
        cls, enc_algs: Sequence[str] = ("RSA-OAEP-256", "ECDH-ES"),
        sig_algs: Sequence[str] = ("RS256", "ES256"),
    ) -> Keys:  # fmt: skip
        keys = cls()
        for alg in enc_algs:
            keys.enc[alg] = KeyPair.generate("enc", alg, f"enc-{alg.lower()}")
        for alg in sig_algs:
            keys.sig[alg] = KeyPair.generate("sig", alg, f"sig-{alg.lower()}")
        return keys

    def write(self, directory: Path) -> None:
        (directory / "enc").mkdir(parents=True, exist_ok=True)
        (directory / "sig").mkdir(parents=True, exist_ok=True)
        for alg, pair in self.enc.items():
            (directory / "enc" / f"{alg}.json").write_text(json.dumps(pair.jwk))
        for alg, pair in self.sig.items():
            (directory / "sig" / f"{alg}.json").write_text(json.dumps(pair.jwk))

    def public_sig_jwks(self, alg: str) -> dict[str, Any]:
        """The public JWKS of the ``alg`` signing key (for Envoy's jwt_authn)."""
        private = ("d", "p", "q", "dp", "dq", "qi")
        public = {k: v for k, v in self.sig[alg].jwk.items() if k not in private}
        return {"keys": [public]}


def claims(subject: str, ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    """Typical access-token claims for ``subject``, valid ``ttl`` seconds from now."""
    from extauthz import mint

    return mint.claims_for(ISSUER, AUDIENCE, subject, ttl=ttl,
                           extra={"email": f"{subject}@bench.test", "scope": "read write",
                                  **extra})  # fmt: skip


def token(keys: Keys, subject: str, sig: str = "RS256", enc: str | None = "RSA-OAEP-256",
          ttl: int = 3600) -> str:  # fmt: skip
    """A signed (and, with ``enc``, encrypted: nested) token for ``subject``."""
    from extauthz import mint

    signed = mint.sign(claims(subject, ttl), keys.sig[sig].key)
    return signed if enc is None else mint.encrypt(signed, keys.enc[enc].key, enc="A256GCM")


# --------------------------------------------------------------------------- extauthz


def write_config(
    directory: Path, *, grpc_port: int, http_port: int | None = None,
    http_authz_port: int | None = None, http_metadata: bool = True,
    cache_entries: int = 10000, cache_ttl: int = 300, decisions: str = "all",
    level: str = "info", threads: int | None = None,
    enc_dir: Path | None = None, sig_dir: Path | None = None, grpc_server: str | None = None,
) -> Path:  # fmt: skip
    """An extauthz config file for the benchmark keys under ``directory``."""
    config: dict[str, Any] = {
        "apiVersion": "extauthz/v1",
        "listen": {"grpc": f"127.0.0.1:{grpc_port}"},
        "decryption": {"keys": [{"directory": str(enc_dir or directory / "enc")}]},
        "providers": [{
            "name": "idp", "issuer": ISSUER, "audiences": [AUDIENCE],
            "keys": [{"directory": str(sig_dir or directory / "sig")}],
            "required_claims": ["exp", "sub"],
            "claims_to_headers": CLAIM_HEADERS,
        }],
        "rules": [{"name": "admin", "path_prefix": "/admin/", "require_scopes": ["admin"]}],
        "response": {"headers": {"x-content-type-options": "nosniff"}},
        "cache": {"max_entries": cache_entries, "max_ttl_seconds": cache_ttl},
        "logging": {"level": level, "decisions": decisions},
        # nothing to drain in a benchmark: stop at once between variants
        "shutdown": {"drain_seconds": 0, "grace_seconds": 1},
    }  # fmt: skip
    if http_port is not None:
        config["listen"]["http"] = f"127.0.0.1:{http_port}"
    if http_authz_port is not None:
        config["listen"]["http_authz"] = f"127.0.0.1:{http_authz_port}"
        if not http_metadata:
            config["listen"]["http_authz_metadata"] = False
    if threads is not None:
        config.setdefault("server", {})["threads"] = threads
    if grpc_server is not None:
        config.setdefault("server", {})["grpc_server"] = grpc_server
    path = directory / f"config-{grpc_port}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def wait_serving(port: int, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None,
                 poll: float = 0.01) -> float:  # fmt: skip
    """Poll gRPC health on ``port`` until SERVING; return the monotonic time it was seen."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before SERVING")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            time.sleep(poll)
    raise TimeoutError(f"nothing SERVING on port {port} after {timeout} s")


def wait_ready_http(port: int, timeout: float = 30,
                    proc: subprocess.Popen[bytes] | None = None) -> None:  # fmt: skip
    """Poll ``/readyz`` (workers mode: every worker SERVING)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before ready")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"/readyz not 200 on port {port} after {timeout} s")


def wait_http(port: int, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None,
              path: str = "/") -> None:  # fmt: skip
    """Poll ``port`` with a GET until any HTTP answer comes back (the listener is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # an HTTP deny is an answer: the listener is up
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no HTTP answer on port {port} after {timeout} s")


@dataclass
class Server:
    """A running server process: its pid, ports and how it was started.

    ``port`` is the gRPC port (0 when there is none), ``http_port`` the port of the
    HTTP authorization listener (None when there is none).
    """

    proc: subprocess.Popen[bytes]
    port: int
    command: list[str]
    http_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds of the server and every worker it started."""
        return cpu_seconds(self.proc.pid)

    def cpu_by_process(self) -> dict[int, float]:
        """CPU seconds of the server and of each worker, by pid."""
        return cpu_by_process(self.proc.pid)

    def switches(self) -> int:
        """Context switches of the server's and its workers' threads so far."""
        return switches(self.proc.pid)


@contextlib.contextmanager
def extauthz(
    workdir: Path, *, workers: int = 1, decisions: str = "deny", level: str = "info",
    cache_entries: int = 10000, cache_ttl: int = 300, log: Path | None = None,
    threads: int | None = None, extra_env: dict[str, str] | None = None,
    knobs: dict[str, Any] | None = None, http_authz: bool = False, http_metadata: bool = True,
    grpc_server: str | None = None,
) -> Iterator[Server]:  # fmt: skip
    """Run ``python -m extauthz serve`` on the keys of ``workdir`` until the block exits.

    Its stdout (the JSON decision log) goes to ``log`` (default: /dev/null): the cost of
    formatting and writing each line counts, a terminal's does not. ``knobs`` runs it
    through ``bench/_patched_serve.py`` (experimental settings, see there).
    ``http_authz`` also opens the HTTP authorization listener (``listen.http_authz``);
    ``http_metadata: False`` turns its ``x-extauthz-*`` headers off; ``grpc_server``
    sets ``server.grpc_server`` (None: the default, ``core``; or ``grpcio``).
    """
    port = free_port()
    http_port = free_port() if workers > 1 else None
    authz_port = free_port() if http_authz else None
    config = write_config(workdir, grpc_port=port, http_port=http_port,
                          http_authz_port=authz_port, http_metadata=http_metadata,
                          cache_entries=cache_entries,
                          cache_ttl=cache_ttl, decisions=decisions, level=level,
                          threads=threads, grpc_server=grpc_server)  # fmt: skip
    command = [PYTHON, "-m", "extauthz", "serve", "--config", str(config)]
    if knobs:
        command[1:3] = [str(BENCH / "_patched_serve.py"), json.dumps(knobs)]
    if workers > 1:
        command += ["--workers", str(workers)]
    env = {**os.environ, **(extra_env or {})}
    proc = spawn(command, log=log, env=env)
    try:
        if workers > 1:
            assert http_port is not None
            wait_ready_http(http_port, proc=proc)
        else:
            wait_serving(port, proc=proc)
        if authz_port is not None:
            wait_http(authz_port, proc=proc)
        yield Server(proc, port, command, authz_port)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def trivial_authz(processes: int = 1, parse: bool = False, loop: bool = False
                  ) -> Iterator[Server]:  # fmt: skip
    """Run ``bench/trivial_authz.py`` (allow everything, precomputed response);
    ``parse``: deserialize each ``CheckRequest`` first; ``loop``: on extauthz's call
    loop on gRPC core instead of grpcio's server."""
    port = free_port()
    command = [PYTHON, str(BENCH / "trivial_authz.py"), "--port", str(port),
               "--processes", str(processes)]  # fmt: skip
    if parse:
        command.append("--parse")
    if loop:
        command.append("--loop")
    proc = spawn(command)
    try:
        wait_serving(port, proc=proc)
        if processes > 1:
            time.sleep(0.5)  # the other processes bind the same port right after
        yield Server(proc, port, command)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def trivial_http_authz(processes: int = 1) -> Iterator[Server]:
    """Run ``bench/trivial_http_authz.py`` (uvloop + httptools, allow everything)."""
    port = free_port()
    command = [PYTHON, str(BENCH / "trivial_http_authz.py"), "--port", str(port),
               "--processes", str(processes)]  # fmt: skip
    proc = spawn(command)
    try:
        wait_http(port, proc=proc)
        if processes > 1:
            time.sleep(0.5)  # the other processes bind the same port right after
        yield Server(proc, 0, command, port)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


def envoy_like_request(token: str | None, path: str = "/orders/42") -> bytes:
    """Serialized ``CheckRequest`` shaped like the ones Envoy 1.40 sends for a curl GET.

    Same fields Envoy fills (addresses, time, request id, protocol, the pseudo-headers
    and the usual client headers), so the protobuf parse costs what it costs behind
    Envoy.
    """
    from extauthz._proto.envoy.service.auth.v3 import external_auth_pb2

    request = external_auth_pb2.CheckRequest()
    attrs = request.attributes
    attrs.source.address.socket_address.address = "127.0.0.1"
    attrs.source.address.socket_address.port_value = 51234
    attrs.destination.address.socket_address.address = "127.0.0.1"
    attrs.destination.address.socket_address.port_value = 10000
    attrs.request.time.GetCurrentTime()
    http = attrs.request.http
    http.id = "13830843574186512498"
    http.method = "GET"
    http.path = path
    http.host = "127.0.0.1:10000"
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    headers = {
        ":authority": "127.0.0.1:10000", ":path": path, ":method": "GET", ":scheme": "http",
        "user-agent": "curl/7.88.1", "accept": "*/*", "x-forwarded-proto": "http",
        "x-request-id": "5f0a4b1e-9a57-4f43-9c1e-5d1f0c2d8e11",
    }  # fmt: skip
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    http.headers.update(headers)
    return bytes(request.SerializeToString())


def mint_tokens(keys_dir: Path, count: int, sig: str, enc: str | None, prefix: str,
                processes: int = 2) -> list[str]:  # fmt: skip
    """``count`` unique tokens (distinct ``sub``), minted on ``processes`` cores."""
    import multiprocessing as mp

    chunks = [(str(keys_dir), sig, enc, f"{prefix}-{i}", range(i, count, processes))
              for i in range(processes)]  # fmt: skip
    with mp.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_mint_chunk, chunks)
    return [t for part in parts for t in part]


def _mint_chunk(args: tuple[str, str, str | None, str, range]) -> list[str]:
    directory, sig, enc, prefix, indexes = args
    keys = load_keys(Path(directory))
    return [token(keys, f"{prefix}-{i}", sig=sig, enc=enc) for i in indexes]


def load_keys(directory: Path) -> Keys:
    """The :class:`Keys` written by :meth:`Keys.write` to ``directory``."""
    from extauthz import mint

    keys = Keys()
    for sub, target in (("enc", keys.enc), ("sig", keys.sig)):
        for path in sorted((directory / sub).glob("*.json")):
            data = json.loads(path.read_text())
            target[path.stem] = KeyPair(data, mint.import_key(data))
    return keys
