"""The envelope path: stand-alone envelopes, any JSON value, the typed form, the context."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enclave_stream import (
    EncryptedEnvelope,
    EventValidationError,
    FinalEvent,
    StdoutEvent,
    StreamEvent,
)
from enclave_stream.codec import GC_PAUSE_BYTES, DecodeFailure, decode_event, encode_event
from enclave_stream.crypto import (
    AesGcmError,
    AesGcmKey,
    HkdfError,
    SessionEncryptionContext,
    SessionKeyInfo,
    create_encrypted_envelope,
    create_server_hello,
    decrypt,
    decrypt_json,
    encrypt_json,
    from_base64,
)
from enclave_stream.crypto.ecdh import key_pair_from_private_scalar
from enclave_stream.crypto.envelope import event_plaintext, open_payload, read_event
from enclave_stream.errors import (
    Base64DecodeError,
    EncryptionErrorCode,
    EnvelopeError,
    EnvelopeErrorReason,
)
from enclave_stream.events import EncryptedEnvelopePayload, FinalPayload, ServerHello, StdoutPayload
from tests.rotating_seed import rotating_seed
from tests.strategies import any_event

KEY = bytes(range(32))
R = EnvelopeErrorReason
EVENT = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(chunk="hello"))
WIRE = json.loads(
    b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hello"}}'
)


def test_round_trip_with_random_nonces() -> None:
    one = encrypt_json(KEY, "k_1", EVENT)
    two = encrypt_json(AesGcmKey(KEY), "k_1", EVENT)
    assert one.kid == "k_1"
    assert len(base64.b64decode(one.nonce_b64)) == 12
    assert one.nonce_b64 != two.nonce_b64
    assert one.tag_b64 is two.tag_b64  # never written (UNSET)
    assert decrypt_json(KEY, one) == decrypt_json(KEY, two) == WIRE
    assert decrypt_json(KEY, one, type=StreamEvent) == EVENT


def test_plaintext_is_the_reference_json() -> None:
    nonce = bytes(12)
    payload = encrypt_json(KEY, "k_1", EVENT, nonce)
    plaintext = decrypt(KEY, base64.b64decode(payload.ciphertext_b64), nonce)
    assert plaintext == (
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hello"}}'
    )


def test_lone_surrogates_are_escaped_and_come_back() -> None:
    event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(chunk="a\ud800b\udfff"))
    plaintext = event_plaintext(event)
    assert b"\\ud800" in plaintext
    assert b"\\udfff" in plaintext
    plaintext.decode("utf-8")  # always valid UTF-8
    assert decrypt_json(KEY, encrypt_json(KEY, "k", event), type=StreamEvent) == event
    assert decrypt_json(KEY, encrypt_json(KEY, "k", event))["payload"]["chunk"] == "a\ud800b\udfff"


def test_a_mapping_is_encrypted_as_written_and_validated_only_in_an_envelope() -> None:
    assert decrypt_json(KEY, encrypt_json(KEY, "k", WIRE), type=StreamEvent) == EVENT
    wire = {**WIRE, "payload": {"chunk": 5}, "extra": True}
    assert decrypt_json(KEY, encrypt_json(KEY, "k", wire)) == wire  # any JSON: as given
    with pytest.raises(EventValidationError) as info:
        create_encrypted_envelope(KEY, "k", "s_1", 1, wire)
    assert info.value.path == "$.payload.chunk"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"a": 1}, id="object"),
        pytest.param([1, "two", None, True, 2.5], id="array"),
        pytest.param("text", id="string"),
        pytest.param(7, id="number"),
        pytest.param(None, id="null"),
        pytest.param(False, id="false"),
        pytest.param(WIRE, id="event-mapping"),
        pytest.param({**WIRE, "type": "enc"}, id="envelope-mapping"),
    ],
)
def test_encrypt_json_takes_any_json_value(data: Any) -> None:
    payload = encrypt_json(KEY, "k", data, bytes(12))
    assert decrypt_json(KEY, payload) == data
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k"))
    assert ctx.decrypt_json(ctx.encrypt_json(data)) == data


def test_encrypt_json_writes_what_json_stringify_writes() -> None:
    data = {"b": [1.0, 1e21, float("nan"), -0.0], "a": (1,), 3: "x"}
    payload = encrypt_json(KEY, "k", data, bytes(12))
    plaintext = decrypt(KEY, base64.b64decode(payload.ciphertext_b64), bytes(12))
    assert plaintext == b'{"b":[1,1e+21,null,0],"a":[1],"3":"x"}'


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _same_json(left: Any, right: Any) -> bool:
    # Numbers are doubles in JSON: 1.0 comes back as 1 and -0.0 as 0.
    if isinstance(left, float) or isinstance(right, float):
        return bool(left == right) or math.isclose(left, right)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same_json, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    return bool(left == right)


@given(json_values)
def test_any_json_value_round_trips(value: Any) -> None:
    assert _same_json(value, decrypt_json(KEY, encrypt_json(KEY, "k", value)))


@pytest.mark.parametrize("data", [b"bytes", {1, 2}, object(), {"a": [b"x"]}])
def test_values_json_cannot_write_are_refused(data: Any) -> None:
    with pytest.raises(EnvelopeError) as info:
        encrypt_json(KEY, "k", data)
    assert info.value.reason is R.INVALID_EVENT
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k"))
    with pytest.raises(EnvelopeError):
        ctx.encrypt_json(data)
    assert ctx.nonce_counter == 0  # no nonce used


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"a": 1}, id="object"),
        pytest.param([1, 2], id="array"),
        pytest.param({**WIRE, "payload": {"chunk": 5}}, id="invalid-event"),
        pytest.param(
            {
                "protocolVersion": 2,
                "sessionId": "s_1",
                "seq": 1,
                "type": "enc",
                "payload": {"kid": "k", "nonceB64": "AAAA", "ciphertextB64": "AAAA"},
            },
            id="envelope",
        ),
    ],
)
def test_typed_form_refuses_what_is_not_an_event(data: Any) -> None:
    payload = encrypt_json(KEY, "k", data)
    with pytest.raises(EnvelopeError) as info:
        decrypt_json(KEY, payload, type=StreamEvent)
    assert info.value.reason is R.INVALID_PLAINTEXT
    assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED


def test_typed_form_takes_a_message_type() -> None:
    hello = create_server_hello(key_pair_from_private_scalar(1), "k_1")
    assert decrypt_json(KEY, encrypt_json(KEY, "k", hello), type=ServerHello) == hello
    assert decrypt_json(KEY, encrypt_json(KEY, "k", EVENT), type=StdoutEvent) == EVENT
    with pytest.raises(EnvelopeError) as info:
        decrypt_json(KEY, encrypt_json(KEY, "k", EVENT), type=ServerHello)
    assert info.value.reason is R.INVALID_PLAINTEXT


def test_plaintext_that_is_not_json() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k"))
    for bad in (b"not json {", b"", b"[1,]", b"NaN"):
        ciphertext, nonce = ctx.encrypt(bad)
        payload = {"kid": "k", "nonceB64": _b64(nonce), "ciphertextB64": _b64(ciphertext)}
        with pytest.raises(EnvelopeError) as info:
            decrypt_json(KEY, payload)
        assert info.value.reason is R.INVALID_PLAINTEXT
    # TextDecoder drops a leading byte order mark and writes U+FFFD for bad UTF-8.
    ciphertext, nonce = ctx.encrypt(b'\xef\xbb\xbf["\xff"]')
    payload = {"kid": "k", "nonceB64": _b64(nonce), "ciphertextB64": _b64(ciphertext)}
    assert decrypt_json(KEY, payload) == ["\ufffd"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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
def test_only_plaintext_events_go_into_an_envelope(data: Any) -> None:
    with pytest.raises(EnvelopeError) as info:
        create_encrypted_envelope(KEY, "k", "s_1", 1, data)
    assert info.value.reason is R.INVALID_EVENT
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k"))
    with pytest.raises(EnvelopeError):
        ctx.create_envelope("s_1", 1, data)
    assert ctx.nonce_counter == 0


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
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k"))
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


@pytest.mark.parametrize(
    ("nonce_b64", "ciphertext_b64", "says"),
    [
        pytest.param(
            "AAAA-AAAAAAAAAAA", "AAAA", "nonceB64: invalid base64: character '-'", id="nonce-base64"
        ),
        pytest.param("AAAA", "AAAA", "Invalid nonce length: expected 12, got 3", id="nonce-length"),
        pytest.param(
            "AAAAAAAAAAAAAAAA",
            "AAAA_",
            "ciphertextB64: invalid base64: character '_'",
            id="ciphertext",
        ),
        pytest.param("AAAA", "AAAA_", "Invalid nonce length", id="nonce-checked-first"),
    ],
)
def test_an_undecodable_field_is_named(nonce_b64: str, ciphertext_b64: str, says: str) -> None:
    payload = EncryptedEnvelopePayload(kid="k", nonce_b64=nonce_b64, ciphertext_b64=ciphertext_b64)
    with pytest.raises(EnvelopeError) as info:
        decrypt_json(KEY, payload)
    assert info.value.reason is R.INVALID_ENCODING
    assert str(info.value).startswith(says)


def test_kid_is_ignored_by_the_stand_alone_function() -> None:
    payload = encrypt_json(KEY, "k_1", EVENT)
    other = EncryptedEnvelopePayload(
        kid="k_other", nonce_b64=payload.nonce_b64, ciphertext_b64=payload.ciphertext_b64
    )
    assert decrypt_json(KEY, other, type=StreamEvent) == EVENT


def test_wrong_key() -> None:
    with pytest.raises(EnvelopeError) as info:
        decrypt_json(bytes(32), encrypt_json(KEY, "k", EVENT))
    assert info.value.reason is R.AUTHENTICATION_FAILED
    assert info.value.message.startswith("Decryption failed")


# --- the context's JSON methods ---------------------------------------------------------


def test_context_json_methods() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k_ctx"), nonce_prefix=bytes(8))
    payload = ctx.encrypt_json(EVENT)
    assert payload.kid == "k_ctx"
    assert base64.b64decode(payload.nonce_b64) == bytes(12)
    envelope = ctx.create_envelope("s_1", 9, EVENT)
    assert (envelope.session_id, envelope.seq) == ("s_1", 9)
    assert base64.b64decode(envelope.payload.nonce_b64) == bytes(11) + b"\x01"
    assert ctx.nonce_counter == 2
    assert ctx.decrypt_json(payload) == ctx.decrypt_json(envelope.payload) == WIRE
    assert ctx.decrypt_json(payload, type=StreamEvent) == EVENT
    assert decrypt_json(KEY, envelope.payload, type=StreamEvent) == EVENT


def test_context_uses_no_nonce_for_an_invalid_event() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k"))
    with pytest.raises(EventValidationError):
        ctx.encrypt_json(StdoutEvent(session_id="s_1", seq=-5, payload=StdoutPayload("x")))
    with pytest.raises(EventValidationError):
        ctx.create_envelope("s_1", 1, {**WIRE, "seq": -5})
    with pytest.raises(EnvelopeError):
        ctx.create_envelope("s_1", 1, "not an event")  # type: ignore[arg-type]
    assert ctx.nonce_counter == 0


def test_context_decrypt_refusals() -> None:
    ctx = SessionEncryptionContext(KEY, SessionKeyInfo("k"))
    payload = ctx.encrypt_json(EVENT)
    other = SessionEncryptionContext(bytes(32), SessionKeyInfo("k"))
    with pytest.raises(EnvelopeError) as info:
        other.decrypt_json(payload)
    assert info.value.reason is R.AUTHENTICATION_FAILED
    with pytest.raises(EnvelopeError) as info:
        ctx.decrypt_json({"kid": "k", "nonceB64": "@@@@", "ciphertextB64": "AAAA"})
    assert info.value.reason is R.INVALID_ENCODING


# --- what each refusal says ---------------------------------------------------------------


_ENVELOPE = EncryptedEnvelope(
    session_id="s_1",
    seq=1,
    payload=EncryptedEnvelopePayload(kid="k", nonce_b64="AAAA", ciphertext_b64="AAAA"),
)


def _sealed(plaintext: bytes) -> dict[str, str]:
    ciphertext, nonce = SessionEncryptionContext(KEY, SessionKeyInfo("k")).encrypt(plaintext)
    return {"kid": "k", "nonceB64": _b64(nonce), "ciphertextB64": _b64(ciphertext)}


REFUSALS: dict[str, tuple[Callable[[], object], str]] = {
    "not a JSON value": (
        lambda: encrypt_json(KEY, "k", b"x"),
        "Not a JSON value: Object of type bytes is not JSON serializable",
    ),
    "plaintext not JSON": (
        # (a message every Python from 3.10 on words alike; "[1,]" is worded anew in 3.13)
        lambda: decrypt_json(KEY, _sealed(b"[1 2]")),
        "Decrypted plaintext is not JSON: Expecting ',' delimiter (position 3)",
    ),
    "plaintext not of the type": (
        lambda: decrypt_json(KEY, encrypt_json(KEY, "k", EVENT), type=ServerHello),
        "Decrypted plaintext is not a valid ServerHello: "
        "Object missing required field `serverEphemeralPubKeyB64`",
    ),
    "plaintext not of a type without a name": (
        lambda: decrypt_json(KEY, encrypt_json(KEY, "k", {"a": 1}), type=int | None),
        "Decrypted plaintext is not a valid int | None: Expected `int | null`, got `object`",
    ),
    "envelope session id": (
        lambda: create_encrypted_envelope(KEY, "k", "x_1", 1, EVENT),
        "Expected a session id (a string starting with 's_'), got 'x_1' - at `$.sessionId`",
    ),
    "envelope seq": (
        lambda: create_encrypted_envelope(KEY, "k", "s_1", -1, EVENT),
        "Expected `int` >= 0 and <= 9007199254740991, got -1 - at `$.seq`",
    ),
    "payload field": (
        lambda: decrypt_json(KEY, {"kid": "k", "nonceB64": 5, "ciphertextB64": "A"}),
        "Invalid envelope payload: Expected `str`, got `int` - at `$.nonceB64`",
    ),
    "not a payload": (
        lambda: decrypt_json(KEY, [1]),  # type: ignore[arg-type]
        "Expected an EncryptedEnvelopePayload or a mapping, got list",
    ),
    "an envelope in an envelope": (
        lambda: create_encrypted_envelope(KEY, "k", "s_1", 1, _ENVELOPE),
        "An enc envelope cannot be encrypted again",
    ),
    "not an event": (
        lambda: create_encrypted_envelope(KEY, "k", "s_1", 1, [1]),  # type: ignore[arg-type]
        "Expected a protocol event or a mapping, got list",
    ),
    "plaintext not a valid event": (
        lambda: decrypt_json(
            KEY, encrypt_json(KEY, "k", {**WIRE, "payload": {"chunk": 5}}), type=StreamEvent
        ),
        "Decrypted plaintext is not a valid event: "
        "Validation error: Expected `str`, got `int` - at $.payload.chunk",
    ),
    "plaintext an envelope": (
        lambda: decrypt_json(KEY, encrypt_json(KEY, "k", _ENVELOPE), type=StreamEvent),
        "Decrypted plaintext is an enc envelope: nested envelopes are refused",
    ),
    "wrong key": (
        lambda: decrypt_json(bytes(32), encrypt_json(KEY, "k", EVENT)),
        "Decryption failed: authentication tag mismatch (wrong key or nonce, or the "
        "envelope was altered)",
    ),
}


@pytest.mark.parametrize(("refused", "message"), REFUSALS.values(), ids=REFUSALS)
def test_refusals_say_what_is_wrong(refused: Callable[[], object], message: str) -> None:
    """The message names the value and the rule, so a refusal can be acted on."""
    with pytest.raises((EnvelopeError, EventValidationError)) as info:
        refused()
    assert str(info.value) == message


class _RefusingCipher:
    """A cipher that refuses the input's size, as AES-GCM does past its length limit."""

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        raise OverflowError("Data or associated data too long. Max 2**31 - 1 bytes")


