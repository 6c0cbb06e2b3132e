"""Stand-alone envelope functions: one event in, one ``enc`` envelope out, and back.

These mirror the reference's ``encryptJson`` / ``decryptJson`` /
``createEncryptedEnvelope`` and produce byte-identical envelopes. They keep no
state, so they cannot detect replays or reordering, and without an explicit
nonce they draw 12 random bytes per call. A session should use an
:class:`~enclave_stream.crypto.EncryptedSession` instead.
"""

from __future__ import annotations

__all__ = ["create_encrypted_envelope", "decrypt_json", "encrypt_json"]

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag

from ..events import EncryptedEnvelope, EncryptedEnvelopePayload, StreamEvent
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
from .aesgcm import AesGcmKey, _aead_of, encrypt, generate_nonce


def encrypt_json(
    key: AesGcmKey | bytes, key_id: str, data: InnerEvent, nonce: bytes | None = None
) -> EncryptedEnvelopePayload:
    """Encrypt one event; returns the envelope payload ``{kid, nonceB64, ciphertextB64}``.

    Args:
        key: the AES key (an :class:`AesGcmKey`, or 16/24/32 raw bytes).
        key_id: written as ``kid``.
        data: a plaintext event, or its wire form as a mapping (validated,
            then written in the protocol's key order).
        nonce: 12 bytes that must never repeat under ``key``; by default
            12 random bytes.

    Raises:
        EventValidationError: the event breaks the schema.
        EnvelopeError: (``invalid_event``) not an event, or an ``enc`` envelope.
        AesGcmError: (``ENCRYPTION_DECRYPTION_FAILED``, as the reference) the
            nonce is not 12 bytes.
    """
    plaintext = encode_inner(data)
    used = generate_nonce() if nonce is None else nonce
    ciphertext = encrypt(key, plaintext, used)
    return EncryptedEnvelopePayload(
        kid=key_id, nonce_b64=to_b64(used), ciphertext_b64=to_b64(ciphertext)
    )


def decrypt_json(
    key: AesGcmKey | bytes, payload: EncryptedEnvelopePayload | Mapping[str, Any]
) -> StreamEvent:
    """Decrypt an envelope payload and return the validated event inside.

    As in the reference, ``kid`` and ``tagB64`` are ignored (the tag is the
    end of ``ciphertextB64``). Base64 is read as ``atob`` reads it.

    Raises:
        EnvelopeError: with ``ENCRYPTION_DECRYPTION_FAILED`` and reason
            ``invalid_encoding`` (bad base64, nonce not 12 bytes),
            ``authentication_failed`` or ``invalid_plaintext`` (not JSON, not
            a valid event, an envelope).
        HkdfError: raw key bytes of a length AES does not have.
    """
    nonce, ciphertext = payload_bytes(coerce_payload(payload))
    try:
        plaintext = _aead_of(key).decrypt(nonce, ciphertext, None)
    except InvalidTag:
        raise authentication_failed() from None
    except (OverflowError, ValueError) as exc:  # e.g. beyond GCM's length limit
        raise undecryptable(exc) from None
    return decode_inner(plaintext)


def create_encrypted_envelope(
    key: AesGcmKey | bytes,
    key_id: str,
    session_id: str,
    seq: int,
    inner_event: InnerEvent,
    nonce: bytes | None = None,
) -> EncryptedEnvelope:
    """An ``enc`` envelope (protocol version 2) carrying ``inner_event``.

    >>> from enclave_stream import StdoutEvent, StdoutPayload
    >>> event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("hi"))
    >>> env = create_encrypted_envelope(bytes(32), "k_1", "s_1", 1, event, bytes(12))
    >>> env.payload.nonce_b64
    'AAAAAAAAAAAAAAAA'
    >>> decrypt_json(bytes(32), env.payload) == event
    True

    Raises:
        EventValidationError: a bad ``session_id`` or ``seq``, or an invalid event.
        EnvelopeError, AesGcmError: as :func:`encrypt_json`.
    """
    check_envelope_fields(session_id, seq)
    payload = encrypt_json(key, key_id, inner_event, nonce)
    return EncryptedEnvelope(session_id=session_id, seq=seq, payload=payload)
