"""``make run``: a real Envoy -> extauthz -> a demo upstream that echoes its headers.

Generates development keys (an RSA-OAEP-256 decryption key for extauthz, an RS256
signing key for a pretend identity provider), writes a config based on
``examples/config.yaml``, starts ``extauthz serve`` and Envoy with
``examples/envoy/envoy.yaml``, then prints curl commands with a valid nested JWE,
an expired one and a tampered one — and runs them once to show the answers.
Ctrl-C stops everything. ``--once`` runs the checks and exits (used by the tests).

Envoy listens on 127.0.0.1:10000; ``--port N`` or ``DEMO_PORT=N`` picks another port
(``0``: any free one). A port already in use stops the demo at once with a message that
says so, before anything is started.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository: `tests` is a package

from extauthz import mint  # noqa: E402
from extauthz.client import check as grpc_check  # noqa: E402
from tests.envoy_harness import (  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
    EchoUpstream,
    EnvoyProcess,
    free_port,
    http_get,
)

DEFAULT_PORT = 10000
ISSUER = "https://idp.example.test"
AUDIENCE = "api://orders"
PRIVATE = ("d", "p", "q", "dp", "dq", "qi")


def write_keys(workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Development keys: extauthz's decryption key and the IdP's signing key."""
    enc = mint.generate_jwk("enc", "RSA-OAEP-256", "demo-enc-1")
    sig = mint.generate_jwk("sig", "RS256", "demo-sig-1")
    (workdir / "keys" / "decrypt").mkdir(parents=True, exist_ok=True)
    (workdir / "keys" / "verify").mkdir(parents=True, exist_ok=True)
    (workdir / "keys" / "decrypt" / "demo-enc-1.json").write_text(json.dumps(enc, indent=2))
    public_sig = {k: v for k, v in sig.items() if k not in PRIVATE}
    (workdir / "keys" / "verify" / "idp.json").write_text(json.dumps({"keys": [public_sig]}))
    (workdir / "idp-signing-key.json").write_text(json.dumps(sig, indent=2))
    return enc, sig


def write_config(workdir: Path, grpc_port: int, http_port: int) -> Path:
    """examples/config.yaml with the demo's ports and key directories."""
    data = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    data["listen"] = {"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"}
    data["logging"] = {"level": "info", "format": "console"}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tokens(enc: dict[str, Any], sig: dict[str, Any]) -> dict[str, str]:
    """A valid nested JWE, an expired one, and a tampered one."""
    enc_public = {k: v for k, v in enc.items() if k not in PRIVATE}
    extra = {"email": "alice@example.test", "scope": "read admin", "roles": ["reader"]}
    good = mint.encrypt(
        mint.sign(mint.claims_for(ISSUER, AUDIENCE, "alice", 3600, extra), sig), enc_public
    )
    old = mint.claims_for(ISSUER, AUDIENCE, "alice", 60, extra, now=time.time() - 3600)
    expired = mint.encrypt(mint.sign(old, sig), enc_public)
    head, key, iv, ciphertext, tag = good.split(".")
    flipped = "B" if ciphertext[5] == "A" else "A"
    tampered = ".".join([head, key, iv, ciphertext[:5] + flipped + ciphertext[6:], tag])
    return {"valid": good, "expired": expired, "tampered": tampered}