class _KeyOfARefusingCipher(AesGcmKey):
    @property
    def aead(self) -> Any:
        return _RefusingCipher()


def test_input_the_cipher_cannot_take_is_an_encoding_error() -> None:
    """Past GCM's length limit the cipher refuses; that is a refused envelope, not a crash."""
    with pytest.raises(EnvelopeError) as info:
        decrypt_json(_KeyOfARefusingCipher(KEY), encrypt_json(KEY, "k", EVENT))
    assert info.value.reason is R.INVALID_ENCODING
    assert info.value.code is EncryptionErrorCode.DECRYPTION_FAILED
    assert info.value.message == (
        "Decryption failed: Data or associated data too long. Max 2**31 - 1 bytes"
    )


# --- open_payload reads each base64 field as from_base64 does -------------------------


def _field_by_field(key: bytes, payload: EncryptedEnvelopePayload) -> object:
    """What open_payload must give: each field read by from_base64 on its own, then the cipher."""
    try:
        nonce = from_base64(payload.nonce_b64)
    except Base64DecodeError as exc:
        return ("invalid_encoding", f"nonceB64: {exc}")
    if len(nonce) != 12:
        return ("invalid_encoding", f"Invalid nonce length: expected 12, got {len(nonce)}")
    try:
        ciphertext = from_base64(payload.ciphertext_b64)
    except Base64DecodeError as exc:
        return ("invalid_encoding", f"ciphertextB64: {exc}")
    try:
        return (nonce, AESGCM(key).decrypt(nonce, ciphertext, None))
    except InvalidTag:
        return "authentication_failed"
    except (OverflowError, ValueError):
        return "invalid_encoding"


