"""An encrypted session: seal events into envelopes, open the peer's envelopes.

Each side holds two keys derived from the handshake: it seals with its own
direction's key (client->server for a client) and opens with the peer's. So an
envelope reflected back to its sender does not authenticate, and the two
sides' counter nonces never meet under one key.

Opening checks the envelope (compatibility row E4; the numbering checks 2, 8
and 9 can be switched off in :class:`ReceiveChecks` to talk to a peer that
numbers envelopes differently). In order, an envelope is refused when:

1. an earlier envelope failed authentication (``session_failed``): as TLS does
   with a bad record, the session then takes no more input;
2. its ``sessionId`` is not the session's (``session_mismatch``);
3. its ``kid`` is not the session's key id (``unknown_key_id``);
4. its base64 is bad or its nonce is not 12 bytes (``invalid_encoding``);
5. the AES-GCM tag does not verify (``authentication_failed``);
6. its nonce was accepted before under this key (``replay``, code
   ``ENCRYPTION_NONCE_REUSE``; see :class:`ReplayWindow`);
7. the plaintext is not a valid event (``invalid_plaintext``);
8. the inner event's ``sessionId`` or ``seq`` differ from the envelope's
   (``session_mismatch`` / ``seq_mismatch``: the envelope was spliced);
9. its ``seq`` is not above the last accepted one (``seq_regression``; a
   repeated ``seq`` counts: each event number is opened at most once).

A refused envelope changes nothing, except that an authentic one (steps 6-9)
has its nonce remembered, and a forgery (step 5) ends the session.
"""

from __future__ import annotations

__all__ = [
    "EncryptedSession",
    "ReceiveChecks",
    "ReplayWindow",
    "SessionRole",
    "check_key_id",
    "check_session_id",
]

import struct
import threading
from binascii import b2a_base64
from dataclasses import dataclass
from typing import Final, NoReturn, SupportsIndex

from cryptography.exceptions import InvalidTag

from ..codec import encode_event
from ..errors import EncryptionErrorCode, EnvelopeError, EnvelopeErrorReason, HandshakeError
from ..events import EncryptedEnvelope, EncryptedEnvelopePayload, StreamEvent
from ..protocol import StrEnum, is_session_id
from .aesgcm import NONCE_LENGTH, AesGcmKey, derive_session_keys
from .context import SessionEncryptionContext, SessionKeyInfo
from .envelope import (
    InnerEvent,
    coerce_event,
    open_payload,
    read_event,
)

_R: Final = EnvelopeErrorReason
_PROBE_NONCE: Final = bytes(NONCE_LENGTH)
# A nonce as (its 8-byte prefix, its 4-byte counter), both big-endian numbers.
_NONCE_PARTS: Final = struct.Struct(">QI").unpack
_PROBE: Final = b"send and receive keys differ"


def _bad_nonce(nonce: bytes) -> ValueError:
    return ValueError(f"Expected a {NONCE_LENGTH}-byte nonce, got {len(nonce)} bytes")


