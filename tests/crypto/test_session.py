"""EncryptedSession: sealing, opening, the receiver checks and their switches; the replay window."""

from __future__ import annotations

import base64
import copy
import gc
import json
import os
import pickle
import threading
import tracemalloc
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enclave_stream import (
    EncryptedEnvelope,
    EventValidationError,
    FinalEvent,
    StdoutEvent,
    StreamEvent,
)
from enclave_stream.codec import decode_event, encode_event
from enclave_stream.crypto import (
    AesGcmError,
    AesGcmKey,
    EncryptedSession,
    HkdfError,
    ReceiveChecks,
    SessionEncryptionContext,
    SessionKeyInfo,
    SessionRole,
    decrypt_json,
    derive_session_keys,
)
from enclave_stream.crypto.session import ReplayWindow
from enclave_stream.errors import (
    EncryptionErrorCode,
    EnvelopeError,
    EnvelopeErrorReason,
    HandshakeError,
)
from enclave_stream.events import EncryptedEnvelopePayload, FinalPayload, StdoutPayload
from tests.rotating_seed import rotating_seed

SESSION = "s_session"
C2S = bytes(range(32))
S2C = bytes(range(100, 132))
R = EnvelopeErrorReason


def _client(
    checks: ReceiveChecks | None = None,
    *,
    session_id: str = SESSION,
    key_id: str = "k_1",
    **kw: Any,
) -> EncryptedSession:
    return EncryptedSession(
        session_id, key_id, SessionRole.CLIENT, send_key=C2S, receive_key=S2C, checks=checks, **kw
    )


def _server(
    checks: ReceiveChecks | None = None,
    *,
    session_id: str = SESSION,
    key_id: str = "k_1",
    **kw: Any,
) -> EncryptedSession:
    return EncryptedSession(
        session_id, key_id, SessionRole.SERVER, send_key=S2C, receive_key=C2S, checks=checks, **kw
    )


def _event(seq: int, chunk: str = "hi", session_id: str = SESSION) -> StdoutEvent:
    return StdoutEvent(session_id=session_id, seq=seq, payload=StdoutPayload(chunk=chunk))


def _refused(session: EncryptedSession, envelope: Any) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        session.open(envelope)
    return info.value


# --- sealing and opening --------------------------------------------------------------


def test_both_directions_round_trip() -> None:
    client, server = _client(), _server()
    for seq in range(3):
        envelope = client.seal(_event(seq, f"up {seq}"))
        assert envelope.session_id == SESSION
        assert envelope.seq == seq
        assert envelope.payload.kid == "k_1"
        assert server.open(envelope) == _event(seq, f"up {seq}")
        assert client.open(server.seal(_event(seq, f"down {seq}"))) == _event(seq, f"down {seq}")
    assert client.sealed_count == server.sealed_count == 3
    assert client.last_seq == server.last_seq == 2


def test_fresh_session_state() -> None:
    session = _client()
    assert session.session_id == SESSION
    assert session.key_id == "k_1"
    assert session.role is SessionRole.CLIENT
    assert session.last_seq is None
    assert session.sealed_count == 0
    assert not session.failed
    assert not session.needs_rotation()


def test_nonces_are_counters_under_one_prefix() -> None:
    client = _client()
    nonces = [base64.b64decode(client.seal(_event(i)).payload.nonce_b64) for i in range(3)]
    assert [n[8:] for n in nonces] == [i.to_bytes(4, "big") for i in range(3)]
    assert len({n[:8] for n in nonces}) == 1
    assert _client().seal(_event(0)).payload.nonce_b64 != client.seal(_event(0)).payload.nonce_b64


def test_seal_accepts_a_wire_mapping() -> None:
    client, server = _client(), _server()
    mapping = {
        "protocolVersion": 2,
        "sessionId": SESSION,
        "seq": 4,
        "type": "stdout",
        "payload": {"chunk": "from a dict"},
    }
    assert server.open(client.seal(mapping)) == _event(4, "from a dict")


def test_seal_refuses_an_event_of_another_session() -> None:
    client = _client()
    with pytest.raises(EnvelopeError) as info:
        client.seal(_event(1, session_id="s_other"))
    assert info.value.reason is R.SESSION_MISMATCH
    assert client.sealed_count == 0


@pytest.mark.parametrize(
    "thing",
    [
        pytest.param(
            EncryptedEnvelope(
                session_id=SESSION,
                seq=1,
                payload=EncryptedEnvelopePayload(kid="k", nonce_b64="AA==", ciphertext_b64="AA=="),
            ),
            id="envelope",
        ),
        pytest.param("text", id="str"),
        pytest.param(42, id="int"),
    ],
)
def test_seal_refuses_what_is_not_a_plaintext_event(thing: Any) -> None:
    client = _client()
    with pytest.raises(EnvelopeError) as info:
        client.seal(thing)
    assert info.value.reason is R.INVALID_EVENT
    assert client.sealed_count == 0


