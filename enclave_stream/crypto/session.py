"""An encrypted session: seal events into envelopes, open the peer's envelopes.

Each side holds two keys derived from the handshake: it seals with its own
direction's key (client->server for a client) and opens with the peer's. So an
envelope reflected back to its sender does not authenticate, and the two
sides' counter nonces never meet under one key.

Opening checks more than the reference ever did (each can be switched off in
:class:`ReceiveChecks`, e.g. to talk to a peer that numbers envelopes
differently). In order, an envelope is refused when:

1. an earlier envelope failed authentication (``session_failed``): as TLS does
   with a bad record, the session then takes no more input;
2. its ``sessionId`` is not the session's (``session_mismatch``);
3. its ``kid`` is not the session's key id (``unknown_key_id``);
4. its base64 is bad or its nonce is not 12 bytes (``invalid_encoding``);
5. the AES-GCM tag does not verify (``authentication_failed``);
6. its nonce was accepted before under this key (``replay``, code
   ``ENCRYPTION_NONCE_REUSE``; see :mod:`.replay`);
7. the plaintext is not a valid event (``invalid_plaintext``);
8. the inner event's ``sessionId`` or ``seq`` differ from the envelope's
   (``session_mismatch`` / ``seq_mismatch``: the envelope was spliced);
9. its ``seq`` is not above the last accepted one (``seq_regression``; a
   repeated ``seq`` counts: each event number is opened at most once).

A refused envelope changes nothing, except that an authentic one (steps 6-9)
has its nonce remembered, and a forgery (step 5) ends the session.
"""

from __future__ import annotations

__all__ = ["EncryptedSession", "ReceiveChecks", "SessionRole"]

import threading
import time
from binascii import b2a_base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn, SupportsIndex, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._json import js_quote
from ..codec import decode_event, encode_event
from ..errors import EncryptionErrorCode, EnvelopeError, EnvelopeErrorReason, HandshakeError
from ..events import EncryptedEnvelope, EncryptedEnvelopePayload, StreamEvent
from ..protocol import StrEnum, is_session_id
from ._codec import (
    STREAM_EVENT_TYPES,
    InnerEvent,
    authentication_failed,
    canonical_payload_bytes,
    coerce_inner,
    invalid_plaintext,
    payload_bytes,
    undecryptable,
)
from .aesgcm import AesGcmKey, SessionEncryptionContext, SessionKeyInfo
from .hkdf import derive_session_key_bytes
from .replay import DEFAULT_MAX_PREFIXES, DEFAULT_WINDOW, ReplayWindow

_R: Final = EnvelopeErrorReason
_Decrypt: TypeAlias = Callable[[bytes, bytes, None], bytes]  # AESGCM.decrypt


