"""Fuzzing every parse entry point: any input is an event or a typed error, never a crash.

Two generators, both bounded for CI:

* hypothesis builds hostile JSON (escaped lone surrogates and control
  characters in keys and values, huge and odd numbers, deep nesting) and places
  it where the schema looks (a key, the ``type``, the payload, an id);
* a byte-level mutator damages valid lines (inserting, deleting, duplicating
  bytes, splicing in hostile tokens).

For each damaged line ``bad`` the document ``GOOD \\n bad \\n GOOD2`` must give
the same events and the same number of errors through ``parse_lines``,
``NdjsonStreamParser`` (cut into chunks anywhere), ``parse_ndjson_stream``, the
CLI, and an ``EncryptedSession`` opening ``bad`` as its inner plaintext, and the
good lines on both sides are always delivered.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enclave_stream import (
    EncryptedEnvelope,
    EncryptedSession,
    LineError,
    NdjsonStreamParser,
    ParsedEvent,
    StdoutEvent,
    parse_line,
    parse_lines,
    serialize_event,
)
from enclave_stream._json import js_dumps, js_loads
from enclave_stream.crypto import SessionRole, encrypt
from enclave_stream.errors import EncryptionError
from enclave_stream.events import EncryptedEnvelopePayload, StdoutPayload
from enclave_stream.streams import parse_ndjson_stream
from tests.cli.helpers import cli_inprocess
from tests.strategies import any_event
from tests.vectors import cases

SID = "s_fuzz"
GOOD = StdoutEvent(session_id=SID, seq=1, payload=StdoutPayload("before"))
GOOD2 = StdoutEvent(session_id=SID, seq=2, payload=StdoutPayload("after"))
GOOD_LINE = serialize_event(GOOD).encode()
GOOD2_LINE = serialize_event(GOOD2).encode()
SEED_LINES = [case["line"].encode("utf-8", "surrogatepass") for case in cases("ndjson_parse.json")]

# The reported line: a lone surrogate as a payload key.
CRASHER = (
    b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout",'
    b'"payload":{"chunk":"x","\\ud800":1}}'
)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

# --- hostile JSON ---------------------------------------------------------------

lone_surrogates = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")
escaped_controls = st.integers(0, 0x1F).map(lambda c: f"\\u{c:04x}")
raw_controls = st.integers(0, 0x1F).map(chr)
plain_escapes = st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"])
bad_escapes = st.sampled_from(["\\x", "\\u12", "\\uZZZZ", "\\", "\\U0001f600"])
string_bodies = st.lists(
    st.one_of(
        lone_surrogates,
        escaped_controls,
        raw_controls,
        plain_escapes,
        bad_escapes,
        st.text(max_size=4),
        st.sampled_from(["stdout", "s_", "c_", "type", "payload", "seq", "__proto__"]),
    ),
    max_size=5,
).map("".join)
json_strings = string_bodies.map(lambda body: f'"{body}"')
numbers = st.one_of(
    st.sampled_from(["1e400", "-1e400", "1.0", "-0", "0.1e1", "1E2", "2e-400", "00", "1.", "-"]),
    st.integers(-(2**80), 2**80).map(str),
    st.integers(1, 400).map(lambda n: "9" * n),
    st.floats(allow_nan=False).map(repr),
)
scalars = st.one_of(
    json_strings, numbers, st.sampled_from(["true", "false", "null", "NaN", "Infinity"])
)


def _nest(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
    members = st.tuples(json_strings, children).map(lambda kv: f"{kv[0]}:{kv[1]}")
    objects = st.lists(members, max_size=3).map(lambda items: "{" + ",".join(items) + "}")
    deep = st.tuples(st.integers(900, 3000), children).map(lambda d: _nest(*d))
    return st.one_of(arrays, objects, deep)


hostile_values = st.recursive(scalars, _containers, max_leaves=8)

SKELETON = {
    "protocolVersion": "2",
    "sessionId": '"s_fuzz"',
    "seq": "3",
    "type": '"stdout"',
    "payload": '{"chunk":"x"}',
}


@st.composite
def hostile_lines(draw: st.DrawFn) -> bytes:
    """An event line with hostile JSON where the schema looks."""
    fields = dict(SKELETON)
    where = draw(st.sampled_from(["extra_key", "payload_key", "field", "payload", "args"]))
    value = draw(hostile_values)
    if draw(st.booleans()):  # a lone surrogate elsewhere in the line too
        fields["sessionId"] = '"s_\\udc00"'

    if where == "extra_key":
        fields[draw(json_strings)] = value
    elif where == "payload_key":
        fields["payload"] = f'{{"chunk":"x",{draw(json_strings)}:{value}}}'
    elif where == "field":
        fields[draw(st.sampled_from(sorted(SKELETON)))] = value
    elif where == "payload":
        fields["payload"] = value
    else:
        fields["type"] = '"tool_call"'
        fields["payload"] = f'{{"callId":"c_1","toolName":"t","args":{value}}}'
    body = ",".join(
        f"{key if key.startswith(chr(34)) else json.dumps(key)}:{item}"
        for key, item in fields.items()
    )
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


# --- byte-level mutations -----------------------------------------------------------

TOKENS = [
    b"\\ud800",
    b"\\udfff",
    b"\\u0000",
    b'"\\ud800":1,',
    b'"\\udc00":{"\\ud800":[1]},',
    b"\\",
    b'"',
    b"{",
    b"}",
    b"[" * 1200,
    b"1e400",
    b"\xff",
    b"\xed\xa0\x80",  # a surrogate encoded as UTF-8 (invalid)
    b"\xc3",
    b"\x00",
    b"\r",
    b"\n",
    b"\xe2\x80\xa8",
    b"\xef\xbb\xbf",
]


def mutate(line: bytes, rng: random.Random, steps: int) -> bytes:
    """Damage ``line`` with ``steps`` random edits."""
    for _ in range(steps):
        at = rng.randint(0, len(line))
        op = rng.random()
        if op < 0.4:
            line = line[:at] + rng.choice(TOKENS) + line[at:]
        elif op < 0.6:
            line = line[:at] + line[at + rng.randint(1, 8) :]
        elif op < 0.8:
            start = rng.randint(0, len(line))
            line = line[:at] + line[start : start + rng.randint(1, 24)] + line[at:]
        else:
            line = line[:at] + bytes([rng.randint(0, 255)]) + line[at + 1 :]
    return line


# --- the oracle -----------------------------------------------------------------------


def wire(events: list[ParsedEvent]) -> list[str]:
    """Events compared as JSON values, spelled as JavaScript would.

    Text, because ``==`` on values nested 3,000 deep would recurse; respelled,
    because a free-form ``1.0`` stays a float on the fast path and becomes 1
    on the slow one (compatibility N4), and which path a line nested close to
    msgspec's depth limit takes depends on how deep the caller's stack is.
    """
    return [js_dumps(js_loads(serialize_event(event))) for event in events]


def expected_events(document: bytes) -> tuple[list[str], int]:
    """What every stream parser must deliver: ``parse_line``'s verdict, line by line."""
    events: list[ParsedEvent] = []
    errors = 0
    for line in document.split(b"\n"):
        result = parse_line(line)
        if result.success:
            events.append(result.data)
        elif result.kind != "empty":
            errors += 1
    return wire(events), errors


