"""Protocol constants, string enums and identifiers of the EnclaveJS protocol.

Enum members are ``str`` subclasses whose values are the wire strings, so
``EventType.STDOUT == "stdout"`` and an enum member can be used wherever the
protocol expects the string.
"""

from __future__ import annotations

__all__ = [
    "NDJSON_MEDIA_TYPE",
    "RESUME_PARAM",
    "UPSTREAM_RESUME_PARAM",
    "SERVER_HELLO_HEADER",
    "SESSION_ID_HEADER",
    "CALL_ID_PREFIX",
    "DEFAULT_HEARTBEAT_INTERVAL_MS",
    "KEY_ID_PREFIX",
    "MAX_SAFE_INTEGER",
    "PROTOCOL_VERSION",
    "REF_ID_PREFIX",
    "SESSION_ID_PREFIX",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "EncryptionAlgorithm",
    "EncryptionMode",
    "ErrorDetailType",
    "EventType",
    "KeyDerivation",
    "LogLevel",
    "RuntimeChannelMessageType",
    "SessionState",
    "StrEnum",
    "SupportedCurve",
    "ToolProgressPhase",
    "generate_call_id",
    "generate_key_id",
    "generate_ref_id",
    "generate_session_id",
    "is_call_id",
    "is_key_id",
    "is_ref_id",
    "is_session_id",
]

import enum
import uuid
from typing import Final, TypeGuard

PROTOCOL_VERSION: Final = 2
"""The protocol version this library writes."""

SUPPORTED_PROTOCOL_VERSIONS: Final = (1, 2)
"""Versions a received message may carry."""

SESSION_ID_PREFIX: Final = "s_"
CALL_ID_PREFIX: Final = "c_"
REF_ID_PREFIX: Final = "ref_"
KEY_ID_PREFIX: Final = "k_"

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""JavaScript's ``Number.MAX_SAFE_INTEGER``: the largest integer a ``seq`` or count may be."""

# HTTP names both sides of a broker use.
NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"
"""The ``Content-Type`` of event streams, and the ``Accept`` a client sends."""

RESUME_PARAM: Final = "fromSeq"
"""The resume query parameter: ``?fromSeq=N`` serves the events with ``seq >= N``."""

UPSTREAM_RESUME_PARAM: Final = "from"
"""The resume parameter ``@enclave-vm/client`` sends (``?from=N``); a broker reads it as
``fromSeq`` (which wins when both are given)."""

SESSION_ID_HEADER: Final = "X-Session-ID"
"""The response header of ``POST /sessions`` naming the new session."""

SERVER_HELLO_HEADER: Final = "X-Enclave-Server-Hello"
"""Response header of ``POST /sessions`` carrying the ServerHello (compact JSON) of an
encrypted session (our convention: upstream's broker has no encryption)."""

DEFAULT_HEARTBEAT_INTERVAL_MS: Final = 15_000
"""The default heartbeat interval of a session (``DEFAULT_SESSION_LIMITS``)."""


class StrEnum(str, enum.Enum):
    """A string enum whose ``str()`` is its wire value (``enum.StrEnum`` needs 3.11)."""

    def __str__(self) -> str:
        return str(self.value)


class EventType(StrEnum):
    """The ``type`` discriminator of stream events (and ``enc`` for envelopes)."""

    SESSION_INIT = "session_init"
    STDOUT = "stdout"
    LOG = "log"
    TOOL_CALL = "tool_call"
    TOOL_RESULT_APPLIED = "tool_result_applied"
    FINAL = "final"
    HEARTBEAT = "heartbeat"
    ERROR = "error"
    PARTIAL_RESULT = "partial_result"
    TOOL_PROGRESS = "tool_progress"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CATALOG_CHANGED = "catalog_changed"
    ENCRYPTED = "enc"


class RuntimeChannelMessageType(StrEnum):
    """The ``type`` of messages sent to the runtime (they carry no ``seq``)."""

    TOOL_RESULT_SUBMIT = "tool_result_submit"
    CANCEL = "cancel"


class LogLevel(StrEnum):
    """Levels of a ``log`` event."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class SessionState(StrEnum):
    """Lifecycle states of a session in the runtime."""

    STARTING = "starting"
    RUNNING = "running"
    WAITING_FOR_TOOL = "waiting_for_tool"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ToolProgressPhase(StrEnum):
    """The ``phase`` of a ``tool_progress`` event."""

    CONNECTING = "connecting"
    SENDING = "sending"
    RECEIVING = "receiving"
    PROCESSING = "processing"


class ErrorDetailType(StrEnum):
    """The ``type`` of an entry of ``ErrorPayload.details``."""

    RETRY_INFO = "retry_info"
    UPSTREAM_INFO = "upstream_info"
    VALIDATION_INFO = "validation_info"
    QUOTA_INFO = "quota_info"


class EncryptionMode(StrEnum):
    """Whether a session asks for end-to-end encryption."""

    DISABLED = "disabled"
    OPTIONAL = "optional"
    REQUIRED = "required"


class SupportedCurve(StrEnum):
    """Elliptic curves of the handshake."""

    P256 = "P-256"


class EncryptionAlgorithm(StrEnum):
    """Envelope ciphers."""

    AES_GCM_256 = "AES-GCM-256"


class KeyDerivation(StrEnum):
    """Key derivation functions of the handshake."""

    HKDF_SHA256 = "HKDF-SHA-256"


def _has_prefix(value: object, prefix: str) -> TypeGuard[str]:
    # The schema's rule (prefix plus at least one more character), which is
    # what a receiver enforces: a bare prefix is not an id.
    return isinstance(value, str) and len(value) > len(prefix) and value.startswith(prefix)


def generate_session_id() -> str:
    """A new random session id, ``s_<uuid4>``."""
    return f"{SESSION_ID_PREFIX}{uuid.uuid4()}"


def generate_call_id() -> str:
    """A new random tool call id, ``c_<uuid4>``."""
    return f"{CALL_ID_PREFIX}{uuid.uuid4()}"


def generate_ref_id() -> str:
    """A new random reference id, ``ref_<uuid4>``."""
    return f"{REF_ID_PREFIX}{uuid.uuid4()}"


def generate_key_id() -> str:
    """A new random encryption key id, ``k_<uuid4>``."""
    return f"{KEY_ID_PREFIX}{uuid.uuid4()}"


def is_session_id(value: object) -> TypeGuard[str]:
    """True if ``value`` is a string the protocol accepts as a session id.

    >>> is_session_id("s_1"), is_session_id("s_"), is_session_id("x_1")
    (True, False, False)
    """
    return _has_prefix(value, SESSION_ID_PREFIX)


def is_call_id(value: object) -> TypeGuard[str]:
    """True if ``value`` is a string the protocol accepts as a tool call id (``c_…``)."""
    return _has_prefix(value, CALL_ID_PREFIX)


def is_ref_id(value: object) -> TypeGuard[str]:
    """True if ``value`` is a string the protocol accepts as a reference id (``ref_…``)."""
    return _has_prefix(value, REF_ID_PREFIX)


def is_key_id(value: object) -> TypeGuard[str]:
    """True if ``value`` looks like a generated key id (``k_…``)."""
    return _has_prefix(value, KEY_ID_PREFIX)
