"""The codec (codec.py): exact bytes, validation of constructed events, other messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enclave_stream import (
    CatalogChangedEvent,
    CreateSessionRequest,
    DeadlineExceededEvent,
    EncryptedEnvelope,
    EncryptionMode,
    ErrorEvent,
    EventEncoder,
    EventType,
    EventValidationError,
    FinalEvent,
    HeartbeatEvent,
    LogEvent,
    ParsedEvent,
    PartialResultEvent,
    ProtocolError,
    SessionInitEvent,
    StdoutEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultAppliedEvent,
    decode_message,
    encode_message,
    parse_line,
    parse_lines,
    serialize_event,
    serialize_events,
    validate_event,
)
from enclave_stream.codec import decode_event, decode_lines
from enclave_stream.events import (
    CancelMessage,
    CancelPayload,
    CatalogChangedPayload,
    ClientHello,
    DeadlineExceededPayload,
    EncryptedEnvelopePayload,
    EncryptionConfig,
    EncryptionRequest,
    ErrorEventPayload,
    ErrorInfo,
    ErrorPayload,
    FinalPayload,
    PartialResultPayload,
    QuotaInfoDetail,
    RetryInfoDetail,
    ServerHello,
    SessionInitPayload,
    SessionLimits,
    SessionStats,
    StdoutPayload,
    ToolCallPayload,
    ToolProgressPayload,
    ToolResultSubmitMessage,
    ToolResultSubmitPayload,
    UpstreamInfoDetail,
    ValidationInfoDetail,
)
from enclave_stream.protocol import EncryptionAlgorithm, KeyDerivation, SupportedCurve
from tests.strategies import SAMPLE_EVENTS as SAMPLES
from tests.strategies import any_event

SID = "s_1"

# Golden lines, keys in the order of PROTOCOL.md section 2 (base fields, then the
# payload's fields in table order).
GOLDEN = [
    '{"protocolVersion":2,"sessionId":"s_1","seq":0,"type":"session_init","payload":'
    '{"cancelUrl":"https://x/cancel","expiresAt":"2025-03-01T12:00:00Z",'
    '"encryption":{"enabled":true,"keyId":"k_1"},"replayUrl":"https://x/replay"}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hi"}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":2,"type":"log","payload":'
    '{"level":"warn","message":"m","data":{"k":[1,null]}}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":3,"type":"tool_call","payload":'
    '{"callId":"c_1","toolName":"web.search","args":{"q":"x"}}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":4,"type":"tool_result_applied","payload":'
    '{"callId":"c_1"}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":5,"type":"final","payload":{"ok":true,"result":42}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":6,"type":"heartbeat","payload":'
    '{"ts":"2025-03-01T12:00:00.123Z"}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":7,"type":"error","payload":'
    '{"message":"boom","code":"E1","recoverable":true}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":8,"type":"partial_result","payload":'
    '{"path":["a","b"],"data":[1.5],"hasNext":true}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":9,"type":"tool_progress","payload":'
    '{"callId":"c_1","phase":"receiving","bytesReceived":10,"totalBytes":20,"elapsedMs":3}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":10,"type":"deadline_exceeded","payload":'
    '{"elapsedMs":1500,"budgetMs":1000}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":11,"type":"catalog_changed","payload":'
    '{"version":"v2","addedActions":["a"],"removedActions":[]}}',
    '{"protocolVersion":2,"sessionId":"s_1","seq":12,"type":"enc","payload":'
    '{"kid":"k_1","nonceB64":"bm9uY2U=","ciphertextB64":"Y3Q="}}',
]


@pytest.mark.parametrize(
    ("event", "line"), list(zip(SAMPLES.values(), GOLDEN, strict=True)), ids=list(map(str, SAMPLES))
)
def test_golden_bytes(event: ParsedEvent, line: str) -> None:
    assert serialize_event(event) == line
    assert EventEncoder().encode(event) == line.encode()
    # the wire form reads back to the same event, and a mapping of it writes the same bytes
    assert parse_line(line).data == event  # type: ignore[union-attr]
    assert serialize_event(json.loads(line)) == line


def test_full_final_event_bytes() -> None:
    event = FinalEvent(
        session_id=SID,
        seq=99,
        payload=FinalPayload(
            ok=False,
            result=None,
            error=ErrorInfo(message="m", code="E", stack="at x"),
            errors=[
                ErrorPayload(
                    code="C",
                    message="n",
                    path=["a"],
                    details=[
                        RetryInfoDetail(retry_delay_ms=100),
                        UpstreamInfoDetail(status_code=503, url="https://u"),
                        ValidationInfoDetail(field="f", reason="r"),
                        QuotaInfoDetail(limit=10, used=2.5),
                    ],
                )
            ],
            stats=SessionStats(duration_ms=12.5, tool_call_count=1, stdout_bytes=0),
        ),
    )
    assert serialize_event(event) == (
        '{"protocolVersion":2,"sessionId":"s_1","seq":99,"type":"final","payload":{"ok":false,'
        '"result":null,"error":{"message":"m","code":"E","stack":"at x"},"errors":[{"code":"C",'
        '"message":"n","path":["a"],"details":[{"type":"retry_info","retryDelayMs":100},'
        '{"type":"upstream_info","statusCode":503,"url":"https://u"},'
        '{"type":"validation_info","field":"f","reason":"r"},'
        '{"type":"quota_info","limit":10,"used":2.5}]}],'
        '"stats":{"durationMs":12.5,"toolCallCount":1,"stdoutBytes":0}}}'
    )


def test_strings_are_escaped_like_json_stringify() -> None:
    chunk = 'a"b\\c\n\r\t\x00\x1f\x7f\u2028\u2029\u0085é😀/'
    line = serialize_event(StdoutEvent(session_id=SID, seq=1, payload=StdoutPayload(chunk)))
    # JSON.stringify escapes only ", \\ and C0 controls; everything else stays raw UTF-8
    assert line.endswith(
        '"payload":{"chunk":"a\\"b\\\\c\\n\\r\\t\\u0000\\u001f\x7f\u2028\u2029\u0085é😀/"}}'
    )
    assert "\n" not in line
    assert parse_line(line).data.payload.chunk == chunk  # type: ignore[union-attr]


def test_lone_surrogates_are_escaped() -> None:
    event = StdoutEvent(session_id="s_\udc00", seq=1, payload=StdoutPayload("x\ud800y"))
    line = serialize_event(event)
    assert line == (
        '{"protocolVersion":2,"sessionId":"s_\\udc00","seq":1,"type":"stdout",'
        '"payload":{"chunk":"x\\ud800y"}}'
    )
    assert parse_line(line).data == event  # type: ignore[union-attr]


def test_session_ids_with_percent_signs_do_not_break_the_template() -> None:
    encoder = EventEncoder()
    for session_id in ["s_%d", "s_%s%%", "s_100%"]:
        event = StdoutEvent(session_id=session_id, seq=7, payload=StdoutPayload("%d"))
        line = encoder.encode(event)
        assert json.loads(line) == {
            "protocolVersion": 2,
            "sessionId": session_id,
            "seq": 7,
            "type": "stdout",
            "payload": {"chunk": "%d"},
        }


def test_encoder_reused_across_versions_sessions_and_types() -> None:
    encoder = EventEncoder()
    lines = [
        encoder.encode(
            StdoutEvent(
                session_id=f"s_{i % 3}",
                seq=i,
                payload=StdoutPayload("x"),
                protocol_version=1 + i % 2,  # type: ignore[arg-type]
            )
        )
        for i in range(12)
    ]
    for i, line in enumerate(lines):
        wire = json.loads(line)
        assert wire["protocolVersion"] == 1 + i % 2
        assert wire["sessionId"] == f"s_{i % 3}"
        assert wire["seq"] == i
    # more sessions than the template cache holds
    many = [
        StdoutEvent(session_id=f"s_{i}", seq=i, payload=StdoutPayload("y")) for i in range(2500)
    ]
    out = encoder.encode_all(many)
    assert [json.loads(line)["sessionId"] for line in out] == [f"s_{i}" for i in range(2500)]
    tool = encoder.encode(
        ToolResultAppliedEvent(session_id="s_0", seq=3, payload={"callId": "c_1"})  # type: ignore[arg-type]
    )
    assert json.loads(tool)["type"] == "tool_result_applied"


def test_seq_bounds() -> None:
    top = StdoutEvent(session_id=SID, seq=2**53 - 1, payload=StdoutPayload("x"))
    assert json.loads(serialize_event(top))["seq"] == 2**53 - 1
    zero = StdoutEvent(session_id=SID, seq=0, payload=StdoutPayload("x"))
    assert json.loads(serialize_event(zero))["seq"] == 0


def test_serialize_events_and_encode_lines() -> None:
    events = list(SAMPLES.values())
    joined = serialize_events(events)
    assert joined == "\n".join(GOLDEN)
    assert not joined.endswith("\n")
    assert serialize_events([]) == ""
    encoder = EventEncoder()
    assert encoder.encode_lines(events) == ("\n".join(GOLDEN) + "\n").encode()
    assert encoder.encode_lines([]) == b""
    assert encoder.encode_all(events) == [g.encode() for g in GOLDEN]
    assert parse_lines(joined).events == events


def test_non_finite_floats_in_free_form_values_become_null() -> None:
    payload = ToolCallPayload("c_1", "t", [float("nan"), float("inf"), -float("inf"), 1.5])
    line = serialize_event(ToolCallEvent(session_id=SID, seq=1, payload=payload))
    assert line.endswith('"args":[null,null,null,1.5]}}')


@pytest.mark.parametrize(
    ("value", "spelling"),
    [
        (1500.0, "1500"),  # an integral double: JSON.stringify writes no ".0"
        (2.0, "2"),
        (-0.0, "0"),
        (0.25, "0.25"),
    ],
)
def test_number_fields_are_spelled_like_json_stringify(value: float, spelling: str) -> None:
    """Typed number fields hold integral doubles as ints, so they are written as JS does."""
    event = DeadlineExceededEvent(
        session_id=SID, seq=1, payload=DeadlineExceededPayload(elapsed_ms=value, budget_ms=1)
    )
    assert serialize_event(event).endswith(f'"elapsedMs":{spelling},"budgetMs":1}}}}')


@pytest.mark.parametrize(
    ("value", "ours", "javascript"),
    [
        (1500.0, "1500.0", "1500"),  # free-form values are written as built (N4)
        (0.0000015, "1.5e-6", "0.0000015"),
        (1e21, "1e21", "1e+21"),
    ],
)
def test_documented_float_spellings(value: float, ours: str, javascript: str) -> None:
    """docs/compatibility.md N4: same value, msgspec's spelling; the reference parses both."""
    args = ToolCallEvent(session_id=SID, seq=1, payload=ToolCallPayload("c_1", "t", [value]))
    line = serialize_event(args)
    assert line.endswith(f'"args":[{ours}]}}}}')
    assert json.loads(ours) == json.loads(javascript) == value


