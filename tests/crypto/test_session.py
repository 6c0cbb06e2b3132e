"""EncryptedSession: sealing, opening, the receiver checks and their switches; the replay window."""

from __future__ import annotations

import base64
import copy
import pickle
import threading
from collections import OrderedDict
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
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


def test_non_string_payload_fields_are_refused() -> None:
    envelope = _client().seal(_event(1))
    payload = msgspec.structs.replace(envelope.payload, nonce_b64=123)
    error = _refused(_server(), msgspec.structs.replace(envelope, payload=payload))
    assert error.reason is R.INVALID_ENCODING


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
    ("session_id", "key_id"),
    [
        pytest.param("x_1", "k_1", id="bad-session-id"),
        pytest.param("s_", "k_1", id="bare-prefix"),
        pytest.param(SESSION, "", id="empty-key-id"),
    ],
)
def test_bad_identifiers_are_refused(session_id: str, key_id: str) -> None:
    with pytest.raises(HandshakeError) as info:
        _client(session_id=session_id, key_id=key_id)
    assert info.value.code is EncryptionErrorCode.HANDSHAKE_FAILED


def test_one_key_for_both_directions_is_refused() -> None:
    with pytest.raises(HandshakeError):
        EncryptedSession(SESSION, "k_1", SessionRole.CLIENT, send_key=C2S, receive_key=C2S)


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


# --- safety -----------------------------------------------------------------------------


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, pickle.dumps])
def test_sessions_cannot_be_copied_or_pickled(clone: Any) -> None:
    with pytest.raises(TypeError, match="cannot be copied or pickled"):
        clone(_client())


def test_repr_shows_no_key_material() -> None:
    session = _client()
    text = repr(session)
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


@settings(max_examples=400)
@given(operations, st.integers(1, 20), st.integers(1, 4))
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


def test_memory_is_bounded() -> None:
    window = ReplayWindow(width=64, max_prefixes=4)
    for prefix in range(100):
        for counter in range(0, 10_000, 97):
            window.accept(_nonce(prefix % 256, counter))
    assert len(window) == 4


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(width=0)
    with pytest.raises(ValueError):
        ReplayWindow(max_prefixes=0)


def test_repr() -> None:
    assert repr(ReplayWindow()) == "<ReplayWindow prefixes=0 width=256>"


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


@pytest.mark.parametrize("n", [0, 5, 2**32 - 3])
def test_out_of_order_acceptance_then_replays(n: int) -> None:
    """A nonce skipped over is still accepted once; one accepted before never again."""
    window = ReplayWindow()
    assert window.accept(_nonce(3, n))
    assert window.accept(_nonce(3, n + 2))
    assert not window.accept(_nonce(3, n))  # replay of n, now below the highest
    assert window.accept(_nonce(3, n + 1))  # skipped, so accepted late
    assert not window.accept(_nonce(3, n + 1))
    assert not window.accept(_nonce(3, n + 2))


def test_gap_then_replay_of_the_highest() -> None:
    window = ReplayWindow()
    for counter in (1, 2, 4):
        assert window.accept(_nonce(9, counter))
    assert not window.accept(_nonce(9, 4))
    assert not window.accept(_nonce(9, 2))
    assert window.accept(_nonce(9, 3))
    assert not window.accept(_nonce(9, 3))


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
