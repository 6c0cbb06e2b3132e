"""AES-GCM encryption of the protocol: keys, nonces, encrypt/decrypt, session contexts.

Ciphertexts are the GCM ciphertext with the 16-byte tag appended (WebCrypto's
layout, so they are byte-identical to the reference's). Nonces are 12 bytes.
A :class:`SessionEncryptionContext` owns one direction's key of a session and
the counter nonces made under it, and (like the reference's) turns events into
envelope payloads and back with ``encrypt_json`` / ``create_envelope`` /
``decrypt_json``.
"""

from __future__ import annotations

__all__ = [
    "KEY_LENGTH",
    "MAX_MESSAGES_PER_KEY",
    "NONCE_COUNTER_LIMIT",
    "NONCE_LENGTH",
    "NONCE_PREFIX_LENGTH",
    "TAG_LENGTH",
    "AesGcmKey",
    "SessionEncryptionContext",
    "SessionKeyInfo",
    "decrypt",
    "encrypt",
    "generate_counter_nonce",
    "generate_nonce",
]

import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn, SupportsIndex

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import AesGcmError, EncryptionErrorCode, HkdfError
from ..events import EncryptedEnvelope, EncryptedEnvelopePayload, StreamEvent
from ..protocol import EncryptionAlgorithm
from ._codec import (
    InnerEvent,
    authentication_failed,
    check_envelope_fields,
    coerce_payload,
    decode_inner,
    encode_inner,
    payload_bytes,
    to_b64,
    undecryptable,
)

NONCE_LENGTH: Final = 12
"""Bytes in an AES-GCM nonce (IV)."""

TAG_LENGTH: Final = 16
"""Bytes in the authentication tag appended to every ciphertext."""

KEY_LENGTH: Final = 32
"""Bytes in a session key (AES-256). 16- and 24-byte keys are accepted too, as in the reference."""

MAX_MESSAGES_PER_KEY: Final = 2**30
"""Messages one session key may encrypt before it must be rotated."""

NONCE_PREFIX_LENGTH: Final = 8
"""Random bytes in front of the 4-byte counter of a counter nonce."""

NONCE_COUNTER_LIMIT: Final = 2**32
"""Counter nonces exist for counters ``0 <= counter < NONCE_COUNTER_LIMIT`` (a uint32)."""

_AES_KEY_LENGTHS: Final = frozenset((16, 24, 32))
_DECRYPTION_FAILED: Final = EncryptionErrorCode.DECRYPTION_FAILED
_NONCE_REUSE: Final = EncryptionErrorCode.NONCE_REUSE


class AesGcmKey:
    """An imported AES-GCM key, reusable for any number of operations.

    Holding one of these instead of raw bytes skips re-importing the key on
    every call. The key bytes are not kept as an attribute and never appear in
    ``repr``.

    Raises:
        HkdfError: (``ENCRYPTION_KEY_DERIVATION_FAILED``) the key is not 16,
            24 or 32 bytes; the reference reports a failed import this way.
    """

    __slots__ = ("_aead", "_length")

    def __init__(self, key_bytes: bytes) -> None:
        length = len(key_bytes)
        if length not in _AES_KEY_LENGTHS:
            raise HkdfError(
                f"Failed to import AES key: an AES-GCM key is 16, 24 or 32 bytes, got {length}",
                EncryptionErrorCode.KEY_DERIVATION_FAILED,
            )
        self._aead = AESGCM(key_bytes)
        self._length = length

    @property
    def length(self) -> int:
        """Length of the key in bytes (32 for the protocol's AES-256)."""
        return self._length

    def __repr__(self) -> str:
        return f"<AesGcmKey AES-{self._length * 8}>"


def _aead_of(key: AesGcmKey | bytes) -> AESGCM:
    if isinstance(key, AesGcmKey):
        return key._aead
    return AesGcmKey(key)._aead