def _opened(key: bytes, payload: EncryptedEnvelopePayload) -> object:
    try:
        return open_payload(key, payload)
    except EnvelopeError as exc:
        if exc.reason is EnvelopeErrorReason.INVALID_ENCODING and str(exc).startswith(
            ("nonceB64", "ciphertextB64", "Invalid nonce")
        ):
            return (exc.reason.value, str(exc))
        return exc.reason.value


_B64_NOISE = st.sampled_from(["=", "==", "A", "AA", " ", "\n", "-", "_", ".", "\u00e9", "\t"])


@st.composite
def _field_texts(draw: st.DrawFn) -> tuple[str, str]:
    """A real envelope's two fields, then maybe bent: characters inserted,
    dropped or swapped at the edges and around the seam."""
    nonce = draw(st.binary(min_size=12, max_size=12))
    plaintext = draw(st.binary(max_size=40))
    ciphertext = AESGCM(KEY).encrypt(nonce, plaintext, None)
    texts = [base64.b64encode(nonce).decode(), base64.b64encode(ciphertext).decode()]
    for _ in range(draw(st.integers(0, 3))):
        which = draw(st.integers(0, 1))
        text = texts[which]
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "drop", "cut"]))
        if action == "insert":
            text = text[:at] + draw(_B64_NOISE) + text[at:]
        elif action == "drop" and text:
            at = min(at, len(text) - 1)
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at]
        texts[which] = text
    return texts[0], texts[1]