class SessionRole(StrEnum):
    """Which end of the session this object is."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class ReceiveChecks:
    """The receiver's checks; all on by default (see the module docstring).

    Attributes:
        key_id: refuse an envelope whose ``kid`` is not the session's.
        replay: refuse a nonce accepted before (bounded window, :mod:`.replay`).
        splicing: refuse an envelope of another session, or whose inner
            event's ``sessionId``/``seq`` differ from the envelope's.
        seq_order: refuse an envelope whose ``seq`` is not above the last one.
        fail_closed: after one authentication failure refuse everything.
        replay_window: counters remembered per nonce prefix.
        max_nonce_prefixes: nonce prefixes remembered at once.
    """

    key_id: bool = True
    replay: bool = True
    splicing: bool = True
    seq_order: bool = True
    fail_closed: bool = True
    replay_window: int = DEFAULT_WINDOW
    max_nonce_prefixes: int = DEFAULT_MAX_PREFIXES


_DEFAULT_CHECKS: Final = ReceiveChecks()


class EncryptedSession:
    """Both directions of one session's encryption, with the receiver's checks.

    Made by :class:`~enclave_stream.crypto.ClientHandshake` (client) or
    :func:`~enclave_stream.crypto.accept_client_hello` (server); tests and
    vectors can use :meth:`from_key_bytes`. Sessions cannot be copied or
    pickled (two copies would reuse nonces) and never show keys in ``repr``.
    ``seal`` and ``open`` are thread-safe.

    >>> client = EncryptedSession.from_key_bytes(
    ...     "s_1", "k_1", SessionRole.CLIENT, send_key=bytes(32), receive_key=bytes(range(32)))
    >>> server = EncryptedSession.from_key_bytes(
    ...     "s_1", "k_1", SessionRole.SERVER, send_key=bytes(range(32)), receive_key=bytes(32))
    >>> from enclave_stream import StdoutEvent, StdoutPayload
    >>> event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("hi"))
    >>> server.open(client.seal(event)) == event
    True
    """

    __slots__ = (
        "_accept_nonce",
        "_checks",
        "_context",
        "_decrypt",
        "_failed",
        "_key_id",
        "_last_seq",
        "_line",
        "_lock",
        "_receive_key",
        "_role",
        "_send_key",
        "_session_id",
    )

    def __init__(
        self,
        session_id: str,
        key_id: str,
        role: SessionRole,
        *,
        send_key: AesGcmKey | bytes,
        receive_key: AesGcmKey | bytes,
        nonce_prefix: bytes | None = None,
        checks: ReceiveChecks | None = None,
    ) -> None:
        _check_labels_of_new_session(session_id, key_id)
        send = send_key if isinstance(send_key, AesGcmKey) else AesGcmKey(send_key)
        receive = receive_key if isinstance(receive_key, AesGcmKey) else AesGcmKey(receive_key)
        if send is receive or (not isinstance(send_key, AesGcmKey) and send_key == receive_key):
            raise _equal_keys()
        info = SessionKeyInfo(key_id=key_id, created_at=time.time_ns() // 1_000_000)
        self._start(session_id, key_id, role, checks)
        self._context: SessionEncryptionContext | None = SessionEncryptionContext(
            send, info, nonce_prefix=nonce_prefix
        )
        # from_shared_secret keeps a key only until its cipher is made.
        self._send_key: bytes | None = None
        self._decrypt: _Decrypt | None = receive._aead.decrypt
        self._receive_key: bytes | None = None

    def _start(
        self, session_id: str, key_id: str, role: SessionRole, checks: ReceiveChecks | None
    ) -> None:
        # The state of a new session but its keys, from arguments already checked.
        self._session_id = session_id
        self._key_id = key_id
        self._role = role if type(role) is SessionRole else SessionRole(role)
        self._checks = checks = _DEFAULT_CHECKS if checks is None else checks
        self._accept_nonce: Callable[[bytes], bool] | None = (
            ReplayWindow(checks.replay_window, checks.max_nonce_prefixes).accept
            if checks.replay
            else None
        )
        self._last_seq = -1
        self._failed = False
        self._lock = threading.Lock()
        self._line: bytes | None = None  # made by the first seal_line

    @classmethod
    def from_key_bytes(
        cls,
        session_id: str,
        key_id: str,
        role: SessionRole,
        *,
        send_key: bytes,
        receive_key: bytes,
        nonce_prefix: bytes | None = None,
        checks: ReceiveChecks | None = None,
    ) -> EncryptedSession:
        """A session over raw key bytes, for tests and test vectors.

        ``nonce_prefix`` fixes the 8-byte nonce prefix of the sending side
        (tests only: two sessions with one key and one prefix reuse nonces).

        Raises:
            HandshakeError: a bad session id or key id, or equal keys.
            HkdfError: a key that is not 16, 24 or 32 bytes.
        """
        return cls(
            session_id,
            key_id,
            role,
            send_key=send_key,
            receive_key=receive_key,
            nonce_prefix=nonce_prefix,
            checks=checks,
        )

    @classmethod
    def from_shared_secret(
        cls,
        shared_secret: bytes,
        session_id: str,
        key_id: str,
        role: SessionRole,
        *,
        checks: ReceiveChecks | None = None,
    ) -> EncryptedSession:
        """The session of an ECDH shared secret: HKDF-SHA256, salt = the session id.

        The client sends with the ``enclavejs-c2s-enc`` key and the server with
        the ``enclavejs-s2c-enc`` key. Each direction's cipher is set up when
        it is first used (the first :meth:`seal` or :meth:`open`).
        """
        # The handshake's path, so it skips what the constructor would redo
        # for these arguments: both keys are fresh 32-byte HKDF outputs (still
        # compared: equal keys would allow reflection).
        _check_labels_of_new_session(session_id, key_id)
        c2s, s2c = derive_session_key_bytes(shared_secret, session_id)
        if c2s == s2c:
            raise _equal_keys()
        if role == SessionRole.CLIENT:
            send, receive = c2s, s2c
        else:
            send, receive = s2c, c2s
        self = cls.__new__(cls)
        self._start(session_id, key_id, role, checks)
        # Each direction's AES key schedule (and the sender's nonce prefix) is
        # made when that direction is first used: a handshake costs two
        # sessions, and a session may only ever send, or only receive.
        self._context = None
        self._send_key = send
        self._decrypt = None
        self._receive_key = receive
        return self

    # --- properties -------------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session id (the HKDF salt, and every envelope's ``sessionId``)."""
        return self._session_id

    @property
    def key_id(self) -> str:
        """The key id from the ServerHello (every envelope's ``kid``)."""
        return self._key_id

    @property
    def role(self) -> SessionRole:
        """``client`` or ``server``."""
        return self._role

    @property
    def failed(self) -> bool:
        """True once an envelope failed authentication; :meth:`open` then refuses all."""
        return self._failed

    @property
    def last_seq(self) -> int | None:
        """The ``seq`` of the last envelope opened, or ``None`` before the first."""
        return None if self._last_seq < 0 else self._last_seq

    @property
    def sealed_count(self) -> int:
        """How many envelopes were sealed (the next nonce counter)."""
        context = self._context
        return 0 if context is None else context.nonce_counter

    def needs_rotation(self) -> bool:
        """True when the sending key is used up (2**30 envelopes): start a new session."""
        context = self._context
        return context is not None and context.needs_rotation()

    # --- sending ------------------------------------------------------------------

    def _inner(self, event: object) -> StreamEvent:
        inner: StreamEvent = (
            event  # type: ignore[assignment]  # checked: one of the 12 event classes
            if type(event) in STREAM_EVENT_TYPES
            else coerce_inner(event)
        )
        if inner.session_id != self._session_id:
            raise EnvelopeError(
                f"The event belongs to session {inner.session_id!r}, not {self._session_id!r}",
                _R.SESSION_MISMATCH,
            )
        return inner

    def _sending_context(self) -> SessionEncryptionContext:
        # The first seal of a session from from_shared_secret imports its key,
        # under the lock, so that racing first seals share one nonce sequence.
        with self._lock:
            context = self._context
            if context is None:
                assert self._send_key is not None  # set whenever _context is None
                info = SessionKeyInfo(key_id=self._key_id, created_at=time.time_ns() // 1_000_000)
                context = SessionEncryptionContext(AesGcmKey(self._send_key), info)
                self._context = context
                self._send_key = None
        return context

    def seal(self, event: InnerEvent) -> EncryptedEnvelope:
        """Encrypt ``event`` into an envelope with the event's ``seq`` and this session's id.

        Raises:
            EnvelopeError: ``session_mismatch`` (the event belongs to another
                session) or ``invalid_event`` (not a plaintext event).
            EventValidationError: the event breaks the schema.
            AesGcmError: ``ENCRYPTION_KEY_EXPIRED`` after 2**30 envelopes.
        """
        inner = self._inner(event)
        context = self._context or self._sending_context()
        ciphertext, nonce = context.encrypt(encode_event(inner))
        payload = EncryptedEnvelopePayload(
            kid=self._key_id,
            nonce_b64=b2a_base64(nonce, newline=False).decode("ascii"),
            ciphertext_b64=b2a_base64(ciphertext, newline=False).decode("ascii"),
        )
        return EncryptedEnvelope(session_id=self._session_id, seq=inner.seq, payload=payload)

    def seal_line(self, event: InnerEvent) -> bytes:
        """:meth:`seal`, returned as the envelope's JSON line (no newline).

        The same bytes as encoding the envelope of :meth:`seal` with an
        :class:`~enclave_stream.EventEncoder`, without building the envelope.

        Raises:
            EnvelopeError, EventValidationError, AesGcmError: as :meth:`seal`.
        """
        inner = self._inner(event)
        context = self._context or self._sending_context()
        ciphertext, nonce = context.encrypt(encode_event(inner))
        line = self._line
        if line is None:
            # Every envelope line is the same bytes but for three fields.
            line = self._line = (
                b'{"protocolVersion":2,"sessionId":%s,"seq":%%d,"type":"enc","payload":'
                b'{"kid":%s,"nonceB64":"%%s","ciphertextB64":"%%s"}}'
                % (_quoted(self._session_id), _quoted(self._key_id))
            )
        return line % (
            inner.seq,
            b2a_base64(nonce, newline=False),
            b2a_base64(ciphertext, newline=False),
        )

    # --- receiving ----------------------------------------------------------------

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        """Check and decrypt the peer's envelope; returns the validated inner event.

        Raises:
            EnvelopeError: the check that failed is in ``.reason`` (module
                docstring); the code is ``ENCRYPTION_NONCE_REUSE`` for a
                replay, ``ENCRYPTION_DECRYPTION_FAILED`` otherwise.
        """
        # Every open runs this: the common case costs one comparison per
        # check, and the rare branches (switched-off checks included) are
        # decided out of line.
        if self._failed or type(envelope) is not EncryptedEnvelope:
            raise self._unusable(envelope)
        session_id = envelope.session_id
        payload = envelope.payload
        if session_id != self._session_id or payload.kid != self._key_id:
            self._check_labels(session_id, payload.kid)
        try:
            nonce, ciphertext = canonical_payload_bytes(payload.nonce_b64, payload.ciphertext_b64)
        except (ValueError, TypeError):
            nonce, ciphertext = payload_bytes(payload)  # atob's verdict, or the error
        try:
            plaintext = (self._decrypt or self._receiving_decrypt())(nonce, ciphertext, None)
        except InvalidTag:
            if self._checks.fail_closed:
                self._failed = True
            raise authentication_failed() from None
        except (OverflowError, ValueError) as exc:  # e.g. beyond GCM's length limit
            raise undecryptable(exc) from None
        # Only authentic envelopes reach the state below, so a forger can
        # neither fill the replay window nor move the seq high-water mark.
        accept_nonce = self._accept_nonce
        lock = self._lock
        # acquire/release in try/finally is ``with lock`` at a lower cost on
        # CPython (no context-manager protocol), and every open takes it.
        lock.acquire()
        try:
            if accept_nonce is not None and not accept_nonce(nonce):
                raise _replay(nonce)
            event: StreamEvent = decode_event(plaintext)  # type: ignore[assignment]
            if type(event) not in STREAM_EVENT_TYPES:
                raise invalid_plaintext(event)
            seq = envelope.seq
            if event.seq != seq or event.session_id != session_id:
                self._check_splice(event, session_id, seq)
            if type(seq) is not int:
                raise EnvelopeError(f"Invalid envelope seq {seq!r}", _R.INVALID_ENCODING)
            if seq > self._last_seq:
                self._last_seq = seq
            elif self._checks.seq_order:
                raise EnvelopeError(
                    f"Envelope seq {seq} does not advance past {self._last_seq}",
                    _R.SEQ_REGRESSION,
                )
        finally:
            lock.release()
        return event

    def _receiving_decrypt(self) -> _Decrypt:
        # The first open of a session from from_shared_secret imports its key.
        # Racing first opens may each import it: the ciphers are equal, and
        # _decrypt is set before the key is dropped.
        key = self._receive_key
        if key is not None:
            self._decrypt = AESGCM(key).decrypt
            self._receive_key = None
        decrypt = self._decrypt
        assert decrypt is not None  # set above, or by a racing first open
        return decrypt

    def _check_labels(self, session_id: str, kid: str) -> None:
        # The envelope's session id or key id is not ours: refuse, unless
        # that check is switched off.
        checks = self._checks
        if session_id != self._session_id and checks.splicing:
            raise EnvelopeError(
                f"The envelope belongs to session {session_id!r}, not {self._session_id!r}",
                _R.SESSION_MISMATCH,
            )
        if kid != self._key_id and checks.key_id:
            raise EnvelopeError(
                f"Unknown key id {kid!r}: this session's key is {self._key_id!r}",
                _R.UNKNOWN_KEY_ID,
            )

    def _check_splice(self, event: StreamEvent, session_id: str, seq: int) -> None:
        if not self._checks.splicing:
            return
        if event.session_id != session_id:
            raise EnvelopeError(
                f"The inner event belongs to session {event.session_id!r}, but the envelope "
                f"says {session_id!r}",
                _R.SESSION_MISMATCH,
            )
        raise EnvelopeError(
            f"The inner event has seq {event.seq}, but the envelope says {seq}", _R.SEQ_MISMATCH
        )

    def _unusable(self, envelope: object) -> EnvelopeError:
        if self._failed:
            return _session_failed()
        return EnvelopeError(
            f"Expected an enc envelope, got {type(envelope).__name__}", _R.INVALID_EVENT
        )

    # --- safety -------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"<EncryptedSession role={self._role.value} session_id={self._session_id!r} "
            f"key_id={self._key_id!r} sealed={self.sealed_count} "
            f"last_seq={self.last_seq} failed={self._failed}>"
        )

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # copy, deepcopy and pickle all come through here: a copy would reuse
        # the sending nonces and fork the replay state.
        raise TypeError("EncryptedSession cannot be copied or pickled: it holds session keys")