def test_seal_validates_before_using_a_nonce() -> None:
    client = _client()
    bad = StdoutEvent(session_id=SESSION, seq=-1, payload=StdoutPayload(chunk="x"))
    for seal in (client.seal, client.seal_line):
        with pytest.raises(EventValidationError) as info:
            seal(bad)
        assert info.value.path == "$.seq"
    not_text = StdoutEvent(session_id=SESSION, seq=1, payload=StdoutPayload(chunk=3))  # type: ignore[arg-type]
    with pytest.raises(EventValidationError):
        client.seal_line(not_text)
    assert client.sealed_count == 0


@pytest.mark.parametrize(
    ("session_id", "key_id"),
    [
        pytest.param(SESSION, "k_1", id="plain"),
        pytest.param('s_"quoted"\\%d%s%%', 'k_"%s"', id="json-and-percent"),
        pytest.param("s_\u00e9\u4e16\U0001f600\u2028", "k_\n\t\x00", id="non-ascii-and-controls"),
        pytest.param("s_\ud800lone", "k_\udfff", id="lone-surrogates"),
    ],
)
def test_seal_line_equals_the_encoded_envelope(session_id: str, key_id: str) -> None:
    """seal_line writes exactly EventEncoder's bytes for seal's envelope."""
    prefix = bytes(range(8))
    one = _client(session_id=session_id, key_id=key_id, nonce_prefix=prefix)
    two = _client(session_id=session_id, key_id=key_id, nonce_prefix=prefix)
    for seq, chunk in enumerate(["a", "\u00e9\ud800", "x" * 1000]):
        event = _event(seq, chunk, session_id=session_id)
        assert one.seal_line(event) == encode_event(two.seal(event))
    server = _server(session_id=session_id, key_id=key_id)
    sender = _client(session_id=session_id, key_id=key_id)
    line = sender.seal_line(_event(9, session_id=session_id))
    envelope = decode_event(line)
    assert type(envelope) is EncryptedEnvelope
    assert server.open(envelope) == _event(9, session_id=session_id)


def test_open_refuses_what_is_not_an_envelope() -> None:
    assert _refused(_server(), _event(1)).reason is R.INVALID_EVENT
    assert _refused(_server(), b"{}").reason is R.INVALID_EVENT


def test_invalid_envelope_seq_type_is_refused() -> None:
    envelope = _client().seal(_event(1))
    broken = msgspec.structs.replace(envelope, seq="1")
    server = _server(ReceiveChecks(splicing=False))
    assert _refused(server, broken).reason is R.INVALID_ENCODING


def test_a_negative_envelope_seq_never_opens() -> None:
    """No seq is below the first: -1 (only a hand-built envelope has one) is refused."""
    envelope = msgspec.structs.replace(_client().seal(_event(1)), seq=-1)
    server = _server(ReceiveChecks(splicing=False))
    assert _refused(server, envelope).reason is R.SEQ_REGRESSION
    assert server.last_seq is None


def test_non_string_payload_fields_are_refused() -> None:
    envelope = _client().seal(_event(1))
    payload = msgspec.structs.replace(envelope.payload, nonce_b64=123)
    error = _refused(_server(), msgspec.structs.replace(envelope, payload=payload))
    assert error.reason is R.INVALID_ENCODING


def _failed_server() -> EncryptedSession:
    server = _server()
    forged = _client().seal(_event(1))
    forged = msgspec.structs.replace(
        forged, payload=msgspec.structs.replace(forged.payload, nonce_b64="A" * 16)
    )
    _refused(server, forged)
    return server


def _after(*opened: int) -> EncryptedSession:
    """A server that has opened the client's envelopes of these seqs (nonces 0, 1, ...)."""
    server, client = _server(), _client(nonce_prefix=bytes(8))
    for seq in opened:
        server.open(client.seal(_event(seq)))
    return server


def _sealed_by_client(inner_seq: int, nonce_counter: int = 0, **changes: Any) -> EncryptedEnvelope:
    """The client's envelope of ``inner_seq`` under nonce counter ``nonce_counter``, edited."""
    client = _client(nonce_prefix=bytes(8))
    for _ in range(nonce_counter):
        client.seal(_event(0))
    return msgspec.structs.replace(client.seal(_event(inner_seq)), **changes)