@settings(max_examples=500)
@given(_field_texts())
@example(("AAAAAAAAAAAAAAAA", ""))  # 12 bytes of nonce, no ciphertext
@example(("AAAAAAAAAAAAAA==", ""))  # a padded 10-byte nonce, alone
@example(("AAAAAAAAAAAAAA==", "AAAA"))  # padding at the seam
@example(("AAAAAAAAAAAAA===", ""))  # strict binascii takes it, atob does not
@example(("AAAAAAAAAAAAAAAA", "QR=="))  # leftover bits in the last character
@example(("AAAAAAAAAAAAAAAA", "AAA="))
@example(("AAAAAAAAAAAAAAAA", "A==="))
@example(("AAAAAAAAAAAAAAAA", "AAAA===="))
@example(("AAAAAAAAAAAAAAA=", "AAAA"))
@example(("AAAAAAAAAAAAAAAA\u00e9", "AAAA"))
@example(("AAAAAAAAAAAAAAA\u00e9", "AAAA"))
@example(("AAAAAAAAAAAA....", "AAAA"))  # lenient base64 would skip the junk
@example(("AAAAAAAAAAAAAAAA", "AAAA...."))
@example(("AAAAAAAAAAAAAAAA", "AAA\nAAAA"))
@rotating_seed
def test_open_payload_reads_the_fields_as_from_base64_reads_each(texts: tuple[str, str]) -> None:
    payload = EncryptedEnvelopePayload(kid="k_1", nonce_b64=texts[0], ciphertext_b64=texts[1])
    assert _opened(KEY, payload) == _field_by_field(KEY, payload)


