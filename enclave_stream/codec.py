"""Protocol messages to and from JSON, with JavaScript's verdicts.

One decode entry point, :func:`decode_lines`: msgspec first (a reused
``Decoder`` whose types carry the schema's constraints); a line it refuses is
re-read as ``JSON.parse`` reads it (:mod:`._json`) and validated with
``msgspec.convert``, so every verdict is the plain path's (a property test
checks that the two agree). :class:`EventEncoder` validates every message
before it leaves. Where JavaScript and msgspec differ: docs/compatibility.md
(N4, N5, N10-N12).
"""

from __future__ import annotations

__all__ = [
    "BYTES_PER_CONTAINER",
    "GC_PAUSE_BYTES",
    "GC_PAUSE_LINES",
    "DecodeFailure",
    "EventEncoder",
    "decode_event",
    "decode_lines",
    "decode_message",
    "encode_event",
    "encode_message",
    "serialize_event",
    "validate_event",
]

import gc
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import attrgetter, is_
from typing import Any, Final, TypeVar, cast

import msgspec
from msgspec.structs import force_setattr

from ._json import JsonSyntaxError, js_blank, js_dumps_bytes, js_loads, js_trim
from .errors import EventValidationError, FailureKind, ProtocolError
from .events import (
    DEFAULT_PROTOCOL_VERSION,
    PARSED_EVENT_CLASSES,
    CancelMessage,
    EncryptedEnvelopePayload,
    HeartbeatPayload,
    LogPayload,
    ParsedEvent,
    PartialResultPayload,
    StdoutPayload,
    ToolCallPayload,
    ToolResultAppliedPayload,
    ToolResultSubmitMessage,
)
from .protocol import MAX_SAFE_INTEGER, SESSION_ID_PREFIX, is_session_id

T = TypeVar("T")


class DecodeFailure(msgspec.Struct, frozen=True, gc=False):
    """Why one line is not a message (the stream parsers turn it into a ``LineError``).

    ``reason`` says what was expected, ``path`` where (a JSON path in wire
    names, validation failures only), ``trimmed`` is the trimmed line.
    """

    kind: FailureKind
    reason: str
    path: str | None
    trimmed: str

    @property
    def message(self) -> str:
        """The report: ``JSON parse error: ...``, ``Validation error: ...`` or ``Empty line``."""
        if self.kind is FailureKind.JSON:
            return f"JSON parse error: {self.reason}"
        if self.kind is FailureKind.VALIDATION:
            where = f" - at {self.path}" if self.path and self.path != "$" else ""
            return f"Validation error: {self.reason}{where}"
        return self.reason


_BLANK: Final = DecodeFailure(FailureKind.EMPTY, "Empty line", None, "")

# No float_hook: it would turn a free-form 1.0 into 1 as JavaScript does, but
# costs a Python call per float, and a peer writing JSON.stringify's output
# never writes 1.0 anyway (compatibility N4).
_EVENT_DECODER: Final = msgspec.json.Decoder(ParsedEvent)
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {ParsedEvent: _EVENT_DECODER}
_decode_event: Final = _EVENT_DECODER.decode

# What msgspec raises for input the plain path must judge: DecodeError (and
# its ValidationError), UnicodeError (a ValueError) for non-UTF-8 bytes or lone
# surrogates, RecursionError for deep nesting, TypeError for a str subclass
# (the plain path reads it as the str it is, and refuses what is no line).
_FAST_PATH_ERRORS: Final = (msgspec.DecodeError, ValueError, RecursionError, TypeError)

_PATH_SUFFIX = re.compile(r" - at `(\$[^`]*)`$")
_SESSION_ID_WORDS: Final = "a session id (a string starting with 's_' and at least 3 characters)"


def _explain(exc: msgspec.ValidationError) -> tuple[str, str]:
    """Split msgspec's message into (expectation, JSON path in wire names)."""
    text = str(exc)
    match = _PATH_SUFFIX.search(text)
    path = match.group(1) if match else "$"
    reason = text[: match.start()] if match else text
    inner = _PATH_SUFFIX.search(reason)
    if inner:  # a __post_init__ check: its path is relative to the payload's
        path += inner.group(1)[1:]
        reason = reason[: inner.start()]
    elif path.endswith(".sessionId") and reason.startswith("Expected `str` of length"):
        reason = f"Expected {_SESSION_ID_WORDS}"
    return reason, path