# The message of each refusal of open (the reason is checked beside it).
OPEN_REFUSALS: dict[str, tuple[Callable[[], EncryptedSession], Callable[[], Any], R, str]] = {
    "after a forgery": (
        _failed_server,
        lambda: _sealed_by_client(1),
        R.SESSION_FAILED,
        "The session refuses further input: an earlier envelope failed authentication",
    ),
    "not an envelope": (
        _server,
        lambda: _event(1),
        R.INVALID_EVENT,
        "Expected an enc envelope, got StdoutEvent",
    ),
    "another session": (
        _server,
        lambda: _sealed_by_client(1, session_id="s_other"),
        R.SESSION_MISMATCH,
        "The envelope belongs to session 's_other', not 's_session'",
    ),
    "another key id": (
        _server,
        lambda: _sealed_by_client(
            1, payload=msgspec.structs.replace(_sealed_by_client(1).payload, kid="k_2")
        ),
        R.UNKNOWN_KEY_ID,
        "Unknown key id 'k_2': this session's key is 'k_1'",
    ),
    "replay": (
        lambda: _after(1),
        lambda: _sealed_by_client(1),
        R.REPLAY,
        "Replayed envelope: nonce 000000000000000000000000 was already accepted under this key",
    ),
    "seq spliced": (
        _server,
        lambda: _sealed_by_client(1, seq=2),
        R.SEQ_MISMATCH,
        "The inner event has seq 1, but the envelope says 2",
    ),
    "seq not a number": (
        lambda: _server(ReceiveChecks(splicing=False)),
        lambda: _sealed_by_client(1, seq="1"),
        R.INVALID_ENCODING,
        "Invalid envelope seq '1'",
    ),
    "seq regression": (
        lambda: _after(5),
        lambda: _sealed_by_client(3, nonce_counter=1),
        R.SEQ_REGRESSION,
        "Envelope seq 3 does not advance past 5",
    ),
}


@pytest.mark.parametrize(
    ("server", "envelope", "reason", "message"), OPEN_REFUSALS.values(), ids=OPEN_REFUSALS
)
def test_open_refusals_say_what_is_wrong(
    server: Callable[[], EncryptedSession], envelope: Callable[[], Any], reason: R, message: str
) -> None:
    error = _refused(server(), envelope())
    assert (error.reason, error.message) == (reason, message)


def test_seal_refusal_names_both_sessions() -> None:
    with pytest.raises(EnvelopeError) as info:
        _client().seal(_event(1, session_id="s_other"))
    assert info.value.message == "The event belongs to session 's_other', not 's_session'"


# --- switching checks off (interop with peers that number envelopes differently) ----


def test_splicing_check_off_accepts_a_different_envelope_seq() -> None:
    """The reference's own vectors wrap inner seq 1 in envelope seq 100."""
    envelope = msgspec.structs.replace(_client().seal(_event(1)), seq=100)
    assert _refused(_server(), envelope).reason is R.SEQ_MISMATCH
    lenient = _server(ReceiveChecks(splicing=False))
    assert lenient.open(envelope) == _event(1)
    assert lenient.last_seq == 100


def test_seq_order_off_accepts_regressions_but_not_replays() -> None:
    client, server = _client(), _server(ReceiveChecks(seq_order=False))
    late, early = client.seal(_event(5)), client.seal(_event(2))
    server.open(late)
    assert server.open(early) == _event(2)
    assert server.last_seq == 5
    assert _refused(server, early).reason is R.REPLAY


def test_fail_closed_refuses_everything_after_a_forgery() -> None:
    client, server = _client(), _server()
    envelope = client.seal(_event(1))
    forged = msgspec.structs.replace(
        envelope, payload=msgspec.structs.replace(envelope.payload, nonce_b64="A" * 16)
    )
    assert _refused(server, forged).reason is R.AUTHENTICATION_FAILED
    assert server.failed
    error = _refused(server, envelope)
    assert error.reason is R.SESSION_FAILED
    assert error.code is EncryptionErrorCode.DECRYPTION_FAILED
    # Sending still works: only input is refused.
    assert client.open(server.seal(_event(1))) == _event(1)


# --- construction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session_id", "key_id", "message"),
    [
        pytest.param(
            "x_1",
            "k_1",
            "Invalid session id 'x_1': expected 's_' and at least one more character",
            id="bad-session-id",
        ),
        pytest.param(
            "s_",
            "k_1",
            "Invalid session id 's_': expected 's_' and at least one more character",
            id="bare-prefix",
        ),
        pytest.param(
            SESSION, "", "The key id must be a non-empty string, got ''", id="empty-key-id"
        ),
        pytest.param(
            SESSION, 5, "The key id must be a non-empty string, got 5", id="key-id-not-text"
        ),
    ],
)
def test_bad_identifiers_are_refused(session_id: str, key_id: str, message: str) -> None:
    with pytest.raises(HandshakeError) as info:
        _client(session_id=session_id, key_id=key_id)
    assert info.value.code is EncryptionErrorCode.HANDSHAKE_FAILED
    assert info.value.message == message


