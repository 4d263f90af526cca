"""Strict base64url (RFC 7515 §2; RFC 4648 §5), the one decoder for every token part.

No padding, no characters outside the URL-safe alphabet, and the canonical encoding
only: the unused low bits of the last character must be zero. Python's decoder
ignores those bits, so ``...Q`` and ``...R`` would decode to the same bytes — two
token strings with one signature, one of them unknown to a revocation list that
names the token by its digest. joserfc refuses them as well.
"""

from __future__ import annotations

import binascii

#: last characters whose unused bits are zero, by the length of the text modulo 4
_CANONICAL_LAST = {2: b"AQgw", 3: b"AEIMQUYcgkosw048"}
_STANDARD = bytes.maketrans(b"-_", b"+/")
_PAD = {0: b"", 2: b"==", 3: b"="}


def decode(text: bytes) -> bytes:
    """The bytes ``text`` encodes; ``ValueError`` unless it is canonical base64url."""
    rest = len(text) % 4
    if rest == 1 or b"+" in text or b"/" in text or b"=" in text:
        raise ValueError("not base64url")
    if rest and text[-1] not in _CANONICAL_LAST[rest]:
        raise ValueError("not canonical base64url")
    try:
        # strict: any character outside the alphabet (whitespace, non-ASCII) is refused
        return binascii.a2b_base64(text.translate(_STANDARD) + _PAD[rest], strict_mode=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