def test_reference_integral_values_reserialize_identically() -> None:
    """JavaScript never writes "1500.0"; what it does write comes back byte for byte."""
    line = (
        '{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"tool_call","payload":'
        '{"callId":"c_1","toolName":"t","args":{"n":1500,"f":0.25,"z":0}}}'
    )
    assert serialize_event(parse_line(line).data) == line  # type: ignore[union-attr]
    written_as_float = line.replace('"n":1500', '"n":1500.0')
    # A non-JavaScript peer's free-form 1500.0 keeps its spelling (N4).
    again = serialize_event(parse_line(written_as_float).data)  # type: ignore[union-attr]
    assert again == written_as_float


# --- invalid constructed events --------------------------------------------------

_STDOUT = StdoutPayload("x")


def _bad(cls: Any, payload: Any, **base: Any) -> Any:
    fields = {"session_id": SID, "seq": 1, **base}
    return cls(payload=payload, **fields)


INVALID: list[tuple[str, Any, str]] = [
    # base fields
    ("seq-negative", _bad(StdoutEvent, _STDOUT, seq=-1), "$.seq"),
    ("seq-float", _bad(StdoutEvent, _STDOUT, seq=1.5), "$.seq"),
    ("seq-unsafe", _bad(StdoutEvent, _STDOUT, seq=2**53), "$.seq"),
    ("seq-bool", _bad(StdoutEvent, _STDOUT, seq=True), "$.seq"),
    ("seq-str", _bad(StdoutEvent, _STDOUT, seq="1"), "$.seq"),
    ("session-prefix", _bad(StdoutEvent, _STDOUT, session_id="x_1"), "$.sessionId"),
    ("session-short", _bad(StdoutEvent, _STDOUT, session_id="s_"), "$.sessionId"),
    ("session-not-str", _bad(StdoutEvent, _STDOUT, session_id=1), "$.sessionId"),
    ("version-3", _bad(StdoutEvent, _STDOUT, protocol_version=3), "$.protocolVersion"),
    ("version-str", _bad(StdoutEvent, _STDOUT, protocol_version="2"), "$.protocolVersion"),
    ("version-bool", _bad(StdoutEvent, _STDOUT, protocol_version=True), "$.protocolVersion"),
    # one or more per event type
    (
        "session_init-encryption",
        _bad(
            SessionInitEvent,
            SessionInitPayload("u", "2025-01-01T00:00:00Z", EncryptionConfig("yes")),  # type: ignore[arg-type]
        ),
        "$.payload.encryption.enabled",
    ),
    (
        "session_init-expiresAt",
        _bad(
            SessionInitEvent,
            {
                "cancelUrl": "u",
                "expiresAt": "2025-02-30T00:00:00Z",
                "encryption": {"enabled": False},
            },
        ),
        "$.payload.expiresAt",
    ),
    ("stdout-chunk", _bad(StdoutEvent, StdoutPayload(3)), "$.payload.chunk"),  # type: ignore[arg-type]
    ("stdout-wrong-payload", _bad(StdoutEvent, ErrorEventPayload("m")), "$.payload"),
    ("log-level", _bad(LogEvent, {"level": "loud", "message": "m"}), "$.payload.level"),
    ("log-data", _bad(LogEvent, {"level": "info", "message": "m", "data": [1]}), "$.payload.data"),
    (
        "tool_call-callId",
        _bad(ToolCallEvent, {"callId": "x_1", "toolName": "t"}),
        "$.payload.callId",
    ),
    (
        "tool_call-toolName",
        _bad(ToolCallEvent, {"callId": "c_1", "toolName": ""}),
        "$.payload.toolName",
    ),
    (
        "tool_result_applied-callId",
        _bad(ToolResultAppliedEvent, {"callId": "c_"}),
        "$.payload.callId",
    ),
    ("final-ok", _bad(FinalEvent, FinalPayload(ok="yes")), "$.payload.ok"),  # type: ignore[arg-type]
    (
        "final-error",
        _bad(FinalEvent, FinalPayload(ok=False, error=ErrorInfo(message=None))),  # type: ignore[arg-type]
        "$.payload.error.message",
    ),
    (
        "final-errors-code",
        _bad(FinalEvent, FinalPayload(ok=False, errors=[ErrorPayload(code=1, message="m")])),  # type: ignore[arg-type]
        "$.payload.errors[0].code",
    ),
    (
        "final-errors-details",
        _bad(
            FinalEvent,
            FinalPayload(
                ok=False,
                errors=[
                    ErrorPayload("c", "m"),
                    ErrorPayload(
                        "c", "m", details=[ValidationInfoDetail("f", "r"), RetryInfoDetail(-1)]
                    ),
                ],
            ),
        ),
        "$.payload.errors[1].details[1].retryDelayMs",
    ),
    (
        "final-stats",
        _bad(FinalEvent, FinalPayload(ok=True, stats=SessionStats(1, -1, 0))),
        "$.payload.stats.toolCallCount",
    ),
    ("heartbeat-ts", _bad(HeartbeatEvent, {"ts": "2025-01-01T00:00:00+00:00"}), "$.payload.ts"),
    ("heartbeat-ts-lower-z", _bad(HeartbeatEvent, {"ts": "2025-01-01T00:00:00z"}), "$.payload.ts"),
    (
        "error-recoverable",
        _bad(ErrorEvent, ErrorEventPayload("m", recoverable="no")),  # type: ignore[arg-type]
        "$.payload.recoverable",
    ),
    ("error-message", _bad(ErrorEvent, ErrorEventPayload(None)), "$.payload.message"),  # type: ignore[arg-type]
    (
        "partial_result-path",
        _bad(PartialResultEvent, PartialResultPayload(path=["a", 1], has_next=True)),  # type: ignore[list-item]
        "$.payload.path[1]",
    ),
    (
        "partial_result-hasNext",
        _bad(PartialResultEvent, PartialResultPayload(path=[], has_next="no")),  # type: ignore[arg-type]
        "$.payload.hasNext",
    ),
    (
        "partial_result-error",
        _bad(
            PartialResultEvent,
            PartialResultPayload(path=[], error=ErrorPayload("c", 5), has_next=False),  # type: ignore[arg-type]
        ),
        "$.payload.error.message",
    ),
    (
        "tool_progress-callId",
        _bad(ToolProgressEvent, {"callId": "1", "phase": "sending", "elapsedMs": 1}),
        "$.payload.callId",
    ),
    (
        "tool_progress-phase",
        _bad(ToolProgressEvent, ToolProgressPayload(call_id="c_1", phase="idle", elapsed_ms=1)),  # type: ignore[arg-type]
        "$.payload.phase",
    ),
    (
        "tool_progress-elapsed",
        _bad(ToolProgressEvent, ToolProgressPayload(call_id="c_1", phase="sending", elapsed_ms=-1)),  # type: ignore[arg-type]
        "$.payload.elapsedMs",
    ),
    (
        "tool_progress-bytes",
        _bad(
            ToolProgressEvent,
            ToolProgressPayload(call_id="c_1", phase="sending", elapsed_ms=1, bytes_received=1.5),  # type: ignore[arg-type]
        ),
        "$.payload.bytesReceived",
    ),
    (
        "deadline_exceeded-budget",
        _bad(DeadlineExceededEvent, DeadlineExceededPayload(1, 0)),
        "$.payload.budgetMs",
    ),
    (
        "deadline_exceeded-elapsed",
        _bad(DeadlineExceededEvent, DeadlineExceededPayload(float("nan"), 1)),
        "$.payload.elapsedMs",
    ),
    (
        "catalog_changed-version",
        _bad(CatalogChangedEvent, CatalogChangedPayload("", [], [])),
        "$.payload.version",
    ),
    (
        "catalog_changed-added",
        _bad(CatalogChangedEvent, CatalogChangedPayload("v", [1], [])),  # type: ignore[list-item]
        "$.payload.addedActions[0]",
    ),
    ("enc-kid", _bad(EncryptedEnvelope, EncryptedEnvelopePayload("", "n", "c")), "$.payload.kid"),
    (
        "enc-tag",
        _bad(EncryptedEnvelope, EncryptedEnvelopePayload("k", "n", "c", tag_b64=1)),  # type: ignore[arg-type]
        "$.payload.tagB64",
    ),
]