ONE_KEY = AesGcmKey(C2S)


@pytest.mark.parametrize(
    ("send_key", "receive_key"),
    [
        pytest.param(C2S, bytes(C2S), id="equal-bytes"),
        pytest.param(ONE_KEY, ONE_KEY, id="one-key-object"),
        pytest.param(AesGcmKey(C2S), AesGcmKey(C2S), id="two-objects-of-one-key"),
        pytest.param(C2S, ONE_KEY, id="bytes-and-key-object"),
        pytest.param(ONE_KEY, C2S, id="key-object-and-bytes"),
    ],
)
def test_one_key_for_both_directions_is_refused(
    send_key: AesGcmKey | bytes, receive_key: AesGcmKey | bytes
) -> None:
    """With one key both ways, our own envelopes reflected back would authenticate."""
    with pytest.raises(HandshakeError) as info:
        EncryptedSession(
            SESSION, "k_1", SessionRole.CLIENT, send_key=send_key, receive_key=receive_key
        )
    assert info.value.code is EncryptionErrorCode.KEY_DERIVATION_FAILED
    assert info.value.message == "The send and receive keys must differ"


def test_key_objects_of_two_keys_make_a_session() -> None:
    client = EncryptedSession(
        SESSION, "k_1", SessionRole.CLIENT, send_key=AesGcmKey(C2S), receive_key=AesGcmKey(S2C)
    )
    assert _server().open(client.seal(_event(1))) == _event(1)


def test_bad_key_length() -> None:
    with pytest.raises(HkdfError):
        EncryptedSession(SESSION, "k_1", SessionRole.CLIENT, send_key=bytes(31), receive_key=S2C)


def test_from_shared_secret_pairs_up() -> None:
    secret = bytes(range(32))
    client = EncryptedSession.from_shared_secret(secret, SESSION, "k_1", SessionRole.CLIENT)
    server = EncryptedSession.from_shared_secret(secret, SESSION, "k_1", SessionRole.SERVER)
    assert server.open(client.seal(_event(1))) == _event(1)
    assert client.open(server.seal(_event(1))) == _event(1)
    # The client sends under the c2s key: the reference's decryptJson with it reads it.
    keys = derive_session_keys(secret, SESSION)
    envelope = EncryptedSession.from_shared_secret(secret, SESSION, "k_1", SessionRole.CLIENT).seal(
        _event(2)
    )
    assert decrypt_json(keys.client_to_server_key, envelope.payload, type=StreamEvent) == _event(2)
    with pytest.raises(EnvelopeError):
        decrypt_json(keys.server_to_client_key, envelope.payload)


def test_from_shared_secret_takes_the_receive_checks() -> None:
    """checks= reaches the session: with seq_order off a late envelope opens."""
    secret = bytes(range(32))
    client = EncryptedSession.from_shared_secret(secret, SESSION, "k_1", SessionRole.CLIENT)
    early, late = client.seal(_event(1)), client.seal(_event(2))
    strict = EncryptedSession.from_shared_secret(secret, SESSION, "k_1", SessionRole.SERVER)
    lenient = EncryptedSession.from_shared_secret(
        secret, SESSION, "k_1", SessionRole.SERVER, checks=ReceiveChecks(seq_order=False)
    )
    for server in (strict, lenient):
        assert server.open(late) == _event(2)
    assert _refused(strict, early).reason is R.SEQ_REGRESSION
    assert lenient.open(early) == _event(1)
    assert _refused(lenient, early).reason is R.REPLAY


@pytest.mark.parametrize("session_id", ["x_1", "s_", ""])
def test_from_shared_secret_refuses_a_bad_session_id(session_id: str) -> None:
    with pytest.raises(HandshakeError) as info:
        EncryptedSession.from_shared_secret(bytes(32), session_id, "k_1", SessionRole.CLIENT)
    assert info.value.code is EncryptionErrorCode.HANDSHAKE_FAILED


def _handshake_pair(secret: bytes = bytes(range(32))) -> tuple[EncryptedSession, EncryptedSession]:
    return (
        EncryptedSession.from_shared_secret(secret, SESSION, "k_1", SessionRole.CLIENT),
        EncryptedSession.from_shared_secret(secret, SESSION, "k_1", SessionRole.SERVER),
    )