def wait_ready(address: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Wait until extauthz answers Checks (a deny for no token means it is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("extauthz exited during start-up; see its log above")
        try:
            if grpc_check(address, {}, timeout=1)["metadata"]["reason"] != "not_ready":
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit("extauthz did not become ready")


def show(url: str, label: str, token: str | None, path: str = "/orders/42") -> int:
    """Send one request through Envoy and print what came back."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    status, response_headers, body = http_get(url + path, headers)
    print(f"\n== {label}: HTTP {status}")
    challenge = response_headers.get("www-authenticate")
    if challenge:
        print(f"   www-authenticate: {challenge}")
    text = body.decode(errors="replace")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and "headers" in parsed:
            pairs = parsed["headers"]
            pairs = pairs.items() if isinstance(pairs, dict) else pairs
            seen = {k: v for k, v in pairs if k.lower().startswith("x-auth-")}
            print(f"   upstream saw: {json.dumps(seen)}")
        else:
            print(f"   body: {text}")
    except ValueError:
        print(f"   body: {text[:200]}")
    return int(status)


class PortError(SystemExit):
    """The demo port cannot be used; the message says why and what to do."""


def demo_port(value: str | None) -> int:
    """The port from ``--port`` or ``DEMO_PORT`` (default 10000), checked as a number."""
    raw = value if value is not None else os.environ.get("DEMO_PORT", str(DEFAULT_PORT))
    try:
        port = int(raw)
    except ValueError:
        raise PortError(f"demo port {raw!r} is not a number (DEMO_PORT or --port)") from None
    if not 0 <= port <= 65535:
        raise PortError(f"demo port {port} is out of range (0-65535)")
    return port


def ensure_free(port: int, host: str = "127.0.0.1") -> None:
    """Fail fast, and plainly, when something already listens on the demo port."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise PortError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            raise PortError(
                f"port {port} on {host} is already in use (another `make run`?).\n"
                f"Stop it, or pick another port:  DEMO_PORT={port + 1} make run"
                f"   (or: python tools/demo.py --port {port + 1})"
            ) from None


def main(argv: list[str] | None = None) -> int:
    """Start everything, print the curl commands, run them once, wait for Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="run the checks and exit")
    parser.add_argument("--workdir", default=str(ROOT / ".run" / "demo"))
    parser.add_argument(
        "--port",
        help=f"Envoy's port (default: $DEMO_PORT, else {DEFAULT_PORT}; 0: any free port)",
    )
    args = parser.parse_args(argv)
    try:
        listen_port = demo_port(args.port)
        ensure_free(listen_port)
    except PortError as exc:
        print(f"demo: {exc.code}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    enc, sig = write_keys(workdir)
    grpc_port, http_port = free_port(), free_port()
    config = write_config(workdir, grpc_port, http_port)
    address = f"127.0.0.1:{grpc_port}"
    log = (workdir / "extauthz.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "extauthz", "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(address, proc)
        (workdir / "envoy").mkdir(exist_ok=True)
        with EchoUpstream() as upstream:
            envoy_ctx = EnvoyProcess(
                workdir / "envoy",
                extauthz_port=grpc_port,
                upstream_port=upstream.port,
                LISTEN_PORT=listen_port,
            )
            with envoy_ctx as envoy:
                toks = tokens(enc, sig)
                (workdir / "tokens.json").write_text(json.dumps(toks, indent=2))
                print(
                    f"\nEnvoy {envoy.url} -> extauthz {address} -> demo upstream :{upstream.port}"
                )
                print(
                    f"extauthz log: {workdir / 'extauthz.log'}   metrics: "
                    f"http://127.0.0.1:{http_port}/metrics\n"
                )
                print("Try it (expect 200 with x-auth-* headers, then 401, 401, 401):\n")
                for name, expect in (
                    ("valid", "200"),
                    ("expired", "401 expired"),
                    ("tampered", "401 decrypt_failed"),
                ):
                    path = workdir / f"{name}.jwe"
                    path.write_text(toks[name] + "\n")
                    header = f"authorization: Bearer $(cat {shlex.quote(str(path))})"
                    print(f"  # {name} token -> {expect}")
                    print(f'  curl -si {envoy.url}/orders/42 -H "{header}"\n')
                print(f"  # no token -> 401 missing_token\n  curl -si {envoy.url}/orders/42\n")
                activate = f". {shlex.quote(str(Path(sys.executable).parent / 'activate'))}"
                check_command = (
                    f"extauthz check --address {address} --path /orders/42 "
                    f'--token "$(cat {shlex.quote(str(workdir / "valid.jwe"))})"'
                )
                print("extauthz itself, without Envoy (the command is in the virtualenv):\n")
                print(f"  {activate}\n  {check_command}\n")
                results = [
                    show(envoy.url, "valid nested JWE", toks["valid"]),
                    show(envoy.url, "expired token", toks["expired"]),
                    show(envoy.url, "tampered token", toks["tampered"]),
                    show(envoy.url, "no token", None),
                ]
                # the printed `extauthz check` line, run as a reader would paste it
                pasted = subprocess.run(
                    ["sh", "-c", f"{activate} && {check_command}"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                print(f"\n== extauthz check (valid token): exit {pasted.returncode}")
                try:
                    decision = json.loads(pasted.stdout)
                    print(f"   decision: {decision['decision']}, {decision['metadata']['reason']}")
                except (ValueError, KeyError, TypeError):
                    print(f"   {(pasted.stdout + pasted.stderr).strip()[:300]}")
                ok = results == [200, 401, 401, 401] and pasted.returncode == 0
                print(f"\n{'all as expected' if ok else 'UNEXPECTED RESULTS'}: {results}")
                if args.once:
                    return 0 if ok else 1
                print("\nRunning. Ctrl-C stops Envoy, extauthz and the upstream.")
                stop = threading.Event()
                signal.signal(signal.SIGTERM, lambda *_: stop.set())
                try:
                    while not stop.wait(1):
                        if proc.poll() is not None:
                            print("extauthz exited; stopping")
                            return 1
                except KeyboardInterrupt:
                    pass
                return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