@pytest.mark.parametrize(
    ("event", "path"), [(e, p) for _, e, p in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_serializer_refuses_invalid_events(event: Any, path: str) -> None:
    with pytest.raises(EventValidationError) as info:
        serialize_event(event)
    assert info.value.path == path
    assert info.value.reason
    assert str(info.value) == f"{info.value.reason} - at `{path}`" or path == "$"
    # the same verdicts from every entry point
    with pytest.raises(EventValidationError) as again:
        validate_event(event)
    assert again.value.path == path
    with pytest.raises(EventValidationError):
        serialize_events([SAMPLES[next(iter(SAMPLES))], event])
    with pytest.raises(EventValidationError):
        EventEncoder().encode_lines([event])


def test_invalid_variants_cover_every_event_type() -> None:
    covered = {type(event) for _, event, _ in INVALID}
    assert covered == {type(event) for event in SAMPLES.values()}


def test_error_paths_are_exception_attributes() -> None:
    error = EventValidationError("Expected `int` >= 0", "$.seq")
    assert isinstance(error, ProtocolError)
    assert isinstance(error, ValueError)
    assert (error.reason, error.path) == ("Expected `int` >= 0", "$.seq")
    assert str(error) == "Expected `int` >= 0 - at `$.seq`"
    assert str(EventValidationError("bad")) == "bad"


def test_something_that_is_not_an_event_is_refused() -> None:
    with pytest.raises(EventValidationError):
        serialize_event(42)  # type: ignore[arg-type]
    with pytest.raises(EventValidationError):
        serialize_events([SAMPLES[EventType.STDOUT], "line"])  # type: ignore[list-item]


@pytest.mark.parametrize("value", [object(), {(1, 2): "x"}], ids=["object", "tuple-key"])
def test_non_json_value_in_an_event_is_refused(value: Any) -> None:
    """Regression (fixed): ``EventEncoder._enc_hook`` raises ``NotImplementedError``,
    which msgspec passes through unchanged and ``_ENCODE_ERRORS`` does not catch,
    so it escapes ``serialize_event`` instead of an EventValidationError.
    """
    event = ToolCallEvent(session_id=SID, seq=1, payload=ToolCallPayload("c_1", "t", {"x": value}))
    with pytest.raises(EventValidationError) as info:
        serialize_event(event)
    assert info.value.path == "$.payload"


def test_non_json_value_in_a_message_is_refused() -> None:
    """Regression (fixed): ``encode_message`` lets ``js_dumps``'s ``TypeError`` escape."""
    message = ToolResultSubmitMessage(
        session_id=SID, payload=ToolResultSubmitPayload(call_id="c_1", ok=True, result=object())
    )
    with pytest.raises(EventValidationError):
        encode_message(message)


# --- mappings and validate_event ---------------------------------------------------


def test_serialize_event_accepts_a_wire_shaped_mapping() -> None:
    mapping: dict[str, Any] = {
        "type": "tool_call",  # key order of the mapping does not matter
        "payload": {"toolName": "t", "callId": "c_1", "args": [1, {"b": None}], "extra": 1},
        "seq": 4,
        "sessionId": SID,
        "protocolVersion": 2,
        "unknown": True,
    }
    assert serialize_event(mapping) == (
        '{"protocolVersion":2,"sessionId":"s_1","seq":4,"type":"tool_call",'
        '"payload":{"callId":"c_1","toolName":"t","args":[1,{"b":null}]}}'
    )
    assert serialize_events([mapping, SAMPLES[next(iter(SAMPLES))]]).count("\n") == 1


@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ({"sessionId": SID, "seq": 1, "type": "stdout", "payload": {"chunk": "x"}}, "$"),
        (
            {
                "protocolVersion": 2,
                "sessionId": SID,
                "seq": -1,
                "type": "stdout",
                "payload": {"chunk": "x"},
            },
            "$.seq",
        ),
        (
            {"protocolVersion": 2, "sessionId": SID, "seq": 1, "type": "nope", "payload": {}},
            "$.type",
        ),
        (
            {
                "protocolVersion": 2,
                "sessionId": SID,
                "seq": 1,
                "type": "stdout",
                "payload": {"chunk": None},
            },
            "$.payload.chunk",
        ),
        (
            {
                "protocolVersion": 2,
                "session_id": SID,
                "seq": 1,
                "type": "stdout",
                "payload": {"chunk": "x"},
            },
            "$",
        ),
    ],
    ids=["no-version", "seq", "type", "chunk-null", "snake-case-key"],
)
def test_invalid_mapping_is_refused(mapping: Mapping[str, Any], path: str) -> None:
    with pytest.raises(EventValidationError) as info:
        serialize_event(mapping)
    assert info.value.path == path
    with pytest.raises(EventValidationError):
        validate_event(mapping)


