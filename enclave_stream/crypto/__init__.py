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
"""

from __future__ import annotations

from ..errors import (
    AesGcmError,
    Base64DecodeError,
    EcdhError,
    EncryptionError,
    EncryptionErrorCode,
    EnvelopeError,
    EnvelopeErrorReason,
    HandshakeError,
    HkdfError,
)
from .aesgcm import (
    KEY_LENGTH,
    MAX_MESSAGES_PER_KEY,
    NONCE_COUNTER_LIMIT,
    NONCE_LENGTH,
    NONCE_PREFIX_LENGTH,
    TAG_LENGTH,
    AesGcmKey,
    decrypt,
    encrypt,
    generate_counter_nonce,
    generate_nonce,
)
from .context import SessionEncryptionContext, SessionKeyInfo
from .ecdh import (
    CURVE,
    PUBLIC_KEY_LENGTH,
    SHARED_SECRET_LENGTH,
    EcdhKeyPair,
    SerializedPublicKey,
    derive_shared_secret,
    export_public_key,
    export_public_key_bytes,
    generate_key_pair,
    import_public_key,
    import_public_key_bytes,
    key_pair_from_private_scalar,
)
from .encoding import from_base64, to_base64
from .envelope import create_encrypted_envelope, decrypt_json, encrypt_json
from .handshake import (
    ClientHandshake,
    HelloInput,
    ProcessedClientHello,
    ProcessedServerHello,
    accept_client_hello,
    create_client_hello,
    create_server_hello,
    parse_client_hello,
    parse_server_hello,
    process_client_hello,
    process_server_hello,
)
from .hkdf import (
    HKDF_INFO_CLIENT_TO_SERVER,
    HKDF_INFO_SERVER_TO_CLIENT,
    HKDF_MAX_OUTPUT_LENGTH,
    SessionCryptoKeys,
    SessionKeys,
    derive_key,
    derive_session_crypto_keys,
    derive_session_keys,
    import_aes_gcm_key,
)
from .session import EncryptedSession, ReceiveChecks, ReplayWindow, SessionRole
from .signing import (
    SIGNATURE_LENGTH,
    TRANSCRIPT_LABEL,
    ServerPublicKey,
    generate_signing_key,
    handshake_transcript,
    load_server_public_key,
    sign_transcript,
    verify_transcript_signature,
)
from .streams import decrypt_events, encrypt_events

__all__ = [
    "CURVE",
    "HKDF_INFO_CLIENT_TO_SERVER",
    "HKDF_INFO_SERVER_TO_CLIENT",
    "HKDF_MAX_OUTPUT_LENGTH",
    "KEY_LENGTH",
    "MAX_MESSAGES_PER_KEY",
    "NONCE_COUNTER_LIMIT",
    "NONCE_LENGTH",
    "NONCE_PREFIX_LENGTH",
    "PUBLIC_KEY_LENGTH",
    "SHARED_SECRET_LENGTH",
    "SIGNATURE_LENGTH",
    "TAG_LENGTH",
    "TRANSCRIPT_LABEL",
    "AesGcmError",
    "AesGcmKey",
    "Base64DecodeError",
    "ClientHandshake",
    "EcdhError",
    "EcdhKeyPair",
    "EncryptedSession",
    "EncryptionError",
    "EncryptionErrorCode",
    "EnvelopeError",
    "EnvelopeErrorReason",
    "HandshakeError",
    "HelloInput",
    "HkdfError",
    "ProcessedClientHello",
    "ProcessedServerHello",
    "ReceiveChecks",
    "ReplayWindow",
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
    "export_public_key_bytes",
    "from_base64",
    "generate_counter_nonce",
    "generate_key_pair",
    "generate_nonce",
    "generate_signing_key",
    "handshake_transcript",
    "import_aes_gcm_key",
    "import_public_key",
    "import_public_key_bytes",
    "key_pair_from_private_scalar",
    "load_server_public_key",
    "parse_client_hello",
    "parse_server_hello",
    "process_client_hello",
    "process_server_hello",
    "sign_transcript",
    "to_base64",
    "verify_transcript_signature",
]