class ReplayWindow:
    """Remembers accepted 12-byte nonces in bounded memory (docs/security.md, "Replay memory").

    Per nonce prefix: the highest counter and a bitmap of the ``width``
    counters below it (RFC 4303's sliding window); an older counter is
    refused. At most ``max_prefixes`` prefixes, least recently used out first.

    Args:
        width: counters remembered below the highest one, per nonce prefix.
        max_prefixes: nonce prefixes remembered at once.

    >>> window = ReplayWindow()
    >>> nonce = bytes(8) + (5).to_bytes(4, "big")
    >>> window.accept(nonce), window.accept(nonce), window.seen(nonce)
    (True, False, True)
    """

    __slots__ = ("_mask", "_max_prefixes", "_prefixes", "_recent", "_width")

    def __init__(self, width: int = 256, max_prefixes: int = 16) -> None:
        if width < 1 or max_prefixes < 1:
            raise ValueError("width and max_prefixes must be at least 1")
        self._width = width
        self._mask = (1 << width) - 1
        self._max_prefixes = max_prefixes
        # prefix -> [highest counter, bitmap]; bit i set = counter (highest - i)
        # seen. Least recently used first, so eviction takes the first key.
        # A prefix is its 8 bytes read as a big-endian number.
        self._prefixes: dict[int, list[int]] = {}
        self._recent = -1  # the prefix last in _prefixes (no prefix is -1)

    def seen(self, nonce: bytes) -> bool:
        """True if ``nonce`` was accepted before, or is too old for the window to tell.

        Raises:
            ValueError: ``nonce`` is not 12 bytes.
        """
        try:
            prefix, counter = _NONCE_PARTS(nonce)
        except struct.error:
            raise _bad_nonce(nonce) from None
        entry = self._prefixes.get(prefix)
        if entry is None:
            return False
        behind = entry[0] - counter
        if behind < 0:
            return False
        return behind >= self._width or bool((entry[1] >> behind) & 1)

    def accept(self, nonce: bytes) -> bool:
        """Record ``nonce`` and return True, or return False if it is a replay.

        Call it only for a nonce whose envelope authenticated, so that a
        forger cannot fill the window.

        Raises:
            ValueError: ``nonce`` is not 12 bytes.
        """
        try:
            prefix, counter = _NONCE_PARTS(nonce)  # one C call: slicing twice costs more
        except struct.error:
            raise _bad_nonce(nonce) from None
        prefixes = self._prefixes
        entry = prefixes.get(prefix)
        if entry is None:
            if len(prefixes) >= self._max_prefixes:
                del prefixes[next(iter(prefixes))]  # the least recently used
            entry = prefixes[prefix] = [counter, 0]  # inserted last: the most recently used
            self._recent = prefix
        elif prefix != self._recent:
            # Moved last, as the most recently used. A sender keeps one prefix
            # for thousands of envelopes: then the entry is already last.
            del prefixes[prefix]
            prefixes[prefix] = entry
            self._recent = prefix
        ahead = counter - entry[0]
        if ahead > 0:
            entry[0] = counter
            entry[1] = ((entry[1] << ahead) | 1) & self._mask if ahead < self._width else 1
            return True
        behind = -ahead
        if behind >= self._width:  # too old to tell: refuse (and never shift that far)
            return False
        bit = 1 << behind
        if entry[1] & bit:
            return False
        entry[1] |= bit
        return True

    def __len__(self) -> int:
        """How many nonce prefixes are remembered."""
        return len(self._prefixes)

    def __repr__(self) -> str:
        return f"<ReplayWindow prefixes={len(self._prefixes)} width={self._width}>"