def test_validate_event() -> None:
    event = SAMPLES[next(iter(SAMPLES))]
    assert validate_event(event) is event
    typed = validate_event(json.loads(GOLDEN[3]))
    assert typed == SAMPLES[list(SAMPLES)[3]]
    assert isinstance(typed, ToolCallEvent)
    with pytest.raises(EventValidationError) as info:
        validate_event(StdoutEvent(session_id=SID, seq=-5, payload=StdoutPayload("x")))
    assert info.value.path == "$.seq"


# --- other messages ------------------------------------------------------------------


MESSAGES: list[tuple[msgspec.Struct, bytes]] = [
    (
        ClientHello(
            client_ephemeral_pub_key_b64="QQ==",
            curve=SupportedCurve.P256,
            supported_algorithms=[EncryptionAlgorithm.AES_GCM_256],
        ),
        b'{"protocolVersion":2,"clientEphemeralPubKeyB64":"QQ==","curve":"P-256",'
        b'"supportedAlgorithms":["AES-GCM-256"]}',
    ),
    (
        ServerHello(
            server_ephemeral_pub_key_b64="Qg==",
            key_id="k_1",
            signature_b64="c2ln",
            curve=SupportedCurve.P256,
            selected_algorithm=EncryptionAlgorithm.AES_GCM_256,
            kdf=KeyDerivation.HKDF_SHA256,
        ),
        b'{"protocolVersion":2,"serverEphemeralPubKeyB64":"Qg==","curve":"P-256",'
        b'"selectedAlgorithm":"AES-GCM-256","kdf":"HKDF-SHA-256","keyId":"k_1","signatureB64":"c2ln"}',
    ),
    (
        CreateSessionRequest(code="1+1"),
        b'{"protocolVersion":2,"code":"1+1"}',
    ),
    (
        CreateSessionRequest(
            code="x",
            limits=SessionLimits(max_tool_calls=3, deadline_ms=0, cancel_on_first_error=True),
            encryption=EncryptionRequest(
                mode=EncryptionMode.REQUIRED,
                client_hello=ClientHello(
                    client_ephemeral_pub_key_b64="QQ==",
                    protocol_version=1,
                    curve=SupportedCurve.P256,
                    supported_algorithms=[EncryptionAlgorithm.AES_GCM_256],
                ),
            ),
        ),
        b'{"protocolVersion":2,"code":"x","limits":{"maxToolCalls":3,"deadlineMs":0,'
        b'"cancelOnFirstError":true},"encryption":{"mode":"required","clientHello":'
        b'{"protocolVersion":1,"clientEphemeralPubKeyB64":"QQ==","curve":"P-256",'
        b'"supportedAlgorithms":["AES-GCM-256"]}}}',
    ),
    (
        ToolResultSubmitMessage(
            session_id=SID,
            payload=ToolResultSubmitPayload(call_id="c_1", ok=True, result={"a": [1, None, "é"]}),
        ),
        '{"protocolVersion":2,"sessionId":"s_1","type":"tool_result_submit","payload":'
        '{"callId":"c_1","ok":true,"result":{"a":[1,null,"é"]}}}'.encode(),
    ),
    (
        ToolResultSubmitMessage(
            session_id=SID,
            payload=ToolResultSubmitPayload(
                call_id="c_2", ok=False, error=ErrorInfo("m", code="E")
            ),
        ),
        b'{"protocolVersion":2,"sessionId":"s_1","type":"tool_result_submit","payload":'
        b'{"callId":"c_2","ok":false,"error":{"message":"m","code":"E"}}}',
    ),
    (
        CancelMessage(session_id=SID),
        b'{"protocolVersion":2,"sessionId":"s_1","type":"cancel","payload":{}}',
    ),
    (
        CancelMessage(session_id=SID, payload=CancelPayload(reason="user"), protocol_version=1),
        b'{"protocolVersion":1,"sessionId":"s_1","type":"cancel","payload":{"reason":"user"}}',
    ),
]