def chunks_of(document: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.randint(0, len(document)) for _ in range(rng.randint(0, 6)))
    return [document[a:b] for a, b in zip([0, *cuts], [*cuts, len(document)], strict=True)]


def check_everywhere(bad: bytes, rng: random.Random) -> None:
    """``bad`` between two good lines: the same verdicts everywhere, the good lines kept."""
    parse_line(bad.decode("utf-8", "replace"))  # the str entry point never raises either
    document = GOOD_LINE + b"\n" + bad + b"\n" + GOOD2_LINE
    events, errors = expected_events(document)
    assert events[0] == wire([GOOD])[0]
    assert events[-1] == wire([GOOD2])[0]

    whole = parse_lines(document)
    assert (wire(whole.events), len(whole.errors)) == (events, errors)

    found: list[ParsedEvent] = []
    reported: list[LineError] = []
    parser = NdjsonStreamParser(found.append, reported.append)
    for chunk in chunks_of(document, rng):
        parser.feed(chunk)
    parser.flush()
    assert (wire(found), len(reported)) == (events, errors)

    assert stream_events(chunks_of(document, rng)) == (events, errors)
    check_inner_plaintext(bad)


def stream_events(chunks: list[bytes]) -> tuple[list[str], int]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def main() -> tuple[list[str], int]:
        errors: list[LineError] = []
        found = [event async for event in parse_ndjson_stream(source(), on_error=errors.append)]
        return wire(found), len(errors)

    return anyio.run(main)


KEY = bytes(range(32))


def check_inner_plaintext(plaintext: bytes) -> None:
    """An authentic envelope around ``plaintext``: an event or a typed refusal."""
    session = EncryptedSession(SID, "k_1", SessionRole.CLIENT, send_key=bytes(32), receive_key=KEY)
    nonce = bytes(11) + b"\x01"
    envelope = EncryptedEnvelope(
        session_id=SID,
        seq=3,
        payload=EncryptedEnvelopePayload(
            kid="k_1",
            nonce_b64=base64.b64encode(nonce).decode(),
            ciphertext_b64=base64.b64encode(encrypt(KEY, plaintext, nonce)).decode(),
        ),
    )
    verdict = parse_line(plaintext)
    try:
        opened = session.open(envelope)
    except EncryptionError:
        return
    assert verdict.success
    assert wire([opened]) == wire([verdict.data])


# --- the tests --------------------------------------------------------------------------


