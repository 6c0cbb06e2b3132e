"""envelopes.json: the JSON/envelope layer against the reference's recorded envelopes.

Every kind is covered: ``context`` (a SessionEncryptionContext with a fixed
prefix), ``explicit_nonce`` (createEncryptedEnvelope), ``decrypt``
(decryptJson on a given payload) and ``rotation`` (key limits and the 32-bit
counter wrap, which we refuse on purpose).

``decrypt_json`` returns the plain JSON value as the reference's
``decryptJson`` does; ``type=StreamEvent`` is our typed form.
"""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import pytest

from enclave_stream import EncryptedEnvelope, StreamEvent, validate_event
from enclave_stream.codec import decode_event, encode_event
from enclave_stream.crypto import (
    AesGcmError,
    AesGcmKey,
    SessionEncryptionContext,
    SessionKeyInfo,
    create_encrypted_envelope,
    decrypt_json,
    encrypt_json,
)
from enclave_stream.crypto.aesgcm import MAX_MESSAGES_PER_KEY
from enclave_stream.crypto.envelope import event_plaintext, json_plaintext
from enclave_stream.errors import EncryptionErrorCode, EnvelopeError, EnvelopeErrorReason
from tests.vectors import case_id, cases

FILE = "envelopes.json"
R = EnvelopeErrorReason

# How each refusal of a ``decrypt`` case shows up here. The reference throws
# an AesGcmError for the first two kinds, but lets atob's DOMException and
# JSON.parse's SyntaxError escape raw; we raise one typed EnvelopeError (an
# AesGcmError subclass, code ENCRYPTION_DECRYPTION_FAILED) naming the check.
DECRYPT_REFUSALS: dict[str, EnvelopeErrorReason] = {
    "decrypt_split_tag": R.AUTHENTICATION_FAILED,
    "decrypt_tampered": R.AUTHENTICATION_FAILED,
    "decrypt_bad_nonce_b64": R.INVALID_ENCODING,  # reference: InvalidCharacterError
    "decrypt_short_nonce": R.INVALID_ENCODING,
    "decrypt_not_json": R.INVALID_PLAINTEXT,  # reference: SyntaxError
}

# Deliberate deviation: with maxNonces raised above 2**32 the reference keeps
# counting and writes only the low 32 bits, so counter 2**32 reuses counter
# 0's nonce. Our context refuses that encryption with ENCRYPTION_NONCE_REUSE.
COUNTER_WRAP_STEPS = frozenset({("counter_wrap", 4294967296)})


def _key(case: dict[str, Any]) -> bytes:
    return bytes.fromhex(case["key_hex"])


def _expected_json(step: dict[str, Any]) -> Any:
    """What the reference's decryptJson returned for this step (plain JSON)."""
    if "decrypted" in step:
        return step["decrypted"]
    assert step["decrypted_equals_inner"] is True
    return step["inner_event"]


def _expected(step: dict[str, Any]) -> StreamEvent:
    return validate_event(_expected_json(step))  # type: ignore[return-value]


def _envelope(line: str) -> EncryptedEnvelope:
    envelope = decode_event(line)
    assert type(envelope) is EncryptedEnvelope, envelope
    return envelope


# --- context ------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(FILE, "context"), ids=case_id)
def test_context_envelopes_byte_exact(case: dict[str, Any]) -> None:
    """Our context under the reference's prefix writes the reference's envelope lines."""
    ctx = SessionEncryptionContext(
        _key(case),
        SessionKeyInfo(case["key_id"]),
        nonce_prefix=bytes.fromhex(case["nonce_prefix_hex"]),
    )
    assert ctx.nonce_counter == case["start_counter"]
    for step in case["steps"]:
        assert ctx.nonce_counter == step["counter"]
        # The plaintext is exactly JSON.stringify's bytes, validated or not.
        plaintext = base64.b64decode(step["plaintext_b64"])
        assert event_plaintext(step["inner_event"]) == plaintext
        assert json_plaintext(step["inner_event"]) == plaintext
        envelope = ctx.create_envelope(step["session_id"], step["seq"], step["inner_event"])
        assert encode_event(envelope) == step["envelope_line"].encode("utf-8")
        assert envelope.payload.nonce_b64 == base64.b64encode(
            bytes.fromhex(step["nonce_hex"])
        ).decode("ascii")


@pytest.mark.parametrize("case", cases(FILE, "context"), ids=case_id)
def test_context_typed_events_byte_exact(case: dict[str, Any]) -> None:
    """A typed event gives the same bytes as its wire mapping."""
    ctx = SessionEncryptionContext(
        _key(case),
        SessionKeyInfo(case["key_id"]),
        nonce_prefix=bytes.fromhex(case["nonce_prefix_hex"]),
    )
    for step in case["steps"]:
        event = cast(StreamEvent, validate_event(step["inner_event"]))
        envelope = ctx.create_envelope(step["session_id"], step["seq"], event)
        assert encode_event(envelope) == step["envelope_line"].encode("utf-8")


@pytest.mark.parametrize("case", cases(FILE, "context"), ids=case_id)
def test_context_decrypts_reference_envelopes(case: dict[str, Any]) -> None:
    """Every envelope the reference made decrypts to its inner event (another context, same key)."""
    ctx = SessionEncryptionContext(_key(case), SessionKeyInfo(case["key_id"]))
    for step in case["steps"]:
        envelope = _envelope(step["envelope_line"])
        assert ctx.decrypt_json(envelope.payload) == _expected_json(step)
        decrypted = ctx.decrypt_json(envelope.payload, type=StreamEvent)
        assert decrypted == _expected(step)
        assert encode_event(decrypted) == base64.b64decode(step["plaintext_b64"])
        # The payload as a plain mapping (the reference's input) works too.
        payload = json.loads(step["envelope_line"])["payload"]
        assert ctx.decrypt_json(payload, type=StreamEvent) == decrypted
        assert decrypt_json(_key(case), payload, type=StreamEvent) == decrypted
        assert decrypt_json(_key(case), payload) == _expected_json(step)


