"""End-to-end encryption of the EnclaveJS protocol (docs/security.md).

Primitives: :mod:`.encoding` (base64, UTF-8), :mod:`.ecdh`, :mod:`.aesgcm`
(with HKDF), :mod:`.context`; on them the one envelope path
(:mod:`.envelope`), the handshake (:mod:`.handshake`) that yields an
:class:`EncryptedSession` (:mod:`.session`), server signatures
(:mod:`.signing`) and anyio adapters (:mod:`.streams`). All but the adapters
are synchronous. Exported here: the TypeScript package's crypto names and
what handshakes and sessions need; constants and lower-level steps stay in
their modules.
"""

from __future__ import annotations

from ..errors import AesGcmError, EcdhError, HkdfError
from .aesgcm import (
    AesGcmKey,
    SessionCryptoKeys,
    SessionKeys,
    decrypt,
    derive_key,
    derive_session_crypto_keys,
    derive_session_keys,
    encrypt,
    generate_counter_nonce,
    generate_nonce,
    import_aes_gcm_key,
)
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
