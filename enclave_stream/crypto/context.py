"""A session key's encryption context: one key, its counter nonces, its envelopes."""

from __future__ import annotations

__all__ = ["SessionEncryptionContext", "SessionKeyInfo"]

import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, NoReturn, SupportsIndex

from ..errors import AesGcmError, EncryptionErrorCode
from ..events import EncryptedEnvelope, EncryptedEnvelopePayload
from ..protocol import EncryptionAlgorithm
from .aesgcm import (
    MAX_MESSAGES_PER_KEY,
    NONCE_COUNTER_LIMIT,
    NONCE_PREFIX_LENGTH,
    AesGcmKey,
    decrypt,
    generate_counter_nonce,
)
from .envelope import (
    InnerEvent,
    check_envelope_fields,
    decrypt_json,
    event_plaintext,
    json_plaintext,
    seal_payload,
)

_NONCE_REUSE: Final = EncryptionErrorCode.NONCE_REUSE


@dataclass(frozen=True, slots=True)
class SessionKeyInfo:
    """Bookkeeping of one session key: id, age and nonce budget; never the key (compat. C6).

    Attributes:
        key_id: the key id announced in the ServerHello (``k_<uuid4>``).
        created_at: creation time, milliseconds since the Unix epoch
            (JavaScript's ``Date.now()``); by default, now.
        nonce_counter: the counter of the next nonce to use.
        max_nonces: the number of messages the key may encrypt; at
            ``nonce_counter >= max_nonces`` the key must be rotated.
        algorithm: always ``AES-GCM-256`` in protocol version 2.
    """

    key_id: str
    created_at: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
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
    under the key: the counter never wraps, a ``fork()`` child re-draws the
    prefix, contexts cannot be copied or pickled, and the counter is taken
    under a lock (docs/compatibility.md C1, C2, C5).

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
        self._aead = self._key.aead  # encrypt's cipher, one attribute away
        self._key_info = key_info
        self._counter = key_info.nonce_counter
        self._max_nonces = key_info.max_nonces  # read on every encrypt
        self._lock = threading.Lock()
        self._prefix: bytes | None
        self._fixed_prefix = nonce_prefix is not None
        if nonce_prefix is None:
            self._prefix = os.urandom(NONCE_PREFIX_LENGTH)
        else:
            generate_counter_nonce(nonce_prefix, 0)  # refuses a prefix that is not 8 bytes
            self._prefix = bytes(nonce_prefix)
        _LIVE_CONTEXTS.add(self)

    @property
    def key_id(self) -> str:
        """The id of the key (the envelope's ``kid``)."""
        return self._key_info.key_id

    @property
    def nonce_counter(self) -> int:
        """The counter the next :meth:`encrypt` will use."""
        return self._counter

    def needs_rotation(self) -> bool:
        """True when this context can encrypt no more and the key must be rotated.

        That is at ``max_nonces``, at the end of the 32-bit counter, or after
        a ``fork()`` of a fixed-prefix context (docs/compatibility.md C2).
        """
        counter = self._counter
        return counter >= self._max_nonces or counter >= NONCE_COUNTER_LIMIT or self._prefix is None

    def _next_nonce(self) -> bytes:
        # The counter is consumed before encrypting: a failed call never hands
        # its nonce to another.
        with self._lock:
            counter = self._counter
            if counter >= self._max_nonces:
                raise AesGcmError(
                    f"Key needs rotation: nonce limit reached ({self._max_nonces} "
                    f"messages under key {self._key_info.key_id!r})",
                    EncryptionErrorCode.KEY_EXPIRED,
                )
            if self._prefix is None:
                raise AesGcmError(
                    "This context has a fixed nonce prefix and was inherited across fork(): "
                    "encrypting here could repeat the parent's nonces",
                    _NONCE_REUSE,
                )
            nonce = generate_counter_nonce(self._prefix, counter)
            self._counter = counter + 1
        return nonce

    def encrypt(self, plaintext: bytes) -> tuple[bytes, bytes]:
        """Encrypt under the next counter nonce; returns ``(ciphertext_with_tag, nonce)``.

        Raises:
            AesGcmError: ``ENCRYPTION_KEY_EXPIRED`` once ``max_nonces``
                messages were encrypted; ``ENCRYPTION_NONCE_REUSE`` when the
                32-bit counter is exhausted or the context has a fixed prefix
                and was inherited across ``fork()``;
                ``ENCRYPTION_DECRYPTION_FAILED`` if the cipher refuses the input.
        """
        nonce = self._next_nonce()
        # Every envelope line is sealed here. The nonce is 12 bytes by
        # construction and the key imported, so aesgcm.encrypt's argument
        # checks would find nothing; its error mapping is kept.
        try:
            return self._aead.encrypt(nonce, plaintext, None), nonce
        except (OverflowError, ValueError) as exc:  # e.g. input beyond GCM's length limit
            raise AesGcmError(
                f"Encryption failed: {exc}", EncryptionErrorCode.DECRYPTION_FAILED
            ) from exc

    def decrypt(self, ciphertext: bytes, nonce: bytes) -> bytes:
        """Decrypt a ciphertext (tag appended) made under this key; see :func:`.aesgcm.decrypt`."""
        return decrypt(self._key, ciphertext, nonce)

    def encrypt_json(self, data: object) -> EncryptedEnvelopePayload:
        """Encrypt any JSON value under the next counter nonce; returns the envelope payload.

        The plaintext is written as :func:`~enclave_stream.crypto.encrypt_json` writes it.

        Raises:
            EnvelopeError: (``invalid_event``) ``data`` is not a JSON value (no nonce is used).
            AesGcmError: as :meth:`encrypt` (key expired, counter exhausted).
        """
        plaintext = json_plaintext(data)
        return seal_payload(self._key, self._key_info.key_id, plaintext, self._next_nonce())

    def create_envelope(
        self, session_id: str, seq: int, inner_event: InnerEvent
    ) -> EncryptedEnvelope:
        """An ``enc`` envelope carrying ``inner_event`` (see ``create_encrypted_envelope``).

        >>> ctx = SessionEncryptionContext(bytes(32), SessionKeyInfo("k_1"))
        >>> from enclave_stream import StdoutEvent
        >>> from enclave_stream.events import StdoutPayload
        >>> env = ctx.create_envelope("s_1", 7, StdoutEvent("s_1", 7, StdoutPayload("hi")))
        >>> env.seq, env.payload.kid
        (7, 'k_1')

        Raises:
            EventValidationError: a bad ``session_id`` or ``seq``, or an
                invalid event (no nonce is used).
            EnvelopeError: (``invalid_event``) not an event, or an ``enc`` envelope.
            AesGcmError: as :meth:`encrypt`.
        """
        check_envelope_fields(session_id, seq)
        plaintext = event_plaintext(inner_event)
        payload = seal_payload(self._key, self._key_info.key_id, plaintext, self._next_nonce())
        return EncryptedEnvelope(session_id=session_id, seq=seq, payload=payload)

    def decrypt_json(
        self,
        payload: EncryptedEnvelopePayload | Mapping[str, Any],
        *,
        type: Any = None,  # msgspec's name for the target type
    ) -> Any:
        """Decrypt a payload made under this key, as :func:`~enclave_stream.crypto.decrypt_json`.

        ``kid`` and ``tagB64`` are not looked at, and no replay or ordering
        checks are made (an :class:`~enclave_stream.crypto.EncryptedSession`
        makes them).
        """
        return decrypt_json(self._key, payload, type=type)

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