def _post_decode_problem(message: object) -> tuple[str, str] | None:
    """The rules msgspec's types leave to us: ``protocolVersion`` present, session id prefix.

    Returns (expectation, JSON path) or ``None`` when the message is fine.
    """
    missing = _missing_version_path(message)
    if missing is not None:
        return "Object missing required field `protocolVersion`", missing
    session_id = getattr(message, "session_id", None)
    if session_id is not None and not is_session_id(session_id):
        return f"Expected {_SESSION_ID_WORDS}, got {session_id!r}", "$.sessionId"
    return None


def _missing_version_path(message: object) -> str | None:
    """Where a decoded message lacked ``protocolVersion`` (msgspec filled the default in).

    ``None`` when every level that needs it had it on the wire.
    """
    if getattr(message, "protocol_version", None) is DEFAULT_PROTOCOL_VERSION:
        return "$"
    encryption = getattr(message, "encryption", None)
    hello = getattr(encryption, "client_hello", None)
    if getattr(hello, "protocol_version", None) is DEFAULT_PROTOCOL_VERSION:
        return "$.encryption.clientHello"
    hello = getattr(message, "client_hello", None)
    if getattr(hello, "protocol_version", None) is DEFAULT_PROTOCOL_VERSION:
        return "$.clientHello"
    return None


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw


# --- the one accept loop -----------------------------------------------------------


def decode_lines(
    lines: Sequence[bytes | str],
    *,
    longest: int | None = None,
    type_: Any = ParsedEvent,
    judge: bool = True,
) -> tuple[list[Any], list[int]]:
    """Decode each line on its own: one verdict per line, and where the refusals are.

    Returns ``(verdicts, refused)``: ``verdicts[i]`` is line ``i`` decoded as
    ``type_`` (events by default), or a :class:`DecodeFailure` saying why it is
    not one (kind ``EMPTY`` for a blank line); ``refused`` lists, in order, the
    indices whose verdict is not a message. Lines are taken untrimmed, without
    their newline.

    Args:
        longest: the length of the longest line, or any bound above it
            (measured if not given, or if over :data:`GC_PAUSE_BYTES`). A
            line over :data:`GC_PAUSE_BYTES` is checked against
            :data:`BYTES_PER_CONTAINER` before decoding and decoded with the
            cyclic GC paused.
        judge: with ``False``, a line the fast path cannot settle (blank
            lines aside) gets the verdict ``None``, for the caller to judge
            later with ``decode_event(line, fast=False)``, for example in a
            worker thread (docs/security.md).
    """
    verdicts: list[Any] = []
    refused: list[int] = []
    known_small = longest is not None and longest <= GC_PAUSE_BYTES
    # Every verdict stays alive until the batch returns, so in a big batch the
    # collector's full passes would walk the payload containers kept so far
    # again and again (super-linear), though none can be in a cycle yet.
    if len(lines) <= GC_PAUSE_LINES:  # the usual case, one line included: no context manager
        _accept(lines, 0, type_, judge, known_small, False, verdicts, refused)
        return verdicts, refused
    with _gc_paused(True):
        # Block by block, so that each line is measured, decoded and checked
        # while it is still in the CPU's cache.
        for start in range(0, len(lines), GC_PAUSE_LINES):
            block = lines[start : start + GC_PAUSE_LINES]
            _accept(block, start, type_, judge, known_small, True, verdicts, refused)
    return verdicts, refused


def _accept(
    lines: Sequence[bytes | str],
    base: int,
    type_: Any,
    judge: bool,
    known_small: bool,
    share: bool,
    verdicts: list[Any],
    refused: list[int],
) -> None:
    """msgspec first; what it refuses, or decodes but our rules refuse, gets the plain verdict.

    Appends the verdicts on ``lines`` (numbered from ``base``) and where the
    refusals are; with ``share``, the events of one session share its id string.
    """
    decode = _decoder_for(type_).decode
    first = len(refused)
    if not known_small and max(map(len, lines), default=0) > GC_PAUSE_BYTES:
        for index, line in enumerate(lines, base):
            if len(line) > GC_PAUSE_BYTES:
                value = _big_line(line, type_, judge)
            else:
                value = _verdict(line, decode, type_, judge)
            if type(value) is DecodeFailure or value is None:
                refused.append(index)
            verdicts.append(value)
        return
    # msgspec decodes line after line without a Python frame per line until
    # one fails; that line gets its verdict here, then decoding goes on.
    rest = iter(lines)
    while True:
        try:
            verdicts.extend(map(decode, rest))
            break
        except _FAST_PATH_ERRORS:
            index = len(verdicts)
            value = _refused_verdict(lines[index - base], type_, judge)
            if type(value) is DecodeFailure or value is None:
                refused.append(index)
            verdicts.append(value)
    if (
        type_ is ParsedEvent
        and len(refused) == first
        and _events_are_complete(verdicts[base:] if base else verdicts, share)
    ):
        return
    # The rules msgspec's types leave to us (_post_decode_problem), message by message.
    failed = set(refused[first:])
    for index in range(base, len(verdicts)):
        if index not in failed:
            problem = _post_decode_problem(verdicts[index])
            if problem is not None:
                refused.append(index)
                verdicts[index] = DecodeFailure(
                    FailureKind.VALIDATION, *problem, js_trim(_text(lines[index - base]))
                )
    refused[first:] = sorted(refused[first:])


