"""Attacks on an encrypted session, each refused with the right code and reason.

An attacker here controls the wire: it can drop, reorder, replay, rewrite and
inject envelopes and hellos, but holds no session key and (when the client
pins it) not the server's signing key.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import msgspec
import pytest

from enclave_stream import EncryptedEnvelope, StdoutEvent
from enclave_stream.crypto import (
    ClientHandshake,
    EcdhKeyPair,
    EncryptedSession,
    ReceiveChecks,
    SessionRole,
    accept_client_hello,
    create_encrypted_envelope,
    create_server_hello,
    encrypt,
    generate_key_pair,
    generate_signing_key,
)
from enclave_stream.crypto.ecdh import export_public_key_bytes
from enclave_stream.crypto.signing import handshake_transcript, sign_transcript
from enclave_stream.errors import (
    EncryptionErrorCode,
    EnvelopeError,
    EnvelopeErrorReason,
    HandshakeError,
)
from enclave_stream.events import EncryptedEnvelopePayload, ServerHello, StdoutPayload

SESSION = "s_attack"
R = EnvelopeErrorReason
DECRYPTION_FAILED = EncryptionErrorCode.DECRYPTION_FAILED


def _pair(session_id: str = SESSION) -> tuple[EncryptedSession, EncryptedSession]:
    handshake = ClientHandshake()
    server_hello, server = accept_client_hello(handshake.client_hello, session_id)
    return handshake.complete(server_hello, session_id), server


def _event(seq: int, session_id: str = SESSION, chunk: str = "secret") -> StdoutEvent:
    return StdoutEvent(session_id=session_id, seq=seq, payload=StdoutPayload(chunk=chunk))


def _with_payload(envelope: EncryptedEnvelope, **changes: str) -> EncryptedEnvelope:
    payload = msgspec.structs.replace(envelope.payload, **changes)
    return msgspec.structs.replace(envelope, payload=payload)


def _edit_bytes(text: str, edit: Callable[[bytearray], None]) -> str:
    raw = bytearray(base64.b64decode(text))
    edit(raw)
    return base64.b64encode(bytes(raw)).decode("ascii")


def _refused(session: EncryptedSession, envelope: EncryptedEnvelope) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        session.open(envelope)
    return info.value


def _assert_failed_closed(server: EncryptedSession, client: EncryptedSession) -> None:
    """After an authentication failure even a genuine envelope is refused."""
    assert server.failed
    genuine = client.seal(_event(99))
    error = _refused(server, genuine)
    assert error.reason is R.SESSION_FAILED
    assert error.code is DECRYPTION_FAILED


# --- tampering ----------------------------------------------------------------------


def _flip_first(raw: bytearray) -> None:
    raw[0] ^= 0x01


def _flip_last(raw: bytearray) -> None:
    raw[-1] ^= 0x80


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        pytest.param("ciphertext_b64", _flip_first, id="ciphertext"),
        pytest.param("ciphertext_b64", _flip_last, id="tag"),
        pytest.param("nonce_b64", _flip_last, id="nonce-counter"),
        pytest.param("nonce_b64", _flip_first, id="nonce-prefix"),
    ],
)
def test_tampered_bytes_fail_authentication(field: str, edit: Callable[[bytearray], None]) -> None:
    client, server = _pair()
    envelope = client.seal(_event(1))
    tampered = _with_payload(
        envelope, **{field: _edit_bytes(getattr(envelope.payload, field), edit)}
    )
    error = _refused(server, tampered)
    assert error.reason is R.AUTHENTICATION_FAILED
    assert error.code is DECRYPTION_FAILED
    _assert_failed_closed(server, client)


def test_tag_moved_to_tag_b64_fails_authentication() -> None:
    """The tag belongs at the end of ciphertextB64; tagB64 is never consulted."""
    client, server = _pair()
    envelope = client.seal(_event(1))
    raw = base64.b64decode(envelope.payload.ciphertext_b64)
    split = _with_payload(
        envelope,
        ciphertext_b64=base64.b64encode(raw[:-16]).decode(),
        tag_b64=base64.b64encode(raw[-16:]).decode(),
    )
    assert _refused(server, split).reason is R.AUTHENTICATION_FAILED


def test_truncated_ciphertext_base64() -> None:
    client, server = _pair()
    text = client.seal(_event(1)).payload.ciphertext_b64
    envelope = client.seal(_event(2))
    # Not base64 any more (length 1 mod 4): refused before decryption, not fatal.
    cut_one = _with_payload(envelope, ciphertext_b64=text[:-3])
    error = _refused(server, cut_one)
    assert error.reason is R.INVALID_ENCODING
    assert error.code is DECRYPTION_FAILED
    assert not server.failed
    # Still base64, but bytes are missing: the tag does not verify.
    cut_four = _with_payload(envelope, ciphertext_b64=envelope.payload.ciphertext_b64[:-4])
    assert _refused(server, cut_four).reason is R.AUTHENTICATION_FAILED


def test_truncated_nonce_base64() -> None:
    client, server = _pair()
    envelope = client.seal(_event(1))
    error = _refused(server, _with_payload(envelope, nonce_b64=envelope.payload.nonce_b64[:8]))
    assert error.reason is R.INVALID_ENCODING
    assert "nonce length" in error.message
    error = _refused(server, _with_payload(envelope, nonce_b64=envelope.payload.nonce_b64[:-1]))
    assert error.reason is R.INVALID_ENCODING
    assert server.open(envelope) == _event(1)  # neither refusal poisoned the session


def test_ciphertext_shorter_than_the_tag() -> None:
    client, server = _pair()
    envelope = client.seal(_event(1))
    short = _with_payload(envelope, ciphertext_b64=base64.b64encode(b"x" * 15).decode())
    assert _refused(server, short).reason is R.AUTHENTICATION_FAILED


def test_forgiving_base64_spellings_still_open() -> None:
    """atob's leniency (no padding, whitespace) is kept: a respelled envelope opens."""
    client, server = _pair()
    envelope = client.seal(_event(1))
    text = envelope.payload.ciphertext_b64.rstrip("=")
    respelled = _with_payload(envelope, ciphertext_b64=f"{text[:10]} \n{text[10:]}")
    assert server.open(respelled) == _event(1)