@pytest.mark.parametrize(
    ("nonce_b64", "ciphertext_b64", "message"),
    [
        (b"A" * 16, "AAAA", "nonceB64: invalid base64: Expected base64 text (a str), got bytes"),
        (
            "A" * 16,
            b"AAAA",
            "ciphertextB64: invalid base64: Expected base64 text (a str), got bytes",
        ),
    ],
)
def test_open_payload_refuses_fields_that_are_not_text(
    nonce_b64: object, ciphertext_b64: object, message: str
) -> None:
    payload = EncryptedEnvelopePayload(
        kid="k_1",
        nonce_b64=nonce_b64,  # type: ignore[arg-type]
        ciphertext_b64=ciphertext_b64,  # type: ignore[arg-type]
    )
    with pytest.raises(EnvelopeError) as caught:
        open_payload(KEY, payload)
    assert (caught.value.reason, str(caught.value)) == (
        EnvelopeErrorReason.INVALID_ENCODING,
        message,
    )


# --- read_event gives decode_event's verdict --------------------------------------------


def _read_plainly(plaintext: bytes) -> object:
    """What read_event must give: decode_event's plain verdict, an event or a refusal."""
    verdict = decode_event(plaintext, fast=False)
    if isinstance(verdict, DecodeFailure):
        return ("invalid_plaintext", f"Decrypted plaintext is not a valid event: {verdict.message}")
    if isinstance(verdict, EncryptedEnvelope):
        return (
            "invalid_plaintext",
            "Decrypted plaintext is an enc envelope: nested envelopes are refused",
        )
    return verdict


