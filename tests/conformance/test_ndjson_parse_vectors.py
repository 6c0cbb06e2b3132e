"""Every case of tests/vectors/ndjson_parse.json: parse_line must agree with the reference."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest

from enclave_stream import parse_line, serialize_event
from enclave_stream._json import js_loads
from tests.jsvalues import json_equal
from tests.vectors import case_id, cases

CASES = cases("ndjson_parse.json")

# Re-serialization is "recommended, not required" to match byte for byte. msgspec
# writes floats of 1e16 and above as "1e16"/"1e308" where JavaScript writes
# "10000000000000000"/"1e+308" (same value; see docs/compatibility.md).
RESERIALIZE_NUMBER_FORMAT = {"duration_huge"}


def _expected(case: dict[str, Any]) -> Any:
    if "normalized_json" in case:
        return js_loads(case["normalized_json"])
    return case["normalized"]


def _at(value: Any, path: list[Any]) -> Any:
    for key in path:
        value = getattr(value, key) if isinstance(value, msgspec.Struct) else value[key]
    return value


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_parse_line_matches_reference(case: dict[str, Any]) -> None:
    result = parse_line(case["line"])
    assert result.success is case["accept"], getattr(result, "error", None)
    if not case["accept"]:
        assert result.kind == case["error_kind"]
        assert result.line == case["line"]
        assert result.error
        if case["error_kind"] == "validation":
            assert result.error.startswith("Validation error: ")
        return
    event = result.data
    assert event.type == case["type"]
    wire = js_loads(serialize_event(event))
    assert json_equal(wire, _expected(case)), (wire, _expected(case))
    for lossy in case.get("normalized_lossy", []):
        # The path is in wire names; walk our wire dict, then check the Python value.
        js_value = lossy["js_value"]
        parent = js_loads(serialize_event(event))
        *head, last = lossy["path"]
        for key in head:
            parent = parent[key]
        if js_value == "undefined":
            assert last not in parent
        elif js_value == "-0":
            assert parent[last] == 0
        else:  # Infinity / -Infinity / NaN travel as null, like JSON.stringify
            assert parent[last] is None


@pytest.mark.parametrize("case", [c for c in CASES if c["accept"]], ids=case_id)
def test_reserialization_matches_reference(case: dict[str, Any]) -> None:
    ours = serialize_event(parse_line(case["line"]).data)  # type: ignore[union-attr]
    if case["id"] in RESERIALIZE_NUMBER_FORMAT:
        assert ours != case["reserialized"]
        assert json_equal(json.loads(ours), json.loads(case["reserialized"]))
    else:
        assert ours == case["reserialized"]


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in c["line"])],
    ids=case_id,
)
def test_parse_line_bytes_agrees_with_str(case: dict[str, Any]) -> None:
    as_text = parse_line(case["line"])
    as_bytes = parse_line(case["line"].encode("utf-8"))
    assert as_bytes.success is as_text.success
    if as_text.success:
        assert serialize_event(as_bytes.data) == serialize_event(as_text.data)  # type: ignore[union-attr]
    else:
        assert as_bytes.kind == as_text.kind  # type: ignore[union-attr]


def test_lossy_infinity_is_kept_in_python() -> None:
    case = next(c for c in CASES if c["id"] == "args_infinity_via_overflow")
    args = parse_line(case["line"]).data.payload.args  # type: ignore[union-attr]
    assert args["x"] == math.inf
    assert args["y"] == -math.inf
