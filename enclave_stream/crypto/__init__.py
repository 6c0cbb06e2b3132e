"""End-to-end encryption of the EnclaveJS protocol.

The primitives: base64 and UTF-8 as the browser writes them
(:mod:`.encoding`), P-256 ECDH (:mod:`.ecdh`) for a shared secret,
HKDF-SHA256 (:mod:`.hkdf`) for one AES-256 key per direction, AES-GCM
(:mod:`.aesgcm`) and a key's counter-nonce context (:mod:`.context`).

On top of them: the one envelope path (:mod:`.envelope`), the hellos and the
handshake (:mod:`.handshake`) that yields an :class:`EncryptedSession`
(:mod:`.session`, with its replay window and splicing and ordering checks),
optional server signatures (:mod:`.signing`), and anyio adapters
(:mod:`.streams`). Everything but the adapters is synchronous and does no I/O.

This package exports the TypeScript package's crypto names and what the
handshake and sessions need; constants and the signing steps stay in their
modules, and the exception classes other than the TypeScript package's three
live in :mod:`enclave_stream.errors`.
"""

from __future__ import annotations

from ..errors import AesGcmError, EcdhError, HkdfError
from .aesgcm import AesGcmKey, decrypt, encrypt, generate_counter_nonce, generate_nonce
from .context import SessionEncryptionContext, SessionKeyInfo
from .ecdh import (
    EcdhKeyPair,
    SerializedPublicKey,
    derive_shared_secret,
    export_public_key,
    generate_key_pair,
    import_public_key,
)
from .encoding import from_base64, to_base64
from .envelope import create_encrypted_envelope, decrypt_json, encrypt_json
from .handshake import (
    ClientHandshake,
    ProcessedClientHello,
    ProcessedServerHello,
    accept_client_hello,
    create_client_hello,
    create_server_hello,
    process_client_hello,
    process_server_hello,
)
from .hkdf import (
    SessionCryptoKeys,
    SessionKeys,
    derive_key,
    derive_session_crypto_keys,
    derive_session_keys,
    import_aes_gcm_key,
)
from .session import EncryptedSession, ReceiveChecks, SessionRole
from .signing import ServerPublicKey, generate_signing_key
from .streams import decrypt_events, encrypt_events

__all__ = [
    "AesGcmError",
    "AesGcmKey",
    "ClientHandshake",
    "EcdhError",
    "EcdhKeyPair",
    "EncryptedSession",
    "HkdfError",
    "ProcessedClientHello",
    "ProcessedServerHello",
    "ReceiveChecks",
    "SerializedPublicKey",
    "ServerPublicKey",
    "SessionCryptoKeys",
    "SessionEncryptionContext",
    "SessionKeyInfo",
    "SessionKeys",
    "SessionRole",
    "accept_client_hello",
    "create_client_hello",
    "create_encrypted_envelope",
    "create_server_hello",
    "decrypt",
    "decrypt_events",
    "decrypt_json",
    "derive_key",
    "derive_session_crypto_keys",
    "derive_session_keys",
    "derive_shared_secret",
    "encrypt",
    "encrypt_events",
    "encrypt_json",
    "export_public_key",
    "from_base64",
    "generate_counter_nonce",
    "generate_key_pair",
    "generate_nonce",
    "generate_signing_key",
    "import_aes_gcm_key",
    "import_public_key",
    "process_client_hello",
    "process_server_hello",
    "to_base64",
]