def _bad_nonce_length(length: int) -> AesGcmError:
    # The reference uses the decryption-failed code for this on both paths.
    return AesGcmError(
        f"Invalid nonce length: expected {NONCE_LENGTH}, got {length}", _DECRYPTION_FAILED
    )


def encrypt(
    key: AesGcmKey | bytes,
    plaintext: bytes,
    nonce: bytes,
    additional_data: bytes | None = None,
) -> bytes:
    """Encrypt with AES-GCM; returns the ciphertext with the 16-byte tag appended.

    Args:
        key: an :class:`AesGcmKey`, or raw key bytes (imported on each call).
        plaintext: the bytes to encrypt.
        nonce: exactly 12 bytes, never used twice with the same key.
        additional_data: authenticated but unencrypted bytes; ``None`` and
            ``b""`` are equivalent.

    Raises:
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``, the reference's code
            even here) the nonce is not 12 bytes, or the cipher refused the input.
        HkdfError: raw key bytes of a length AES does not have.
    """
    if len(nonce) != NONCE_LENGTH:
        raise _bad_nonce_length(len(nonce))
    aead = _aead_of(key)
    try:
        return aead.encrypt(nonce, plaintext, additional_data)
    except (OverflowError, ValueError) as exc:  # e.g. input beyond GCM's length limit
        raise AesGcmError(f"Encryption failed: {exc}", _DECRYPTION_FAILED) from exc


def decrypt(
    key: AesGcmKey | bytes,
    ciphertext: bytes,
    nonce: bytes,
    additional_data: bytes | None = None,
) -> bytes:
    """Check and decrypt an AES-GCM ciphertext that has its 16-byte tag appended.

    Raises:
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``) the nonce is not 12
            bytes, the ciphertext is shorter than the tag, or authentication
            failed (wrong key, nonce or additional data, or altered bytes).
        HkdfError: raw key bytes of a length AES does not have.
    """
    if len(nonce) != NONCE_LENGTH:
        raise _bad_nonce_length(len(nonce))
    if len(ciphertext) < TAG_LENGTH:
        raise AesGcmError(
            f"Decryption failed: ciphertext is {len(ciphertext)} bytes, shorter than "
            f"the {TAG_LENGTH}-byte authentication tag",
            _DECRYPTION_FAILED,
        )
    aead = _aead_of(key)
    try:
        return aead.decrypt(nonce, ciphertext, additional_data)
    except InvalidTag:
        raise AesGcmError(
            "Decryption failed: authentication tag mismatch (wrong key, nonce or "
            "additional data, or the ciphertext was altered)",
            _DECRYPTION_FAILED,
        ) from None
    except (OverflowError, ValueError) as exc:
        raise AesGcmError(f"Decryption failed: {exc}", _DECRYPTION_FAILED) from exc


def generate_nonce() -> bytes:
    """Twelve random bytes from the OS CSPRNG, for a one-off encryption."""
    return os.urandom(NONCE_LENGTH)


def generate_counter_nonce(prefix: bytes, counter: int) -> bytes:
    """The nonce ``prefix || uint32_be(counter)``.

    Deliberate deviation: the reference keeps only the low 32 bits of the
    counter, so counter ``2**32`` silently repeats the nonce of counter 0 (and
    negative counters wrap too). Repeating a GCM nonce under one key leaks the
    authentication key, so here any counter outside ``[0, 2**32)`` is refused.

    Raises:
        AesGcmError: (``ENCRYPTION_NONCE_REUSE``) the prefix is not 8 bytes, or
            the counter does not fit in 32 unsigned bits.
    """
    if len(prefix) != NONCE_PREFIX_LENGTH:
        raise AesGcmError(
            f"Nonce prefix must be {NONCE_PREFIX_LENGTH} bytes, got {len(prefix)}", _NONCE_REUSE
        )
    try:
        # to_bytes raises OverflowError for negatives and for >= 2**32: the
        # range check costs nothing on the success path.
        return prefix + counter.to_bytes(4, "big")
    except OverflowError:
        raise _counter_out_of_range(counter) from None