@pytest.mark.parametrize(
    ("message", "wire"),
    MESSAGES,
    ids=lambda v: type(v).__name__ if isinstance(v, msgspec.Struct) else "",
)
def test_encode_and_decode_messages(message: msgspec.Struct, wire: bytes) -> None:
    assert encode_message(message) == wire
    decoded = decode_message(wire, type(message))
    assert decoded == message
    assert type(decoded) is type(message)
    # str and an already parsed mapping work too
    assert decode_message(wire.decode(), type(message)) == message
    assert decode_message(json.loads(wire), type(message)) == message


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (
            ClientHello(
                client_ephemeral_pub_key_b64="",
                curve=SupportedCurve.P256,
                supported_algorithms=[EncryptionAlgorithm.AES_GCM_256],
            ),
            "$.clientEphemeralPubKeyB64",
        ),
        (
            ClientHello(
                client_ephemeral_pub_key_b64="x", supported_algorithms=[], curve=SupportedCurve.P256
            ),
            "$.supportedAlgorithms",
        ),
        (
            ClientHello(
                client_ephemeral_pub_key_b64="x",
                curve="P-384",
                supported_algorithms=[EncryptionAlgorithm.AES_GCM_256],
            ),
            "$.curve",
        ),  # type: ignore[arg-type]
        (
            ServerHello(
                server_ephemeral_pub_key_b64="x",
                key_id="",
                curve=SupportedCurve.P256,
                selected_algorithm=EncryptionAlgorithm.AES_GCM_256,
                kdf=KeyDerivation.HKDF_SHA256,
            ),
            "$.keyId",
        ),
        (CreateSessionRequest(code=""), "$.code"),
        (
            CreateSessionRequest(code="x", limits=SessionLimits(max_tool_calls=0)),
            "$.limits.maxToolCalls",
        ),
        (
            CreateSessionRequest(code="x", limits=SessionLimits(deadline_ms=-1)),
            "$.limits.deadlineMs",
        ),
        (
            CreateSessionRequest(code="x", encryption=EncryptionRequest(mode="always")),  # type: ignore[arg-type]
            "$.encryption.mode",
        ),
        (CancelMessage(session_id="x_1"), "$.sessionId"),
        (CancelMessage(session_id=SID, payload=CancelPayload(reason=5)), "$.payload.reason"),  # type: ignore[arg-type]
        (
            ToolResultSubmitMessage(session_id=SID, payload={"callId": "x", "ok": True}),  # type: ignore[arg-type]
            "$.payload.callId",
        ),
        (
            ToolResultSubmitMessage(session_id=SID, payload={"callId": "c_1", "ok": 1}),  # type: ignore[arg-type]
            "$.payload.ok",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_encode_message_refuses_invalid(message: msgspec.Struct, path: str) -> None:
    with pytest.raises(EventValidationError) as info:
        encode_message(message)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("raw", "type_", "path"),
    [
        (
            b'{"clientEphemeralPubKeyB64":"x","curve":"P-256","supportedAlgorithms":["AES-GCM-256"]}',
            ClientHello,
            "$",
        ),
        (
            b'{"protocolVersion":2,"code":"x","encryption":{"mode":"required","clientHello":'
            b'{"clientEphemeralPubKeyB64":"x","curve":"P-256","supportedAlgorithms":["AES-GCM-256"]}}}',
            CreateSessionRequest,
            "$.encryption.clientHello",
        ),
        (
            b'{"protocolVersion":2,"sessionId":"s_1","type":"cancel","payload":{"reason":null}}',
            CancelMessage,
            "$.payload.reason",
        ),
        (
            b'{"protocolVersion":2,"sessionId":"s_1","type":"tool_result_submit","payload":{}}',
            CancelMessage,
            "$.type",
        ),
        (
            b'{"protocolVersion":2,"sessionId":"s","type":"cancel","payload":{}}',
            CancelMessage,
            "$.sessionId",
        ),
    ],
    ids=[
        "hello-no-version",
        "nested-hello-no-version",
        "null-optional",
        "wrong-tag",
        "short-session",
    ],
)
def test_decode_message_refuses_invalid(raw: bytes, type_: Any, path: str) -> None:
    with pytest.raises(EventValidationError) as info:
        decode_message(raw, type_)
    assert info.value.path == path


