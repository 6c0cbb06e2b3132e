"""End-to-end encryption primitives of the EnclaveJS protocol.

P-256 ECDH (:mod:`.ecdh`) gives a shared secret; HKDF-SHA256 (:mod:`.hkdf`)
turns it into one AES-256 key per direction; AES-GCM (:mod:`.aesgcm`)
encrypts each event under a counter nonce. Base64 helpers follow the
reference's ``btoa``/``atob``. Everything here is synchronous and does no I/O.
"""

from __future__ import annotations

from ._b64 import from_base64, to_base64
from .aesgcm import (
    KEY_LENGTH,
    MAX_MESSAGES_PER_KEY,
    NONCE_COUNTER_LIMIT,
    NONCE_LENGTH,
    NONCE_PREFIX_LENGTH,
    TAG_LENGTH,
    AesGcmKey,
    SessionEncryptionContext,
    SessionKeyInfo,
    decrypt,
    encrypt,
    generate_counter_nonce,
    generate_nonce,
)
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
from .errors import (
    AesGcmError,
    Base64DecodeError,
    EcdhError,
    EncryptionError,
    EncryptionErrorCode,
    HkdfError,
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
    "TAG_LENGTH",
    "AesGcmError",
    "AesGcmKey",
    "Base64DecodeError",
    "EcdhError",
    "EcdhKeyPair",
    "EncryptionError",
    "EncryptionErrorCode",
    "HkdfError",
    "SerializedPublicKey",
    "SessionCryptoKeys",
    "SessionEncryptionContext",
    "SessionKeyInfo",
    "SessionKeys",
    "decrypt",
    "derive_key",
    "derive_session_crypto_keys",
    "derive_session_keys",
    "derive_shared_secret",
    "encrypt",
    "export_public_key",
    "export_public_key_bytes",
    "from_base64",
    "generate_counter_nonce",
    "generate_key_pair",
    "generate_nonce",
    "import_aes_gcm_key",
    "import_public_key",
    "import_public_key_bytes",
    "key_pair_from_private_scalar",
    "to_base64",
]