def test_handshake_sessions_import_each_key_on_first_use() -> None:
    secret = bytes(range(32))
    client, server = _handshake_pair(secret)
    assert client.sealed_count == 0
    assert not client.needs_rotation()
    keys = derive_session_keys(secret, SESSION)
    for key in (keys.client_to_server_key, keys.server_to_client_key):
        assert key.hex() not in repr(client)
        assert repr(key) not in repr(client)
    # The server opens before it ever seals, and the other way round.
    assert server.open(client.seal(_event(1))) == _event(1)
    assert client.open(server.seal(_event(1))) == _event(1)
    assert client.sealed_count == server.sealed_count == 1
    assert server.seal_line(_event(2)).startswith(b'{"protocolVersion":2')


def _racing_seals(session: EncryptedSession, threads: int) -> list[bytes]:
    nonces: list[bytes] = []
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        nonces.append(base64.b64decode(session.seal(_event(1)).payload.nonce_b64))

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return nonces


def test_concurrent_first_seals_share_one_nonce_sequence() -> None:
    for _ in range(20):
        client, _ = _handshake_pair()
        nonces = _racing_seals(client, 4)
        assert len({nonce[:8] for nonce in nonces}) == 1
        assert sorted(nonce[8:] for nonce in nonces) == [i.to_bytes(4, "big") for i in range(4)]
        assert client.sealed_count == 4


def test_concurrent_first_opens_accept_an_envelope_once() -> None:
    client, server = _handshake_pair()
    envelope = client.seal(_event(1))
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(server.open(envelope))
        except EnvelopeError as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(_event(1)) == 1
    assert results.count(R.REPLAY) == 7


def test_reference_style_context_envelopes_open() -> None:
    """A peer using the reference's SessionEncryptionContext interoperates."""
    peer = SessionEncryptionContext(C2S, SessionKeyInfo("k_1"))
    server = _server()
    for seq in range(3):
        envelope = peer.create_envelope(SESSION, seq, _event(seq))
        assert server.open(envelope) == _event(seq)


def test_final_event_round_trip() -> None:
    event = FinalEvent(session_id=SESSION, seq=3, payload=FinalPayload(ok=True, result={"a": [1]}))
    assert _server().open(_client().seal(event)) == event


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_copy_of_a_fixed_prefix_session_needs_rotation() -> None:
    """A fork() child would reuse the parent's nonces: it must start a new session."""
    session = _client(nonce_prefix=bytes(8))
    assert session.needs_rotation() is False
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # the child
        report: dict[str, object] = {"needs_rotation": session.needs_rotation()}
        try:
            session.seal(_event(1))
        except AesGcmError as exc:
            report["error"] = str(exc.code)
        os.write(write_fd, json.dumps(report).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child == {"needs_rotation": True, "error": "ENCRYPTION_NONCE_REUSE"}
    assert session.needs_rotation() is False
    assert _server().open(session.seal(_event(1))) == _event(1)


# --- safety -----------------------------------------------------------------------------


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, pickle.dumps])
def test_sessions_cannot_be_copied_or_pickled(clone: Any) -> None:
    with pytest.raises(
        TypeError, match=r"^EncryptedSession cannot be copied or pickled: it holds session keys$"
    ):
        clone(_client())


def test_repr_shows_no_key_material() -> None:
    session = _client()
    text = repr(session)
    assert text == (
        "<EncryptedSession role=client session_id='s_session' key_id='k_1' sealed=0 "
        "last_seq=None failed=False>"
    )
    assert "s_session" in text
    assert "k_1" in text
    for key in (C2S, S2C):
        assert key.hex() not in text
        assert base64.b64encode(key).decode() not in text
        assert repr(key) not in text
    assert not hasattr(session, "__dict__")  # slots only: no stray attribute to dump


def test_concurrent_opens_of_one_envelope_accept_it_once() -> None:
    client, server = _client(), _server()
    envelope = client.seal(_event(1))
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(server.open(envelope))
        except EnvelopeError as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(_event(1)) == 1
    assert results.count(R.REPLAY) == 7


def test_concurrent_seals_never_share_a_nonce() -> None:
    client = _client()
    nonces: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for seq in range(200):
            nonce = client.seal(_event(seq)).payload.nonce_b64
            with lock:
                nonces.append(nonce)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(nonces)) == len(nonces) == 800
    assert client.sealed_count == 800


# --- the replay window, against a plain model ----------------------------------------


def _nonce(prefix: int, counter: int) -> bytes:
    return bytes([prefix]) * 8 + counter.to_bytes(4, "big")


