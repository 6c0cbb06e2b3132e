"""The exception tree: codes, attributes, pickling, and the drawn picture."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from enclave_stream.crypto import AesGcmError, EcdhError, HkdfError
from enclave_stream.errors import (
    Base64DecodeError,
    EnclaveStreamError,
    EncryptionError,
    EncryptionErrorCode,
    FatalConnectError,
    SequenceGapError,
    StreamFailedError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def _instances() -> list[EnclaveStreamError]:
    from enclave_stream import errors as e

    return [
        e.EventValidationError("Expected `int`", "$.seq"),
        e.NdjsonParseError(e.LineError(line=3, error="JSON parse error: x", content="x")),
        e.Base64DecodeError("bad char"),
        e.EnvelopeError("replayed", e.EnvelopeErrorReason.REPLAY, EncryptionErrorCode.NONCE_REUSE),
        e.HandshakeError("no", EncryptionErrorCode.HANDSHAKE_FAILED),
        e.ReconnectionConfigError("max_retries must be >= 0"),
        e.RetryableConnectError("HTTP 503", status_code=503),
        e.FatalConnectError("HTTP 401", status_code=401),
        e.SessionStartLostError("lost", session_id="s_1", cancelled=True),
        e.EncryptionNotAcceptedError("plaintext", session_id="s_1", cancelled=False),
        e.StreamFailedError("gave up", events_delivered=4, last_seq=4, cause=OSError("x")),
        e.SequenceGapError(5, 9, events_delivered=4, last_seq=4),
        e.SessionMismatchError("s_a", "s_b", 7, events_delivered=6, last_seq=6),
        e.LineTooLongError(12, 1024, events_delivered=2, last_seq=2),
        e.ReplayUnavailableError(3, first_available_seq=120),
        e.StreamFinishedError("s_1"),
        e.LogFullError("s_1", held_bytes=900, max_bytes=1000, first_unsent_seq=4),
        e.StoreUnavailableError("Redis is unreachable", retryable=False),
        e.BrokerError(404, "NOT_FOUND", "Session s_1 not found", details={"id": "s_1"}),
    ]


@pytest.mark.parametrize("error", _instances(), ids=lambda error: type(error).__name__)
def test_every_error_pickles_with_its_attributes(error: EnclaveStreamError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert {k: repr(v) for k, v in vars(copy).items()} == {
        k: repr(v) for k, v in vars(error).items()
    }


def test_the_docstring_draws_every_exception_class_under_its_parent() -> None:
    from enclave_stream import errors

    classes = {
        name: cls
        for name in errors.__all__
        if isinstance(cls := getattr(errors, name), type) and issubclass(cls, BaseException)
    }
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column, name) of the open branches
    for line in (errors.__doc__ or "").splitlines():
        match = re.search(r"(\w+Error)\b", line)
        if match is None or not ("─ " in line or line.strip() == "EnclaveStreamError"):
            continue
        column = match.start()
        while stack and stack[-1][0] >= column:
            stack.pop()
        drawn[match.group(1)] = stack[-1][1] if stack else None
        stack.append((column, match.group(1)))
    assert set(drawn) == set(classes)
    for name, parent in drawn.items():
        bases = [base.__name__ for base in classes[name].__bases__]
        assert (parent in bases) if parent else bases == ["Exception"], name


def test_stream_failed_error_says_why_and_how_far() -> None:
    cause = FatalConnectError("HTTP 401 Unauthorized", status_code=401)
    error = StreamFailedError("fatal error", events_delivered=7, last_seq=6, cause=cause)
    assert str(error) == "fatal error (7 events delivered, last seq 6)"
    assert (error.reason, error.events_delivered, error.last_seq) == ("fatal error", 7, 6)
    assert error.cause is cause
    assert error.__cause__ is cause
    assert isinstance(error, EnclaveStreamError)
    assert str(StreamFailedError("x")) == "x (0 events delivered, last seq none)"


def test_sequence_gap_error_is_a_stream_failure() -> None:
    error = SequenceGapError(3, 9, events_delivered=3, last_seq=2)
    assert isinstance(error, StreamFailedError)
    assert (error.missing_start, error.missing_end) == (3, 9)
    assert str(error) == (
        "events 3..9 are missing and the replay cannot provide them "
        "(3 events delivered, last seq 2)"
    )
