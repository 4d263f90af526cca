"""``extauthz revoke``: each entry form, merging into a list or a ConfigMap manifest,
expired entries dropped, and every usage mistake a clear one-line error (exit 2)."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz import mint
from extauthz.revocation.command import DROP_AFTER_SECONDS, add_parser, parse_time
from extauthz.revocation.entries import parse_document

ISS = "https://idp.example.test"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def revoke(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="extauthz")
        add_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["revoke", *argv])
        code: int = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def listed(text: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(text)["revoked"]
    parse_document(text.encode(), "output")  # what we print is a valid list
    return entries


def test_jti_with_iss_and_exp(revoke: Run) -> None:
    code, out, _ = revoke("--jti", "t-1", "--iss", ISS, "--exp", "4102444800")
    assert code == 0
    assert listed(out) == [{"jti": "t-1", "iss": ISS, "exp": 4102444800}]


def test_token_file_hashes_the_token_and_reads_a_jws_exp(
    revoke: Run, tmp_path: Path, mint_token: Callable[..., str]
) -> None:
    jws = mint_token(encrypt=False, ttl=600)
    path = tmp_path / "leaked.jwt"
    path.write_text(f"Bearer {jws}\n")
    code, out, _ = revoke("--token-file", str(path))
    assert code == 0
    (entry,) = listed(out)
    assert entry["token_sha256"] == hashlib.sha256(jws.encode()).hexdigest()
    assert abs(entry["exp"] - (time.time() + 600)) < 10


def test_token_file_of_a_jwe_warns_that_the_entry_never_expires(
    revoke: Run, tmp_path: Path, mint_token: Callable[..., str]
) -> None:
    jwe = mint_token()
    path = tmp_path / "leaked.jwt"
    path.write_text(jwe)
    code, out, err = revoke("--token-file", str(path))
    assert code == 0
    assert listed(out) == [{"token_sha256": hashlib.sha256(jwe.encode()).hexdigest()}]
    assert "--exp" in err
    code, out, _ = revoke("--token-file", str(path), "--exp", "2100-01-01T00:00:00Z")
    assert listed(out)[0]["exp"] == 4102444800


def test_sub_with_issued_before(revoke: Run) -> None:
    before = time.time()
    code, out, _ = revoke("--sub", "alice", "--iss", ISS, "--issued-before", "now")
    assert code == 0
    (entry,) = listed(out)
    assert entry["sub"] == "alice"
    assert entry["iss"] == ISS
    assert int(before) <= entry["issued_before"] <= time.time()


def test_merges_into_a_list_and_drops_long_expired_entries(revoke: Run, tmp_path: Path) -> None:
    now = time.time()
    current = tmp_path / "list.json"
    current.write_text(
        json.dumps(
            {
                "revoked": [
                    {"jti": "gone", "exp": int(now - DROP_AFTER_SECONDS - 10)},
                    {"jti": "in-leeway", "exp": int(now - 10)},
                    {"jti": "t-1", "iss": ISS, "exp": int(now + 100)},
                    {"iss": ISS, "sub": "bob", "issued_before": 1000},
                ]
            }
        )
    )
    code, out, _ = revoke("--jti", "t-1", "--iss", ISS, "--exp", str(int(now + 500)),
                          "--from", str(current))  # fmt: skip
    assert code == 0
    assert listed(out) == [
        {"jti": "in-leeway", "exp": int(now - 10)},
        {"iss": ISS, "sub": "bob", "issued_before": 1000},
        {"jti": "t-1", "iss": ISS, "exp": int(now + 500)},  # one entry, the wider reach
    ]


def test_wraps_a_configmap_and_keeps_its_name_namespace_and_labels(
    revoke: Run, tmp_path: Path
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "revoked-2",
            "namespace": "auth",
            "labels": {"extauthz/revocation": "true"},
            "resourceVersion": "1234",
            "uid": "abc",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "data": {
            "a.json": json.dumps({"revoked": [{"jti": "a"}]}),
            "b.yaml": "revoked: [{jti: b}]\n",
        },
    }
    current = tmp_path / "cm.yaml"
    current.write_text(yaml.safe_dump(manifest))
    code, out, _ = revoke("--jti", "c", "--from", str(current))
    assert code == 0
    printed = yaml.safe_load(out)
    assert printed["kind"] == "ConfigMap"
    assert printed["metadata"] == {
        "name": "revoked-2",
        "namespace": "auth",
        "labels": {"extauthz/revocation": "true"},
        "resourceVersion": "1234",  # the apply fails if the list changed in between
    }
    assert list(printed["data"]) == ["revoked.json"]
    assert [e["jti"] for e in listed(printed["data"]["revoked.json"])] == ["a", "b", "c"]


def test_configmap_from_a_plain_list(revoke: Run) -> None:
    code, out, _ = revoke("--jti", "a", "--configmap", "extauthz-revoked", "--namespace", "auth")
    assert code == 0
    printed = yaml.safe_load(out)
    assert printed["metadata"] == {"name": "extauthz-revoked", "namespace": "auth"}
    assert listed(printed["data"]["revoked.json"]) == [{"jti": "a"}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sub", "alice", "--issued-before", "now"], "--sub needs --iss"),
        (["--sub", "alice", "--iss", ISS], "--sub needs --issued-before"),
        (["--sub", "a", "--iss", ISS, "--issued-before", "now", "--exp", "1"], "--exp"),
        (["--jti", "a", "--exp", "tomorrow"], "is not a time"),
        (["--jti", "a", "--exp", "2100-01-01T00:00:00"], "no time zone"),
        (["--jti", "a", "--exp", "-5"], "out of range"),
        (["--jti", ""], "jti must be a non-empty string"),
        (["--jti", "a", "--namespace", "auth"], "--namespace needs --configmap"),
        (["--jti", "a", "--from", "/nonexistent/list.json"], "cannot read"),
        (["--token-file", "/nonexistent/token"], "cannot read"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(revoke: Run, argv: list[str], message: str) -> None:
    code, out, err = revoke(*argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.count("\n") == 1


def test_a_bad_existing_list_is_refused_with_the_entry_named(revoke: Run, tmp_path: Path) -> None:
    current = tmp_path / "list.json"
    current.write_text(json.dumps({"revoked": [{"jti": "a"}, {"jti": "b", "exp": "soon"}]}))
    code, out, err = revoke("--jti", "c", "--from", str(current))
    assert code == 2
    assert out == ""
    assert "revoked[1]" in err


def test_parse_time_forms() -> None:
    assert parse_time("now", 1000.7) == 1000
    assert parse_time("1767225600", 0) == 1767225600
    assert parse_time("2026-01-01T00:00:00Z", 0) == 1767225600
    assert parse_time("2026-01-01T01:00:00+01:00", 0) == 1767225600


def test_the_hash_matches_what_the_service_computes(
    revoke: Run, tmp_path: Path, sig_jwk: dict[str, Any]
) -> None:
    token = mint.sign(mint.claims_for(ISS, "api://orders"), sig_jwk)
    path = tmp_path / "t"
    path.write_text(token)
    _, out, _ = revoke("--token-file", str(path))
    assert listed(out)[0]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