class Model:
    """The window's specification, written the obvious way (unbounded sets)."""

    def __init__(self, width: int, max_prefixes: int) -> None:
        self.width = width
        self.max_prefixes = max_prefixes
        self.prefixes: OrderedDict[bytes, tuple[int, set[int]]] = OrderedDict()

    def accept(self, nonce: bytes) -> bool:
        prefix, counter = nonce[:8], int.from_bytes(nonce[8:], "big")
        if prefix not in self.prefixes:
            if len(self.prefixes) >= self.max_prefixes:
                self.prefixes.popitem(last=False)
            self.prefixes[prefix] = (counter, {counter})
            return True
        self.prefixes.move_to_end(prefix)
        high, seen = self.prefixes[prefix]
        if counter in seen or counter <= high - self.width:
            return False
        seen.add(counter)
        self.prefixes[prefix] = (max(high, counter), seen)
        return True

    def seen(self, nonce: bytes) -> bool:
        prefix, counter = nonce[:8], int.from_bytes(nonce[8:], "big")
        if prefix not in self.prefixes:
            return False
        high, seen = self.prefixes[prefix]
        return counter in seen or counter <= high - self.width


operations = st.lists(
    st.tuples(
        st.sampled_from(["accept", "seen"]),
        st.integers(0, 3),  # prefix
        st.one_of(st.integers(0, 40), st.integers(2**32 - 6, 2**32 - 1)),  # counter
    ),
    max_size=120,
)


def _accepts(*counters: int, prefix: int = 0) -> list[tuple[str, int, int]]:
    return [("accept", prefix, counter) for counter in counters]


@settings(max_examples=2000)
@given(operations, st.integers(1, 20), st.integers(1, 4))
# The attacks a broken bitmap lets through, pinned so that every run tries them.
@example(_accepts(1, 3, 1), 20, 1)  # accept n, accept n+2, replay n
@example(_accepts(1, 2, 4, 4), 20, 1)  # 1, 2, 4, replay 4
@example(_accepts(0, 3, 0, 1, 2, 1), 4, 1)  # a jump of width - 1 keeps the old bit
@example(_accepts(0, 4, 0, 3, 3), 4, 1)  # a jump of exactly width forgets all
@example(_accepts(0, 1, 2, 3, 5, 4, 4), 4, 1)  # bits shifted past the width
@example(_accepts(10, 6, 7, 7), 4, 1)  # the window's last counter and one past it
@example([("accept", 0, 5), ("seen", 0, 5), ("seen", 0, 1), ("seen", 0, 2)], 4, 1)
@rotating_seed
def test_window_matches_the_model(
    ops: list[tuple[str, int, int]], width: int, max_prefixes: int
) -> None:
    window, model = ReplayWindow(width, max_prefixes), Model(width, max_prefixes)
    for op, prefix, counter in ops:
        nonce = _nonce(prefix, counter)
        if op == "accept":
            assert window.accept(nonce) == model.accept(nonce), (op, prefix, counter)
        else:
            assert window.seen(nonce) == model.seen(nonce), (op, prefix, counter)
    assert len(window) == len(model.prefixes)


T, F = True, False