class SessionRole(StrEnum):
    """Which end of the session this object is."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class ReceiveChecks:
    """The receiver's numbering checks, for peers that number envelopes differently.

    Both are on by default; the security checks cannot be switched off.

    Attributes:
        splicing: refuse an envelope of another session, or whose inner
            event's ``sessionId``/``seq`` differ from the envelope's
            (compatibility row E4 names vectors that need it off).
        seq_order: refuse an envelope whose ``seq`` is not above the last one.
    """

    splicing: bool = True
    seq_order: bool = True


_DEFAULT_CHECKS: Final = ReceiveChecks()


class EncryptedSession:
    """Both directions of one session's encryption, with the receiver's checks.

    Made by :class:`~enclave_stream.crypto.ClientHandshake` or
    :func:`~enclave_stream.crypto.accept_client_hello`. Sessions cannot be
    copied or pickled and never show keys in ``repr``; ``seal`` and ``open``
    are thread-safe.

    Args:
        session_id: the session id (``s_...``), every envelope's ``sessionId``.
        key_id: the key id from the ServerHello, every envelope's ``kid``.
        role: which end this object is.
        send_key: the key this side seals with (an :class:`AesGcmKey` or raw bytes).
        receive_key: the key the peer seals with; must differ from ``send_key``.
        nonce_prefix: a fixed 8-byte nonce prefix for sealing, for tests and
            vectors only (two sessions with one key and one prefix reuse nonces).
        checks: the receiver's checks (all on by default).

    Raises:
        HandshakeError: a bad session id or key id, or equal keys.
        HkdfError: a key that is not 16, 24 or 32 bytes.

    >>> client = EncryptedSession(
    ...     "s_1", "k_1", SessionRole.CLIENT, send_key=bytes(32), receive_key=bytes(range(32)))
    >>> server = EncryptedSession(
    ...     "s_1", "k_1", SessionRole.SERVER, send_key=bytes(range(32)), receive_key=bytes(32))
    >>> from enclave_stream import StdoutEvent
    >>> from enclave_stream.events import StdoutPayload
    >>> event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("hi"))
    >>> server.open(client.seal(event)) == event
    True
    """

    __slots__ = (
        "_checks",
        "_context",
        "_failed",
        "_key_id",
        "_last_seq",
        "_line",
        "_lock",
        "_receive_key",
        "_replay_window",
        "_role",
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
        check_session_id(session_id)
        check_key_id(key_id)
        send = send_key if isinstance(send_key, AesGcmKey) else AesGcmKey(send_key)
        receive = receive_key if isinstance(receive_key, AesGcmKey) else AesGcmKey(receive_key)
        if _same_key(send, receive):
            # One key both ways would make our own envelopes, sent back to
            # us, authenticate (a reflection attack).
            raise HandshakeError(
                "The send and receive keys must differ", EncryptionErrorCode.KEY_DERIVATION_FAILED
            )
        self._session_id = session_id
        self._key_id = key_id
        self._role = SessionRole(role)
        self._checks = checks = _DEFAULT_CHECKS if checks is None else checks
        self._context = SessionEncryptionContext(
            send, SessionKeyInfo(key_id), nonce_prefix=nonce_prefix
        )
        self._receive_key = receive
        self._replay_window = ReplayWindow()
        self._last_seq = -1
        self._failed = False
        self._lock = threading.Lock()
        self._line = _line_template(session_id, key_id)

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
        the ``enclavejs-s2c-enc`` key.

        Raises:
            HandshakeError: a bad session id or key id.
        """
        check_session_id(session_id)  # before the session id is used as the salt
        keys = derive_session_keys(shared_secret, session_id)
        c2s, s2c = keys.client_to_server_key, keys.server_to_client_key
        send, receive = (c2s, s2c) if role == SessionRole.CLIENT else (s2c, c2s)
        return cls(session_id, key_id, role, send_key=send, receive_key=receive, checks=checks)

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
        return self._context.nonce_counter

    def needs_rotation(self) -> bool:
        """True when the sending key is used up (2**30 envelopes): start a new session."""
        return self._context.needs_rotation()

    # --- sending ------------------------------------------------------------------

    def seal(self, event: InnerEvent) -> EncryptedEnvelope:
        """Encrypt ``event`` into an envelope with the event's ``seq`` and this session's id.

        Raises:
            EnvelopeError: ``session_mismatch`` (the event belongs to another
                session) or ``invalid_event`` (not a plaintext event).
            EventValidationError: the event breaks the schema.
            AesGcmError: ``ENCRYPTION_KEY_EXPIRED`` after 2**30 envelopes.
        """
        inner = self._own_event(event)
        return self._context.create_envelope(self._session_id, inner.seq, inner)

    def seal_line(self, event: InnerEvent) -> bytes:
        """:meth:`seal`, returned as the envelope's JSON line (no newline).

        The bytes are those of encoding :meth:`seal`'s envelope with
        :func:`~enclave_stream.codec.encode_event`, written without building
        the envelope: the session id and key id were checked when the session
        was made, the event's ``seq`` is checked when the event is encoded
        (before a nonce is used), so only the nonce and ciphertext are new.

        Raises:
            EnvelopeError, EventValidationError, AesGcmError: as :meth:`seal`.
        """
        inner = self._own_event(event)
        ciphertext, nonce = self._context.encrypt(encode_event(inner))  # as event_plaintext(inner)
        return self._line % (
            inner.seq,
            b2a_base64(nonce, newline=False),
            b2a_base64(ciphertext, newline=False),
        )

    def _own_event(self, event: InnerEvent) -> StreamEvent:
        inner = coerce_event(event)
        if inner.session_id != self._session_id:
            raise EnvelopeError(
                f"The event belongs to session {inner.session_id!r}, not {self._session_id!r}",
                _R.SESSION_MISMATCH,
            )
        return inner

    # --- receiving ----------------------------------------------------------------

    def open(self, envelope: EncryptedEnvelope) -> StreamEvent:
        """Check and decrypt the peer's envelope; returns the validated inner event.

        The checks run in the order of the module docstring.

        Raises:
            EnvelopeError: the check that failed is in ``.reason`` (module
                docstring); the code is ``ENCRYPTION_NONCE_REUSE`` for a
                replay, ``ENCRYPTION_DECRYPTION_FAILED`` otherwise.
        """
        checks = self._checks
        splicing = checks.splicing
        if self._failed:
            raise EnvelopeError(
                "The session refuses further input: an earlier envelope failed authentication",
                _R.SESSION_FAILED,
            )
        if type(envelope) is not EncryptedEnvelope:
            raise EnvelopeError(
                f"Expected an enc envelope, got {type(envelope).__name__}", _R.INVALID_EVENT
            )
        session_id = envelope.session_id
        payload = envelope.payload
        if splicing and session_id != self._session_id:
            raise EnvelopeError(
                f"The envelope belongs to session {session_id!r}, not {self._session_id!r}",
                _R.SESSION_MISMATCH,
            )
        if payload.kid != self._key_id:
            raise EnvelopeError(
                f"Unknown key id {payload.kid!r}: this session's key is {self._key_id!r}",
                _R.UNKNOWN_KEY_ID,
            )
        try:
            nonce, plaintext = open_payload(self._receive_key, payload)
        except EnvelopeError as exc:
            if exc.reason is _R.AUTHENTICATION_FAILED:
                self._failed = True
            raise
        # Only authentic envelopes reach the state below, so a forger can
        # neither fill the replay window nor move the seq high-water mark.
        with self._lock:
            if not self._replay_window.accept(nonce):
                raise EnvelopeError(
                    f"Replayed envelope: nonce {nonce.hex()} was already accepted under this key",
                    _R.REPLAY,
                    EncryptionErrorCode.NONCE_REUSE,
                )
            event = read_event(plaintext)
            seq = envelope.seq
            if splicing and event.session_id != session_id:
                raise EnvelopeError(
                    f"The inner event belongs to session {event.session_id!r}, but the "
                    f"envelope says {session_id!r}",
                    _R.SESSION_MISMATCH,
                )
            if splicing and event.seq != seq:
                raise EnvelopeError(
                    f"The inner event has seq {event.seq}, but the envelope says {seq}",
                    _R.SEQ_MISMATCH,
                )
            if type(seq) is not int:
                raise EnvelopeError(f"Invalid envelope seq {seq!r}", _R.INVALID_ENCODING)
            if seq > self._last_seq:
                self._last_seq = seq
            elif checks.seq_order:
                raise EnvelopeError(
                    f"Envelope seq {seq} does not advance past {self._last_seq}",
                    _R.SEQ_REGRESSION,
                )
        return event

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


