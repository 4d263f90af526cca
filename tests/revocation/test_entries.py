"""List documents are parsed strictly: the three entry forms, and every malformed input is
a ListError that names the entry, never a crash and never a silently skipped entry."""

from __future__ import annotations

import hashlib
import json

import pytest

from extauthz.revocation.entries import (
    DigestEntry,
    JtiEntry,
    ListError,
    SubjectEntry,
    parse_document,
    to_dict,
)

DIGEST = hashlib.sha256(b"token").hexdigest()


def doc(*entries: object) -> bytes:
    return json.dumps({"revoked": list(entries)}).encode()


def test_the_three_forms_in_json() -> None:
    entries = parse_document(
        doc(
            {"jti": "a", "iss": "https://idp", "exp": 1767225600},
            {"jti": "b"},
            {"token_sha256": DIGEST.upper(), "exp": 1767225600.5},
            {"iss": "https://idp", "sub": "alice", "issued_before": 1767225600},
        ),
        "test",
    )
    assert entries == (
        JtiEntry("a", "https://idp", 1767225600.0),
        JtiEntry("b", "", None),
        DigestEntry(bytes.fromhex(DIGEST), 1767225600.5),
        SubjectEntry("https://idp", "alice", 1767225600.0),
    )


def test_yaml_documents_and_round_trip() -> None:
    text = b"""
revoked:
  - {jti: a, iss: "https://idp", exp: 1767225600}
  - iss: https://idp
    sub: bob
    issued_before: 1767225600
"""
    entries = parse_document(text, "test")
    assert entries == (
        JtiEntry("a", "https://idp", 1767225600.0),
        SubjectEntry("https://idp", "bob", 1767225600.0),
    )
    again = parse_document(doc(*(to_dict(e) for e in entries)), "again")
    assert again == entries


@pytest.mark.parametrize("text", [b'{"revoked": []}', b"{}", b"revoked: []\n"])
def test_an_empty_list_is_valid(text: bytes) -> None:
    assert parse_document(text, "test") == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"jti": ""}, "jti must be a non-empty string"),
        ({"jti": 7}, "jti must be a non-empty string"),
        ({"jti": "a", "exp": "tomorrow"}, "exp must be a number"),
        ({"jti": "a", "exp": True}, "exp must be a number"),
        ({"jti": "a", "exp": -1}, "exp is out of range"),
        ({"jti": "a", "exp": 1e300}, "exp is out of range"),
        ({"jti": "a", "sub": "x"}, "exactly one of"),
        ({"jti": "a", "issued_before": 1}, "unknown field 'issued_before'"),
        ({"jti": "a", "typ": "x"}, "unknown field 'typ'"),
        ({"token_sha256": "abc"}, "64 hexadecimal digits"),
        ({"token_sha256": "g" * 64}, "64 hexadecimal digits"),
        ({"token_sha256": DIGEST, "iss": "x"}, "unknown field 'iss'"),
        ({"sub": "alice", "issued_before": 1}, "iss is required"),
        ({"iss": "x", "sub": "alice"}, "issued_before is required"),
        ({"iss": "x", "sub": "alice", "issued_before": 1, "exp": 2}, "unknown field 'exp'"),
        ({"iss": "x"}, "exactly one of"),
        ("jti", "must be a mapping"),
        (["jti"], "must be a mapping"),
        (None, "must be a mapping"),
    ],
)
def test_a_bad_entry_names_its_index(entry: object, message: str) -> None:
    with pytest.raises(ListError) as caught:
        parse_document(doc({"jti": "fine"}, entry), "auth/list[revoked.json]")
    text = str(caught.value)
    assert text.startswith("auth/list[revoked.json]: revoked[1]: ")
    assert message in text


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'"revoked"',
        b'{"revoked": {}}',
        b'{"revoked": "a"}',
        b'{"revoked": [], "extra": 1}',
        b'{"revoked": [{"jti": "a", "jti": "b"}]}',
        b'{"revoked": [{"jti": "a", "exp": NaN}]}',
        b'{"revoked": [{"jti": "a", "exp": Infinity}]}',
        b'{"revoked": [',
        b"\xff\xfe{}",
        b'\xef\xbb\xbf{"revoked": []}',
        b"revoked: [\n",
        b"revoked:\n  - {jti: a, jti: b}\n",
        b"revoked:\n  - {? [a, b] : c}\n",
        b"revoked: !!python/object/apply:os.system ['true']\n",
        b"[" * 100_000,
        b"{" * 100_000,
    ],
)
def test_malformed_documents_are_list_errors(data: bytes) -> None:
    with pytest.raises(ListError):
        parse_document(data, "test")