def test_base64_compared_as_bytes_not_text() -> None:
    """Another spelling of the same nonce (whitespace, no padding) is the same nonce."""
    client, server = _pair()
    envelope = client.seal(_event(1))
    assert server.open(envelope) == _event(1)
    nonce = envelope.payload.nonce_b64
    respelled = _with_payload(envelope, nonce_b64=f" {nonce[:4]}\n{nonce[4:]} ")
    error = _refused(server, respelled)
    assert error.reason is R.REPLAY
    assert error.code is EncryptionErrorCode.NONCE_REUSE


# --- replay, reordering, splicing ---------------------------------------------------


def test_replayed_envelope() -> None:
    client, server = _pair()
    envelope = client.seal(_event(1))
    assert server.open(envelope) == _event(1)
    error = _refused(server, envelope)
    assert error.reason is R.REPLAY
    assert error.code is EncryptionErrorCode.NONCE_REUSE
    assert not server.failed
    assert server.open(client.seal(_event(2))) == _event(2)


def test_replay_after_later_envelopes() -> None:
    client, server = _pair()
    envelopes = [client.seal(_event(seq)) for seq in range(1, 6)]
    for envelope in envelopes:
        server.open(envelope)
    for envelope in envelopes:
        assert _refused(server, envelope).reason is R.REPLAY


def test_swapped_seq_between_two_envelopes() -> None:
    client, server = _pair()
    first, second = client.seal(_event(1)), client.seal(_event(2))
    swapped_first = msgspec.structs.replace(first, seq=2)
    swapped_second = msgspec.structs.replace(second, seq=1)
    error = _refused(server, swapped_second)
    assert error.reason is R.SEQ_MISMATCH
    assert error.code is DECRYPTION_FAILED
    assert _refused(server, swapped_first).reason is R.SEQ_MISMATCH
    assert not server.failed


def test_seq_regression() -> None:
    client, server = _pair()
    early, late = client.seal(_event(3)), client.seal(_event(7))
    assert server.open(late) == _event(7)
    error = _refused(server, early)  # authentic, fresh nonce, but seq goes back
    assert error.reason is R.SEQ_REGRESSION
    assert error.code is DECRYPTION_FAILED
    assert server.last_seq == 7


def test_repeated_seq_is_refused() -> None:
    """The sender re-encrypting one seq (new nonce) is refused: each seq is opened once."""
    client, server = _pair()
    server.open(client.seal(_event(4)))
    assert _refused(server, client.seal(_event(4))).reason is R.SEQ_REGRESSION


