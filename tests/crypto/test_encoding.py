"""Base64 with the verdicts of WHATWG ``atob``, and UTF-8 as ``TextEncoder`` writes it."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enclave_stream.crypto import from_base64, to_base64
from enclave_stream.crypto.encoding import utf8
from enclave_stream.errors import Base64DecodeError, EnclaveStreamError
from tests.rotating_seed import rotating_seed

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def whatwg_forgiving_decode(text: str) -> bytes | None:
    """The WHATWG "forgiving-base64 decode" algorithm, step by step (None = failure).

    Transcribed from the Infra standard, independently of the implementation
    under test, to serve as its oracle.
    """
    # 1. Remove all ASCII whitespace.
    data = "".join(ch for ch in text if ch not in "\t\n\f\r ")
    # 2. If length % 4 == 0, remove one or two trailing '='.
    if len(data) % 4 == 0:
        if data.endswith("=="):
            data = data[:-2]
        elif data.endswith("="):
            data = data[:-1]
    # 3. Length % 4 == 1 is failure.
    if len(data) % 4 == 1:
        return None
    # 4. Any code point outside the alphabet is failure.
    if any(ch not in ALPHABET for ch in data):
        return None
    # 5-8. Accumulate 6 bits per character, emit whole bytes, drop leftover bits.
    out = bytearray()
    buffer, bits = 0, 0
    for ch in data:
        buffer = (buffer << 6) | ALPHABET.index(ch)
        bits += 6
        if bits >= 8:
            bits -= 8
            out.append((buffer >> bits) & 0xFF)
    return bytes(out)


# Text made of the characters that matter to the verdict.
base64ish = st.text(alphabet=ALPHABET + "=\t\n\f\r -_!\u00a0\u00e9\v", max_size=24)


@settings(max_examples=1000)
@given(base64ish)
@example("QQ=\n=")
@example("QUJD====")
@example("")  # the strict fast path's guard indexes the text
@example("A===")
@example("QUJD=A==")
@example("QUJDRA==")
@example("QUJDRA=\n")
@example("  ")
@example("A\v")
@rotating_seed
def test_from_base64_matches_whatwg(text: str) -> None:
    expected = whatwg_forgiving_decode(text)
    if expected is None:
        with pytest.raises(Base64DecodeError):
            from_base64(text)
    else:
        assert from_base64(text) == expected


@given(st.binary(max_size=300))
def test_to_base64_is_standard_padded(data: bytes) -> None:
    assert to_base64(data) == base64.b64encode(data).decode("ascii")


@given(st.binary(max_size=300))
def test_round_trip(data: bytes) -> None:
    encoded = to_base64(data)
    assert from_base64(encoded) == data
    assert from_base64(encoded.rstrip("=")) == data  # padding is optional
    assert base64.b64decode(encoded, validate=True) == data


@given(st.binary(min_size=1, max_size=100), st.data())
def test_whitespace_anywhere_is_ignored(data: bytes, draw: st.DataObject) -> None:
    encoded = to_base64(data)
    at = draw.draw(st.integers(0, len(encoded)))
    spaced = (
        encoded[:at]
        + draw.draw(st.sampled_from(["\t", "\n", "\f", "\r", " ", "\r\n"]))
        + encoded[at:]
    )
    assert from_base64(spaced) == data


def test_leftover_bits_are_ignored() -> None:
    assert from_base64("QR==") == from_base64("QQ==") == b"A"


NOT_IN_ALPHABET = "is not in the standard base64 alphabet A-Z a-z 0-9 + /"
NOT_TRAILING = "is not trailing padding: at most 2 '=' are allowed, only at the end"
PAD_LENGTH = (
    "'=' is only allowed as 1 or 2 trailing padding characters that make the length a "
    "multiple of 4, but the length is"
)
ONE_MORE = "is 1 more than a multiple of 4, which no byte string encodes to"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("QUJD!", f"character '!' at index 4 {NOT_IN_ALPHABET}"),
        ("-_8=", f"character '-' at index 0 {NOT_IN_ALPHABET}"),
        ("\u00e9", f"character '\u00e9' at index 0 {NOT_IN_ALPHABET}"),
        ("QU JD!", f"character '!' at index 4 (counted without whitespace) {NOT_IN_ALPHABET}"),
        ("A", f"the length 1 {ONE_MORE}"),
        ("QU JD A", f"the length 5 (counted without whitespace) {ONE_MORE}"),
        ("AA=", f"{PAD_LENGTH} 3"),
        ("QU JD=", f"{PAD_LENGTH} 5 (counted without whitespace)"),
        ("QQ==QQ==", f"'=' at index 2 {NOT_TRAILING}"),
        ("Q===", f"'=' at index 1 {NOT_TRAILING}"),
        ("QQ=\nQ", f"'=' at index 2 (counted without whitespace) {NOT_TRAILING}"),
        (5, "Expected base64 text (a str), got int"),
    ],
)
def test_refusal_messages_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(Base64DecodeError) as info:
        from_base64(text)
    assert info.value.reason == reason
    assert str(info.value) == f"invalid base64: {reason}"


def test_error_is_a_value_error_of_the_library() -> None:
    with pytest.raises(ValueError) as info:  # catchable as either
        from_base64("!")
    assert isinstance(info.value, EnclaveStreamError)
    # Lenient decoders accept what atob refuses: make sure we are not one of them.
    assert binascii.a2b_base64("QQ==QQ==") == b"A"


def _verdict(text: str) -> bytes | None:
    try:
        return from_base64(text)
    except Base64DecodeError:
        return None


@settings(max_examples=1000)
@given(st.text(alphabet="ABCDEFab01+/=-_ \n\t.\u00e9", max_size=24))
@rotating_seed
def test_odd_text_matches_whatwg(text: str) -> None:
    assert _verdict(text) == whatwg_forgiving_decode(text)


@settings(max_examples=1000)
@given(st.text(alphabet="AQ/=", max_size=14))
def test_text_around_padding_matches_whatwg(text: str) -> None:
    assert _verdict(text) == whatwg_forgiving_decode(text)


@given(st.binary(max_size=64))
def test_canonical_text_and_its_respellings_match_whatwg(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert _verdict(text) == whatwg_forgiving_decode(text) == data
    # A non-canonical spelling of the last character (leftover bits) decodes alike.
    if text.endswith("=") and len(text) >= 2:
        index = len(text.rstrip("=")) - 1
        tweaked = text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]
        assert _verdict(tweaked) == whatwg_forgiving_decode(tweaked)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "QR==",
        "QQ",
        "QQ=",
        "Q===",
        "QUJD RA==",
        "A",
        "=",
        "QQ==QQ==",
        "QUJD=",
        "QUJD====",
        "QUJDR===",
        "QUJDRA==",
        "QUJDRAA=",
        "\u00e9\u00e9\u00e9\u00e9",
        "A" * 16 + "=",
        "A" * 16 + "==",
        "AAAA====",
    ],
)
def test_padding_edge_cases_match_whatwg(text: str) -> None:
    assert _verdict(text) == whatwg_forgiving_decode(text)


# --- UTF-8 as TextEncoder writes it ---------------------------------------------------


@given(st.text())
def test_utf8_of_well_formed_text_is_plain_utf8(text: str) -> None:
    assert utf8(text) == text.encode("utf-8")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\ud800b", b"a\xef\xbf\xbdb"),  # a lone high surrogate
        ("\udfff", b"\xef\xbf\xbd"),  # a lone low surrogate
        ("\ud83d\ude00", "\U0001f600".encode()),  # a pair is the character it stands for
        ("\ude00\ud83d", b"\xef\xbf\xbd\xef\xbf\xbd"),  # a reversed pair is two lone ones
    ],
)
def test_utf8_writes_surrogates_as_text_encoder_does(text: str, expected: bytes) -> None:
    assert utf8(text) == expected