def _read(plaintext: bytes) -> object:
    try:
        return read_event(plaintext)
    except EnvelopeError as exc:
        return (exc.reason.value, str(exc))


def _same(got: object, wanted: object) -> bool:
    # Struct == recurses into the payload: for JSON nested past the recursion
    # limit, compare the lines instead (equal events have equal lines).
    try:
        return type(got) is type(wanted) and bool(got == wanted)
    except RecursionError:
        return encode_event(got) == encode_event(wanted)  # type: ignore[arg-type]


@st.composite
def _plaintexts(draw: st.DrawFn) -> bytes:
    """An event's line (an enc envelope among them), then maybe bent where the
    fast path looks: protocolVersion dropped, the session id's prefix broken
    or repeated as a later key, a byte order mark, whitespace, a cut, a byte
    that is not UTF-8."""
    line = encode_event(draw(any_event))
    bend = draw(
        st.sampled_from(["none", "version", "prefix", "duplicate", "bom", "space", "cut", "byte"])
    )
    if bend == "version":
        line = line.replace(b'"protocolVersion":', b'"protocolVersionX":', 1)
    elif bend == "prefix":
        bad = draw(st.sampled_from([b'"x_', b'"S_', b'" s_', b'"s-']))
        line = line.replace(b'"sessionId":"s_', b'"sessionId":' + bad, 1)
    elif bend == "duplicate":  # the last of two keys wins, in msgspec and in JavaScript
        bad = draw(st.sampled_from([b'"x_1"', b'"s_"', b'"s_1"', b"1"]))
        line = line[:-1] + b',"sessionId":' + bad + b"}"
    elif bend == "bom":
        line = b"\xef\xbb\xbf" + line
    elif bend == "space":
        line = draw(st.sampled_from([b" ", b"\n", b"\t", b"\xc2\xa0"])) + line + b" "
    elif bend == "cut":
        line = line[: draw(st.integers(0, len(line) - 1))]
    elif bend == "byte":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"{"])) + line[at:]
    return line


_BIG_CHUNK = "a" * GC_PAUSE_BYTES
_NESTED_ARGS = (
    b'{"protocolVersion":2,"sessionId":"s_0","seq":0,"type":"tool_call",'
    b'"payload":{"callId":"c_0","toolName":"0","args":'
)


@settings(max_examples=500, deadline=None)
@given(_plaintexts())
@example(encode_event(EVENT))
@example(encode_event(StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(_BIG_CHUNK))))
@example(encode_event(StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(_BIG_CHUNK)))[:-1])
@example(b'{"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hello"}}')
@example(b'{"protocolVersion":2,"sessionId":"x_1","seq":1,"type":"stdout","payload":{"chunk":"a"}}')
@example(_NESTED_ARGS + b"[" * 3000 + b"]" * 3000 + b"}}")  # deeper than msgspec goes
@example(_NESTED_ARGS + b"0.0}}")  # msgspec keeps a float, JavaScript reads 0
@example(_NESTED_ARGS + b"[" + b",".join([b"[]"] * 25_000) + b"]}}")  # big: too many arrays
@example(b"")
@rotating_seed
def test_read_event_gives_the_plain_verdict(plaintext: bytes) -> None:
    assert _same(_read(plaintext), _read_plainly(plaintext))