def test_envelope_from_another_session() -> None:
    client_a, _ = _pair("s_a")
    _, server_b = _pair("s_b")
    moved = client_a.seal(_event(1, "s_a"))
    error = _refused(server_b, moved)  # as captured: the outer id gives it away
    assert error.reason is R.SESSION_MISMATCH
    relabelled = msgspec.structs.replace(moved, session_id="s_b")
    error = _refused(server_b, relabelled)  # the key id gives it away next
    assert error.reason is R.UNKNOWN_KEY_ID
    relabelled = _with_payload(relabelled, kid=server_b.key_id)
    error = _refused(server_b, relabelled)  # other session, other keys
    assert error.reason is R.AUTHENTICATION_FAILED


def test_spliced_session_id_with_a_reused_key() -> None:
    """Even if two sessions shared keys, the inner event's session id betrays a moved envelope."""
    c2s, s2c = bytes(range(32)), bytes(range(1, 33))
    client_a = EncryptedSession("s_a", "k_1", SessionRole.CLIENT, send_key=c2s, receive_key=s2c)
    server_b = EncryptedSession("s_b", "k_1", SessionRole.SERVER, send_key=s2c, receive_key=c2s)
    moved = msgspec.structs.replace(client_a.seal(_event(1, "s_a")), session_id="s_b")
    error = _refused(server_b, moved)
    assert error.reason is R.SESSION_MISMATCH
    assert "inner event" in error.message


C2S, S2C = bytes(range(32)), bytes(range(1, 33))


def _fixed_server(checks: ReceiveChecks | None = None) -> EncryptedSession:
    return EncryptedSession(
        SESSION, "k_1", SessionRole.SERVER, send_key=S2C, receive_key=C2S, checks=checks
    )


def _genuine() -> EncryptedEnvelope:
    """The envelope the attacker splices: the client's seq 1."""
    return create_encrypted_envelope(C2S, "k_1", SESSION, 1, _event(1), bytes(12))


def _authentic_splice(session_id: str, seq: int, inner: StdoutEvent) -> EncryptedEnvelope:
    """An authentic envelope whose header and inner event disagree: what an
    attacker gets by splicing when two sessions share a key, or by moving an
    inner event's ciphertext under another header. It has the genuine
    envelope's nonce, so once it authenticates the genuine one is a replay."""
    return create_encrypted_envelope(C2S, "k_1", session_id, seq, inner, bytes(12))


# field and position -> (the spliced envelope, the reason it is refused, whether
# it is refused before decryption, what splicing=False makes of it)
SPLICES: dict[str, tuple[Callable[[], EncryptedEnvelope], R, bool, StdoutEvent | R]] = {
    "session id in the header": (
        lambda: msgspec.structs.replace(_genuine(), session_id="s_other"),
        R.SESSION_MISMATCH,
        True,
        _event(1),
    ),
    "session id in the inner event": (
        lambda: _authentic_splice(SESSION, 1, _event(1, "s_other")),
        R.SESSION_MISMATCH,
        False,
        _event(1, "s_other"),
    ),
    "seq in the header": (
        lambda: msgspec.structs.replace(_genuine(), seq=2),
        R.SEQ_MISMATCH,
        False,
        _event(1),
    ),
    "seq in the inner event": (
        lambda: _authentic_splice(SESSION, 1, _event(2)),
        R.SEQ_MISMATCH,
        False,
        _event(2),
    ),
    "seq lowered in the header": (
        lambda: msgspec.structs.replace(_genuine(), seq=0),
        R.SEQ_MISMATCH,
        False,
        _event(1),
    ),
    "kid in the payload": (
        lambda: _with_payload(_genuine(), kid="k_2"),
        R.UNKNOWN_KEY_ID,
        True,
        R.UNKNOWN_KEY_ID,  # a security check: never switched off
    ),
    "kid emptied in the payload": (
        lambda: _with_payload(_genuine(), kid=""),
        R.UNKNOWN_KEY_ID,
        True,
        R.UNKNOWN_KEY_ID,
    ),
}


