"""aesgcm.json: AES-GCM, counter nonces and base64 against the reference's recorded results."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from enclave_stream.crypto import (
    AesGcmError,
    HkdfError,
    decrypt,
    encrypt,
    from_base64,
    generate_counter_nonce,
    import_aes_gcm_key,
    to_base64,
)
from enclave_stream.errors import Base64DecodeError, EncryptionErrorCode
from tests.vectors import case_id, cases, load_vectors

FILE = "aesgcm.json"

# Counters the reference accepts only by truncating to 32 bits, so that the
# nonce repeats an earlier one (2**32 -> counter 0, 2**32 + 5 -> counter 5).
# We refuse them with ENCRYPTION_NONCE_REUSE (a deliberate deviation).
WRAPPING_COUNTER_CASES = frozenset({"ctr_4294967296", "ctr_4294967301"})


def _aad(case: dict[str, Any]) -> bytes | None:
    aad_hex = case["aad_hex"]
    return None if aad_hex is None else bytes.fromhex(aad_hex)


@pytest.mark.parametrize("case", cases(FILE, "encrypt"), ids=case_id)
def test_encrypt(case: dict[str, Any]) -> None:
    key_bytes = bytes.fromhex(case["key_hex"])
    args = (bytes.fromhex(case["plaintext_hex"]), bytes.fromhex(case["nonce_hex"]), _aad(case))
    # Both key forms: an imported key object and raw bytes.
    for key in (import_aes_gcm_key(key_bytes), key_bytes):
        if case["accept"]:
            assert encrypt(key, *args).hex() == case["ciphertext_hex"]
        else:
            with pytest.raises(AesGcmError) as info:
                encrypt(key, *args)
            assert info.value.code == case["error"]["code"]
            assert info.value.message == case["error"]["message"]


@pytest.mark.parametrize("case", cases(FILE, "decrypt"), ids=case_id)
def test_decrypt(case: dict[str, Any]) -> None:
    key = import_aes_gcm_key(bytes.fromhex(case["key_hex"]))
    args = (bytes.fromhex(case["ciphertext_hex"]), bytes.fromhex(case["nonce_hex"]), _aad(case))
    if case["accept"]:
        assert decrypt(key, *args).hex() == case["plaintext_hex"]
    else:
        with pytest.raises(AesGcmError) as info:
            decrypt(key, *args)
        assert info.value.code == case["error"]["code"]
        assert info.value.message.startswith(case["error"]["message"].split(":")[0])


@pytest.mark.parametrize("case", cases(FILE, "counter_nonce"), ids=case_id)
def test_counter_nonce(case: dict[str, Any]) -> None:
    prefix = bytes.fromhex(case["prefix_hex"])
    counter = int(case["counter"])
    if case["id"] in WRAPPING_COUNTER_CASES:
        # The reference wraps here; we refuse to repeat a nonce.
        with pytest.raises(AesGcmError) as info:
            generate_counter_nonce(prefix, counter)
        assert info.value.code is EncryptionErrorCode.NONCE_REUSE
        assert str(counter) in info.value.message
    elif case.get("accept", True):
        assert generate_counter_nonce(prefix, counter).hex() == case["nonce_hex"]
    else:
        with pytest.raises(AesGcmError) as info:
            generate_counter_nonce(prefix, counter)
        assert info.value.code == case["error"]["code"]


def test_wrapping_counter_list_is_exact() -> None:
    """The deviation list above names exactly the vectors whose counter leaves uint32."""
    wrapping = {c["id"] for c in cases(FILE, "counter_nonce") if not 0 <= int(c["counter"]) < 2**32}
    assert wrapping == WRAPPING_COUNTER_CASES
    # ... and the reference really did wrap them to an earlier nonce.
    by_id = {c["id"]: c for c in cases(FILE, "counter_nonce")}
    for case_name in WRAPPING_COUNTER_CASES:
        low = int(by_id[case_name]["counter"]) % 2**32
        assert by_id[case_name]["nonce_hex"].endswith(f"{low:08x}")


@pytest.mark.parametrize("case", cases(FILE, "to_base64"), ids=case_id)
def test_to_base64(case: dict[str, Any]) -> None:
    assert to_base64(bytes.fromhex(case["input_hex"])) == case["output"]


@pytest.mark.parametrize("case", cases(FILE, "from_base64"), ids=case_id)
def test_from_base64(case: dict[str, Any]) -> None:
    if case["accept"]:
        assert from_base64(case["input"]).hex() == case["output_hex"]
    else:
        with pytest.raises(Base64DecodeError):
            from_base64(case["input"])


def test_to_base64_has_no_size_limit() -> None:
    """The reference overflows its stack past ~120 KB (a recorded finding); we must not."""
    (finding,) = [c for c in load_vectors(FILE)["cases"] if c["kind"] == "finding"]
    data = bytes(range(256)) * (finding["first_failing_bytes"] // 256 + 2)
    assert len(data) > finding["first_failing_bytes"]
    assert to_base64(data) == base64.b64encode(data).decode()


def test_import_rejects_non_aes_key_length() -> None:
    """The reference's importAesGcmKey reports bad key lengths as a derivation failure."""
    with pytest.raises(HkdfError) as info:
        import_aes_gcm_key(bytes(20))
    assert info.value.code is EncryptionErrorCode.KEY_DERIVATION_FAILED
    assert "20" in info.value.message