def _counter_out_of_range(counter: int) -> AesGcmError:
    return AesGcmError(
        f"Nonce counter {counter} is outside [0, 2**32): a 32-bit counter nonce would "
        "wrap and repeat an earlier nonce; rotate the key instead",
        _NONCE_REUSE,
    )


@dataclass(frozen=True, slots=True)
class SessionKeyInfo:
    """Bookkeeping of one session key: its id, age and nonce budget.

    This is the reference's ``SessionKeyInfo`` without the key itself (the
    key is passed to :class:`SessionEncryptionContext` separately, so that
    this record can be logged or stored without leaking it).

    Attributes:
        key_id: the key id announced in the ServerHello (``k_<uuid4>``).
        created_at: creation time, milliseconds since the Unix epoch
            (JavaScript's ``Date.now()``).
        nonce_counter: the counter of the next nonce to use.
        max_nonces: the number of messages the key may encrypt; at
            ``nonce_counter >= max_nonces`` the key must be rotated.
        algorithm: always ``AES-GCM-256`` in protocol version 2.
    """

    key_id: str
    created_at: int
    nonce_counter: int = 0
    max_nonces: int = MAX_MESSAGES_PER_KEY
    algorithm: EncryptionAlgorithm = EncryptionAlgorithm.AES_GCM_256

    def __post_init__(self) -> None:
        if self.nonce_counter < 0:
            raise AesGcmError(f"nonce_counter must be >= 0, got {self.nonce_counter}", _NONCE_REUSE)


# Contexts alive in this process. A fork() child inherits a copy of every
# context, counter included; without intervention parent and child would
# encrypt different messages under the same nonces.
_LIVE_CONTEXTS: weakref.WeakSet[SessionEncryptionContext] = weakref.WeakSet()


