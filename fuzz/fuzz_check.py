"""Coverage-guided fuzz target for the whole Check pipeline (atheris / libFuzzer).

One input -> one Check through ``Evaluator._check`` (the method *without* the
catch-all, so an unexpected exception is a crash that libFuzzer reports and saves).
The first byte picks how the rest is read:

- 0: the raw ``authorization`` header value (latin-1);
- 1: ``Bearer `` + the rest;
- 2: a valid token minted at start-up (JWE RSA-OAEP-256, JWE dir, JWE ECDH-ES+A128KW,
  JWE with ``zip: DEF`` around an ES256 JWS, JWS RS256), edited at positions and with
  characters the input chooses — the fuzzer explores the parser *around* valid structure;
- 3: a request: header pairs (raw ``header_map`` form or the joined map), method, path
  and ``context_extensions``, all from the input;
- 4: a forged PBES2 JWE (no key decrypts it): algorithm, ``p2c`` up to the cap and
  ``kid`` (present or not) from the input — each Check must cost about one derivation;
- 5: a path made to backtrack a catastrophic ``path_regex`` (long runs of word
  characters and dots), with encodings, ``;`` and case from the input.

Invariants (a violation raises, i.e. a crash): no exception escapes ``_check``; an
allow only for a start-up token given unchanged (blanks around it aside); at most
``CPU_BUDGET`` seconds of thread CPU per Check (GC excluded).

Run (atheris 3.0 installs from PyPI on CPython 3.11 here; libFuzzer flags pass through)::

    .venv/bin/pip install atheris
    mkdir -p fuzz/corpus fuzz/artifacts
    .venv/bin/python fuzz/fuzz_check.py fuzz/corpus -max_len=20000 -max_total_time=600 \
        -artifact_prefix=fuzz/artifacts/

``-runs=N`` for a fixed number of inputs. Crashes land in ``fuzz/artifacts/crash-*``;
replay one with ``.venv/bin/python fuzz/fuzz_check.py fuzz/artifacts/crash-<sha>``.
Without atheris the same target runs on random inputs (no coverage guidance)::

    .venv/bin/python fuzz/fuzz_check.py --random 100000
"""

from __future__ import annotations

import base64
import gc
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import atheris  # type: ignore[import-untyped]
except ImportError:  # the --random fallback needs nothing beyond the product
    atheris = None