def _events_are_complete(events: list[Any], share: bool) -> bool:
    """Every event had ``protocolVersion`` and an ``s_`` session id on the wire.

    Checked with C loops over the batch: a stream rarely has more than one
    session. With ``share``, the events of one session then share one id
    string, instead of each keeping its own copy (about 90 bytes per kept
    event): for a batch of more than GC_PAUSE_LINES lines (parse_lines keeps
    one), not for a smaller one such as a stream's usual chunk, whose events
    are mostly dropped once handled.
    """
    if any(map(is_, map(_version_of, events), repeat(DEFAULT_PROTOCOL_VERSION))):
        return False
    session_ids = set(map(_session_of, events))
    if not all(map(is_session_id, session_ids)):
        return False
    if share and len(session_ids) == 1 and len(events) > 1:
        # Fresh from the decoder, so nobody holds these events yet: the same
        # as making them with the shared string.
        shared = repeat(session_ids.pop())
        deque(map(force_setattr, events, repeat("session_id"), shared), maxlen=0)
    return True


_version_of: Final = attrgetter("protocol_version")
_session_of: Final = attrgetter("session_id")


def _decoder_for(type_: Any) -> msgspec.json.Decoder[Any]:
    # typing's Union hashes its arguments on every lookup: test the usual type first.
    if type_ is ParsedEvent:
        return _EVENT_DECODER
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders.setdefault(type_, msgspec.json.Decoder(type_))
    return decoder


def _verdict(line: bytes | str, decode: Callable[[Any], Any], type_: Any, judge: bool) -> Any:
    """One line's verdict: msgspec's message if our rules accept it, else the plain verdict."""
    try:
        value = decode(line)
    except _FAST_PATH_ERRORS:
        return _refused_verdict(line, type_, judge)
    # What msgspec accepts, JavaScript reads the same way (duplicate keys: the
    # last wins in both), so only these rules can refuse it now; that spares
    # re-reading a big line in pure Python to say its session id is bad. The
    # usual event passes them at a glance (msgspec checked the id's length).
    if (
        type_ is ParsedEvent
        and value.protocol_version is not DEFAULT_PROTOCOL_VERSION
        and value.session_id.startswith(SESSION_ID_PREFIX)
    ):
        return value
    problem = _post_decode_problem(value)
    if problem is None:
        return value
    return DecodeFailure(FailureKind.VALIDATION, *problem, js_trim(_text(line)))


def _refused_verdict(line: bytes | str, type_: Any, judge: bool) -> Any:
    """The plain verdict on a line msgspec refused, or ``None`` (deferred) when not judging."""
    if judge:
        return _plain(line, type_)
    return _BLANK if js_blank(line) else None


def _big_line(line: bytes | str, type_: Any, judge: bool) -> Any:
    """A line over GC_PAUSE_BYTES: bounded in containers, then decoded with the GC paused."""
    overload = _container_overload(line)
    if overload is not None:
        return overload
    with _gc_paused(True):
        return _verdict(line, _decoder_for(type_).decode, type_, judge)


def decode_event(raw: bytes | str, *, fast: bool = True) -> ParsedEvent | DecodeFailure:
    """Decode one line (untrimmed) into an event, or say why it is not one.

    ``fast=False`` reads it the plain way only: the same verdict, for a line
    the fast path already refused.
    """
    # The line of every opened envelope and of its plaintext comes through
    # here: the usual event (msgspec takes it and it passes _verdict's glance)
    # is returned at once; anything else gets _decode_one's verdict.
    if fast and len(raw) <= GC_PAUSE_BYTES:
        try:
            event = _decode_event(raw)
        except _FAST_PATH_ERRORS:
            pass
        else:
            if (
                event.protocol_version is not DEFAULT_PROTOCOL_VERSION
                and event.session_id.startswith(SESSION_ID_PREFIX)
            ):
                return event
    return cast("ParsedEvent | DecodeFailure", _decode_one(raw, ParsedEvent, fast))