def _check_labels_of_new_session(session_id: object, key_id: object) -> None:
    if not is_session_id(session_id):
        raise HandshakeError(
            f"Invalid session id {session_id!r}: expected 's_' and at least one more character",
            EncryptionErrorCode.HANDSHAKE_FAILED,
        )
    if not (isinstance(key_id, str) and key_id):
        raise HandshakeError(
            f"The key id must be a non-empty string, got {key_id!r}",
            EncryptionErrorCode.HANDSHAKE_FAILED,
        )


def _equal_keys() -> HandshakeError:
    # One key both ways would make our own envelopes, sent back to us,
    # authenticate (a reflection attack).
    return HandshakeError(
        "The send and receive keys must differ", EncryptionErrorCode.KEY_DERIVATION_FAILED
    )


def _quoted(text: str) -> bytes:
    # JSON.stringify's quoting, with % doubled for the %-template.
    return js_quote(text).encode("utf-8").replace(b"%", b"%%")


def _session_failed() -> EnvelopeError:
    return EnvelopeError(
        "The session refuses further input: an earlier envelope failed authentication",
        _R.SESSION_FAILED,
    )


def _replay(nonce: bytes) -> EnvelopeError:
    return EnvelopeError(
        f"Replayed envelope: nonce {nonce.hex()} was already accepted under this key",
        _R.REPLAY,
        EncryptionErrorCode.NONCE_REUSE,
    )
