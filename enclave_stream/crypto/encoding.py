"""Text and bytes as the browser converts them: base64 (``btoa``/``atob``) and UTF-8.

Hashed or signed text (HKDF salts and labels, the signed transcript) is
encoded with :func:`utf8`, so the bytes never depend on the language that made them.
"""

from __future__ import annotations

__all__ = ["from_base64", "to_base64", "utf8"]

import binascii
import sys
from typing import Final

from ..errors import Base64DecodeError

_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_ASCII_WHITESPACE: Final = b"\t\n\f\r "
_ALPHABET_AND_PAD: Final = _ALPHABET + b"="
_PADDING: Final = (b"", b"===", b"==", b"=")  # indexed by length % 4
_STRICT_MODE: Final = sys.version_info >= (3, 11)  # binascii's strict_mode exists


def to_base64(data: bytes) -> str:
    """Encode bytes as standard base64 with ``=`` padding, as ``btoa`` does.

    Any size is accepted (compatibility row C7).

    >>> to_base64(b"\\xfb\\xff")
    '+/8='
    """
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def from_base64(text: str) -> bytes:
    """Decode base64 text with exactly the verdicts of the browser's ``atob``.

    These are the rules of WHATWG "forgiving-base64 decode" (Python's lenient
    ``base64.b64decode`` accepts strings a peer refuses, and refuses unpadded
    ones it accepts):

    * ASCII whitespace (TAB, LF, FF, CR, SPACE) is removed wherever it appears;
    * ``=`` is allowed only as one or two trailing pad characters that make the
      length a multiple of 4; padding may also be left out;
    * a length of 1 mod 4 (after the above) is an error;
    * any other character, including the URL-safe ``-`` and ``_``, is an error;
    * leftover bits in the last character are ignored (``"QR=="`` decodes to ``b"A"``).

    Raises:
        Base64DecodeError: the text breaks a rule; the message says which.

    >>> from_base64("QUJD RA")
    b'ABCD'
    """
    if not isinstance(text, str):
        raise Base64DecodeError(f"Expected base64 text (a str), got {type(text).__name__}")
    # Canonical padded text (what btoa writes, so nearly every input) decodes in
    # one strict C call, to the bytes atob gives; strict binascii refuses the
    # rest, which then takes the WHATWG steps. Strict mode still takes '='
    # after a complete quantum ("QUJD="): with a length that is a multiple of
    # 4, that shows as "===" at the end. The property tests check this
    # function against a transcription of the WHATWG algorithm.
    # (Python 3.10's binascii has no strict mode: there all text takes those steps.)
    # Every opened envelope reads two fields here, so the guard is cheap: the
    # version is read once at import, and since strict mode allows nothing
    # after padding, text it takes ends with "===" exactly when its third
    # last character is '=' (an index, where endswith is a method call).
    length = len(text)
    if _STRICT_MODE and length and not length % 4 and text[-3] != "=":
        try:
            return binascii.a2b_base64(text, strict_mode=True)  # type: ignore[call-arg,unused-ignore]
        except ValueError:  # binascii.Error, or non-ASCII text
            pass
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise Base64DecodeError(_not_in_alphabet(text[exc.start], exc.start, "")) from None
    # bytes.translate deletes in C: what is left over is everything outside
    # the alphabet, which for clean input is nothing or the padding.
    extra = raw.translate(None, _ALPHABET)
    where = ""
    if extra.strip(b"="):
        # Slow path, only for text that is not already clean: whitespace is
        # legal anywhere, so drop it and look again.
        stripped = raw.translate(None, _ASCII_WHITESPACE)
        if len(stripped) != len(raw):
            where = " (counted without whitespace)"
            raw = stripped
            extra = raw.translate(None, _ALPHABET)
        if extra.strip(b"="):
            # The first byte that is neither in the alphabet nor '=' (one exists).
            index = len(raw) - len(raw.lstrip(_ALPHABET_AND_PAD))
            raise Base64DecodeError(_not_in_alphabet(chr(raw[index]), index, where))
    length = len(raw)
    remainder = length % 4
    if extra:  # only '=' remain: they must be 1 or 2 trailing pad characters
        if len(extra) > 2 or not raw.endswith(extra):
            first = raw.index(b"=")
            raise Base64DecodeError(
                f"'=' at index {first}{where} is not trailing padding: "
                "at most 2 '=' are allowed, only at the end"
            )
        if remainder:
            raise Base64DecodeError(
                "'=' is only allowed as 1 or 2 trailing padding characters that make the "
                f"length a multiple of 4, but the length is {length}{where}"
            )
        return binascii.a2b_base64(raw)
    if remainder == 1:
        raise Base64DecodeError(
            f"the length {length}{where} is 1 more than a multiple of 4, "
            "which no byte string encodes to"
        )
    # binascii wants full quads; like atob it ignores the bits left over.
    return binascii.a2b_base64(raw + _PADDING[remainder])


def _not_in_alphabet(char: str, index: int, where: str) -> str:
    return (
        f"character {char!r} at index {index}{where} is not in "
        "the standard base64 alphabet A-Z a-z 0-9 + /"
    )


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, written as ``TextEncoder`` writes it.

    A lone surrogate becomes U+FFFD and a high+low surrogate pair becomes the
    one character it stands for, so derived keys and signed transcripts are
    the same bytes a browser peer computes.

    >>> utf8("a\\ud800")
    b'a\\xef\\xbf\\xbd'
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A UTF-16 round trip joins surrogate pairs and replaces lone ones.
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return fixed.encode("utf-8")