def test_decode_message_not_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message(b"{nope", ClientHello)
    assert not isinstance(info.value, EventValidationError)
    assert "ClientHello" in str(info.value)


def test_runtime_message_key_order() -> None:
    wire = json.loads(encode_message(CancelMessage(session_id=SID)))
    assert list(wire) == ["protocolVersion", "sessionId", "type", "payload"]
    submit = ToolResultSubmitMessage(
        session_id=SID, payload=ToolResultSubmitPayload(call_id="c_1", ok=True)
    )
    assert list(json.loads(encode_message(submit))) == [
        "protocolVersion",
        "sessionId",
        "type",
        "payload",
    ]


# Constructed payloads are not validated by msgspec; the encoder skips the full
# check for payload types whose __post_init__ checks every field and proves the
# others valid with cheap checks. Either way it must accept a constructed event
# exactly when the decoder accepts its wire form.
_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.text(max_size=3),
    st.sampled_from(["c_1", "info", "2024-01-01T00:00:00Z"]),
    st.lists(st.one_of(st.text(max_size=2), st.integers(0, 1)), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(0, 1), max_size=2),
)
_FAST_PATH_EVENTS = [
    StdoutEvent,
    HeartbeatEvent,
    LogEvent,
    ToolCallEvent,
    ToolResultAppliedEvent,
    PartialResultEvent,
    EncryptedEnvelope,
]