def _decode_one(raw: bytes | str, type_: Any, fast: bool = True) -> Any:
    if not fast:
        return _plain(raw, type_)
    if len(raw) > GC_PAUSE_BYTES:
        return _big_line(raw, type_, True)
    return _verdict(raw, _decoder_for(type_).decode, type_, True)


def decode_message(raw: bytes | str | Mapping[str, Any], type_: type[T]) -> T:
    """Decode and validate one protocol message (a hello, a request ...).

    ``raw`` is JSON text or an already parsed mapping. Raises
    :class:`~enclave_stream.EventValidationError` (with ``.path``) when the
    message breaks the schema and :class:`~enclave_stream.ProtocolError` when it
    is not JSON.
    """
    if isinstance(raw, Mapping):
        raw = _js_encode(raw, "$")
    result = _decode_one(raw, type_)
    if isinstance(result, DecodeFailure):
        if result.kind is FailureKind.VALIDATION:
            raise EventValidationError(result.reason, result.path or "$")
        raise ProtocolError(f"{type_.__name__}: {result.message}")
    return cast(T, result)


# --- the plain path: JavaScript's reading, then validation ----------------------------


def _plain(raw: bytes | str, type_: Any) -> Any:
    """The verdict on one line, read as ``JSON.parse`` reads it (the message or a failure)."""
    if type(raw) is not str and type(raw) is not bytes:
        raw = _line_of(raw)
    overload = _container_overload(raw)
    if overload is not None:
        return overload
    with _gc_paused(len(raw) > GC_PAUSE_BYTES):
        text = _text(raw)
        trimmed = js_trim(text)
        if not trimmed:
            return DecodeFailure(FailureKind.EMPTY, "Empty line", None, trimmed)
        try:
            value = js_loads(trimmed)
        except JsonSyntaxError as exc:
            return DecodeFailure(FailureKind.JSON, str(exc), None, trimmed)
        try:
            result = _convert_js_value(value, type_)
        except msgspec.ValidationError as exc:
            reason, path = _explain(exc)
            return DecodeFailure(FailureKind.VALIDATION, reason, path, trimmed)
        problem = _post_decode_problem(result)
        if problem is not None:
            return DecodeFailure(FailureKind.VALIDATION, *problem, trimmed)
        return result


def _line_of(raw: object) -> bytes | str:
    """A line given as a str or bytes subclass, a bytearray or a memoryview, as
    plain str or bytes; TypeError for anything else."""
    if isinstance(raw, str):
        return str(raw)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    raise TypeError(f"Expected a line as str or bytes, got {type(raw).__name__}")


GC_PAUSE_BYTES: Final = 64 * 1024
"""Lines longer than this are decoded with the cyclic garbage collector paused."""

GC_PAUSE_LINES: Final = 1024
"""Batches of more lines than this are decoded with the cyclic garbage collector paused."""


@contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    # Collections would walk the new containers of a dense line, or of the
    # events a batch keeps, none of which can be in a cycle yet (docs/security.md).
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


BYTES_PER_CONTAINER: Final = 16
"""In a line over :data:`GC_PAUSE_BYTES`, at most one array or object per this many bytes.

A C decoder holds the GIL while it builds each container (compatibility N12)."""


def _container_overload(raw: bytes | str) -> DecodeFailure | None:
    """The failure for a big line with more arrays and objects than the bound, else None."""
    size = len(raw)
    if size <= GC_PAUSE_BYTES:
        return None
    if isinstance(raw, str):
        count = raw.count("[") + raw.count("{")  # brackets in strings count too: a bound
    else:
        count = raw.count(b"[") + raw.count(b"{")
    if count * BYTES_PER_CONTAINER <= size:
        return None
    head = raw[:200].decode("utf-8", "replace") if isinstance(raw, bytes) else raw[:200]
    return DecodeFailure(
        FailureKind.JSON,
        f"Too many arrays and objects: {count} in {size} bytes (a line over "
        f"{GC_PAUSE_BYTES} bytes may hold one per {BYTES_PER_CONTAINER} bytes)",
        None,
        js_trim(head),
    )


# Lone surrogates are valid in JSON.parse's strings but msgspec must encode a
# key to look up a struct field (and a tag or a refused value to report it),
# which fails on them. So convert() sees every lone surrogate replaced by a
# code point of a 2,048-wide Private Use block that appears nowhere in the
# value: lengths, prefixes and patterns judge alike, and the original text comes
# back by translating the result.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SUPPLEMENTARY_PRIVATE_USE = re.compile("[\U000f0000-\U0010ffff]")
_BLOCK = 0x800


