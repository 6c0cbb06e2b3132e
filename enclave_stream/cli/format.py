"""The readable one-line view of each event, and of each bad line.

Everything taken from the stream goes through :func:`clean` (or is written
as JSON), so a stream cannot move the cursor, recolour the terminal or hide
text with control characters, bidi overrides or line separators.

>>> from enclave_stream import StdoutEvent

>>> from enclave_stream.events import StdoutPayload
>>> plain(format_event(StdoutEvent(session_id="s_1", seq=12, payload=StdoutPayload("hello\\n"))))
'#12 stdout  "hello\\\\n"'
"""

from __future__ import annotations

__all__ = [
    "clean",
    "format_encoding_issue",
    "format_event",
    "format_json",
    "format_line_error",
    "format_session_header",
    "plain",
]

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from msgspec import UNSET

from .._json import js_dumps
from ..errors import LineError
from ..events import (
    CatalogChangedEvent,
    DeadlineExceededEvent,
    EncryptedEnvelope,
    ErrorEvent,
    ErrorInfo,
    ErrorPayload,
    FinalEvent,
    HeartbeatEvent,
    LogEvent,
    ParsedEvent,
    PartialResultEvent,
    SessionInitEvent,
    SessionStats,
    StdoutEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultAppliedEvent,
)
from .output import Segment
from .source import EncodingIssue

# C0 and C1 controls, DEL, line/paragraph separators, bidi embeddings,
# overrides and isolates, and lone surrogates (which no terminal encoding takes).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\u{ord(char):04x}"


def clean(text: str) -> str:
    """``text`` with control and invisible formatting characters escaped.

    >>> clean("ok\\x1b[2J\\n")
    'ok\\\\u001b[2J\\\\n'
    """
    return _UNSAFE.sub(_escape, text)