# (width, max_prefixes, [(prefix, counter, accepted?)]): the attacks and edges
# of the window, each verdict written out. Before each nonce, seen() must say
# the opposite of the verdict; after it, seen() must say True.
WINDOW_TABLE = {
    "accept n, n+2, replay n": (
        256,
        1,
        [(0, 0, T), (0, 2, T), (0, 0, F), (0, 1, T), (0, 1, F), (0, 2, F)],
    ),
    "accept n, n+2, replay n (n=5)": (
        256,
        1,
        [(0, 5, T), (0, 7, T), (0, 5, F), (0, 6, T), (0, 6, F), (0, 7, F)],
    ),
    "accept n, n+2, replay n (top counters)": (
        256,
        1,
        [
            (0, 2**32 - 3, T),
            (0, 2**32 - 1, T),
            (0, 2**32 - 3, F),
            (0, 2**32 - 2, T),
            (0, 2**32 - 2, F),
            (0, 2**32 - 1, F),
        ],
    ),
    "1, 2, 4, replay 4": (
        256,
        1,
        [(0, 1, T), (0, 2, T), (0, 4, T), (0, 4, F), (0, 2, F), (0, 3, T), (0, 3, F)],
    ),
    "1, 3, replay 1": (256, 1, [(0, 1, T), (0, 3, T), (0, 1, F), (0, 2, T), (0, 2, F)]),
    "replay of the highest": (256, 1, [(0, 9, T), (0, 9, F), (0, 10, T), (0, 10, F)]),
    "last counter in the window": (4, 1, [(0, 10, T), (0, 7, T), (0, 7, F)]),
    "one past the window is too old": (4, 1, [(0, 10, T), (0, 6, F), (0, 5, F)]),
    "jump of width - 1 keeps the old bit": (
        4,
        1,
        [(0, 0, T), (0, 3, T), (0, 0, F), (0, 1, T), (0, 2, T), (0, 1, F), (0, 2, F), (0, 3, F)],
    ),
    "jump of width forgets (too old)": (
        4,
        1,
        [(0, 0, T), (0, 4, T), (0, 0, F), (0, 1, T), (0, 2, T), (0, 3, T), (0, 3, F)],
    ),
    "jump far past the width": (4, 1, [(0, 0, T), (0, 9, T), (0, 5, F), (0, 6, T), (0, 8, T)]),
    "bits shifted past the width are dropped": (
        4,
        1,
        [(0, 0, T), (0, 1, T), (0, 2, T), (0, 3, T), (0, 5, T), (0, 4, T), (0, 4, F), (0, 1, F)],
    ),
    "a full window then a step": (
        2,
        1,
        [(0, 0, T), (0, 1, T), (0, 2, T), (0, 1, F), (0, 0, F), (0, 3, T), (0, 2, F)],
    ),
    "width 1 remembers the highest only": (
        1,
        1,
        [(0, 5, T), (0, 5, F), (0, 4, F), (0, 6, T), (0, 5, F), (0, 7, T), (0, 7, F)],
    ),
    "far older than the window": (256, 1, [(0, 2**32 - 1, T), (0, 0, F)]),
    "prefixes are separate windows": (
        4,
        2,
        [(0, 5, T), (1, 5, T), (1, 4, T), (0, 4, T), (0, 5, F), (1, 5, F)],
    ),
    "least recently used prefix forgotten": (
        256,
        2,
        [(0, 1, T), (1, 1, T), (0, 2, T), (2, 1, T), (0, 1, F), (1, 1, T)],
    ),
    "a refused nonce still counts as a use of its prefix": (
        256,
        2,
        [(0, 1, T), (1, 1, T), (0, 1, F), (2, 1, T), (0, 1, F), (1, 1, T)],
    ),
    "one prefix remembered: each new one forgets the last": (
        256,
        1,
        [(0, 1, T), (0, 1, F), (1, 1, T), (0, 1, T), (1, 1, T), (1, 1, F)],
    ),
    "the order of use survives evictions": (
        256,
        2,
        [(0, 1, T), (1, 1, T), (2, 1, T), (1, 2, T), (3, 1, T), (2, 1, T), (3, 1, F), (1, 2, T)],
    ),
    "the same prefix again and again stays the most recently used": (
        256,
        2,
        [(0, 1, T), (1, 1, T), (1, 2, T), (1, 3, T), (2, 1, T), (1, 1, F), (0, 1, T)],
    ),
}


@pytest.mark.parametrize(
    ("width", "max_prefixes", "steps"), WINDOW_TABLE.values(), ids=WINDOW_TABLE
)
def test_window_table(width: int, max_prefixes: int, steps: list[tuple[int, int, bool]]) -> None:
    window, model = ReplayWindow(width, max_prefixes), Model(width, max_prefixes)
    for step, (prefix, counter, accepted) in enumerate(steps):
        nonce = _nonce(prefix, counter)
        assert window.seen(nonce) is (not accepted), (step, prefix, counter)
        assert model.accept(nonce) is accepted, "the table disagrees with the model"
        assert window.accept(nonce) is accepted, (step, prefix, counter)
        assert window.seen(nonce) is True, (step, prefix, counter)
    assert len(window) == len(model.prefixes)


@settings(max_examples=200)
@given(st.integers(0, 2**32 - 300), st.integers(1, 64), st.integers(1, 256))
def test_in_order_runs_then_replays(start: int, width: int, count: int) -> None:
    """After an in-order run, every earlier nonce in the window is a replay."""
    window, model = ReplayWindow(width), Model(width, 16)
    nonces = [_nonce(7, start + i) for i in range(count)]
    for nonce in nonces:
        assert window.accept(nonce)
        assert model.accept(nonce)
    for nonce in reversed(nonces):
        assert window.accept(nonce) is False
    assert window.accept(_nonce(7, start + count)) is True


@pytest.mark.parametrize("size", [0, 11, 13, 16])
def test_a_nonce_of_another_length_is_a_value_error(size: int) -> None:
    window = ReplayWindow()
    for method in (window.accept, window.seen):
        with pytest.raises(ValueError, match=f"^Expected a 12-byte nonce, got {size} bytes$"):
            method(bytes(size))
    assert len(window) == 0


def test_counter_end_does_not_step_into_the_next_prefix() -> None:
    """Counter 2**32 - 1 is a prefix's last nonce; the next prefix's counter 0 is fresh."""
    window = ReplayWindow()
    last = b"\x00" * 7 + b"\x01" + b"\xff\xff\xff\xff"
    assert window.accept(last[:8] + (2**32 - 2).to_bytes(4, "big"))
    assert window.accept(last)
    following = b"\x00" * 7 + b"\x02" + bytes(4)  # = last + 1 as a 96-bit number
    assert window.accept(following)
    assert not window.accept(following)
    assert not window.accept(last)