def _convert_js_value(value: Any, type_: Any) -> Any:
    """``msgspec.convert`` for a value from :func:`js_loads`, lone surrogates included.

    Raises ``msgspec.ValidationError`` when the value breaks the schema, with
    the original characters in its message.
    """
    strings, containers = _walk(value)
    if not any(_LONE_SURROGATE.search(text) for text in strings):
        return msgspec.convert(value, type_)
    used = {
        ord(ch) // _BLOCK for text in strings for ch in _SUPPLEMENTARY_PRIVATE_USE.findall(text)
    }
    free = [block for block in range(0xF0000 // _BLOCK, 0x110000 // _BLOCK) if block not in used]
    if not free:  # 64 blocks, each holding one of the value's characters: never guess
        raise msgspec.ValidationError(
            "Lone surrogates beside characters of all 64 supplementary private-use blocks "
            "are not supported"
        )
    base = free[0] * _BLOCK
    mask = {code: base + code - 0xD800 for code in range(0xD800, 0xE000)}
    unmask = {masked: chr(code) for code, masked in mask.items()}
    originals: dict[int, Any] = {}
    masked_root = _masked(value, containers, mask, originals)
    try:
        result = msgspec.convert(masked_root, type_)
    except msgspec.ValidationError as exc:
        raise msgspec.ValidationError(_unmasked_message(str(exc), base, unmask)) from None
    copied = {id(node) for node in originals.values()}
    untouched = {id(node) for node in containers if id(node) not in copied}
    return _unmasked(result, unmask, originals, untouched)


_ESCAPED_ASTRAL = re.compile(r"\\U([0-9a-f]{8})")


def _unmasked_message(message: str, base: int, unmask: dict[int, str]) -> str:
    # msgspec quotes a refused value with repr(), which escapes our stand-ins.
    def escape(match: re.Match[str]) -> str:
        code = int(match.group(1), 16)
        if base <= code < base + _BLOCK:
            return f"\\u{code - base + 0xD800:04x}"
        return match.group()

    return _ESCAPED_ASTRAL.sub(escape, message).translate(unmask)


def _walk(root: Any) -> tuple[list[str], list[Any]]:
    """Every string (keys included) and every container of a JSON value, parents first."""
    strings: list[str] = []
    containers: list[Any] = []
    stack = [root]
    while stack:  # iterative: values may be nested deeper than the recursion limit
        node = stack.pop()
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict):
            containers.append(node)
            strings.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            containers.append(node)
            stack.extend(node)
    return strings, containers


def _masked(
    root: Any, containers: list[Any], mask: dict[int, int], originals: dict[int, Any]
) -> Any:
    """A copy of ``root`` with lone surrogates masked; ``originals`` maps copy ids back."""
    copies: dict[int, Any] = {}

    def masked(item: Any) -> Any:
        if isinstance(item, str):
            return item.translate(mask) if _LONE_SURROGATE.search(item) else item
        return copies.get(id(item), item)

    # Children before their parents; a container is copied only if something
    # in it changed (found by identity: == on deep values would recurse).
    for node in reversed(containers):
        if isinstance(node, dict):
            pairs = [(masked(key), masked(item)) for key, item in node.items()]
            if any(
                new[0] is not old[0] or new[1] is not old[1]
                for new, old in zip(pairs, node.items(), strict=True)
            ):
                copy: Any = dict(pairs)
                copies[id(node)] = copy
                originals[id(copy)] = node
        else:
            items = [masked(item) for item in node]
            if any(new is not old for new, old in zip(items, node, strict=True)):
                copies[id(node)] = items
                originals[id(items)] = node
    return masked(root)


def _unmasked(
    value: Any, unmask: dict[int, str], originals: dict[int, Any], untouched: set[int]
) -> Any:
    """``value`` (a convert() result) with the original characters back.

    Free-form values (``Any``) are the input's own containers: a masked copy
    is swapped for its original, one without lone surrogates (``untouched``)
    is kept as it is. So only the schema's own structure (a few levels) is
    walked, however deep the free-form values are.
    """
    if isinstance(value, str):
        return value.translate(unmask)
    if id(value) in untouched:
        return value
    original = originals.get(id(value))
    if original is not None:
        return original
    if isinstance(value, msgspec.Struct):
        changes = {}
        for name in value.__struct_fields__:
            item = getattr(value, name)
            restored = _unmasked(item, unmask, originals, untouched)
            if restored is not item:
                changes[name] = restored
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, list):
        return [_unmasked(item, unmask, originals, untouched) for item in value]
    if isinstance(value, dict):
        return {
            _unmasked(key, unmask, originals, untouched): _unmasked(
                item, unmask, originals, untouched
            )
            for key, item in value.items()
        }
    return value


