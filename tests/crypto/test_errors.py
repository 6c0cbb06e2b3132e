"""The crypto error hierarchy and the protocol's error codes."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from enclave_stream.crypto import (
    AesGcmError,
    Base64DecodeError,
    EcdhError,
    EncryptionError,
    EncryptionErrorCode,
    HkdfError,
)
from enclave_stream.errors import EnclaveStreamError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_codes_are_exactly_the_protocol_codes() -> None:
    protocol = REPO_ROOT / "docs" / "protocol.md"
    documented = set(re.findall(r"`(ENCRYPTION_[A-Z_]+)`", protocol.read_text(encoding="utf-8")))
    assert len(documented) == 8
    assert {code.value for code in EncryptionErrorCode} == documented


def test_codes_are_their_wire_strings() -> None:
    code = EncryptionErrorCode.KEY_EXPIRED
    assert code == "ENCRYPTION_KEY_EXPIRED"
    assert str(code) == "ENCRYPTION_KEY_EXPIRED"
    assert f"{code}" == "ENCRYPTION_KEY_EXPIRED"
    assert EncryptionErrorCode("ENCRYPTION_NONCE_REUSE") is EncryptionErrorCode.NONCE_REUSE


@pytest.mark.parametrize("cls", [EcdhError, HkdfError, AesGcmError])
def test_hierarchy_and_attributes(cls: type[EncryptionError]) -> None:
    error = cls("what went wrong", EncryptionErrorCode.HANDSHAKE_FAILED)
    assert isinstance(error, EncryptionError)
    assert isinstance(error, EnclaveStreamError)
    assert error.code is EncryptionErrorCode.HANDSHAKE_FAILED
    assert error.message == str(error) == "what went wrong"


@pytest.mark.parametrize("cls", [EcdhError, HkdfError, AesGcmError])
def test_errors_survive_pickling(cls: type[EncryptionError]) -> None:
    error = cls("m", EncryptionErrorCode.DECRYPTION_FAILED)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert (copy.message, copy.code) == ("m", EncryptionErrorCode.DECRYPTION_FAILED)


def test_base64_error() -> None:
    error = Base64DecodeError("bad char")
    assert isinstance(error, ValueError)
    assert isinstance(error, EnclaveStreamError)
    assert not isinstance(error, EncryptionError)
    assert str(error) == "invalid base64: bad char"
    assert pickle.loads(pickle.dumps(error)).reason == "bad char"
