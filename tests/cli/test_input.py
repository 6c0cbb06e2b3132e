"""What every command reads: gzip decompressed, a JSON array or SSE text named, not parsed."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import KEY_HEX, SID, cli, cli_inprocess, encrypted, ndjson, session, write

COMMANDS = [
    ["validate"],
    ["cat"],
    ["cat", "--raw"],
    ["cat", "--json"],
    ["decrypt", "--key", KEY_HEX],
]
JSON_ARRAY = (
    "this is a JSON array of events, not NDJSON (one event per line); convert it with `jq -c '.[]'`"
)
SSE = (
    "this is server-sent events text (`data:` lines), not NDJSON; "
    "take the events out with `sed -n 's/^data: *//p'`"
)


def _events_json() -> list[object]:
    return [json.loads(line) for line in ndjson(session()).splitlines()]


def _json_array_pretty() -> bytes:
    return json.dumps(_events_json(), indent=2).encode()  # 200 lines, none an event


def _json_array_compact() -> bytes:
    return b"\xef\xbb\xbf \n" + json.dumps(_events_json()).encode()


def _sse() -> bytes:
    return b"".join(b"data: " + line + b"\n\n" for line in ndjson(session()).splitlines())


def _sse_with_fields() -> bytes:
    return b": keep-alive\nevent: message\nid: 1\n" + _sse()


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (_json_array_pretty, JSON_ARRAY),
        (_json_array_compact, JSON_ARRAY),
        (lambda: b"[]\n", JSON_ARRAY),
        (_sse, SSE),
        (_sse_with_fields, SSE),
        (lambda: gzip.compress(_json_array_pretty()), JSON_ARRAY),
    ],
)
def test_validate_names_what_the_input_is_instead_of_ndjson(
    tmp_path: Path, make: Callable[[], bytes], what: str
) -> None:
    path = write(tmp_path / "capture", make())

    result = cli("validate", path)

    assert result.status == 1
    assert result.out.splitlines() == [f"{path}: {what}", "FAILED: the input is not NDJSON"]
    assert result.stderr == ""
    assert cli_inprocess("validate", "-q", "-", stdin=make()).out == result.out.replace(
        path, "<stdin>"
    )


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("make", "what"), [(_json_array_pretty, JSON_ARRAY), (_sse, SSE)])
def test_every_command_refuses_a_json_array_or_sse_in_one_message(
    tmp_path: Path, command: list[str], make: Callable[[], bytes], what: str
) -> None:
    path = write(tmp_path / "capture", make())

    result = cli_inprocess(*command, path)

    assert result.status == 1
    if command == ["validate"]:
        assert result.out.startswith(f"{path}: {what}\n")
    else:
        assert result.stdout == b""
        assert result.stderr == f"enclave-stream: {path}: {what}\n"


def test_an_array_line_in_ndjson_is_still_ndjson(tmp_path: Path) -> None:
    # Only `[` then `{` (or `[]`) is taken for an array of events; `[1]` is a bad line.
    path = write(tmp_path / "s.ndjson", b"[1]\n" + ndjson(session()))

    result = cli_inprocess("validate", path)

    assert result.status == 1
    assert "line 1 (byte 0): Validation error: Expected `object`, got `array`" in result.out
    assert result.out.endswith("FAILED: 1 problem found\n")


def test_gzip_is_read_decompressed_by_every_command(tmp_path: Path) -> None:
    data = ndjson(session())
    plain = write(tmp_path / "s.ndjson", data)
    packed = write(tmp_path / "s.ndjson.gz", gzip.compress(data))
    sealed = ndjson(encrypted(session()))

    for command in (["cat"], ["cat", "--raw"], ["cat", "--json"]):
        assert cli_inprocess(*command, packed) == cli_inprocess(*command, plain)
    decrypted = cli_inprocess("decrypt", "-", "--key", KEY_HEX, stdin=gzip.compress(sealed))
    assert decrypted.status == 0
    assert decrypted.stdout == data
    validated = cli("validate", packed)
    expected = cli_inprocess("validate", plain).out.splitlines()
    size = Path(packed).stat().st_size
    expected[0] = f"{packed}: 6 lines, {len(data) / 1024:.1f} KiB ({len(data)} bytes) "
    expected[0] += f"(gzip, {size} bytes compressed)"
    assert validated.status == 0
    assert validated.out.splitlines() == expected


def test_concatenated_gzip_members_are_read_as_one_stream(tmp_path: Path) -> None:
    first, rest = ndjson(session()[:2]), ndjson(session()[2:])
    path = write(tmp_path / "s.ndjson.gz", gzip.compress(first) + gzip.compress(rest))

    result = cli_inprocess("cat", path, "--json")

    assert result.status == 0
    assert result.stdout == first + rest


def test_a_truncated_gzip_file_is_reported_after_what_it_holds(tmp_path: Path) -> None:
    data = ndjson(session() * 50)
    packed = gzip.compress(data)
    path = write(tmp_path / "s.ndjson.gz", packed[: len(packed) // 2])

    validated = cli_inprocess("validate", path)
    shown = cli_inprocess("cat", path, "--json")

    lines = validated.out.splitlines()
    assert validated.status == shown.status == 1
    assert "gzip: the gzip data ends early (the file is truncated)" in lines
    assert lines[-1].startswith("FAILED: ")
    assert len(lines) < 20  # a few reports, not one per line
    assert 0 < len(shown.stdout) < len(data)
    assert data.startswith(shown.stdout)
    assert shown.stderr.endswith(
        f"enclave-stream: {path}: the gzip data ends early (the file is truncated)\n"
    )


def test_corrupt_gzip_data_is_reported_not_parsed(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(ndjson(session() * 50)))
    packed[len(packed) // 2 :] = bytes(len(packed) - len(packed) // 2)
    path = write(tmp_path / "s.ndjson.gz", bytes(packed))

    result = cli_inprocess("validate", path)

    lines = result.out.splitlines()
    assert result.status == 1
    [damage] = [line for line in lines if line.startswith("gzip: ")]
    assert damage.startswith("gzip: the gzip data is corrupt (Error -3 while decompressing")
    assert len(lines) < 20


def test_gzip_of_a_session_without_final_is_still_truncated(tmp_path: Path) -> None:
    path = write(tmp_path / "s.ndjson.gz", gzip.compress(ndjson(session()[:-1])))

    result = cli_inprocess("validate", "-q", path)

    assert result.status == 1
    assert f"{SID}: 5 events, seq 1..5; gaps 0, duplicates 0, out of order 0; " in result.out
    assert "no final event (truncated)" in result.out