@pytest.mark.parametrize("event_type", _FAST_PATH_EVENTS, ids=lambda cls: cls.__name__)
def test_encoder_accepts_a_constructed_event_exactly_when_the_decoder_does(
    event_type: Any,
) -> None:
    payload_type = next(f.type for f in msgspec.structs.fields(event_type) if f.name == "payload")
    fields = msgspec.structs.fields(payload_type)
    optional = st.one_of(st.just(msgspec.UNSET), _field_values)
    values = st.fixed_dictionaries(
        {f.name: _field_values if f.required else optional for f in fields}
    )

    @given(values)
    def check(kwargs: dict[str, Any]) -> None:
        try:
            payload = payload_type(**kwargs)
        except EventValidationError:
            return  # refused on construction: never reaches the encoder
        event = event_type(session_id="s_1", seq=1, payload=payload)
        wire_payload = {
            f.encode_name: getattr(payload, f.name)
            for f in fields
            if getattr(payload, f.name) is not msgspec.UNSET
        }
        wire = {"protocolVersion": 2, "sessionId": "s_1", "seq": 1, "type": event.type.value}
        expected = parse_line(json.dumps({**wire, "payload": wire_payload}, ensure_ascii=False))
        try:
            line = serialize_event(event)
        except EventValidationError:
            assert not expected.success
        else:
            assert expected.success
            assert parse_line(line) == expected

    check()


# --- EventEncoder.encode's one-event path is encode_all's verdict --------------------

_ODD_FIELDS: dict[str, list[Any]] = {
    "seq": [True, -1, 2**53, 2**53 - 1, 0, 1.0, "3", None],
    "protocol_version": [True, False, 1, 2, 3, "2", None, 2.0],
    "session_id": ["s_other", "x_1", "s_", "", ["s_1"], 5, None, "s_\ud800"],
}


_ODD_PAYLOADS: list[Any] = [
    StdoutPayload(chunk=5),
    StdoutPayload("\udfff"),
    StdoutPayload("x"),
    None,
    # Quick-checked payloads: the inline path takes only what the check passes.
    PartialResultPayload(path=["a", 1], has_next=True),  # type: ignore[list-item]
    PartialResultPayload(path=("a",), has_next=True),  # type: ignore[arg-type]
    PartialResultPayload(path=["a"], has_next=1),  # type: ignore[arg-type]
    PartialResultPayload(path=["a"], data={"x": [1]}, has_next=False),
    PartialResultPayload(path=[], error=ErrorPayload("c", "m"), has_next=False),
    PartialResultPayload(path=[], error=ErrorPayload("c", 5), has_next=False),  # type: ignore[arg-type]
    PartialResultPayload(path=["\ud800"], has_next=True),
    EncryptedEnvelopePayload(kid="", nonce_b64="n", ciphertext_b64="c"),
    EncryptedEnvelopePayload(kid=5, nonce_b64="n", ciphertext_b64="c"),  # type: ignore[arg-type]
    EncryptedEnvelopePayload(kid="k", nonce_b64="n", ciphertext_b64="c", tag_b64=None),  # type: ignore[arg-type]
    EncryptedEnvelopePayload(kid="k", nonce_b64="n", ciphertext_b64="c", tag_b64="t"),
    EncryptedEnvelopePayload(kid="k", nonce_b64="\udc00", ciphertext_b64="c"),
]


def _verdict_of(encode: Any, event: Any) -> Any:
    try:
        return encode(event)
    except EventValidationError as exc:
        return (type(exc), str(exc), exc.path)


@given(
    any_event,
    st.lists(
        st.one_of(
            *(
                st.tuples(st.just(name), st.sampled_from(values))
                for name, values in _ODD_FIELDS.items()
            ),
            st.tuples(
                st.just("payload"),
                st.sampled_from(_ODD_PAYLOADS),
            ),
        ),
        max_size=3,
    ),
)
@example(SAMPLES[EventType.STDOUT], [("seq", 2**53)])
@example(SAMPLES[EventType.STDOUT], [("seq", True)])
@example(SAMPLES[EventType.LOG], [("protocol_version", True)])
@example(SAMPLES[EventType.STDOUT], [("session_id", ["s_1"])])
@example(SAMPLES[EventType.STDOUT], [("payload", _ODD_PAYLOADS[0])])
@example(SAMPLES[EventType.STDOUT], [("payload", _ODD_PAYLOADS[1])])
@example(SAMPLES[EventType.PARTIAL_RESULT], [("payload", _ODD_PAYLOADS[4])])
@example(SAMPLES[EventType.PARTIAL_RESULT], [("payload", _ODD_PAYLOADS[5])])
@example(SAMPLES[EventType.PARTIAL_RESULT], [("payload", _ODD_PAYLOADS[6])])
@example(SAMPLES[EventType.PARTIAL_RESULT], [("payload", _ODD_PAYLOADS[7])])
@example(SAMPLES[EventType.PARTIAL_RESULT], [("payload", _ODD_PAYLOADS[8])])
@example(SAMPLES[EventType.PARTIAL_RESULT], [("payload", _ODD_PAYLOADS[9])])
@example(SAMPLES[EventType.PARTIAL_RESULT], [("payload", _ODD_PAYLOADS[10])])
@example(SAMPLES[EventType.ENCRYPTED], [("payload", _ODD_PAYLOADS[11])])
@example(SAMPLES[EventType.ENCRYPTED], [("payload", _ODD_PAYLOADS[12])])
@example(SAMPLES[EventType.ENCRYPTED], [("payload", _ODD_PAYLOADS[13])])
@example(SAMPLES[EventType.ENCRYPTED], [("payload", _ODD_PAYLOADS[14])])
@example(SAMPLES[EventType.ENCRYPTED], [("payload", _ODD_PAYLOADS[15])])
@settings(max_examples=300)
def test_encode_of_one_event_is_encode_all_of_it(
    event: Any, changes: list[tuple[str, Any]]
) -> None:
    """encode() and serialize_event() write the usual event inline; every event,
    valid or not, gets exactly encode_all's line or error, before and after its
    session is templated."""
    encoder = EventEncoder()
    for version in (1, 2):  # the session's templates exist, as in a running stream
        _verdict_of(encoder.encode, msgspec.structs.replace(event, protocol_version=version))
    for name, value in changes:
        event = msgspec.structs.replace(event, **{name: value})
    first = _verdict_of(encoder.encode, event)
    assert first == _verdict_of(lambda e: encoder.encode_all([e])[0], event)
    assert _verdict_of(encoder.encode, event) == first  # now from the template cache
    assert _verdict_of(EventEncoder().encode, event) == first
    # serialize_event writes the usual event as text, from its own cache of heads.
    text = first.decode("utf-8") if isinstance(first, bytes) else first
    for version in (1, 2):
        _verdict_of(serialize_event, msgspec.structs.replace(event, protocol_version=version))
    assert _verdict_of(serialize_event, event) == text
    assert _verdict_of(serialize_event, event) == text


