"""ecdh.json: P-256 key pairs, shared secrets and public-key import against the reference.

The hello-message kinds (client_hello, server_hello, process_*) belong to the
handshake layer and are tested with it.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from enclave_stream.crypto import (
    EcdhError,
    derive_shared_secret,
    export_public_key,
    from_base64,
    import_public_key,
)
from enclave_stream.crypto.ecdh import key_pair_from_private_scalar
from enclave_stream.errors import EncryptionErrorCode
from tests.vectors import case_id, cases

FILE = "ecdh.json"

# Deliberate deviation: the reference (Node's WebCrypto) imports compressed
# (0x02/0x03) and hybrid (0x06/0x07) SEC1 points. The protocol only sends
# 65-byte uncompressed points, so we refuse every other encoding with
# ENCRYPTION_INVALID_PUBLIC_KEY: one encoding per key, no decompression code.
REFUSED_BY_DESIGN = frozenset(
    {
        "import_compressed",
        "import_compressed_flipped_parity",
        "import_hybrid",
        "ss_v-client_x_v-server_compressed_peer",
    }
)


def _private_key(d_hex: str) -> Any:
    return key_pair_from_private_scalar(bytes.fromhex(d_hex)).private_key


@pytest.mark.parametrize("case", cases(FILE, "keypair"), ids=case_id)
def test_keypair(case: dict[str, Any]) -> None:
    pair = key_pair_from_private_scalar(bytes.fromhex(case["d_hex"]))
    exported = export_public_key(pair.public_key)
    assert exported.public_key_b64 == case["public_raw_b64"]
    assert exported.curve == case["curve"]
    # The d_b64url form names the same scalar.
    d = base64.urlsafe_b64decode(case["d_b64url"] + "=" * (-len(case["d_b64url"]) % 4))
    assert export_public_key(key_pair_from_private_scalar(d).public_key) == exported


@pytest.mark.parametrize("case", cases(FILE, "shared_secret"), ids=case_id)
def test_shared_secret(case: dict[str, Any]) -> None:
    private_key = _private_key(case["private_d_hex"])
    if case["id"] in REFUSED_BY_DESIGN:
        with pytest.raises(EcdhError) as info:
            import_public_key(case["peer_public_b64"])
        assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY
        return
    peer = import_public_key(case["peer_public_b64"])
    assert derive_shared_secret(private_key, peer).hex() == case["shared_secret_hex"]


@pytest.mark.parametrize("case", cases(FILE, "import_public_key"), ids=case_id)
def test_import_public_key(case: dict[str, Any]) -> None:
    if case["id"] in REFUSED_BY_DESIGN:
        assert case["accept"] is True  # the reference took it; we refuse on purpose
        with pytest.raises(EcdhError) as info:
            import_public_key(case["input"])
        assert info.value.code is EncryptionErrorCode.INVALID_PUBLIC_KEY
        assert "uncompressed" in info.value.message
    elif case["accept"]:
        key = import_public_key(case["input"])
        assert export_public_key(key).public_key_b64 == case["reexport_b64"]
    else:
        with pytest.raises(EcdhError) as info:
            import_public_key(case["input"])
        assert info.value.code == case["error"]["code"]
        assert info.value.message.startswith("Failed to import public key: ")


def test_refused_list_is_exactly_the_non_uncompressed_accepts() -> None:
    """The deviation list names every case the reference accepted with a non-0x04 point."""
    accepted_other: set[str] = set()
    for case in cases(FILE, "import_public_key") + cases(FILE, "shared_secret"):
        text = case["input"] if "input" in case else case["peer_public_b64"]
        if case.get("accept", True) and from_base64(text)[0] != 0x04:
            accepted_other.add(case["id"])
    assert accepted_other == REFUSED_BY_DESIGN