def test_a_far_older_counter_is_cheap() -> None:
    """Refusing a counter billions below the window must not build a huge bitmap."""
    window = ReplayWindow()
    assert window.accept(_nonce(1, 2**32 - 1))
    assert window.accept(_nonce(1, 0)) is False
    assert window.seen(_nonce(1, 0)) is True


def _traced_bytes(run: Callable[[], object]) -> int:
    """The memory ``run`` leaves allocated (what it returns is kept alive while measured)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = run()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


def test_memory_is_bounded() -> None:
    """Memory stays that of max_prefixes windows of width bits, however long the stream."""

    def fill(jumps: int) -> ReplayWindow:
        window = ReplayWindow(width=256, max_prefixes=4)
        for prefix in range(8):  # 4 of them evicted
            for counter in range(0, 255 * jumps, 255):  # each jump shifts the bitmap
                assert window.accept(_nonce(prefix, counter))
                assert window.accept(_nonce(prefix, counter + 100))
        return window

    short, long = _traced_bytes(lambda: fill(10)), _traced_bytes(lambda: fill(2_000))
    assert len(fill(10)) == 4
    # 4 bitmaps of 256 bits are 128 bytes; a window that kept the bits shifted
    # out of its width would hold 4 x 2,000 x 255 bits (255 KB) here.
    assert long - short < 4_096, (short, long)


def test_default_window_is_256_counters_and_16_prefixes() -> None:
    """The defaults docs/security.md states: 256 counters below the highest, 16 prefixes."""
    window = ReplayWindow()
    assert window.accept(_nonce(0, 1000))
    assert window.accept(_nonce(0, 1000 - 255))  # the window's last counter
    assert not window.accept(_nonce(0, 1000 - 256))  # one past it: too old
    for prefix in range(1, 17):  # 16 more prefixes: the first one is forgotten
        assert window.accept(_nonce(prefix, 0))
    assert len(window) == 16
    assert window.accept(_nonce(0, 1000))
    assert not window.accept(_nonce(16, 0))  # still remembered


def test_invalid_parameters() -> None:
    for bad in ({"width": 0}, {"max_prefixes": 0}):
        with pytest.raises(ValueError) as info:
            ReplayWindow(**bad)
        assert str(info.value) == "width and max_prefixes must be at least 1"
    assert ReplayWindow(width=1, max_prefixes=1).accept(_nonce(0, 0))


def test_repr() -> None:
    assert repr(ReplayWindow()) == "<ReplayWindow prefixes=0 width=256>"
    window = ReplayWindow(width=8)
    window.accept(_nonce(1, 1))
    window.accept(_nonce(2, 1))
    assert repr(window) == "<ReplayWindow prefixes=2 width=8>"


def test_refused_replay_of_another_prefix_does_not_misfile_the_next_nonce() -> None:
    """Regression (found by the model test): a refused nonce of prefix B, between
    two in-order nonces of prefix A, made the second A nonce count under B, so
    it could then be accepted twice."""
    window = ReplayWindow(width=1, max_prefixes=2)

    def nonce(prefix: int, counter: int) -> bytes:
        return prefix.to_bytes(8, "big") + counter.to_bytes(4, "big")

    assert window.accept(nonce(2, 0))
    assert window.accept(nonce(0, 4_294_967_291))
    assert not window.accept(nonce(2, 0))  # a replay, refused
    assert window.accept(nonce(0, 4_294_967_292))
    assert window.seen(nonce(0, 4_294_967_292))
    assert not window.accept(nonce(0, 4_294_967_292))


def test_session_refuses_replays_out_of_order() -> None:
    """With seq ordering off, the replay window alone decides: late once, replay never."""
    client = _client()
    server = _server(ReceiveChecks(seq_order=False))
    envelopes = [client.seal(_event(seq)) for seq in (1, 2, 3, 4)]
    assert server.open(envelopes[0]) == _event(1)
    assert server.open(envelopes[2]) == _event(3)
    with pytest.raises(EnvelopeError) as info:
        server.open(envelopes[0])
    assert info.value.reason is R.REPLAY
    assert info.value.code is EncryptionErrorCode.NONCE_REUSE
    assert server.open(envelopes[1]) == _event(2)  # late, but never seen
    assert server.open(envelopes[3]) == _event(4)
    with pytest.raises(EnvelopeError) as info:
        server.open(envelopes[3])
    assert info.value.reason is R.REPLAY
