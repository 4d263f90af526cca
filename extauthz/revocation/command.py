"""``extauthz revoke``: add one entry to a revocation list and print the result.

::

    extauthz revoke (--jti ID [--exp TIME] | --token-file F [--exp TIME]
                     | --sub SUB --issued-before TIME) [--iss ISS] [--from FILE]
                    [--configmap NAME [--namespace NS]]

The list is read from FILE (a list document, or a ConfigMap manifest such as
``kubectl get configmap NAME -o yaml`` prints; ``-`` is stdin), the new entry is
merged in, entries whose token expired long ago are dropped, and the result is
printed: as a list document, or wrapped in a ConfigMap manifest (``--configmap``, or
when FILE is one) ready for ``kubectl apply --server-side -f -``. Nothing is sent
anywhere: the command only reads and prints.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from extauthz.revocation.entries import (
    MAX_TIME,
    DigestEntry,
    Entry,
    JtiEntry,
    ListError,
    SubjectEntry,
    load_text,
    parse_document,
    parse_entry,
    to_dict,
)

EXIT_OK, EXIT_ERROR = 0, 2

#: an entry is dropped once its token expired this long ago: past any sane clock
#: leeway, so dropping it can never let the token pass again
DROP_AFTER_SECONDS = 300

#: the data entry the command writes
DATA_KEY = "revoked.json"

#: a ConfigMap holds at most 1 MiB in all; warn well before
WARN_BYTES = 900 * 1024


class CommandError(Exception):
    """A usage or input error, printed as one line."""


def parse_time(value: str, now: float) -> float:
    """Unix seconds from ``now``, a number, or an ISO 8601 date-time with a zone."""
    if value == "now":
        return float(int(now))
    try:
        seconds = float(value)
    except ValueError:
        seconds = _iso_time(value)
    if not 0 <= seconds <= MAX_TIME:
        raise CommandError(f"{value!r} is out of range")
    return seconds


def _iso_time(value: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"{value!r} is not a time (Unix seconds, 'now', or ISO 8601 with a zone)"
        ) from None
    if parsed.tzinfo is None:
        raise CommandError(f"{value!r} has no time zone (add Z or +hh:mm)")
    return parsed.timestamp()


def _token_exp(token: str) -> float | None:
    """The ``exp`` of a compact JWS, read without verifying it (only to let the entry
    expire with the token); None for a JWE or anything unreadable."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 <= exp <= MAX_TIME:
        return None
    return float(exp)


def new_entry(args: argparse.Namespace, now: float) -> Entry:
    """The entry the arguments describe (validated like any list entry)."""
    exp = parse_time(args.exp, now) if args.exp is not None else None
    item: dict[str, Any]
    if args.jti is not None:
        item = {"jti": args.jti}
        if args.iss:
            item["iss"] = args.iss
        if exp is not None:
            item["exp"] = exp
    elif args.token_file is not None:
        try:
            raw = Path(args.token_file).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {args.token_file}: {exc.strerror}") from None
        token = raw.strip().decode("utf-8", "surrogateescape")
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not token or any(c.isspace() for c in token):
            raise CommandError(f"{args.token_file} does not hold one token")
        if args.iss:
            raise CommandError("--iss does not apply to --token-file (the hash names the token)")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        item = {"token_sha256": digest}
        exp = exp if exp is not None else _token_exp(token)
        if exp is not None:
            item["exp"] = exp
        else:
            print(
                "extauthz revoke: the token's expiry is unreadable (encrypted); the entry "
                "never expires unless you pass --exp",
                file=sys.stderr,
            )
    else:
        if args.issued_before is None:
            raise CommandError("--sub needs --issued-before")
        if not args.iss:
            raise CommandError("--sub needs --iss")
        if args.exp is not None:
            raise CommandError("--exp does not apply to --sub")
        item = {"iss": args.iss, "sub": args.sub,
                "issued_before": parse_time(args.issued_before, now)}  # fmt: skip
    try:
        return parse_entry(item, "the new entry")
    except ListError as exc:
        raise CommandError(str(exc)) from None


