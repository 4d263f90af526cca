"""The one base64url decoder of every token part: the RFC 7515 alphabet, no padding,
canonical last character — the same answer as the plain checks, on any input."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz.pipeline import b64url

_ALPHABET = re.compile(rb"[A-Za-z0-9_-]*")


def reference(text: bytes) -> bytes | None:
    """Alphabet by regex, no padding, canonical: re-encoding gives the text back."""
    if len(text) % 4 == 1 or not _ALPHABET.fullmatch(text):
        return None
    data = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    return data if base64.urlsafe_b64encode(data).rstrip(b"=") == text else None


def outcome(text: bytes) -> bytes | None:
    try:
        return b64url.decode(text)
    except ValueError:
        return None


@pytest.mark.parametrize(
    "text",
    [b"", b"QQ", b"QR", b"QUE", b"QUF", b"QUFB", b"QQ==", b"QQ=", b"Q", b"QU+B", b"QU/B",
     b"QU B", b"QU\nB", b"QU\xffB", b"-_-_", b"+/+/", b"QUFB\x00", b"=QUF"],
)  # fmt: skip
def test_known_inputs(text: bytes) -> None:
    assert outcome(text) == reference(text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=24))
def test_every_canonical_encoding_decodes_to_its_bytes(data: bytes) -> None:
    text = base64.urlsafe_b64encode(data).rstrip(b"=")
    assert b64url.decode(text) == data


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(list(b"AQgwBRhx09-_+/= \n\xc3")), max_size=12).map(bytes))
def test_any_text_gets_the_plain_checks_answer(text: bytes) -> None:
    assert outcome(text) == reference(text)