@pytest.mark.parametrize(("splice", "reason", "early", "lenient"), SPLICES.values(), ids=SPLICES)
def test_splices_are_refused_and_change_nothing(
    splice: Callable[[], EncryptedEnvelope], reason: R, early: bool, lenient: StdoutEvent | R
) -> None:
    """Each field of each position spliced: refused, and seq 1 then arrives once.

    A splice refused before decryption (the header's session id, the key id)
    leaves no trace; one that authenticated has its nonce remembered, so the
    envelope it was cut from is then a replay, and the sender's resend arrives.
    """
    server = _fixed_server()
    error = _refused(server, splice())
    assert error.reason is reason
    assert error.code is DECRYPTION_FAILED
    assert not server.failed
    assert server.last_seq is None
    if early:
        assert server.open(_genuine()) == _event(1)
    else:
        assert _refused(server, _genuine()).reason is R.REPLAY
        resent = create_encrypted_envelope(C2S, "k_1", SESSION, 1, _event(1), bytes(11) + b"\x02")
        assert server.open(resent) == _event(1)
    assert server.last_seq == 1
    assert _refused(server, _genuine()).reason is R.REPLAY


@pytest.mark.parametrize(("splice", "reason", "early", "lenient"), SPLICES.values(), ids=SPLICES)
def test_splices_with_the_splicing_check_off(
    splice: Callable[[], EncryptedEnvelope], reason: R, early: bool, lenient: StdoutEvent | R
) -> None:
    """ReceiveChecks(splicing=False) lets the numbering differ, never the key id."""
    server = _fixed_server(ReceiveChecks(splicing=False))
    if isinstance(lenient, R):
        assert _refused(server, splice()).reason is lenient
        assert server.open(_genuine()) == _event(1)
    else:
        assert server.open(splice()) == lenient


def test_wrong_direction_key() -> None:
    """An envelope reflected back to its sender does not authenticate."""
    client, server = _pair()
    reflected = client.seal(_event(1))
    assert _refused(client, reflected).reason is R.AUTHENTICATION_FAILED
    reflected = server.seal(_event(1))
    assert _refused(server, reflected).reason is R.AUTHENTICATION_FAILED


def test_unknown_key_id() -> None:
    client, server = _pair()
    envelope = client.seal(_event(1))
    error = _refused(server, _with_payload(envelope, kid="k_other"))
    assert error.reason is R.UNKNOWN_KEY_ID
    assert error.code is DECRYPTION_FAILED
    assert server.open(envelope) == _event(1)


def test_sender_nonce_reuse_is_detected() -> None:
    """Two different envelopes under one nonce (a broken sender) are refused as a replay."""
    c2s, s2c = bytes(range(32)), bytes(range(1, 33))
    prefix = bytes(8)

    def sender() -> EncryptedSession:
        return EncryptedSession(
            SESSION, "k_1", SessionRole.CLIENT, send_key=c2s, receive_key=s2c, nonce_prefix=prefix
        )

    server = EncryptedSession(SESSION, "k_1", SessionRole.SERVER, send_key=s2c, receive_key=c2s)
    server.open(sender().seal(_event(1)))
    error = _refused(server, sender().seal(_event(2)))  # same counter 0, other message
    assert error.reason is R.REPLAY
    assert error.code is EncryptionErrorCode.NONCE_REUSE


# --- authentic but malformed plaintext (a misbehaving peer) ------------------------


def _authentic(plaintext: bytes, nonce: bytes) -> tuple[EncryptedSession, EncryptedEnvelope]:
    c2s, s2c = bytes(range(32)), bytes(range(1, 33))
    server = EncryptedSession(SESSION, "k_1", SessionRole.SERVER, send_key=s2c, receive_key=c2s)
    payload = EncryptedEnvelopePayload(
        kid="k_1",
        nonce_b64=base64.b64encode(nonce).decode(),
        ciphertext_b64=base64.b64encode(encrypt(c2s, plaintext, nonce)).decode(),
    )
    return server, EncryptedEnvelope(session_id=SESSION, seq=1, payload=payload)


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(b"not json {", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b'{"protocolVersion":2,"sessionId":"s_attack","seq":1}', id="no-type"),
        pytest.param(
            b'{"protocolVersion":2,"sessionId":"s_attack","seq":1,"type":"enc","payload":'
            b'{"kid":"k_1","nonceB64":"AAAAAAAAAAAAAAAA","ciphertextB64":"AAAA"}}',
            id="nested-envelope",
        ),
    ],
)
def test_authentic_invalid_plaintext(plaintext: bytes) -> None:
    server, envelope = _authentic(plaintext, bytes(12))
    error = _refused(server, envelope)
    assert error.reason is R.INVALID_PLAINTEXT
    assert error.code is DECRYPTION_FAILED
    assert not server.failed  # it authenticated: a broken peer, not a forgery


# --- forged hellos ------------------------------------------------------------------