# --- encoding ------------------------------------------------------------------
#
# Events are written with their base fields in the order JSON.stringify gives a
# peer's objects (protocolVersion, sessionId, seq, type, payload; msgspec alone
# would put the tag first and protocolVersion last). The part before seq depends
# only on the event type, version and session id, so it is built once per
# session and kept as a %-template: an event then costs one msgspec encode of its
# payload and one formatting operation. msgspec never validates on
# construction, so the encoder does: cheap type checks for stdout events,
# nothing more for payloads whose __post_init__ checked every field, and a
# decode of the encoded payload for the rest (so the rules are the decoder's).

# Payloads whose __post_init__ checks every field: they are frozen and their
# only mutable parts are free-form JSON values, which no change can make
# invalid, so an instance is valid by construction.
_VALID_BY_CONSTRUCTION: Final = frozenset(
    {HeartbeatPayload, LogPayload, ToolCallPayload, ToolResultAppliedPayload}
)


def _partial_result_is_valid(payload: PartialResultPayload) -> bool:
    # Its path list is mutable, so it is checked at encoding time; a nested
    # error is left to the full check.
    path = payload.path
    return (
        type(payload.has_next) is bool
        and payload.error is msgspec.UNSET
        and type(path) is list
        and all(type(part) is str for part in path)
    )


def _envelope_is_valid(payload: EncryptedEnvelopePayload) -> bool:
    tag = payload.tag_b64
    return (
        type(payload.kid) is str
        and type(payload.nonce_b64) is str
        and type(payload.ciphertext_b64) is str
        and bool(payload.kid and payload.nonce_b64 and payload.ciphertext_b64)
        and (tag is msgspec.UNSET or type(tag) is str)
    )


# Cheap checks that prove a payload valid (False means "run the full check").
_QUICK_CHECKS: Final[dict[Any, Callable[[Any], bool]]] = {
    PartialResultPayload: _partial_result_is_valid,
    EncryptedEnvelopePayload: _envelope_is_valid,
}

_TEMPLATE_CACHE_SIZE: Final = 1024
_ENCODE_ERRORS: Final = (UnicodeEncodeError, RecursionError, TypeError, OverflowError)


class _EventKind:
    """What the encoder needs per event class."""

    __slots__ = ("heads", "payload_type", "quick_check", "tag", "tail", "templates", "trusted")

    def __init__(self, event_type: type[msgspec.Struct]) -> None:
        self.tag = str(event_type.__struct_config__.tag)
        fields = msgspec.structs.fields(event_type)
        self.payload_type: Any = next(f.type for f in fields if f.name == "payload")
        self.trusted = self.payload_type in _VALID_BY_CONSTRUCTION
        self.quick_check = _QUICK_CHECKS.get(self.payload_type)
        # protocol version -> session id -> b'{"protocolVersion":2,...,"seq":%d,...%s}'
        self.templates: dict[int, dict[str, bytes]] = {1: {}, 2: {}}
        # The same lines as text for serialize_event: per version-2 session the
        # head up to seq (kept with templates[2], key for key), then the tail
        # up to the payload.
        self.heads: dict[str, str] = {}
        self.tail = f',"type":"{self.tag}","payload":'


def _enc_hook(value: Any) -> Any:
    if isinstance(value, int):  # the DEFAULT_PROTOCOL_VERSION marker is an int subclass
        return int(value)
    raise TypeError(f"Objects of type {type(value).__name__} are not JSON values")


_json_encoder: Final = msgspec.json.Encoder(enc_hook=_enc_hook)