# --- explicit nonce -----------------------------------------------------------------


@pytest.mark.parametrize("case", cases(FILE, "explicit_nonce"), ids=case_id)
def test_explicit_nonce(case: dict[str, Any]) -> None:
    key = _key(case)
    args = (case["key_id"], case["session_id"], case["seq"], case["inner_event"])
    if "error" in case:
        nonce = bytes.fromhex(case["nonce_given_hex"])
        for key_form in (key, AesGcmKey(key)):
            with pytest.raises(AesGcmError) as info:
                create_encrypted_envelope(key_form, *args, nonce)
            assert info.value.code == case["error"]["code"]
            assert info.value.message == case["error"]["message"]
        return
    nonce = bytes.fromhex(case["nonce_hex"])
    for key_form in (key, AesGcmKey(key)):
        envelope = create_encrypted_envelope(key_form, *args, nonce)
        assert encode_event(envelope) == case["envelope_line"].encode("utf-8")
        payload = encrypt_json(key_form, case["key_id"], case["inner_event"], nonce)
        assert payload == envelope.payload
    payload = _envelope(case["envelope_line"]).payload
    assert decrypt_json(key, payload) == _expected_json(case)
    decrypted = decrypt_json(key, payload, type=StreamEvent)
    assert decrypted == _expected(case)
    assert encode_event(decrypted) == base64.b64decode(case["plaintext_b64"])


def test_explicit_nonce_vectors_include_a_refusal() -> None:
    assert any("error" in c for c in cases(FILE, "explicit_nonce"))


# --- decrypt ------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(FILE, "decrypt"), ids=case_id)
def test_decrypt(case: dict[str, Any]) -> None:
    key = _key(case)
    for key_form in (key, AesGcmKey(key)):
        if case["accept"]:
            assert decrypt_json(key_form, case["payload"]) == case["decrypted"]
            typed = decrypt_json(key_form, case["payload"], type=StreamEvent)
            assert typed == validate_event(case["decrypted"])
            continue
        with pytest.raises(EnvelopeError) as info:
            decrypt_json(key_form, case["payload"])
        assert isinstance(info.value, AesGcmError)
        assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED
        assert info.value.reason is DECRYPT_REFUSALS[case["id"]]
        if case["error"]["name"] == "AesGcmError" and "nonce" in case["error"]["message"]:
            assert info.value.message == case["error"]["message"]


def test_decrypt_refusal_table_matches_the_vectors() -> None:
    """Each refused case has an expected reason, and each listed id exists."""
    refused = {c["id"] for c in cases(FILE, "decrypt") if not c["accept"]}
    assert refused == set(DECRYPT_REFUSALS)


# --- rotation -----------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(FILE, "rotation"), ids=case_id)
def test_rotation(case: dict[str, Any]) -> None:
    info = SessionKeyInfo(
        key_id=case["key_id"],
        created_at=0,
        nonce_counter=int(case["start_counter"]),
        max_nonces=int(case["max_nonces"]),
    )
    ctx = SessionEncryptionContext(
        AesGcmKey(_key(case)), info, nonce_prefix=bytes.fromhex(case["nonce_prefix_hex"])
    )
    assert int(case["max_nonces"]) >= MAX_MESSAGES_PER_KEY
    seq = 0
    for step in case["steps"]:
        counter = int(step["counter"])
        assert ctx.nonce_counter == counter
        session_id = case["inner_event"]["sessionId"]
        if (case["id"], counter) in COUNTER_WRAP_STEPS:
            assert "error" not in step  # the reference encrypted (and reused a nonce)
            assert ctx.needs_rotation() is True
            with pytest.raises(AesGcmError) as refused:
                ctx.create_envelope(session_id, seq, case["inner_event"])
            assert refused.value.code is EncryptionErrorCode.NONCE_REUSE
            assert ctx.nonce_counter == counter  # nothing was consumed
            continue
        assert ctx.needs_rotation() is step["needs_rotation_before"]
        if "error" in step:
            with pytest.raises(AesGcmError) as expired:
                ctx.create_envelope(session_id, seq, case["inner_event"])
            assert expired.value.code == step["error"]["code"]
            assert expired.value.message.startswith(step["error"]["message"])
            continue
        envelope = ctx.create_envelope(session_id, seq, case["inner_event"])
        assert encode_event(envelope) == step["envelope_line"].encode("utf-8")
        assert ctx.decrypt_json(envelope.payload) == case["inner_event"]
        seq += 1


def test_counter_wrap_deviation_is_exercised() -> None:
    """The deviation list names exactly the steps whose counter is 2**32 or more."""
    wrapping = {
        (c["id"], int(s["counter"]))
        for c in cases(FILE, "rotation")
        for s in c["steps"]
        if int(s["counter"]) >= 2**32
    }
    assert wrapping == COUNTER_WRAP_STEPS


def test_every_kind_is_covered() -> None:
    kinds = {c["kind"] for c in cases(FILE)}
    assert kinds == {"context", "explicit_nonce", "decrypt", "rotation"}
