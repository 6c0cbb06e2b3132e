"""The typed protocol model: defaults, discriminators, names, ids, enums."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enclave_stream import (
    PROTOCOL_VERSION,
    EnclaveStreamError,
    EncryptedEnvelope,
    EncryptionMode,
    EventType,
    EventValidationError,
    FinalEvent,
    LogEvent,
    LogLevel,
    ParsedEvent,
    SessionState,
    StdoutEvent,
    ToolCallEvent,
    generate_session_id,
    is_session_id,
    parse_line,
    serialize_event,
)
from enclave_stream.events import (
    FinalPayload,
    HeartbeatPayload,
    LogPayload,
    QuotaInfoDetail,
    RetryInfoDetail,
    StdoutPayload,
    ToolCallPayload,
    ToolResultAppliedPayload,
    UpstreamInfoDetail,
    ValidationInfoDetail,
)
from enclave_stream.protocol import (
    CALL_ID_PREFIX,
    KEY_ID_PREFIX,
    REF_ID_PREFIX,
    SESSION_ID_PREFIX,
    SUPPORTED_PROTOCOL_VERSIONS,
    EncryptionAlgorithm,
    ErrorDetailType,
    KeyDerivation,
    RuntimeChannelMessageType,
    SupportedCurve,
    ToolProgressPhase,
    generate_call_id,
    generate_key_id,
    generate_ref_id,
    is_call_id,
    is_key_id,
    is_ref_id,
)
from tests.strategies import SAMPLE_EVENTS

SID = "s_1"

SAMPLES = SAMPLE_EVENTS


def _wire(event: ParsedEvent) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(serialize_event(event))
    return value


# --- defaults -------------------------------------------------------------------


def test_protocol_version_defaults_to_2_so_a_minimal_event_is_complete() -> None:
    event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(chunk="hi"))
    assert event.protocol_version == 2 == PROTOCOL_VERSION
    assert serialize_event(event) == (
        '{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hi"}}'
    )


def test_explicit_protocol_version_1_is_kept() -> None:
    event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("x"), protocol_version=1)
    assert event.protocol_version == 1
    assert _wire(event)["protocolVersion"] == 1
    assert SUPPORTED_PROTOCOL_VERSIONS == (1, 2)


def test_missing_protocol_version_on_the_wire_is_rejected() -> None:
    # Construction fills the default in, but a received message must carry it.
    line = '{"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hi"}}'
    result = parse_line(line)
    assert result.success is False
    assert result.kind == "validation"
    assert result.path == "$"
    assert "protocolVersion" in result.error


@pytest.mark.parametrize(
    ("version", "accepted"),
    [("1", True), ("2", True), ("2.0", True), ('"2"', False), ("3", False), ("0", False)],
)
def test_protocol_version_on_the_wire(version: str, accepted: bool) -> None:
    line = (
        f'{{"protocolVersion":{version},"sessionId":"s_1","seq":1,'
        '"type":"stdout","payload":{"chunk":"hi"}}'
    )
    result = parse_line(line)
    assert result.success is accepted
    if accepted:
        assert result.data.protocol_version == int(float(version))  # type: ignore[union-attr]
        assert _wire(result.data)["protocolVersion"] == int(float(version))  # type: ignore[union-attr]
    else:
        assert result.path == "$.protocolVersion"  # type: ignore[union-attr]


def test_optional_fields_default_to_unset_and_are_absent_on_the_wire() -> None:
    payload = ToolCallPayload(call_id="c_1", tool_name="t")
    assert payload.args is msgspec.UNSET
    event = ToolCallEvent(session_id=SID, seq=1, payload=payload)
    assert _wire(event)["payload"] == {"callId": "c_1", "toolName": "t"}
    # None is JSON null, not "absent"
    with_null = ToolCallEvent(session_id=SID, seq=1, payload=ToolCallPayload("c_1", "t", None))
    assert _wire(with_null)["payload"] == {"callId": "c_1", "toolName": "t", "args": None}


def test_cancel_payload_defaults_and_limits_defaults() -> None:
    from enclave_stream.events import DEFAULT_SESSION_LIMITS, CancelMessage, CancelPayload

    assert CancelMessage(session_id=SID).payload == CancelPayload()
    assert DEFAULT_SESSION_LIMITS.heartbeat_interval_ms == 15_000
    assert DEFAULT_SESSION_LIMITS.max_tool_calls == 50


def test_events_are_frozen() -> None:
    event = SAMPLES[EventType.STDOUT]
    with pytest.raises(AttributeError):
        event.seq = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.payload.chunk = "x"  # type: ignore[misc, union-attr]


# --- discriminator --------------------------------------------------------------


def test_event_type_is_the_wire_string() -> None:
    event = StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload(chunk="hi"))
    assert event.type == "stdout"  # type: ignore[comparison-overlap]
    assert event.type is EventType.STDOUT
    assert EventType.STDOUT == "stdout"  # type: ignore[comparison-overlap]
    assert isinstance(EventType.STDOUT, str)
    assert str(EventType.STDOUT) == "stdout"
    assert f"{EventType.STDOUT}" == "stdout"
    assert EventType("stdout") is EventType.STDOUT


@pytest.mark.parametrize("event_type", list(EventType), ids=str)
def test_every_type_has_its_class_and_wire_tag(event_type: EventType) -> None:
    event = SAMPLES[event_type]
    assert event.type == event_type.value
    assert type(event).type is event_type  # a class attribute, not a field
    assert "type" not in msgspec.structs.asdict(event)
    wire = _wire(event)
    assert wire["type"] == event_type.value
    assert list(wire) == ["protocolVersion", "sessionId", "seq", "type", "payload"]
    parsed = parse_line(serialize_event(event))
    assert parsed.success
    assert type(parsed.data) is type(event)
    assert parsed.data == event


def test_all_thirteen_event_types() -> None:
    assert len(EventType) == 13
    assert {t.value for t in EventType} == {
        "session_init",
        "stdout",
        "log",
        "tool_call",
        "tool_result_applied",
        "final",
        "heartbeat",
        "error",
        "partial_result",
        "tool_progress",
        "deadline_exceeded",
        "catalog_changed",
        "enc",
    }


def _describe(event: ParsedEvent) -> str:
    match event:
        case StdoutEvent(payload=StdoutPayload(chunk=chunk)):
            return f"out:{chunk}"
        case LogEvent(payload=LogPayload(level=LogLevel.WARN, message=message)):
            return f"warn:{message}"
        case ToolCallEvent(payload=ToolCallPayload(call_id=call_id, tool_name=name)):
            return f"call:{call_id}:{name}"
        case FinalEvent(payload=FinalPayload(ok=True, result=result)):
            return f"done:{result}"
        case FinalEvent(payload=FinalPayload(ok=False)):
            return "failed"
        case EncryptedEnvelope(seq=seq):
            return f"enc:{seq}"
        case _:
            return f"other:{event.type}"


def test_match_statement_on_classes() -> None:
    assert _describe(SAMPLES[EventType.STDOUT]) == "out:hi"
    assert _describe(SAMPLES[EventType.LOG]) == "warn:m"
    assert _describe(SAMPLES[EventType.TOOL_CALL]) == "call:c_1:web.search"
    assert _describe(SAMPLES[EventType.FINAL]) == "done:42"
    failed = FinalEvent(session_id=SID, seq=1, payload=FinalPayload(ok=False))
    assert _describe(failed) == "failed"
    assert _describe(SAMPLES[EventType.ENCRYPTED]) == "enc:12"
    assert _describe(SAMPLES[EventType.HEARTBEAT]) == "other:heartbeat"


def test_match_statement_on_the_type_string_of_a_parsed_event() -> None:
    parsed = parse_line(serialize_event(SAMPLES[EventType.TOOL_PROGRESS]))
    assert parsed.success
    event = parsed.data
    match event.type:
        case "tool_progress":
            kind = "progress-by-string"
        case _:
            kind = "nope"
    assert kind == "progress-by-string"
    match event.type:
        case EventType.TOOL_PROGRESS:
            kind = "progress-by-enum"
        case _:
            kind = "nope"
    assert kind == "progress-by-enum"


def test_match_positional_patterns() -> None:
    # __match_args__ follows the positional fields: session_id, seq, payload
    match SAMPLES[EventType.STDOUT]:
        case StdoutEvent("s_1", 1, StdoutPayload("hi")):
            matched = True
        case _:
            matched = False
    assert matched


# --- names: snake_case attributes, camelCase wire -----------------------------


@pytest.mark.parametrize(
    ("event_type", "attribute", "wire_key"),
    [
        (EventType.SESSION_INIT, "cancel_url", "cancelUrl"),
        (EventType.SESSION_INIT, "expires_at", "expiresAt"),
        (EventType.SESSION_INIT, "replay_url", "replayUrl"),
        (EventType.TOOL_CALL, "call_id", "callId"),
        (EventType.TOOL_CALL, "tool_name", "toolName"),
        (EventType.PARTIAL_RESULT, "has_next", "hasNext"),
        (EventType.TOOL_PROGRESS, "bytes_received", "bytesReceived"),
        (EventType.TOOL_PROGRESS, "total_bytes", "totalBytes"),
        (EventType.TOOL_PROGRESS, "elapsed_ms", "elapsedMs"),
        (EventType.DEADLINE_EXCEEDED, "budget_ms", "budgetMs"),
        (EventType.CATALOG_CHANGED, "added_actions", "addedActions"),
        (EventType.CATALOG_CHANGED, "removed_actions", "removedActions"),
        (EventType.ENCRYPTED, "nonce_b64", "nonceB64"),
        (EventType.ENCRYPTED, "ciphertext_b64", "ciphertextB64"),
    ],
)
def test_snake_case_attribute_is_camel_case_on_the_wire(
    event_type: EventType, attribute: str, wire_key: str
) -> None:
    event = SAMPLES[event_type]
    wire = _wire(event)
    assert wire_key in wire["payload"]
    assert attribute not in wire["payload"]
    value = getattr(event.payload, attribute)
    assert wire["payload"][wire_key] == value
    # and back: the camelCase key fills the snake_case attribute
    parsed = parse_line(json.dumps(wire))
    assert parsed.success
    assert getattr(parsed.data.payload, attribute) == value


def test_base_fields_and_nested_names() -> None:
    event = StdoutEvent(session_id="s_abc", seq=3, payload=StdoutPayload("x"))
    assert event.session_id == "s_abc"
    wire = _wire(event)
    assert wire["sessionId"] == "s_abc"
    assert wire["protocolVersion"] == 2
    enc = _wire(SAMPLES[EventType.SESSION_INIT])["payload"]["encryption"]
    assert enc == {"enabled": True, "keyId": "k_1"}
    details = [
        RetryInfoDetail(retry_delay_ms=5),
        UpstreamInfoDetail(status_code=502, url="u"),
        ValidationInfoDetail(field="f", reason="r"),
        QuotaInfoDetail(limit=10, used=3),
    ]
    assert [json.loads(msgspec.json.encode(d)) for d in details] == [
        {"type": "retry_info", "retryDelayMs": 5},
        {"type": "upstream_info", "statusCode": 502, "url": "u"},
        {"type": "validation_info", "field": "f", "reason": "r"},
        {"type": "quota_info", "limit": 10, "used": 3},
    ]
    assert [d.type for d in details] == list(ErrorDetailType)  # type: ignore[attr-defined]


def test_unknown_keys_are_dropped() -> None:
    line = (
        '{"protocolVersion":2,"extra":1,"sessionId":"s_1","seq":1,"type":"stdout",'
        '"payload":{"chunk":"hi","color":"red"}}'
    )
    result = parse_line(line)
    assert result.success
    assert serialize_event(result.data) == (
        '{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hi"}}'
    )


# --- ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generate", "check", "prefix"),
    [
        (generate_session_id, is_session_id, SESSION_ID_PREFIX),
        (generate_call_id, is_call_id, CALL_ID_PREFIX),
        (generate_ref_id, is_ref_id, REF_ID_PREFIX),
        (generate_key_id, is_key_id, KEY_ID_PREFIX),
    ],
)
def test_generated_ids(
    generate: Callable[[], str], check: Callable[[object], bool], prefix: str
) -> None:
    ids = {generate() for _ in range(50)}
    assert len(ids) == 50
    for value in ids:
        assert value.startswith(prefix)
        assert uuid.UUID(value[len(prefix) :]).version == 4
        assert str(uuid.UUID(value[len(prefix) :])) == value[len(prefix) :]
        assert check(value)
    assert not check(prefix)  # the prefix alone is not an id
    assert not check(prefix.upper() + "1")
    assert not check(None)
    assert not check(123)
    assert not check(b"s_1")


def test_id_prefixes() -> None:
    assert (SESSION_ID_PREFIX, CALL_ID_PREFIX, REF_ID_PREFIX, KEY_ID_PREFIX) == (
        "s_",
        "c_",
        "ref_",
        "k_",
    )
    assert is_session_id("s_1")
    assert not is_session_id("c_1")
    assert is_call_id("c_x")
    assert not is_call_id("s_x")
    assert is_ref_id("ref_1")
    assert not is_ref_id("re_1")
    assert is_key_id("k_1")
    assert not is_key_id("kk_1")


def test_generated_ids_are_accepted_on_the_wire() -> None:
    event = ToolCallEvent(
        session_id=generate_session_id(),
        seq=0,
        payload=ToolCallPayload(call_id=generate_call_id(), tool_name="t"),
    )
    assert parse_line(serialize_event(event)).success


# --- enums ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum_type", "values"),
    [
        (LogLevel, ["debug", "info", "warn", "error"]),
        (ToolProgressPhase, ["connecting", "sending", "receiving", "processing"]),
        (ErrorDetailType, ["retry_info", "upstream_info", "validation_info", "quota_info"]),
        (EncryptionMode, ["disabled", "optional", "required"]),
        (RuntimeChannelMessageType, ["tool_result_submit", "cancel"]),
        (
            SessionState,
            ["starting", "running", "waiting_for_tool", "completed", "cancelled", "failed"],
        ),
        (SupportedCurve, ["P-256"]),
        (EncryptionAlgorithm, ["AES-GCM-256"]),
        (KeyDerivation, ["HKDF-SHA-256"]),
    ],
)
def test_enum_values_are_the_wire_strings(enum_type: Any, values: list[str]) -> None:
    assert [member.value for member in enum_type] == values
    for member, value in zip(enum_type, values, strict=True):
        assert member == value
        assert str(member) == value
        assert enum_type(value) is member


def test_enum_fields_decode_to_members_and_accept_plain_strings() -> None:
    parsed = parse_line(serialize_event(SAMPLES[EventType.LOG]))
    assert parsed.success
    level = parsed.data.payload.level  # type: ignore[union-attr]
    assert level is LogLevel.WARN
    # a plain string is as good as the member when constructing
    by_string = LogEvent(session_id=SID, seq=1, payload=LogPayload(level="error", message="m"))  # type: ignore[arg-type]
    assert _wire(by_string)["payload"]["level"] == "error"


# --- construction-time checks ----------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: HeartbeatPayload(ts="yesterday"), "ts"),
        (lambda: LogPayload(level="loud", message="m"), "level"),  # type: ignore[arg-type]
        (lambda: ToolCallPayload(call_id="x_1", tool_name="t"), "callId"),
        (lambda: ToolResultAppliedPayload(call_id="c_"), "callId"),
    ],
    ids=["heartbeat-ts", "log-level", "tool_call-callId", "tool_result_applied-callId"],
)
def test_invalid_payload_construction_raises_library_error(
    build: Callable[[], object], field: str
) -> None:
    """Regression (fixed): these payloads check their fields in ``__post_init__`` and
    raise a bare ``ValueError("@ts: Expected ...")`` carrying the codec's private
    ``@field:`` marker. errors.py promises every deliberate error derives from
    EnclaveStreamError (an invalid event is an EventValidationError naming the field).
    """
    with pytest.raises(EnclaveStreamError) as info:
        build()
    assert isinstance(info.value, EventValidationError)
    assert field in info.value.path
    assert not str(info.value).startswith("@")


# --- zod's datetime rule, against a calendar ------------------------------------------

_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _zod_datetime(value: str) -> bool:
    """``z.string().datetime()`` read from its definition: a calendar date (any
    four-digit year, Gregorian leap years), "T", hours and minutes, optional
    seconds with any number of fractional digits, and "Z"."""
    digits = set("0123456789")

    def number(text: str) -> int | None:
        return int(text) if text and set(text) <= digits else None

    date, t, rest = value.partition("T")
    if not t or len(date) != 10 or date[4] != "-" or date[7] != "-" or not rest.endswith("Z"):
        return False
    year, month, day = number(date[:4]), number(date[5:7]), number(date[8:])
    if year is None or month is None or day is None or not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS[month - 1] + (month == 2 and leap):
        return False
    clock = rest[:-1]
    if len(clock) < 5 or clock[2] != ":":
        return False
    hour, minute = number(clock[:2]), number(clock[3:5])
    if hour is None or minute is None or hour > 23 or minute > 59:
        return False
    if len(clock) == 5:
        return True
    second, dot, fraction = clock[6:8], clock[8:9], clock[9:]
    if clock[5] != ":" or len(second) != 2 or number(second) is None or int(second) > 59:
        return False
    return (not dot and not fraction) or (dot == "." and number(fraction) is not None)


def _accepts_datetime(value: str) -> bool:
    try:
        HeartbeatPayload(ts=value)
    except EventValidationError:
        return False
    return True


_DIGIT = st.sampled_from("0123456789")


@st.composite
def _near_datetimes(draw: st.DrawFn) -> str:
    def digits(low: int, high: int) -> str:
        return "".join(draw(st.lists(_DIGIT, min_size=low, max_size=high)))

    parts = [
        draw(st.sampled_from(["2024", "2000", "1900", "0000", "2100", "2026", digits(3, 5)])),
        "-",
        draw(st.sampled_from(["01", "02", "04", "12", "13", "00", digits(1, 3)])),
        "-",
        draw(st.sampled_from(["28", "29", "30", "31", "01", "00", "32", digits(1, 3)])),
        draw(st.sampled_from(["T", "t", " "])),
        draw(st.sampled_from(["00", "23", "24", "9", digits(1, 3)])),
        ":",
        draw(st.sampled_from(["00", "59", "60", digits(1, 3)])),
        draw(st.sampled_from(["", ":00", ":59", ":60", ":5", ":00.", ":00.1", ":00.123456789"])),
        draw(st.sampled_from(["Z", "z", "", "+00:00", "Z\n", "ZZ"])),
    ]
    text = "".join(parts)
    if draw(st.booleans()):  # a Unicode digit or another character somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["\u0660", "٣", "x", "-", ""])) + text[at + 1 :]
    return text


@given(st.one_of(_near_datetimes(), st.text(max_size=30)))
@example("2024-02-29T00:00Z")
@example("2023-02-29T00:00Z")
@example("1900-02-29T00:00:00Z")
@example("2000-02-29T23:59:59.999Z")
@example("0000-02-29T00:00Z")
@example("2026-04-31T00:00Z")
@example("2026-12-31T23:59:60Z")
@settings(max_examples=500)
def test_the_datetime_rule_is_zods_calendar(value: str) -> None:
    """Timestamps (heartbeat ``ts``, ``expiresAt``) are accepted exactly where zod's
    datetime rule accepts them, leap days included."""
    assert _accepts_datetime(value) is _zod_datetime(value)