class EventEncoder:
    """Encodes events as compact JSON lines, validating each one first.

    Reuse one instance (it keeps per-session templates). An invalid event raises
    :class:`~enclave_stream.EventValidationError` naming the field, so it never
    reaches the wire.

    >>> from enclave_stream import StdoutEvent

    >>> from enclave_stream.events import StdoutPayload
    >>> EventEncoder().encode(StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("hi")))
    b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout","payload":{"chunk":"hi"}}'
    """

    def __init__(self) -> None:
        self._kinds: dict[type[Any], _EventKind] = {
            cls: _EventKind(cls) for cls in PARSED_EVENT_CLASSES
        }

    def encode(self, event: ParsedEvent | Mapping[str, Any]) -> bytes:
        """One event as a JSON line, without a newline."""
        # The usual event (a known class, a session already templated, a valid
        # seq, a payload that needs no check or passes its quick one) inline: a
        # one-event batch costs more than the checks. Anything else takes
        # encode_all, which says why. serialize_event inlines the same checks
        # (a call would cost what inlining saves); the one-event property test
        # holds both to encode_all.
        kind = self._kinds.get(type(event))
        if kind is not None:
            known: Any = event  # a protocol event's class: it has these fields
            seq = known.seq
            payload = known.payload
            if (
                type(seq) is int
                and 0 <= seq <= MAX_SAFE_INTEGER
                and type(payload) is kind.payload_type
                and (
                    kind.trusted
                    or (type(payload) is StdoutPayload and type(payload.chunk) is str)
                    or (kind.quick_check is not None and kind.quick_check(payload))
                )
            ):
                version = known.protocol_version
                # True == 1 would find version 1's templates; the default marker is 2.
                templates = (
                    kind.templates.get(version)
                    if type(version) is int or version is DEFAULT_PROTOCOL_VERSION
                    else None
                )
                session_id = known.session_id
                template = (
                    templates.get(session_id) if templates and type(session_id) is str else None
                )
                if template is not None:
                    try:
                        return template % (seq, _json_encoder.encode(payload))
                    except _ENCODE_ERRORS:
                        pass  # encode_all says why, or falls back
        return self.encode_all((event,))[0]

    def encode_lines(self, events: Iterable[ParsedEvent | Mapping[str, Any]]) -> bytes:
        """Events as NDJSON, every line ending in ``\\n``."""
        lines = self.encode_all(events)
        return b"\n".join(lines) + b"\n" if lines else b""

    def encode_all(self, events: Iterable[ParsedEvent | Mapping[str, Any]]) -> list[bytes]:
        """Each event as a JSON line (no newlines), in order."""
        kinds = self._kinds
        encode = _json_encoder.encode
        default_version = DEFAULT_PROTOCOL_VERSION
        max_seq = MAX_SAFE_INTEGER
        stdout = StdoutPayload
        out: list[bytes] = []
        append = out.append
        # One loop for everything: a function call per event would cost as
        # much as the checks themselves.
        event: Any
        for event in events:
            try:
                kind = kinds[type(event)]
            except KeyError:
                event = _coerce(event)
                kind = kinds[type(event)]
            version = event.protocol_version
            if version is default_version:
                version = 2
            elif type(version) is not int:  # True == 1 would find version 1's templates
                raise _bad_version(version)
            session_id = event.session_id
            try:
                # Only a plain str finds a template: an equal str subclass (or
                # anything hashing like one) gets _template's verdict.
                template = kind.templates[version][session_id] if type(session_id) is str else None
            except KeyError:
                template = None
            if template is None:
                template = self._template(kind, version, session_id)
            seq = event.seq
            if type(seq) is not int or seq < 0 or seq > max_seq:
                raise EventValidationError(
                    f"Expected `int` >= 0 and <= {MAX_SAFE_INTEGER}, got {seq!r}", "$.seq"
                )
            payload = event.payload
            payload_type = type(payload)
            if payload_type is kind.payload_type and (
                kind.trusted or (payload_type is stdout and type(payload.chunk) is str)
            ):
                try:
                    append(template % (seq, encode(payload)))
                    continue
                except _ENCODE_ERRORS:
                    pass  # _payload() says why, or falls back
            append(template % (seq, self._payload(kind, payload)))
        return out

    def _payload(self, kind: _EventKind, payload: Any) -> bytes:
        body = _to_json(payload, "$.payload")
        if type(payload) is not kind.payload_type or not (
            kind.trusted or (kind.quick_check is not None and kind.quick_check(payload))
        ):
            _decode_checked(body, kind.payload_type, "$.payload")
        return body

    def _template(self, kind: _EventKind, version: int, session_id: object) -> bytes:
        templates = kind.templates.get(version)
        if templates is None:
            raise _bad_version(version)
        if not is_session_id(session_id):
            raise EventValidationError(
                f"Expected {_SESSION_ID_WORDS}, got {session_id!r}", "$.sessionId"
            )
        quoted = _to_json(session_id, "$.sessionId").decode("utf-8")
        # The one place a line's base fields are written: as text up to seq
        # (serialize_event's head), and as the %-template encode fills in.
        head = f'{{"protocolVersion":{version},"sessionId":{quoted},"seq":'
        template = f"{head.replace('%', '%%')}%d{kind.tail}%s}}".encode()
        if len(templates) >= _TEMPLATE_CACHE_SIZE:
            templates.clear()
            if version == 2:
                kind.heads.clear()
        templates[session_id] = template
        if version == 2:
            kind.heads[session_id] = head
        return template


def _bad_version(version: object) -> EventValidationError:
    return EventValidationError(
        f"Expected protocol version 1 or 2, got {version!r}", "$.protocolVersion"
    )


def _coerce(item: object) -> ParsedEvent:
    if isinstance(item, Mapping):
        return validate_event(item)
    raise EventValidationError(f"Expected a protocol event or a mapping, got {type(item).__name__}")