class _SessionIdLike(str):
    """A str subclass that hashes and compares like another session's id."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash("s_cached")

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False


@pytest.mark.parametrize(
    "session_id", [_SessionIdLike("x_other"), _SessionIdLike("s_cached")], ids=repr
)
def test_a_str_subclass_session_id_never_takes_a_cached_template(session_id: str) -> None:
    """Every encoding path refuses a session id that is not a plain str, even one
    equal to a session whose line template is cached (no other session's id is
    written for it)."""
    encoder = EventEncoder()
    good = StdoutEvent(session_id="s_cached", seq=1, payload=StdoutPayload("x"))
    odd = StdoutEvent(session_id=session_id, seq=2, payload=StdoutPayload("x"))
    encoder.encode(good)
    serialize_event(good)
    refusals = [
        lambda: encoder.encode(odd),
        lambda: encoder.encode_all([good, odd]),
        lambda: encoder.encode_lines([odd]),
        lambda: serialize_event(odd),
        lambda: serialize_events([good, odd]),
    ]
    for refusal in refusals:
        with pytest.raises(EventValidationError) as caught:
            refusal()
        assert caught.value.path == "$.sessionId"


def test_events_of_one_session_share_their_session_id_string() -> None:
    """A kept event does not carry its own copy of the session id (memory per kept event)."""
    lines = [
        serialize_event(
            StdoutEvent(session_id="s_" + "a" * 40, seq=seq, payload=StdoutPayload("x"))
        )
        for seq in range(3000)
    ]
    events = parse_lines("\n".join(lines)).events
    assert [event.seq for event in events] == list(range(3000))
    assert {event.session_id for event in events} == {"s_" + "a" * 40}
    assert len({id(event.session_id) for event in events}) <= 3  # one per block of 1,024
    # Two sessions interleaved: each event keeps its own session's id.
    mixed = [
        line.replace('"s_aa', '"s_bb') if seq % 3 == 0 else line for seq, line in enumerate(lines)
    ]
    events = parse_lines("\n".join(mixed)).events
    assert [event.session_id[:4] for event in events] == [
        "s_bb" if seq % 3 == 0 else "s_aa" for seq in range(3000)
    ]


# --- what a line may be ----------------------------------------------------------------


class _Text(str):
    __slots__ = ()


class _Bytes(bytes):
    __slots__ = ()


_GOOD_LINE = serialize_event(StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("hi")))


@pytest.mark.parametrize("text", [_GOOD_LINE, "{bad", "  ", '{"type":"stdout"}'])
@pytest.mark.parametrize(
    "wrap",
    [
        _Text,
        lambda t: _Bytes(t.encode()),
        lambda t: bytearray(t.encode()),
        lambda t: memoryview(t.encode()),
    ],
    ids=["str subclass", "bytes subclass", "bytearray", "memoryview"],
)
def test_a_line_of_any_str_or_bytes_type_gets_the_verdict_of_its_text(
    text: str, wrap: Callable[[str], Any]
) -> None:
    """A str or bytes subclass, a bytearray or a memoryview is read as the text it
    holds, on the fast path and the plain one (a str subclass made msgspec raise
    TypeError before)."""
    line = wrap(text)
    expected = parse_line(text)
    assert parse_line(line).success is expected.success
    if expected.success:
        assert parse_line(line) == expected
    for fast in (True, False):
        assert decode_event(line, fast=fast) == decode_event(text, fast=fast)
    assert decode_lines([line, text])[0] == decode_lines([text, text])[0]


@pytest.mark.parametrize("value", [None, 5, [b"{}"], {"type": "stdout"}])
def test_what_is_no_line_is_a_type_error(value: Any) -> None:
    for decode in (lambda: decode_event(value), lambda: decode_event(value, fast=False)):
        with pytest.raises(TypeError):
            decode()
    with pytest.raises(TypeError):
        parse_line(value)