def format_json(value: Any) -> str:
    """A JSON value as compact, cleaned JSON text (non-ASCII kept readable).

    >>> format_json({"q": "café", "n": [1, 2.5]})
    '{"q":"café","n":[1,2.5]}'
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:  # a valid event may nest 10,000 deep
        text = js_dumps(value)
    return clean(text)


def plain(segments: Iterable[Segment]) -> str:
    """The text of a formatted line, styles dropped."""
    return "".join(text for text, _ in segments)


_LOG_STYLES: Final = {"debug": "dim", "info": "blue", "warn": "yellow", "error": "bold red"}


def _error_info(error: ErrorInfo) -> str:
    code = f"[{clean(error.code)}] " if isinstance(error.code, str) else ""
    return f"{code}{clean(error.message)}"


def _error_payload(error: ErrorPayload) -> str:
    return f"[{clean(error.code)}] {clean(error.message)}"


def _session_init(event: SessionInitEvent) -> list[Segment]:
    p = event.payload
    key = p.encryption.key_id
    encryption = "off"
    if p.encryption.enabled:
        encryption = "on" + (f" ({clean(key)})" if isinstance(key, str) else "")
    text = f"expires={clean(p.expires_at)} encryption={encryption}"
    text += f" cancel={clean(p.cancel_url)}"
    if isinstance(p.replay_url, str):
        text += f" replay={clean(p.replay_url)}"
    return [(text, "")]


def _stdout(event: StdoutEvent) -> list[Segment]:
    return [(format_json(event.payload.chunk), "")]


def _log(event: LogEvent) -> list[Segment]:
    p = event.payload
    out: list[Segment] = [(clean(p.message), _LOG_STYLES.get(p.level, ""))]
    if p.data is not UNSET:
        out.append((" " + format_json(p.data), "dim"))
    return out


def _tool_call(event: ToolCallEvent) -> list[Segment]:
    p = event.payload
    out: list[Segment] = [(clean(p.tool_name), "bold"), (f"({clean(p.call_id)})", "")]
    if p.args is not UNSET:
        out.append((" " + format_json(p.args), "dim"))
    return out


def _tool_result_applied(event: ToolResultAppliedEvent) -> list[Segment]:
    return [(clean(event.payload.call_id), "")]


def _final(event: FinalEvent) -> list[Segment]:
    p = event.payload
    ok: Segment = ("ok=true", "bold green") if p.ok else ("ok=false", "bold red")
    out: list[Segment] = [ok]
    if p.result is not UNSET:
        out.append((f" result={format_json(p.result)}", ""))
    if isinstance(p.error, ErrorInfo):
        out.append((f" error={_error_info(p.error)}", "red"))
    if isinstance(p.errors, list):
        out.extend((f" errors[{i}]={_error_payload(e)}", "red") for i, e in enumerate(p.errors))
    if isinstance(p.stats, SessionStats):
        s = p.stats
        calls = f"{s.tool_call_count} tool call{'s' * (s.tool_call_count != 1)}"
        out.append((f" ({s.duration_ms}ms, {calls}, {s.stdout_bytes} stdout bytes)", "dim"))
    return out


def _heartbeat(event: HeartbeatEvent) -> list[Segment]:
    return [(clean(event.payload.ts), "dim")]


def _error(event: ErrorEvent) -> list[Segment]:
    p = event.payload
    out: list[Segment] = [(clean(p.message), "red")]
    if p.recoverable is True:
        out.append((" (recoverable)", "dim"))
    return out


def _partial_result(event: PartialResultEvent) -> list[Segment]:
    p = event.payload
    out: list[Segment] = [(format_json(p.path), "bold")]
    if p.data is not UNSET:
        out.append((f" data={format_json(p.data)}", ""))
    if isinstance(p.error, ErrorPayload):
        out.append((f" error={_error_payload(p.error)}", "red"))
    out.append((" (more to come)" if p.has_next else " (last)", "dim"))
    return out


def _tool_progress(event: ToolProgressEvent) -> list[Segment]:
    p = event.payload
    text = f"{clean(p.call_id)} {p.phase}"
    if isinstance(p.bytes_received, int):
        total = f"/{p.total_bytes}" if isinstance(p.total_bytes, int) else ""
        text += f" {p.bytes_received}{total} bytes"
    return [(text, ""), (f" {p.elapsed_ms}ms", "dim")]


def _deadline_exceeded(event: DeadlineExceededEvent) -> list[Segment]:
    p = event.payload
    return [(f"after {p.elapsed_ms}ms (budget {p.budget_ms}ms)", "red")]


def _catalog_changed(event: CatalogChangedEvent) -> list[Segment]:
    p = event.payload
    return [
        (f"version {clean(p.version)}", ""),
        (f" +{format_json(p.added_actions)}", "green"),
        (f" -{format_json(p.removed_actions)}", "red"),
    ]


def _envelope(event: EncryptedEnvelope) -> list[Segment]:
    b64 = event.payload.ciphertext_b64
    size = len(b64) * 3 // 4 - (len(b64) - len(b64.rstrip("=")))
    return [(f"kid={clean(event.payload.kid)} ({size}-byte ciphertext)", "dim")]


_BODIES: Final[dict[type[Any], Callable[[Any], list[Segment]]]] = {
    SessionInitEvent: _session_init,
    StdoutEvent: _stdout,
    LogEvent: _log,
    ToolCallEvent: _tool_call,
    ToolResultAppliedEvent: _tool_result_applied,
    FinalEvent: _final,
    HeartbeatEvent: _heartbeat,
    ErrorEvent: _error,
    PartialResultEvent: _partial_result,
    ToolProgressEvent: _tool_progress,
    DeadlineExceededEvent: _deadline_exceeded,
    CatalogChangedEvent: _catalog_changed,
    EncryptedEnvelope: _envelope,
}

_TYPE_STYLES: Final = {
    "stdout": "green",
    "tool_call": "magenta",
    "tool_result_applied": "magenta",
    "tool_progress": "magenta",
    "final": "bold",
    "error": "bold red",
    "deadline_exceeded": "bold red",
    "heartbeat": "dim",
    "enc": "cyan",
}


def _label(event: ParsedEvent) -> Segment:
    kind = str(event.type)
    if isinstance(event, LogEvent):
        level = event.payload.level
        return f"log[{level}]", _LOG_STYLES.get(level, "")
    if isinstance(event, ErrorEvent) and isinstance(event.payload.code, str):
        return f"error[{clean(event.payload.code)}]", _TYPE_STYLES["error"]
    return kind, _TYPE_STYLES.get(kind, "cyan")


def format_event(event: ParsedEvent) -> list[Segment]:
    """One readable line: ``#seq type  details``.

    >>> from enclave_stream import ToolCallEvent

    >>> from enclave_stream.events import ToolCallPayload
    >>> call = ToolCallPayload(call_id="c_1", tool_name="web.search", args={"q": "x"})
    >>> plain(format_event(ToolCallEvent(session_id="s_1", seq=14, payload=call)))
    '#14 tool_call  web.search(c_1) {"q":"x"}'
    """
    return [
        (f"#{event.seq} ", "dim"),
        _label(event),
        ("  ", ""),
        *_BODIES[type(event)](event),
    ]


def format_session_header(session_id: str) -> list[Segment]:
    """The line shown when the stream moves to another session."""
    return [(f"── session {clean(session_id)} ──", "bold")]


def _strip_path(error: LineError) -> str:
    """The error message without its trailing `` - at $.path`` (shown separately)."""
    suffix = f" - at {error.path}"
    if error.path and error.error.endswith(suffix):
        return error.error[: -len(suffix)]
    return error.error


def format_line_error(error: LineError) -> list[Segment]:
    """A bad line: number, byte offset, field path, reason, and its start.

    >>> from enclave_stream import parse_lines
    >>> [bad] = parse_lines(b'{"protocolVersion":2,"sessionId":"s_1","seq":-1,'
    ...                     b'"type":"stdout","payload":{"chunk":""}}').errors
    >>> print(plain(format_line_error(bad)))
    line 1: $.seq: Validation error: Expected `int` >= 0
        {"protocolVersion":2,"sessionId":"s_1","seq":-1,"type":"stdout","payload":{"chunk":""}}
    """
    where = f"line {error.line}"
    if error.offset is not None:
        where += f" (byte {error.offset})"
    path = f"{error.path}: " if error.path and error.path != "$" else ""
    return [
        (f"{where}: ", "bold"),
        (path, "yellow"),
        (clean(_strip_path(error)), "red"),
        ("\n    " + clean(error.content), "dim"),
    ]


def format_encoding_issue(issue: EncodingIssue) -> list[Segment]:
    """A line that is not UTF-8.

    >>> plain(format_encoding_issue(EncodingIssue(4, 120, "invalid UTF-8 (...)")))
    'line 4 (byte 120): invalid UTF-8 (...)'
    """
    return [(f"line {issue.line} (byte {issue.offset}): ", "bold"), (issue.reason, "red")]