def _js_encode(value: Any, path: str) -> bytes:
    try:
        return js_dumps_bytes(value)
    except TypeError as exc:
        raise EventValidationError(str(exc), path) from None


def _to_json(value: Any, path: str) -> bytes:
    """msgspec's JSON, or ``JSON.stringify``'s where msgspec cannot write the value
    (lone surrogates, nesting past the recursion limit); a bad value is reported at ``path``."""
    try:
        return _json_encoder.encode(value)
    except (UnicodeEncodeError, RecursionError):
        return _js_encode(value, path)
    except (TypeError, OverflowError) as exc:
        raise EventValidationError(str(exc), path) from None


def _decode_checked(raw: bytes, type_: Any, at: str = "$") -> Any:
    """``raw`` decoded as ``type_``, or EventValidationError naming the field under ``at``."""
    result = _decode_one(raw, type_)
    if isinstance(result, DecodeFailure):
        raise EventValidationError(result.reason, at + (result.path or "$")[1:])
    return result


def validate_event(event: ParsedEvent | Mapping[str, Any]) -> ParsedEvent:
    """Check an event against the protocol schema; return it as a typed event.

    A mapping is read as its wire form (camelCase keys), as a receiver would
    read ``JSON.stringify(mapping)``. Raises
    :class:`~enclave_stream.EventValidationError` naming the offending field.
    """
    if isinstance(event, Mapping):
        return cast(ParsedEvent, _decode_checked(_js_encode(event, "$"), ParsedEvent))
    _default_encoder.encode(event)
    return event


_default_encoder: Final = EventEncoder()
_default_kinds: Final = _default_encoder._kinds


# The shared encoder's own method, not a function calling it: one Python
# call less per event on every hot path that encodes.
encode_event: Final[Callable[[ParsedEvent | Mapping[str, Any]], bytes]] = _default_encoder.encode
"""Encode one event with a shared :class:`EventEncoder` (its bound ``encode``)."""


_VERSION_2: Final = 2  # a decoded or written 2 is this object (CPython's small ints)


def serialize_event(event: ParsedEvent | Mapping[str, Any]) -> str:
    """One event as a compact JSON line (no newline), as ``JSON.stringify`` writes it.

    The event is validated first: an invalid event raises
    :class:`~enclave_stream.EventValidationError` naming the field, so it never
    reaches the wire. A mapping in wire form (camelCase keys) is accepted too.
    """
    # The usual event (the checks of EventEncoder.encode's inline path, kept
    # in step with them, for version 2 and a session whose head is known) is
    # written as text in one formatting step: formatting bytes and then
    # decoding them costs a third more. Anything else is encode_all's line,
    # which says why an event is refused (and makes the session's head).
    kind = _default_kinds.get(type(event))
    if kind is not None:
        known: Any = event  # a protocol event's class: it has these fields
        seq = known.seq
        payload = known.payload
        version = known.protocol_version
        session_id = known.session_id
        if (
            type(seq) is int
            and 0 <= seq <= MAX_SAFE_INTEGER
            and (version is DEFAULT_PROTOCOL_VERSION or version is _VERSION_2)
            and type(session_id) is str
            and type(payload) is kind.payload_type
            and (
                kind.trusted
                or (type(payload) is StdoutPayload and type(payload.chunk) is str)
                or (kind.quick_check is not None and kind.quick_check(payload))
            )
        ):
            head = kind.heads.get(session_id)
            if head is not None:
                try:
                    return f"{head}{seq}{kind.tail}{_json_encoder.encode(payload).decode()}}}"
                except _ENCODE_ERRORS:
                    pass  # encode_all says why, or falls back
    return _default_encoder.encode_all((event,))[0].decode("utf-8")


_RUNTIME_TAGS: Final[dict[type, str]] = {
    ToolResultSubmitMessage: "tool_result_submit",
    CancelMessage: "cancel",
}


def encode_message(message: msgspec.Struct) -> bytes:
    """Encode a message that is not a stream event (hello, request, runtime message).

    Validated like a received message; keys come out in ``JSON.stringify``'s order.
    """
    tag = _RUNTIME_TAGS.get(type(message))
    if tag is not None:
        runtime = cast("ToolResultSubmitMessage | CancelMessage", message)
        head = {
            "protocolVersion": int(runtime.protocol_version),
            "sessionId": runtime.session_id,
            "type": tag,
            "payload": runtime.payload,
        }
        data = _js_encode(head, "$")
    else:
        data = _to_json(message, "$")
    decode_message(data, type(message))
    return data
