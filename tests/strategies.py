"""Hypothesis strategies for valid protocol events (all 12 types and ``enc`` envelopes).

Strings lean on the characters that break naive implementations: non-ASCII,
emoji (surrogate pairs in UTF-16), C0 controls, quotes and backslashes, ``%``
(the encoder builds ``%``-templates), and the characters other line splitters
treat as line breaks (U+2028, U+2029, U+0085, ``\\x0b``, ``\\x0c``, ``\\r``).
Free-form values (``args``, ``result``, ``data``) are nested JSON values with
floats and ``None``. Integers stay within JavaScript's safe range: beyond it
the reference loses precision, so no round trip is expected there.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from enclave_stream import (
    CatalogChangedEvent,
    DeadlineExceededEvent,
    EncryptedEnvelope,
    ErrorEvent,
    EventType,
    FinalEvent,
    HeartbeatEvent,
    LogEvent,
    LogLevel,
    ParsedEvent,
    PartialResultEvent,
    SessionInitEvent,
    StdoutEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultAppliedEvent,
)
from enclave_stream.events import (
    CatalogChangedPayload,
    DeadlineExceededPayload,
    EncryptedEnvelopePayload,
    EncryptionConfig,
    ErrorEventPayload,
    ErrorInfo,
    ErrorPayload,
    FinalPayload,
    HeartbeatPayload,
    LogPayload,
    PartialResultPayload,
    QuotaInfoDetail,
    RetryInfoDetail,
    SessionInitPayload,
    SessionStats,
    StdoutPayload,
    ToolCallPayload,
    ToolProgressPayload,
    ToolResultAppliedPayload,
    UpstreamInfoDetail,
    ValidationInfoDetail,
)
from enclave_stream.protocol import MAX_SAFE_INTEGER, ToolProgressPhase

__all__ = [
    "EVENT_STRATEGIES",
    "SAMPLE_EVENTS",
    "any_event",
    "call_ids",
    "datetimes",
    "json_values",
    "session_ids",
    "texts",
]

# Characters worth hitting often; st.characters() adds the rest of Unicode.
SPECIAL_CHARS = (
    "\u2028",
    "\u2029",
    "\u0085",
    "\x00",
    "\x01",
    "\x1f",
    "\x7f",
    "\n",
    "\r",
    "\t",
    "\x0b",
    "\x0c",
    '"',
    "\\",
    "%",
    "/",
    "\ufeff",
    "\xa0",
    "\u3000",
    "é",
    "ß",
    "東",
    "λ",
    "😀",
    "\u200d",
    "\U0010ffff",
)

# No surrogates here: two of them in a row would be one character to JavaScript,
# so a Python string holding a pair as two code points cannot round-trip.
# Lone surrogates have their own test.
_chars = st.one_of(st.sampled_from(SPECIAL_CHARS), st.characters(exclude_categories=["Cs"]))


def texts(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """Strings mixing tricky characters with arbitrary code points (no lone surrogates)."""
    return st.text(_chars, min_size=min_size, max_size=max_size)


session_ids = texts(min_size=1).map(lambda s: "s_" + s)
call_ids = texts(min_size=1).map(lambda s: "c_" + s)
safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
non_negative_ints = st.integers(min_value=0, max_value=MAX_SAFE_INTEGER)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
non_negative_numbers = st.one_of(
    non_negative_ints, st.floats(min_value=0, allow_nan=False, allow_infinity=False)
)
positive_numbers = st.one_of(
    st.integers(min_value=1, max_value=MAX_SAFE_INTEGER),
    st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), safe_ints, finite_floats, texts()),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(texts(max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)
"""Any JSON value, as the decoder returns it (dict/list/str/int/float/bool/None)."""


def _format_datetime(moment: dt.datetime, seconds: bool, fraction: str) -> str:
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}"
    )
    if seconds:
        text += f":{moment.second:02d}"
        if fraction:
            text += "." + fraction
    return text + "Z"


datetimes = st.builds(
    _format_datetime,
    st.datetimes(min_value=dt.datetime(1000, 1, 1)),
    st.booleans(),
    st.text("0123456789", max_size=12),
)
"""ISO-8601 UTC datetimes as the reference accepts them (``Z``; seconds, fraction optional)."""


def _unset_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A keyword argument that is either left out or drawn from ``strategy``."""
    return st.one_of(st.just(_ABSENT), strategy)