# Found by this fuzzer: a lone surrogate at the bottom of a value deeper than
# the recursion limit (the surrogate masking compared deep values with ==), and
# the CLI printing deep arguments (json.dumps recursed).
# Found by review: a lone surrogate in one field and a deep value without one
# in another (the restoring walk recursed into the untouched deep value).
SURROGATE_BESIDE_DEEP = (
    b'{"protocolVersion":2,"sessionId":"s_1","seq":2,"type":"tool_call","payload":'
    b'{"callId":"c_1","toolName":"\\ud83d","args":' + b"[" * 900 + b"]" * 900 + b"}}"
)
DEEP_SURROGATE = (
    b'{"protocolVersion":2,"sessionId":"s_fuzz","seq":3,"type":"tool_call","payload":'
    b'{"callId":"c_1","toolName":"t","args":' + b"[" * 3000 + b'"\\ud800"' + b"]" * 3000 + b"}}"
)


@FUZZ
@given(line=hostile_lines(), seed=st.integers(0, 2**32))
@example(line=DEEP_SURROGATE, seed=0)
@example(line=SURROGATE_BESIDE_DEEP, seed=0)
def test_hostile_json_never_crashes_a_parser(line: bytes, seed: int) -> None:
    check_everywhere(line, random.Random(seed))


@FUZZ
@given(
    event=any_event,
    seed=st.integers(0, 2**32),
    steps=st.integers(1, 5),
)
def test_mutated_events_never_crash_a_parser(event: ParsedEvent, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    check_everywhere(mutate(serialize_event(event).encode(), rng, steps), rng)


def test_mutated_reference_lines_never_crash_a_parser() -> None:
    """A fixed-seed sweep over every recorded line of the reference (the bug's own corpus)."""
    rng = random.Random(20261205)
    for _ in range(4):
        for line in SEED_LINES:
            check_everywhere(mutate(line, rng, rng.randint(1, 4)), rng)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(CRASHER, id="surrogate-key-in-payload"),
        pytest.param(SURROGATE_BESIDE_DEEP, id="surrogate-beside-a-deep-value"),
        pytest.param(
            b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"\\ud800","payload":{}}',
            id="surrogate-type",
        ),
        pytest.param(
            b'{"protocolVersion":2,"\\udfff":0,"sessionId":"s_1","seq":"\\ud800",'
            b'"type":"stdout","payload":{"chunk":"x"}}',
            id="surrogate-top-key-and-bad-seq",
        ),
    ],
)
def test_the_reported_crashers(line: bytes) -> None:
    check_everywhere(line, random.Random(0))


def test_a_surrogate_key_is_dropped_like_any_unknown_key() -> None:
    result = parse_line(
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"stdout",'
        b'"payload":{"chunk":"x","\\ud800":1}}'
    )
    assert result.success
    assert result.data == StdoutEvent(session_id="s_1", seq=1, payload=StdoutPayload("x"))


def test_surrogates_in_free_form_values_are_kept_exactly() -> None:
    line = (
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"tool_call","payload":'
        b'{"callId":"c_\\udbff","toolName":"t","args":{"\\ud800":["\\udc00",{"\\udfff":1}]}}}'
    )
    result = parse_line(line)
    assert result.success
    assert result.data.payload.call_id == "c_\udbff"
    assert result.data.payload.args == {"\ud800": ["\udc00", {"\udfff": 1}]}
    assert serialize_event(result.data).encode() == line


def test_a_refused_surrogate_is_named_in_the_message() -> None:
    result = parse_line(
        b'{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"\\ud800","payload":{}}'
    )
    assert not result.success
    assert result.error == "Validation error: Invalid value '\\ud800' - at $.type"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=hostile_lines(), seed=st.integers(0, 2**32))
@example(line=CRASHER, seed=0)
@example(line=DEEP_SURROGATE, seed=0)
def test_the_cli_reports_hostile_lines_without_a_traceback(
    line: bytes, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bad = mutate(line, random.Random(seed), seed % 3)
    path: Path = tmp_path_factory.mktemp("fuzz") / "s.ndjson"
    path.write_bytes(GOOD_LINE + b"\n" + bad + b"\n" + GOOD2_LINE + b"\n")
    events, errors = expected_events(path.read_bytes())
    for command in ("validate", "cat"):
        result = cli_inprocess(command, str(path))
        assert "Traceback" not in result.stderr
        assert result.status in (0, 1)
    checked = cli_inprocess("validate", str(path))
    assert f"events: {len(events)}" in checked.out
    assert f"bad lines: {errors}" in checked.out


def test_stand_ins_never_collide_with_the_lines_own_characters() -> None:
    """The private-use characters that stand in for surrogates are chosen outside the value."""
    taken = "".join(chr(0xF0000 + block * 0x800) for block in range(63))
    line = (
        '{"protocolVersion":2,"sessionId":"s_1","seq":1,"type":"log","payload":'
        f'{{"level":"info","message":"{taken}","data":{{"\\ud800":"\\udc00"}}}}}}'
    )
    result = parse_line(line)
    assert result.success
    assert result.data.payload.message == taken
    assert result.data.payload.data == {"\ud800": "\udc00"}

    every_block = taken + chr(0xF0000 + 63 * 0x800)
    refused = parse_line(line.replace(taken, every_block))
    assert not refused.success
    assert refused.kind == "validation"
    assert "supplementary private-use" in refused.error