class SessionEncryptionContext:
    """One session key and its nonce sequence: ``prefix(8 random bytes) || uint32_be(counter)``.

    Every :meth:`encrypt` uses the next counter value, so no nonce repeats
    under the key as long as the key lives only in this context. Safety
    measures beyond the reference:

    * the counter never wraps: when it reaches ``2**32`` encryption raises
      ``ENCRYPTION_NONCE_REUSE`` even if ``max_nonces`` is set higher;
    * in a ``fork()`` child every inherited context draws a new random prefix
      (a context built with a fixed ``nonce_prefix`` refuses to encrypt in the
      child instead), so parent and child never share a nonce;
    * contexts cannot be copied or pickled, which would duplicate the counter;
    * encryption is thread-safe (the counter is taken under a lock).

    Args:
        key: the session key, as an :class:`AesGcmKey` or raw bytes.
        key_info: id, creation time, starting counter and nonce limit.
        nonce_prefix: a fixed 8-byte prefix, for tests and test vectors only;
            by default the prefix is random.
    """

    __slots__ = (
        "__weakref__",
        "_aead",
        "_counter",
        "_fixed_prefix",
        "_key",
        "_key_info",
        "_lock",
        "_max_nonces",
        "_prefix",
    )

    def __init__(
        self,
        key: AesGcmKey | bytes,
        key_info: SessionKeyInfo,
        *,
        nonce_prefix: bytes | None = None,
    ) -> None:
        self._key = key if isinstance(key, AesGcmKey) else AesGcmKey(key)
        self._aead = self._key._aead
        self._key_info = key_info
        self._counter = key_info.nonce_counter
        self._max_nonces = key_info.max_nonces  # read on every encrypt
        self._lock = threading.Lock()
        self._prefix: bytes | None
        self._fixed_prefix = nonce_prefix is not None
        if nonce_prefix is None:
            self._prefix = os.urandom(NONCE_PREFIX_LENGTH)
        elif len(nonce_prefix) != NONCE_PREFIX_LENGTH:
            raise AesGcmError(
                f"Nonce prefix must be {NONCE_PREFIX_LENGTH} bytes, got {len(nonce_prefix)}",
                _NONCE_REUSE,
            )
        else:
            self._prefix = bytes(nonce_prefix)
        _LIVE_CONTEXTS.add(self)

    @classmethod
    def from_key_bytes(
        cls, key_bytes: bytes, key_id: str, *, nonce_prefix: bytes | None = None
    ) -> SessionEncryptionContext:
        """A fresh context (counter 0, limit ``MAX_MESSAGES_PER_KEY``) for raw key bytes.

        ``nonce_prefix`` fixes the nonce prefix, for tests and test vectors only.

        Raises:
            HkdfError: the key is not 16, 24 or 32 bytes.
            AesGcmError: (``ENCRYPTION_NONCE_REUSE``) ``nonce_prefix`` is not 8 bytes.
        """
        info = SessionKeyInfo(key_id=key_id, created_at=time.time_ns() // 1_000_000)
        return cls(AesGcmKey(key_bytes), info, nonce_prefix=nonce_prefix)

    @property
    def key_id(self) -> str:
        """The id of the key (the envelope's ``kid``)."""
        return self._key_info.key_id

    @property
    def key(self) -> AesGcmKey:
        """The session key."""
        return self._key

    @property
    def nonce_counter(self) -> int:
        """The counter the next :meth:`encrypt` will use."""
        return self._counter

    def needs_rotation(self) -> bool:
        """True when this context can encrypt no more messages and the key must be rotated.

        That is at ``nonce_counter >= max_nonces`` (as in the reference), and
        also, unlike the reference, when the 32-bit counter is exhausted or
        when a fixed-prefix context was inherited across ``fork()``.
        """
        counter = self._counter
        return counter >= self._max_nonces or counter >= NONCE_COUNTER_LIMIT or self._prefix is None

    def encrypt(self, plaintext: bytes) -> tuple[bytes, bytes]:
        """Encrypt under the next counter nonce; returns ``(ciphertext_with_tag, nonce)``.

        Raises:
            AesGcmError: ``ENCRYPTION_KEY_EXPIRED`` once ``max_nonces``
                messages were encrypted; ``ENCRYPTION_NONCE_REUSE`` when the
                32-bit counter is exhausted or the context has a fixed prefix
                and was inherited across ``fork()``;
                ``ENCRYPTION_DECRYPTION_FAILED`` if the cipher refuses the input.
        """
        lock = self._lock
        # acquire/release in try/finally is ``with lock`` at a lower cost on
        # CPython (no context-manager protocol), and every encryption takes it.
        lock.acquire()
        try:
            counter = self._counter
            if counter >= self._max_nonces:
                raise AesGcmError(
                    f"Key needs rotation: nonce limit reached ({self._max_nonces} "
                    f"messages under key {self._key_info.key_id!r})",
                    EncryptionErrorCode.KEY_EXPIRED,
                )
            prefix = self._prefix
            if prefix is None:
                raise AesGcmError(
                    "This context has a fixed nonce prefix and was inherited across fork(): "
                    "encrypting here could repeat the parent's nonces",
                    _NONCE_REUSE,
                )
            try:
                nonce = prefix + counter.to_bytes(4, "big")
            except OverflowError:
                raise _counter_out_of_range(counter) from None
            # Consumed before encrypting: a failed call never hands its nonce to another.
            self._counter = counter + 1
        finally:
            lock.release()
        try:
            return self._aead.encrypt(nonce, plaintext, None), nonce
        except (OverflowError, ValueError) as exc:
            raise AesGcmError(f"Encryption failed: {exc}", _DECRYPTION_FAILED) from exc

    def decrypt(self, ciphertext: bytes, nonce: bytes) -> bytes:
        """Decrypt a ciphertext (tag appended) made under this key; see :func:`decrypt`."""
        return decrypt(self._key, ciphertext, nonce)

    def encrypt_json(self, data: InnerEvent) -> EncryptedEnvelopePayload:
        """Encrypt an event under the next counter nonce; returns the envelope payload.

        The plaintext is the event's JSON exactly as the reference writes it.
        A mapping is validated as an event first.

        Raises:
            EventValidationError: the event breaks the schema (no nonce is used).
            EnvelopeError: (``invalid_event``) not an event, or an ``enc`` envelope.
            AesGcmError: as :meth:`encrypt` (key expired, counter exhausted).
        """
        ciphertext, nonce = self.encrypt(encode_inner(data))
        return EncryptedEnvelopePayload(
            kid=self._key_info.key_id, nonce_b64=to_b64(nonce), ciphertext_b64=to_b64(ciphertext)
        )

    def create_envelope(
        self, session_id: str, seq: int, inner_event: InnerEvent
    ) -> EncryptedEnvelope:
        """An ``enc`` envelope (protocol version 2) carrying ``inner_event``.

        Like the reference, the envelope's ``sessionId``/``seq`` are taken as
        given and not compared with the inner event's (an
        :class:`~enclave_stream.crypto.EncryptedSession` does compare them).

        >>> ctx = SessionEncryptionContext.from_key_bytes(bytes(32), "k_1")
        >>> from enclave_stream import StdoutEvent, StdoutPayload
        >>> env = ctx.create_envelope("s_1", 7, StdoutEvent("s_1", 7, StdoutPayload("hi")))
        >>> env.seq, env.payload.kid
        (7, 'k_1')

        Raises:
            EventValidationError: a bad ``session_id`` or ``seq``, or an invalid event.
            EnvelopeError, AesGcmError: as :meth:`encrypt_json`.
        """
        check_envelope_fields(session_id, seq)
        return EncryptedEnvelope(
            session_id=session_id, seq=seq, payload=self.encrypt_json(inner_event)
        )

    def decrypt_json(self, payload: EncryptedEnvelopePayload | Mapping[str, Any]) -> StreamEvent:
        """Decrypt an envelope payload made under this key and validate the event inside.

        Like the reference, ``kid`` and ``tagB64`` are not looked at, and no
        replay or ordering checks are made (an
        :class:`~enclave_stream.crypto.EncryptedSession` makes them).

        Raises:
            EnvelopeError: ``invalid_encoding`` (bad base64, nonce not 12
                bytes), ``authentication_failed``, ``invalid_plaintext`` (not
                JSON, not a valid event); all with ``ENCRYPTION_DECRYPTION_FAILED``.
        """
        nonce, ciphertext = payload_bytes(coerce_payload(payload))
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, None)
        except InvalidTag:
            raise authentication_failed() from None
        except (OverflowError, ValueError) as exc:  # e.g. beyond GCM's length limit
            raise undecryptable(exc) from None
        return decode_inner(plaintext)

    def to_key_info(self) -> SessionKeyInfo:
        """The key info with the current nonce counter, e.g. to persist the context's state."""
        return replace(self._key_info, nonce_counter=self._counter)

    def __repr__(self) -> str:
        return (
            f"<SessionEncryptionContext key_id={self._key_info.key_id!r} "
            f"nonce_counter={self._counter} max_nonces={self._max_nonces}>"
        )

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # copy.copy, deepcopy and pickle all come through here. Two live copies
        # of one counter would encrypt under the same nonces.
        raise TypeError(
            "SessionEncryptionContext cannot be copied or pickled: two copies would reuse nonces"
        )

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by a parent thread that does not exist here.
        self._lock = threading.Lock()
        if self._fixed_prefix:
            # A prefix chosen by the caller cannot be re-drawn; refuse instead.
            self._prefix = None
        else:
            # Same counter, fresh random prefix: disjoint from the parent's
            # nonces (and from sibling children's) except with probability 2**-64.
            self._prefix = os.urandom(NONCE_PREFIX_LENGTH)


def _reseed_contexts_after_fork() -> None:
    for context in list(_LIVE_CONTEXTS):
        context._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # absent on Windows, which has no fork()
    os.register_at_fork(after_in_child=_reseed_contexts_after_fork)