def read_source(path: str) -> tuple[list[Entry], dict[str, Any] | None]:
    """The entries of FILE, and its ConfigMap metadata when FILE is a ConfigMap."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    try:
        value = load_text(data, path)
        if isinstance(value, dict) and value.get("kind") == "ConfigMap":
            meta = value.get("metadata") or {}
            if not isinstance(meta, dict):
                raise ListError(f"{path}: metadata is not a mapping")
            entries: list[Entry] = []
            documents = value.get("data") or {}
            if not isinstance(documents, dict):
                raise ListError(f"{path}: data is not a mapping")
            for key in sorted(documents):
                text = documents[key]
                if not isinstance(text, str):
                    raise ListError(f"{path}: data.{key} is not a string")
                entries.extend(parse_document(text.encode(), f"{path}: data.{key}"))
            return entries, meta
        return list(parse_document(data, path)), None
    except ListError as exc:
        raise CommandError(str(exc)) from None


def _key(entry: Entry) -> tuple[Any, ...]:
    if isinstance(entry, JtiEntry):
        return ("jti", entry.iss, entry.jti)
    if isinstance(entry, DigestEntry):
        return ("sha", entry.digest)
    return ("sub", entry.iss, entry.sub)


def _reach(entry: Entry) -> float:
    if isinstance(entry, SubjectEntry):
        return entry.issued_before
    return float("inf") if entry.exp is None else entry.exp


def merge(entries: list[Entry], new: Entry, now: float) -> list[Entry]:
    """``entries`` + ``new``, one entry per key (the widest reach), expired ones dropped."""
    merged: dict[tuple[Any, ...], Entry] = {}
    for entry in [*entries, new]:
        expired = (
            not isinstance(entry, SubjectEntry)
            and entry.exp is not None
            and (entry.exp + DROP_AFTER_SECONDS < now)
        )
        if expired:
            continue
        key = _key(entry)
        held = merged.get(key)
        if held is None or _reach(entry) > _reach(held):
            merged.pop(key, None)  # the new or wider one goes to the end
            merged[key] = entry
    return list(merged.values())


def render_list(entries: list[Entry]) -> str:
    """A list document, one entry per line (readable diffs)."""
    if not entries:
        return '{"revoked": []}\n'
    lines = [json.dumps(to_dict(e), separators=(", ", ": ")) for e in entries]
    return '{"revoked": [\n  ' + ",\n  ".join(lines) + "\n]}\n"


class _Literal(str):
    """A string dumped as a YAML literal block."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def render_configmap(
    document: str, name: str, namespace: str | None, labels: dict[str, str] | None,
    resource_version: str | None = None,
) -> str:  # fmt: skip
    """A ConfigMap manifest holding ``document`` under :data:`DATA_KEY`.

    ``resource_version`` (of the ConfigMap the list was read from) makes the apply
    conditional: if someone changed the list in between, the API server answers
    409 Conflict instead of silently dropping their entry.
    """
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    if resource_version:
        metadata["resourceVersion"] = resource_version
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {DATA_KEY: _Literal(document)},
    }
    return str(yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=1 << 20))


def run(args: argparse.Namespace, now: float | None = None) -> str:
    """What ``extauthz revoke`` prints for ``args`` (raises :class:`CommandError`)."""
    now = time.time() if now is None else now
    entry = new_entry(args, now)
    entries: list[Entry] = []
    meta: dict[str, Any] | None = None
    if args.source is not None:
        entries, meta = read_source(args.source)
    document = render_list(merge(entries, entry, now))
    if len(document.encode()) > WARN_BYTES:
        print(
            f"extauthz revoke: the list is {len(document.encode())} bytes; a ConfigMap holds "
            "at most 1 MiB: start another list object (selected by label)",
            file=sys.stderr,
        )
    name = args.configmap or (meta or {}).get("name")
    if name is None:
        if args.namespace:
            raise CommandError("--namespace needs --configmap")
        return document
    namespace = args.namespace or (meta or {}).get("namespace")
    labels = (meta or {}).get("labels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    ):
        raise CommandError(f"{args.source}: metadata.labels is not a map of strings")
    version = (meta or {}).get("resourceVersion") if (meta or {}).get("name") == name else None
    return render_configmap(
        document, str(name), namespace, labels, str(version) if version else None
    )


def cmd_revoke(args: argparse.Namespace) -> int:
    """The ``revoke`` subcommand."""
    try:
        sys.stdout.write(run(args))
    except CommandError as exc:
        print(f"extauthz revoke: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``revoke`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "revoke",
        help="add a token, or a subject's tokens, to a revocation list",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--jti", metavar="ID", help="revoke the token with this jti")
    what.add_argument("--token-file", metavar="F", help="revoke this exact token (hashed)")
    what.add_argument("--sub", metavar="SUB", help="revoke this subject's tokens (with --iss)")
    p.add_argument("--iss", metavar="ISS", help="issuer (required with --sub)")
    p.add_argument("--exp", metavar="TIME", help="the token's expiry: the entry ends then")
    p.add_argument(
        "--issued-before", metavar="TIME",
        help="with --sub: tokens issued before TIME (now, Unix seconds, ISO 8601)",
    )  # fmt: skip
    p.add_argument(
        "--from", dest="source", metavar="FILE",
        help="the current list, or its ConfigMap manifest ('-' for stdin)",
    )  # fmt: skip
    p.add_argument("--configmap", metavar="NAME", help="print a ConfigMap manifest")
    p.add_argument("--namespace", metavar="NS", help="namespace of the ConfigMap")
    p.set_defaults(func=cmd_revoke)
    return p
