"""JSON.stringify's bytes: the msgspec path of js_dumps_bytes against js_dumps itself."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enclave_stream._json import js_dumps, js_dumps_bytes
from enclave_stream.events import StdoutPayload


class Level(enum.IntEnum):
    ONE = 1


class Word(str, enum.Enum):
    B = "b"


class Text(str):
    pass


class Number(int):
    pass


# Values msgspec writes differently from JSON.stringify, or writes though JSON
# has no form for them: each must come out as js_dumps writes it (or raise as it does).
AWKWARD = [
    1.0,
    -0.0,
    100.0,
    1e21,
    1e-7,
    5e-324,
    1.7976931348623157e308,
    float("nan"),
    float("inf"),
    2**53 + 1,
    2**64,
    -(2**63) - 1,
    Level.ONE,
    Word.B,
    Text("x"),
    Number(5),
    datetime.date(2020, 1, 1),
    uuid.UUID(int=5),
    decimal.Decimal("1.5"),
    b"ab",
    (1, 2),
    frozenset([1]),
    msgspec.UNSET,
    StdoutPayload(chunk="c"),
    "\ud800",
    '\u2028\x7f\x00\x1f"\\',
]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: round(f, 3)),
    st.text(),
    st.sampled_from(AWKWARD),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3).map(collections.OrderedDict),
    ),
    max_leaves=12,
)


def _plain(value: Any) -> bytes | type[TypeError]:
    try:
        return js_dumps(value).encode("utf-8")
    except TypeError:
        return TypeError


def _ours(value: Any) -> bytes | type[TypeError]:
    try:
        return js_dumps_bytes(value)
    except TypeError:
        return TypeError


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(values)
@example({"payload": {"data": {"score": 1.0, "ratio": 0.25}}})
@example({"n": 1e21, "m": [1e-7, -0.0]})
@example({"k": msgspec.UNSET, "t": (1, 2)})
@example({1: "int key"})
def test_same_bytes_as_json_stringify_for_any_value(value: Any) -> None:
    assert _ours(value) == _plain(value)


@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_each_awkward_value_alone_and_nested(value: Any) -> None:
    for shape in (value, [value], {"a": {"b": value}}):
        assert _ours(shape) == _plain(shape)


def test_an_event_mapping_is_written_as_json_stringify_writes_it() -> None:
    event = {
        "protocolVersion": 2,
        "sessionId": "s_1",
        "seq": 3,
        "type": "log",
        "payload": {"level": "info", "message": "é\u2028", "data": {"x": 1.5, "y": [True, None]}},
    }
    assert js_dumps_bytes(event) == js_dumps(event).encode("utf-8")
