"""The ``extauthz`` command line: serve, keygen, token, check, revoke, config validate/schema."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from extauthz import __version__
from extauthz.errors import ConfigError, KeyMaterialError, KeySourceError
from extauthz.revocation import command as revoke_command

EXIT_ALLOW, EXIT_DENY, EXIT_ERROR = 0, 1, 2


def _read_keys(path: str) -> list[Any]:
    from extauthz.keys.material import parse_key_material

    try:
        return parse_key_material(Path(path).read_bytes(), path)
    except OSError as exc:
        raise SystemExit(f"extauthz: cannot read {path}: {exc.strerror}") from None
    except KeyMaterialError as exc:
        raise SystemExit(f"extauthz: {exc}") from None


def _secret_manifest(name: str, namespace: str | None, jwks: dict[str, Any]) -> str:
    import yaml

    data = json.dumps(jwks, indent=2).encode()
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "type": "Opaque",
        "data": {"jwks.json": base64.b64encode(data).decode()},
    }
    return str(yaml.safe_dump(manifest, sort_keys=False))


def cmd_keygen(args: argparse.Namespace) -> int:
    """Print a new private JWK, or the public JWKS of a private key file."""
    from extauthz import mint

    if args.public:
        keys = _read_keys(args.public)
        output: dict[str, Any] = {"keys": [k.public_dict() for k in keys]}
    else:
        if not args.use or not args.alg:
            print("extauthz keygen: --use and --alg are required (or --public FILE)",
                  file=sys.stderr)  # fmt: skip
            return EXIT_ERROR
        try:
            output = mint.generate_jwk(args.use, args.alg, args.kid)
        except ValueError as exc:
            print(f"extauthz keygen: {exc}", file=sys.stderr)
            return EXIT_ERROR
    if args.secret:
        jwks = output if "keys" in output else {"keys": [output]}
        sys.stdout.write(_secret_manifest(args.secret, args.namespace, jwks))
    else:
        print(json.dumps(output, indent=2))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Mint a signed (and optionally encrypted) token for testing."""
    from extauthz import mint

    raw = args.claims
    try:
        text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
        claims = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"extauthz token: bad --claims: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not isinstance(claims, dict):
        print("extauthz token: --claims must be a JSON object", file=sys.stderr)
        return EXIT_ERROR
    now = int(time.time())
    claims.setdefault("iat", now)
    claims.setdefault("exp", now + args.ttl)
    sign_keys = [k for k in _read_keys(args.sign_key) if k.private]
    if not sign_keys:
        print("extauthz token: --sign-key holds no private key", file=sys.stderr)
        return EXIT_ERROR
    try:
        token = mint.sign(claims, sign_keys[0], alg=args.sign_alg)
        if args.encrypt_key:
            enc_key = _read_keys(args.encrypt_key)[0]
            token = mint.encrypt(token, enc_key, alg=args.alg, enc=args.enc)
    except Exception as exc:  # noqa: BLE001 - report any minting failure plainly
        print(f"extauthz token: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(token)
    return 0


def _expected(expect: str | None, result: dict[str, Any]) -> bool:
    """``--expect allow`` / ``deny`` / ``deny:<reason>`` against a described decision."""
    if expect is None:
        return bool(result["decision"] == "allow")
    from extauthz.client import reason_of

    decision, _, reason = expect.partition(":")
    return bool(result["decision"] == decision) and (not reason or reason_of(result) == reason)


def cmd_check(args: argparse.Namespace) -> int:
    """Send one Check to a running server and print the decision."""
    from extauthz.client import ClientTls, check, check_http

    if bool(args.address) == bool(args.http):
        print("extauthz check: give exactly one of --address, --http", file=sys.stderr)
        return EXIT_ERROR
    if args.expect is not None:
        decision, _, reason = args.expect.partition(":")
        if decision not in ("allow", "deny") or (decision == "allow" and reason):
            print("extauthz check: --expect is allow, deny or deny:<reason>", file=sys.stderr)
            return EXIT_ERROR
    headers: dict[str, str] = {}
    for item in args.header or []:
        name, sep, value = item.partition(":")
        if not sep:
            print(f"extauthz check: bad header {item!r} (want 'name: value')", file=sys.stderr)
            return EXIT_ERROR
        headers[name.strip().lower()] = value.strip()
    if args.token:
        headers["authorization"] = f"Bearer {args.token}"
    context = {}
    for item in args.context or []:
        key, _, value = item.partition("=")
        context[key] = value
    tls = None
    if args.ca_file or args.cert_file or args.server_name:
        if bool(args.cert_file) != bool(args.key_file):
            print("extauthz check: --cert-file and --key-file go together", file=sys.stderr)
            return EXIT_ERROR
        tls = ClientTls(
            ca_file=Path(args.ca_file) if args.ca_file else None,
            cert_file=Path(args.cert_file) if args.cert_file else None,
            key_file=Path(args.key_file) if args.key_file else None,
            server_name=args.server_name,
        )
    try:
        if args.http:
            if context:
                print("extauthz check: --context needs gRPC (--address)", file=sys.stderr)
                return EXIT_ERROR
            result = check_http(args.http, headers, path=args.path, method=args.method,
                                timeout=args.timeout, tls=tls)  # fmt: skip
        else:
            result = check(args.address, headers, path=args.path, method=args.method,
                           context=context, timeout=args.timeout, tls=tls)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any transport failure is exit 2
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return EXIT_ERROR
    print(json.dumps(result, indent=2))
    return EXIT_ALLOW if _expected(args.expect, result) else EXIT_DENY


def cmd_config_validate(args: argparse.Namespace) -> int:
    """Load a config file and report every problem with its key path: exit 0 valid,
    1 invalid, 2 unreadable."""
    from extauthz import config as config_mod

    try:
        config = config_mod.load(Path(args.file))
    except config_mod.ConfigUnreadable as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    except config_mod.ConfigErrors as exc:
        for error in exc:
            print(f"{args.file}: {error}", file=sys.stderr)
        print(f"{args.file}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    sources = len(config.decryption.keys) + sum(len(p.keys) for p in config.providers)
    revocation = len(config.revocation.sources)
    print(f"{args.file}: ok ({len(config.providers)} provider(s), {len(config.rules)} rule(s), "
          f"{sources} key source(s), {revocation} revocation source(s))")  # fmt: skip
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the config file (for editors and the Helm chart)."""
    from extauthz import config as config_mod

    print(json.dumps(config_mod.json_schema(), indent=2, sort_keys=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service (or the self-contained dev mode)."""
    from extauthz import config as config_mod
    from extauthz import logging as logging_mod

    if args.dev:
        from extauthz.devmode import run_dev

        return run_dev(args.grpc or "127.0.0.1:9001")
    if not args.config:
        print("extauthz serve: --config FILE or --dev is required", file=sys.stderr)
        return EXIT_ERROR
    try:
        config = config_mod.load(Path(args.config))
    except ConfigError as exc:
        # one line per problem, each naming its key path
        for line in str(exc).splitlines():
            print(f"extauthz serve: {args.config}: {line}", file=sys.stderr)
        return EXIT_ERROR
    logging_mod.configure(config.logging.level, config.logging.format)
    workers = args.workers or config.server.workers
    if workers > 1 and not args.worker:
        from extauthz.server.workers import run_workers

        return run_workers(config, workers)
    from extauthz.server.app import App

    try:
        if args.worker:
            from extauthz.server.workers import worker_ready_file

            app = App(config, reuse_port=True, serve_http=False, ready_file=worker_ready_file(),
                      supervisor=os.getppid())  # fmt: skip
        else:
            app = App(config)
    except (ConfigError, KeySourceError) as exc:
        print(f"extauthz serve: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return app.run()
    except (ConfigError, KeySourceError) as exc:
        # a source that cannot start: one line with its key path, never a traceback
        app.stop_now()
        print(f"extauthz serve: {exc}", file=sys.stderr)
        return EXIT_ERROR


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="extauthz", description=__doc__)
    p.add_argument("--version", action="version", version=f"extauthz {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", help="config file (YAML)")
    serve.add_argument("--dev", action="store_true", help="ephemeral keys, loopback, no config")
    serve.add_argument("--grpc", help="dev mode listen address (default 127.0.0.1:9001)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    keygen = sub.add_parser("keygen", help="generate a private JWK, or print a public JWKS")
    keygen.add_argument("--use", choices=["enc", "sig"])
    keygen.add_argument("--alg")
    keygen.add_argument("--kid")
    keygen.add_argument("--public", metavar="FILE", help="print the public JWKS of FILE")
    keygen.add_argument("--secret", metavar="NAME", help="wrap in a Kubernetes Secret")
    keygen.add_argument("--namespace", metavar="NS")
    keygen.set_defaults(func=cmd_keygen)

    token = sub.add_parser("token", help="mint a (nested) token for testing")
    token.add_argument("--sign-key", required=True, metavar="FILE")
    token.add_argument("--sign-alg", help="JWS alg (default: the key's alg)")
    token.add_argument("--encrypt-key", metavar="FILE")
    token.add_argument("--alg", help="JWE key management alg (default: the key's alg)")
    token.add_argument("--enc", default="A256GCM", help="JWE content encryption")
    token.add_argument("--claims", required=True, help="JSON object or @FILE")
    token.add_argument("--ttl", type=int, default=300, help="seconds until exp (if unset)")
    token.set_defaults(func=cmd_token)

    check = sub.add_parser("check", help="send one Check and print the decision")
    check.add_argument("--address", metavar="HOST:PORT", help="gRPC listener")
    check.add_argument("--http", metavar="URL",
                       help="HTTP authorization listener, e.g. http://127.0.0.1:9002")  # fmt: skip
    check.add_argument("--expect", metavar="allow|deny[:REASON]",
                       help="exit 0 only when the decision (and reason) match, else 1")  # fmt: skip
    check.add_argument("--token")
    check.add_argument("-H", "--header", action="append", metavar="'name: value'")
    check.add_argument("--path", default="/")
    check.add_argument("--method", default="GET")
    check.add_argument("--context", action="append", metavar="k=v")
    check.add_argument("--timeout", type=float, default=5.0)
    check.add_argument("--ca-file", metavar="PEM", help="TLS: CA of the server's certificate")
    check.add_argument("--cert-file", metavar="PEM", help="mTLS: client certificate")
    check.add_argument("--key-file", metavar="PEM", help="mTLS: client private key")
    check.add_argument("--server-name", metavar="NAME",
                       help="TLS: the name in the server's certificate (gRPC)")  # fmt: skip
    check.set_defaults(func=cmd_check)

    revoke_command.add_parser(sub)  # extauthz revoke: see extauthz/revocation/command.py

    cfg = sub.add_parser("config", help="config file tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    validate = cfg_sub.add_parser("validate", help="load and check a config file")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_config_validate)
    schema = cfg_sub.add_parser("schema", help="print the JSON Schema of the config file")
    schema.set_defaults(func=cmd_config_schema)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``extauthz`` script."""
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
