"""The stream's errors: messages, attributes, pickling, and the retry classification."""

from __future__ import annotations

import pickle
import sys

import anyio
import pytest

from enclave_stream import EnclaveStreamError
from enclave_stream.reconnect import (
    ConnectorError,
    FatalConnectError,
    RetryableConnectError,
    SequenceGapError,
    StreamFailedError,
    is_retryable,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]


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


@pytest.mark.parametrize(
    "error",
    [
        StreamFailedError("gone", events_delivered=2, last_seq=1, cause=OSError("reset")),
        SequenceGapError(3, 4, events_delivered=3, last_seq=2),
        FatalConnectError("HTTP 403 Forbidden", status_code=403),
        RetryableConnectError("HTTP 503", status_code=503),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_survive_pickling(error: EnclaveStreamError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert {k: repr(v) for k, v in vars(copy).items()} == {
        k: repr(v) for k, v in vars(error).items()
    }


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OSError("network unreachable"), True),
        (anyio.BrokenResourceError(), True),
        (anyio.EndOfStream(), True),
        (anyio.IncompleteRead(), True),
        (RetryableConnectError("busy"), True),
        (FatalConnectError("denied"), False),
        (ConnectorError("unclassified"), False),
        (ValueError("bug"), False),
        (anyio.ClosedResourceError(), False),
        (ExceptionGroup("all transport", [OSError(), anyio.EndOfStream()]), True),
        (ExceptionGroup("one fatal", [OSError(), FatalConnectError("no")]), False),
    ],
)
def test_classification(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_retry_if_decides_only_for_other_errors() -> None:
    def always(error: Exception) -> bool:
        return True

    def never(error: Exception) -> bool:
        return False

    assert is_retryable(ValueError(), always)
    assert not is_retryable(FatalConnectError("no"), always)
    assert is_retryable(ConnectionResetError(), never)