_ABSENT = object()


def _kwargs(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments where optional fields (wrapped in ``_unset_or``) may be absent."""
    return st.fixed_dictionaries(fields).map(
        lambda d: {k: v for k, v in d.items() if v is not _ABSENT}
    )


error_details = st.one_of(
    st.builds(RetryInfoDetail, retry_delay_ms=non_negative_numbers),
    st.builds(UpstreamInfoDetail, status_code=safe_ints, url=texts()),
    st.builds(ValidationInfoDetail, field=texts(), reason=texts()),
    st.builds(QuotaInfoDetail, limit=non_negative_numbers, used=non_negative_numbers),
)

error_payloads = _kwargs(
    code=texts(),
    message=texts(),
    path=_unset_or(st.lists(texts(), max_size=3)),
    details=_unset_or(st.lists(error_details, max_size=3)),
).map(lambda kw: ErrorPayload(**kw))

error_infos = _kwargs(
    message=texts(), code=_unset_or(texts()), stack=_unset_or(texts(max_size=40))
).map(lambda kw: ErrorInfo(**kw))

_versions = st.sampled_from([None, 1, 2])


def _event(cls: type[Any], payloads: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def build(version: int | None, session_id: str, seq: int, payload: Any) -> Any:
        if version is None:  # the default, 2
            return cls(session_id=session_id, seq=seq, payload=payload)
        return cls(session_id=session_id, seq=seq, payload=payload, protocol_version=version)

    return st.builds(build, _versions, session_ids, non_negative_ints, payloads)


_payloads: dict[type[Any], st.SearchStrategy[Any]] = {
    SessionInitEvent: _kwargs(
        cancel_url=texts(max_size=30),
        expires_at=datetimes,
        encryption=_kwargs(enabled=st.booleans(), key_id=_unset_or(texts())).map(
            lambda kw: EncryptionConfig(**kw)
        ),
        replay_url=_unset_or(texts(max_size=30)),
    ).map(lambda kw: SessionInitPayload(**kw)),
    StdoutEvent: st.builds(StdoutPayload, chunk=texts(max_size=60)),
    LogEvent: _kwargs(
        level=st.sampled_from(list(LogLevel)),
        message=texts(max_size=40),
        data=_unset_or(st.dictionaries(texts(max_size=6), json_values, max_size=4)),
    ).map(lambda kw: LogPayload(**kw)),
    ToolCallEvent: _kwargs(
        call_id=call_ids, tool_name=texts(min_size=1), args=_unset_or(json_values)
    ).map(lambda kw: ToolCallPayload(**kw)),
    ToolResultAppliedEvent: st.builds(ToolResultAppliedPayload, call_id=call_ids),
    FinalEvent: _kwargs(
        ok=st.booleans(),
        result=_unset_or(json_values),
        error=_unset_or(error_infos),
        errors=_unset_or(st.lists(error_payloads, max_size=2)),
        stats=_unset_or(
            st.builds(
                SessionStats,
                duration_ms=non_negative_numbers,
                tool_call_count=non_negative_ints,
                stdout_bytes=non_negative_ints,
            )
        ),
    ).map(lambda kw: FinalPayload(**kw)),
    HeartbeatEvent: st.builds(HeartbeatPayload, ts=datetimes),
    ErrorEvent: _kwargs(
        message=texts(), code=_unset_or(texts()), recoverable=_unset_or(st.booleans())
    ).map(lambda kw: ErrorEventPayload(**kw)),
    PartialResultEvent: _kwargs(
        path=st.lists(texts(), max_size=3),
        data=_unset_or(json_values),
        error=_unset_or(error_payloads),
        has_next=st.booleans(),
    ).map(lambda kw: PartialResultPayload(**kw)),
    ToolProgressEvent: _kwargs(
        call_id=call_ids,
        phase=st.sampled_from(list(ToolProgressPhase)),
        bytes_received=_unset_or(non_negative_ints),
        total_bytes=_unset_or(non_negative_ints),
        elapsed_ms=non_negative_numbers,
    ).map(lambda kw: ToolProgressPayload(**kw)),
    DeadlineExceededEvent: st.builds(
        DeadlineExceededPayload, elapsed_ms=non_negative_numbers, budget_ms=positive_numbers
    ),
    CatalogChangedEvent: st.builds(
        CatalogChangedPayload,
        version=texts(min_size=1),
        added_actions=st.lists(texts(), max_size=3),
        removed_actions=st.lists(texts(), max_size=3),
    ),
    EncryptedEnvelope: _kwargs(
        kid=texts(min_size=1),
        nonce_b64=texts(min_size=1),
        ciphertext_b64=texts(min_size=1, max_size=40),
        tag_b64=_unset_or(texts()),
    ).map(lambda kw: EncryptedEnvelopePayload(**kw)),
}

EVENT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    cls: _event(cls, payloads) for cls, payloads in _payloads.items()
}
"""One strategy per event class: the 12 plaintext types and ``EncryptedEnvelope``."""

any_event: st.SearchStrategy[ParsedEvent] = st.one_of(*EVENT_STRATEGIES.values())
"""Any valid event of any type."""


_SID = "s_1"

# One event of every type (most optional fields set), keyed by its type.
SAMPLE_EVENTS: dict[EventType, ParsedEvent] = {
    EventType.SESSION_INIT: SessionInitEvent(
        session_id=_SID,
        seq=0,
        payload=SessionInitPayload(
            cancel_url="https://x/cancel",
            expires_at="2025-03-01T12:00:00Z",
            encryption=EncryptionConfig(enabled=True, key_id="k_1"),
            replay_url="https://x/replay",
        ),
    ),
    EventType.STDOUT: StdoutEvent(session_id=_SID, seq=1, payload=StdoutPayload(chunk="hi")),
    EventType.LOG: LogEvent(
        session_id=_SID,
        seq=2,
        payload=LogPayload(level=LogLevel.WARN, message="m", data={"k": [1, None]}),
    ),
    EventType.TOOL_CALL: ToolCallEvent(
        session_id=_SID,
        seq=3,
        payload=ToolCallPayload(call_id="c_1", tool_name="web.search", args={"q": "x"}),
    ),
    EventType.TOOL_RESULT_APPLIED: ToolResultAppliedEvent(
        session_id=_SID, seq=4, payload=ToolResultAppliedPayload(call_id="c_1")
    ),
    EventType.FINAL: FinalEvent(session_id=_SID, seq=5, payload=FinalPayload(ok=True, result=42)),
    EventType.HEARTBEAT: HeartbeatEvent(
        session_id=_SID, seq=6, payload=HeartbeatPayload(ts="2025-03-01T12:00:00.123Z")
    ),
    EventType.ERROR: ErrorEvent(
        session_id=_SID,
        seq=7,
        payload=ErrorEventPayload(message="boom", code="E1", recoverable=True),
    ),
    EventType.PARTIAL_RESULT: PartialResultEvent(
        session_id=_SID,
        seq=8,
        payload=PartialResultPayload(path=["a", "b"], data=[1.5], has_next=True),
    ),
    EventType.TOOL_PROGRESS: ToolProgressEvent(
        session_id=_SID,
        seq=9,
        payload=ToolProgressPayload(
            call_id="c_1",
            phase=ToolProgressPhase.RECEIVING,
            bytes_received=10,
            total_bytes=20,
            elapsed_ms=3,
        ),
    ),
    EventType.DEADLINE_EXCEEDED: DeadlineExceededEvent(
        session_id=_SID, seq=10, payload=DeadlineExceededPayload(elapsed_ms=1500, budget_ms=1000)
    ),
    EventType.CATALOG_CHANGED: CatalogChangedEvent(
        session_id=_SID,
        seq=11,
        payload=CatalogChangedPayload(version="v2", added_actions=["a"], removed_actions=[]),
    ),
    EventType.ENCRYPTED: EncryptedEnvelope(
        session_id=_SID,
        seq=12,
        payload=EncryptedEnvelopePayload(kid="k_1", nonce_b64="bm9uY2U=", ciphertext_b64="Y3Q="),
    ),
}