def _mitm_pair() -> EcdhKeyPair:
    """A fresh ephemeral key pair of a machine in the middle."""
    return generate_key_pair()


def _mitm_point() -> bytes:
    return export_public_key_bytes(_mitm_pair().public_key)


def _mitm_hello() -> ServerHello:
    """The unsigned hello a machine in the middle answers with: its own key."""
    return create_server_hello(_mitm_pair(), "k_mitm")


def test_forged_server_hello_without_signature() -> None:
    signing_key = generate_signing_key()
    handshake = ClientHandshake(server_public_key=signing_key.public_key())
    forged = _mitm_hello()
    with pytest.raises(HandshakeError) as info:
        handshake.complete(forged, SESSION)
    assert info.value.code is EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED
    assert not handshake.completed


def test_forged_server_hello_signed_by_another_key() -> None:
    pinned, attacker = generate_signing_key(), generate_signing_key()
    handshake = ClientHandshake(server_public_key=pinned.public_key())
    pair = _mitm_pair()
    transcript = handshake_transcript(
        protocol_version=2,
        session_id=SESSION,
        client_public_key=base64.b64decode(handshake.client_hello.client_ephemeral_pub_key_b64),
        server_public_key=export_public_key_bytes(pair.public_key),
        key_id="k_mitm",
    )
    signature = sign_transcript(attacker, transcript)
    forged = create_server_hello(pair, "k_mitm", signature_b64=signature)
    with pytest.raises(HandshakeError) as info:
        handshake.complete(forged, SESSION)
    assert info.value.code is EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED


def test_genuine_signature_on_a_swapped_ephemeral_key() -> None:
    """Keeping the real server's signature but swapping in the attacker's key fails."""
    signing_key = generate_signing_key()
    handshake = ClientHandshake(server_public_key=signing_key.public_key())
    genuine, _ = accept_client_hello(handshake.client_hello, SESSION, signing_key=signing_key)
    forged = msgspec.structs.replace(
        genuine,
        server_ephemeral_pub_key_b64=base64.b64encode(_mitm_point()).decode(),
    )
    with pytest.raises(HandshakeError) as info:
        handshake.complete(forged, SESSION)
    assert info.value.code is EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED
    assert handshake.complete(genuine, SESSION).role is SessionRole.CLIENT


@pytest.mark.parametrize(
    "field_change",
    [
        pytest.param({"key_id": "k_other"}, id="key-id"),
        pytest.param({"protocol_version": 1}, id="protocol-version"),
    ],
)
def test_genuine_signature_on_altered_fields(field_change: dict[str, object]) -> None:
    signing_key = generate_signing_key()
    handshake = ClientHandshake(server_public_key=signing_key.public_key())
    genuine, _ = accept_client_hello(handshake.client_hello, SESSION, signing_key=signing_key)
    with pytest.raises(HandshakeError) as info:
        handshake.complete(msgspec.structs.replace(genuine, **field_change), SESSION)
    assert info.value.code is EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED


def test_signature_replayed_into_another_session() -> None:
    """A signature binds the session id: it cannot vouch for the same keys in another session."""
    signing_key = generate_signing_key()
    handshake = ClientHandshake(server_public_key=signing_key.public_key())
    genuine, _ = accept_client_hello(handshake.client_hello, "s_other", signing_key=signing_key)
    with pytest.raises(HandshakeError) as info:
        handshake.complete(genuine, SESSION)
    assert info.value.code is EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("", id="empty"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param(base64.b64encode(bytes(64)).decode(), id="zeros"),
        pytest.param(base64.b64encode(bytes(70)).decode(), id="wrong-length"),
    ],
)
def test_malformed_signatures(signature: str) -> None:
    signing_key = generate_signing_key()
    handshake = ClientHandshake(server_public_key=signing_key.public_key())
    genuine, _ = accept_client_hello(handshake.client_hello, SESSION, signing_key=signing_key)
    with pytest.raises(HandshakeError) as info:
        handshake.complete(msgspec.structs.replace(genuine, signature_b64=signature), SESSION)
    assert info.value.code is EncryptionErrorCode.SIGNATURE_VERIFICATION_FAILED


def test_unpinned_client_cannot_tell_a_forgery() -> None:
    """The documented limit: without a pinned key, a machine in the middle goes unnoticed."""
    handshake = ClientHandshake()
    forged = _mitm_hello()
    session = handshake.complete(forged, SESSION)
    assert session.key_id == "k_mitm"
