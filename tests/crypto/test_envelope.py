"""Stand-alone envelopes and the SessionEncryptionContext's JSON methods."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enclave_stream import (
    EncryptedEnvelope,
    EncryptedEnvelopePayload,
    EventValidationError,
    FinalEvent,
    FinalPayload,
    StdoutEvent,
    StdoutPayload,
)
from enclave_stream.crypto import (
    AesGcmError,
    AesGcmKey,
    Base64DecodeError,
    EncryptionErrorCode,
    EnvelopeError,
    EnvelopeErrorReason,
    HkdfError,
    SessionEncryptionContext,
    create_encrypted_envelope,
    decrypt_json,
    encrypt_json,
    from_base64,
)
from enclave_stream.crypto._codec import b64decode, canonical_payload_bytes, encode_inner

KEY = bytes(range(32))
R = EnvelopeErrorReason
EVENT = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(chunk="hello"))


def test_round_trip_with_random_nonces() -> None:
    one = encrypt_json(KEY, "k_1", EVENT)
    two = encrypt_json(AesGcmKey(KEY), "k_1", EVENT)
    assert one.kid == "k_1"
    assert len(base64.b64decode(one.nonce_b64)) == 12
    assert one.nonce_b64 != two.nonce_b64
    assert one.tag_b64 is two.tag_b64  # never written (UNSET)
    assert decrypt_json(KEY, one) == decrypt_json(KEY, two) == EVENT


def test_plaintext_is_the_reference_json() -> None:
    nonce = bytes(12)
    payload = encrypt_json(KEY, "k_1", EVENT, nonce)
    plaintext = AesGcmKey(KEY)._aead.decrypt(nonce, base64.b64decode(payload.ciphertext_b64), None)
    assert plaintext == (
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hello"}}'
    )


def test_lone_surrogates_are_escaped_and_come_back() -> None:
    event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(chunk="a\ud800b\udfff"))
    plaintext = encode_inner(event)
    assert b"\\ud800" in plaintext
    assert b"\\udfff" in plaintext
    plaintext.decode("utf-8")  # always valid UTF-8
    assert decrypt_json(KEY, encrypt_json(KEY, "k", event)) == event


def test_mapping_input_is_validated() -> None:
    wire = json.loads(
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hello"}}'
    )
    assert decrypt_json(KEY, encrypt_json(KEY, "k", wire)) == EVENT
    wire["payload"]["chunk"] = 5
    with pytest.raises(EventValidationError) as info:
        encrypt_json(KEY, "k", wire)
    assert info.value.path == "$.payload.chunk"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            EncryptedEnvelope(
                session_id="s_1",
                seq=1,
                payload=EncryptedEnvelopePayload(kid="k", nonce_b64="A", ciphertext_b64="A"),
            ),
            id="envelope",
        ),
        pytest.param(
            {
                "protocolVersion": 2,
                "sessionId": "s_1",
                "seq": 1,
                "type": "enc",
                "payload": {"kid": "k", "nonceB64": "A", "ciphertextB64": "A"},
            },
            id="envelope-mapping",
        ),
        pytest.param([1, 2], id="list"),
        pytest.param("text", id="str"),
    ],
)
def test_only_plaintext_events_are_encrypted(data: Any) -> None:
    with pytest.raises(EnvelopeError) as info:
        encrypt_json(KEY, "k", data)
    assert info.value.reason is R.INVALID_EVENT


def test_invalid_typed_event_is_refused() -> None:
    not_bool = FinalEvent(session_id="s_1", seq=1, payload=FinalPayload(ok="yes"))  # type: ignore[arg-type]
    with pytest.raises(EventValidationError) as info:
        encrypt_json(KEY, "k", not_bool)
    assert info.value.path == "$.payload.ok"
    with pytest.raises(EventValidationError) as info:
        encrypt_json(KEY, "k", StdoutEvent(session_id="nope", seq=1, payload=StdoutPayload("x")))
    assert info.value.path == "$.sessionId"


@pytest.mark.parametrize(
    ("session_id", "seq", "path"),
    [
        ("s_", 1, "$.sessionId"),
        ("x_1", 1, "$.sessionId"),
        ("s_1", -1, "$.seq"),
        ("s_1", 2**53, "$.seq"),
        ("s_1", True, "$.seq"),
        ("s_1", 1.0, "$.seq"),
    ],
)
def test_create_encrypted_envelope_checks_its_fields(session_id: Any, seq: Any, path: str) -> None:
    with pytest.raises(EventValidationError) as info:
        create_encrypted_envelope(KEY, "k", session_id, seq, EVENT)
    assert info.value.path == path
    ctx = SessionEncryptionContext.from_key_bytes(KEY, "k")
    with pytest.raises(EventValidationError):
        ctx.create_envelope(session_id, seq, EVENT)
    assert ctx.nonce_counter == 0


def test_bad_nonce_lengths() -> None:
    for nonce in (bytes(8), bytes(16), b""):
        with pytest.raises(AesGcmError) as info:
            encrypt_json(KEY, "k", EVENT, nonce)
        assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED


def test_bad_key_lengths() -> None:
    with pytest.raises(HkdfError):
        encrypt_json(bytes(10), "k", EVENT)
    with pytest.raises(HkdfError):
        decrypt_json(bytes(10), encrypt_json(KEY, "k", EVENT))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"kid": "k", "nonceB64": "AAAAAAAAAAAAAAAA"}, id="no-ciphertext"),
        pytest.param({"kid": "", "nonceB64": "A", "ciphertextB64": "A"}, id="empty-kid"),
        pytest.param({"kid": "k", "nonceB64": 5, "ciphertextB64": "A"}, id="nonce-type"),
        pytest.param([1], id="list"),
        pytest.param("payload", id="str"),
    ],
)
def test_malformed_payloads(payload: Any) -> None:
    with pytest.raises(EnvelopeError) as info:
        decrypt_json(KEY, payload)
    assert info.value.reason is R.INVALID_ENCODING
    assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED


def test_kid_is_ignored_by_the_stand_alone_function() -> None:
    payload = encrypt_json(KEY, "k_1", EVENT)
    other = EncryptedEnvelopePayload(
        kid="k_other", nonce_b64=payload.nonce_b64, ciphertext_b64=payload.ciphertext_b64
    )
    assert decrypt_json(KEY, other) == EVENT


def test_wrong_key() -> None:
    with pytest.raises(EnvelopeError) as info:
        decrypt_json(bytes(32), encrypt_json(KEY, "k", EVENT))
    assert info.value.reason is R.AUTHENTICATION_FAILED
    assert info.value.message.startswith("Decryption failed")


# --- the context's JSON methods ---------------------------------------------------------


def test_context_json_methods() -> None:
    ctx = SessionEncryptionContext.from_key_bytes(KEY, "k_ctx", nonce_prefix=bytes(8))
    payload = ctx.encrypt_json(EVENT)
    assert payload.kid == "k_ctx"
    assert base64.b64decode(payload.nonce_b64) == bytes(12)
    envelope = ctx.create_envelope("s_1", 9, EVENT)
    assert (envelope.session_id, envelope.seq) == ("s_1", 9)
    assert base64.b64decode(envelope.payload.nonce_b64) == bytes(11) + b"\x01"
    assert ctx.nonce_counter == 2
    assert ctx.decrypt_json(payload) == ctx.decrypt_json(envelope.payload) == EVENT
    assert decrypt_json(KEY, envelope.payload) == EVENT


def test_context_uses_no_nonce_for_an_invalid_event() -> None:
    ctx = SessionEncryptionContext.from_key_bytes(KEY, "k")
    with pytest.raises(EventValidationError):
        ctx.encrypt_json(StdoutEvent(session_id="s_1", seq=-5, payload=StdoutPayload("x")))
    with pytest.raises(EnvelopeError):
        ctx.encrypt_json("not an event")  # type: ignore[arg-type]
    assert ctx.nonce_counter == 0


def test_context_decrypt_refusals() -> None:
    ctx = SessionEncryptionContext.from_key_bytes(KEY, "k")
    payload = ctx.encrypt_json(EVENT)
    other = SessionEncryptionContext.from_key_bytes(bytes(32), "k")
    with pytest.raises(EnvelopeError) as info:
        other.decrypt_json(payload)
    assert info.value.reason is R.AUTHENTICATION_FAILED
    with pytest.raises(EnvelopeError) as info:
        ctx.decrypt_json({"kid": "k", "nonceB64": "@@@@", "ciphertextB64": "AAAA"})
    assert info.value.reason is R.INVALID_ENCODING


# --- base64: the fast path gives atob's verdicts -------------------------------------


def _atob(text: str) -> bytes | None:
    try:
        return from_base64(text)
    except Base64DecodeError:
        return None


def _ours(text: str) -> bytes | None:
    try:
        return b64decode(text)
    except Base64DecodeError:
        return None


@given(st.text(alphabet="ABCDEFab01+/=-_ \n\t.\u00e9", max_size=24))
def test_b64decode_matches_atob_on_odd_text(text: str) -> None:
    assert _ours(text) == _atob(text)


@settings(max_examples=1000)
@given(st.text(alphabet="AQ/=", max_size=14))
def test_b64decode_matches_atob_around_padding(text: str) -> None:
    assert _ours(text) == _atob(text)


@given(st.binary(max_size=64))
def test_b64decode_matches_atob_on_canonical_text(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert _ours(text) == _atob(text) == data
    # A non-canonical spelling of the last character (leftover bits) decodes alike.
    if text.endswith("=") and len(text) >= 2:
        index = len(text.rstrip("=")) - 1
        tweaked = text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]
        assert _ours(tweaked) == _atob(tweaked)


def _payload_verdict(nonce: str, ciphertext: str) -> tuple[bytes, bytes] | None:
    try:
        pair = (from_base64(nonce), from_base64(ciphertext))
    except Base64DecodeError:
        return None
    return pair if len(pair[0]) == 12 else None


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(alphabet="AQ/= ", max_size=20),
        st.binary(max_size=13).map(lambda b: base64.b64encode(b).decode()),
    ),
    st.text(alphabet="AQ/= ", max_size=14),
)
@example("A" * 16 + "=", "AAAA")  # excess padding after a full nonce
@example("A" * 16 + "==", "AAAA")
@example("A" * 16, "AAAA=")
@example("A" * 16, "AAAA====")
@example("A" * 14 + "==", "AAAA")  # canonical, but a 10-byte nonce
def test_canonical_payload_fast_path_agrees_with_atob(nonce: str, ciphertext: str) -> None:
    """Whatever the fast path accepts, atob decodes to the same bytes (and a 12-byte nonce)."""
    try:
        fast = canonical_payload_bytes(nonce, ciphertext)
    except ValueError:
        return
    assert fast == _payload_verdict(nonce, ciphertext)


def test_b64decode_edge_cases() -> None:
    for text in [
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
    ]:
        assert _ours(text) == _atob(text), text
    with pytest.raises(Base64DecodeError):
        b64decode("\u00e9\u00e9\u00e9\u00e9")
    assert binascii.a2b_base64("QR==") == b"A"