#: thread CPU seconds one Check may cost (see tests/hardening/test_fuzz_pipeline.py)
CPU_BUDGET = 0.25
ISSUER = "https://idp.fuzz.test"
AUDIENCE = "api://fuzz"
ALPHABET = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \t,;"\\%\x00'
#: a pattern that backtracks for seconds on Python's re; the product runs it on RE2
EVIL_REGEX = r"/users/(\w+\.?)+/profile"
PBES2_CAP = 100_000
PBES2_ALGS = ["PBES2-HS256+A128KW", "PBES2-HS384+A192KW", "PBES2-HS512+A256KW"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _load() -> SimpleNamespace:
    """Product modules (instrumented for coverage when atheris runs)."""
    from extauthz import mint
    from extauthz.config import parse
    from extauthz.errors import Reason
    from extauthz.keys.keyset import DECRYPTION, KeyStore, provider_purpose
    from extauthz.keys.sources.static import StaticSource
    from extauthz.pipeline import credentials
    from extauthz.pipeline.evaluate import Evaluator
    from extauthz.pipeline.request import CheckInput

    return SimpleNamespace(
        mint=mint, parse=parse, Reason=Reason, DECRYPTION=DECRYPTION, KeyStore=KeyStore,
        provider_purpose=provider_purpose, StaticSource=StaticSource,
        credentials=credentials, Evaluator=Evaluator, CheckInput=CheckInput,
    )  # fmt: skip


if atheris is not None:
    with atheris.instrument_imports(include=["extauthz", "joserfc"]):
        M = _load()
else:
    M = _load()


class Target:
    """The pipeline under test, its keys and its valid tokens."""

    def __init__(self) -> None:
        mint = M.mint
        now = time.time()
        enc_rsa = mint.generate_jwk("enc", "RSA-OAEP-256", "enc-rsa")
        enc_oct = mint.generate_jwk("enc", "dir", "enc-dir")
        enc_ec = mint.generate_jwk("enc", "ECDH-ES+A128KW", "enc-ec")
        sig_rsa = mint.generate_jwk("sig", "RS256", "sig-rsa")
        sig_ec = mint.generate_jwk("sig", "ES256", "sig-ec")
        # oct keys without alg: candidates for a kid-less PBES2 token (max_keys_tried)
        passwords = [
            {"kty": "oct", "use": "enc", "kid": f"pw-{i}", "k": _b64(os.urandom(32))}
            for i in range(3)
        ]
        self.stranger = {"kty": "oct", "kid": "stranger", "k": _b64(os.urandom(32))}
        config = M.parse(
            {
                "apiVersion": "extauthz/v1",
                "decryption": {
                    "keys": [{"directory": "./unused"}], "zip_max_bytes": 4096,
                    "key_algorithms": ["RSA-OAEP-256", "dir", "ECDH-ES+A128KW", *PBES2_ALGS],
                    "pbes2_max_iterations": PBES2_CAP,
                },
                "providers": [{
                    "name": "idp", "issuer": ISSUER, "audiences": [AUDIENCE],
                    "keys": [{"directory": "./unused"}],
                    "claims_to_headers": {"sub": "x-auth-subject", "roles": "x-auth-roles"},
                }],
                "upstream": {"claims_header": "x-auth-claims",
                             "strip_header_prefixes": ["x-auth-"]},
                "rules": [
                    {"name": "public", "path_prefix": "/public/", "anonymous": True},
                    {"name": "admin", "path_prefix": "/admin/", "require_scopes": ["admin"]},
                    {"name": "regex", "path_regex": "^/r/[0-9]+$", "methods": ["POST"]},
                    {"name": "profile", "path_regex": EVIL_REGEX, "require_scopes": ["profile"]},
                ],
            },
            ROOT,
        )  # fmt: skip
        store = M.KeyStore()
        keys = {
            M.DECRYPTION: [mint.import_key(k) for k in (enc_rsa, enc_oct, enc_ec, *passwords)],
            M.provider_purpose("idp"): [mint.import_key(k) for k in (sig_rsa, sig_ec)],
        }
        for purpose, items in keys.items():
            store.attach(purpose, M.StaticSource(items, purpose)).publish(items)
        self.evaluator = M.Evaluator(config, store, clock=lambda: now)
        self.config = config
        claims = mint.claims_for(ISSUER, AUDIENCE, "fuzz-user", ttl=3600, now=now,
                                 extra={"roles": ["r1", "r2"], "scope": "read"})  # fmt: skip
        inner = mint.sign(claims, sig_rsa)
        self.seeds = [
            mint.encrypt(inner, enc_rsa),
            mint.encrypt(inner, enc_oct, alg="dir", enc="A256GCM"),
            mint.encrypt(inner, enc_ec, alg="ECDH-ES+A128KW", enc="A128GCM"),
            mint.encrypt(mint.sign(claims, sig_ec), enc_rsa, header={"zip": "DEF"}),
            inner,
        ]
        for token in self.seeds:
            decision, _ = self.evaluator.check(self.request([("authorization", f"Bearer {token}")]))
            if not decision.allowed:
                raise AssertionError(f"seed refused: {decision.reason} {token[:30]}")

    @staticmethod
    def request(pairs: list[tuple[str, str]], raw: bool = False, **kw: Any) -> Any:
        if raw:
            return M.CheckInput(raw_headers=tuple(pairs), **kw)
        return M.CheckInput(headers=dict(pairs), **kw)

    def build(self, data: bytes) -> Any:
        """The Check request this input describes."""
        if not data:
            return self.request([])
        mode, rest = data[0] % 6, data[1:]
        if mode == 0:
            return self.request([("authorization", rest.decode("latin-1"))])
        if mode == 1:
            return self.request([("authorization", "Bearer " + rest.decode("latin-1"))])
        if mode == 2:
            token = bytearray(self.seeds[rest[0] % len(self.seeds)].encode() if rest else b"")
            for i in range(1, len(rest) - 2, 3):
                op, where, what = rest[i] % 3, (rest[i + 1] << 8) | rest[i + 2], rest[i] >> 2
                if not token:
                    break
                at = where % len(token)
                char = ALPHABET[what % len(ALPHABET)]
                if op == 0:
                    token[at] = char
                elif op == 1:
                    token.insert(at, char)
                else:
                    del token[at]
            return self.request([("authorization", "Bearer " + token.decode("latin-1"))])
        if mode == 4:
            alg = PBES2_ALGS[rest[0] % 3] if rest else PBES2_ALGS[0]
            p2c = 1 + int.from_bytes(rest[1:4].ljust(3, b"\0"), "big") % PBES2_CAP
            header: dict[str, Any] = {"p2c": p2c, "kid": None}
            if len(rest) > 4 and rest[4] & 1:
                header["kid"] = rest[5:12].decode("latin-1") or "pw-0"
            token = M.mint.encrypt(self.seeds[-1], self.stranger, alg=alg, enc="A256GCM",
                                   header=header)  # fmt: skip
            return self.request([("authorization", f"Bearer {token}")])
        if mode == 5:
            pieces = "a.!_/;%2e%3bAZ9"
            tail = "".join(pieces[b % len(pieces)] for b in rest[1:200])
            path = "/users/" + "a" * (rest[0] % 48 if rest else 0) + tail
            return self.request([("authorization", f"Bearer {self.seeds[-1]}")], path=path)
        parts = rest.split(b"\n")
        pairs: list[tuple[str, str]] = []
        for part in parts[3:40]:
            text = part.decode("latin-1")
            name, sep, value = text.partition(":")
            pairs.append((name, value) if sep else ("authorization", text))
        method = parts[0].decode("latin-1") if parts else "GET"
        path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
        context = {"rule": parts[2].decode("latin-1")} if len(parts) > 2 and parts[2] else {}
        return self.request(pairs, raw=bool(rest[:1] and rest[0] & 1),
                            method=method, path=path, context=context)  # fmt: skip

    def check(self, data: bytes) -> None:
        request = self.build(data)
        gc.disable()
        try:
            start = time.thread_time()
            decision, _ = self.evaluator._check(request)  # no catch-all: a bug is a crash
            spent = time.thread_time() - start
        finally:
            gc.enable()
        if spent > CPU_BUDGET:
            raise AssertionError(f"one Check cost {spent:.3f} s of CPU")
        if decision.reason is M.Reason.INTERNAL_ERROR:
            raise AssertionError("internal_error")
        if decision.allowed and decision.reason.value == "ok":
            token = M.credentials.extract(request, self.config.token)
            if token not in self.seeds:
                raise AssertionError(f"allowed a token that is not a start-up seed: {token!r}")


def main() -> None:
    import structlog

    # the pipeline logs configuration errors (unknown rule names...): not fuzzing news
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    target = Target()
    if len(sys.argv) >= 3 and sys.argv[1] == "--random":
        rng = random.Random(int(os.environ.get("FUZZ_SEED", "0")))  # noqa: S311 - fuzz inputs
        count = int(sys.argv[2])
        for _ in range(count):
            size = rng.choice([rng.randrange(64), rng.randrange(2048), rng.randrange(20000)])
            target.check(bytes(rng.getrandbits(8) for _ in range(size)))
        print(f"{count} random inputs, no violation")
        return
    if atheris is None:
        raise SystemExit("atheris is not installed: pip install atheris, or use --random N")
    atheris.Setup(sys.argv, target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