def _line_template(session_id: str, key_id: str) -> bytes:
    # Every line of a session is the same bytes but for seq, nonce and
    # ciphertext. The template is cut from the encoder's own line for a probe
    # envelope, so its bytes come from one place. A JSON string never holds
    # an unescaped '"', so the markers cannot occur inside the quoted session
    # id or key id, and unpacking checks that each occurs exactly once. Only
    # those two ids (in head and middle) are free text that can hold a '%' to
    # escape; tail closes the envelope.
    probe = encode_event(
        EncryptedEnvelope(
            session_id=session_id,
            seq=0,
            payload=EncryptedEnvelopePayload(kid=key_id, nonce_b64="N", ciphertext_b64="C"),
        )
    )
    head, rest = probe.split(b',"seq":0,')
    middle, tail = rest.split(b',"nonceB64":"N","ciphertextB64":"C"}')
    return b'%s,"seq":%%d,%s,"nonceB64":"%%s","ciphertextB64":"%%s"}%s' % (
        head.replace(b"%", b"%%"),
        middle.replace(b"%", b"%%"),
        tail,
    )


def _same_key(first: AesGcmKey, second: AesGcmKey) -> bool:
    # An AesGcmKey keeps no key bytes to compare (raw bytes or two objects of
    # one key look different): ask the ciphers. Only the same key opens what
    # the other sealed (a different key does so with probability 2**-128).
    sealed = first.aead.encrypt(_PROBE_NONCE, _PROBE, None)
    try:
        second.aead.decrypt(_PROBE_NONCE, sealed, None)
    except InvalidTag:
        return False
    return True


def check_session_id(session_id: object) -> None:
    """Refuse a session id that is not ``s_`` and at least one more character.

    Raises:
        HandshakeError: (``ENCRYPTION_HANDSHAKE_FAILED``).
    """
    if not is_session_id(session_id):
        raise HandshakeError(
            f"Invalid session id {session_id!r}: expected 's_' and at least one more character",
            EncryptionErrorCode.HANDSHAKE_FAILED,
        )


def check_key_id(key_id: object) -> None:
    """Refuse a key id that is not a non-empty string.

    Raises:
        HandshakeError: (``ENCRYPTION_HANDSHAKE_FAILED``).
    """
    if not (isinstance(key_id, str) and key_id):
        raise HandshakeError(
            f"The key id must be a non-empty string, got {key_id!r}",
            EncryptionErrorCode.HANDSHAKE_FAILED,
        )
