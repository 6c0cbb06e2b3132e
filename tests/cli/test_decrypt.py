"""``enclave-stream decrypt``: inner events out, every failure reported with its line."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from enclave_stream import EncryptedEnvelope, ParsedEvent, parse_lines
from enclave_stream.cli.decrypt import parse_key
from tests.cli.helpers import (
    KEY,
    KEY_HEX,
    SID,
    cli,
    cli_inprocess,
    encrypted,
    ndjson,
    session,
    write,
)


def _tamper(envelope: ParsedEvent) -> EncryptedEnvelope:
    assert isinstance(envelope, EncryptedEnvelope)
    raw = bytearray(base64.b64decode(envelope.payload.ciphertext_b64))
    raw[0] ^= 1
    payload = envelope.payload.__class__(
        kid=envelope.payload.kid,
        nonce_b64=envelope.payload.nonce_b64,
        ciphertext_b64=base64.b64encode(bytes(raw)).decode(),
    )
    return EncryptedEnvelope(session_id=envelope.session_id, seq=envelope.seq, payload=payload)


def test_decrypts_every_envelope(tmp_path: Path) -> None:
    events = session()
    path = write(tmp_path / "enc.ndjson", ndjson(encrypted(events)))

    result = cli("decrypt", path, "--key", KEY_HEX)

    assert result.status == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ndjson(events)  # plaintext session_init copied through


def test_a_key_file_and_stdin(tmp_path: Path) -> None:
    events = session()
    key_file = tmp_path / "key.hex"
    key_file.write_text(f"0x{KEY_HEX}\n")

    result = cli_inprocess(
        "decrypt", "-", "--key-file", str(key_file), stdin=ndjson(encrypted(events))
    )

    assert result.status == 0, result.stderr
    assert result.stdout == ndjson(events)


def test_a_wrong_key_fails_every_envelope_with_its_line(tmp_path: Path) -> None:
    events = session()
    path = write(tmp_path / "enc.ndjson", ndjson(encrypted(events)))

    result = cli("decrypt", path, "--key", "11" * 32)

    assert result.status == 1
    assert result.stdout == b""
    reports = result.stderr.splitlines()
    assert len(reports) == 6
    assert reports[0] == (
        f"line 1: {SID} seq 1: cannot decrypt: Decryption failed: authentication tag mismatch"
        " (wrong key or nonce, or the envelope was altered) [authentication_failed]"
    )
    assert [r.split(":")[0] for r in reports] == [f"line {n}" for n in range(1, 7)]


def test_one_tampered_line_is_reported_and_the_rest_printed(tmp_path: Path) -> None:
    events = session()
    sealed = encrypted(events)
    sealed[3] = _tamper(sealed[3])
    path = write(tmp_path / "enc.ndjson", ndjson(sealed))

    result = cli_inprocess("decrypt", path, "--key", KEY_HEX)

    assert result.status == 1
    assert result.stdout == ndjson(events[:3] + events[4:])
    [report] = result.stderr.splitlines()
    assert report.startswith(f"line 4: {SID} seq 4: cannot decrypt: ")
    assert report.endswith("[authentication_failed]")


def test_an_envelope_moved_to_another_seq_is_refused(tmp_path: Path) -> None:
    events = session()
    sealed = encrypted(events)
    moved = sealed[2]
    assert isinstance(moved, EncryptedEnvelope)
    sealed[2] = EncryptedEnvelope(session_id=SID, seq=9, payload=moved.payload)

    result = cli_inprocess(
        "decrypt", write(tmp_path / "e.ndjson", ndjson(sealed)), "--key", KEY_HEX
    )

    assert result.status == 1
    assert result.stderr == (
        f"line 3: {SID} seq 9: the inner event ({SID} seq 3) does not match its envelope\n"
    )
    assert len(parse_lines(result.stdout).events) == 5


def test_bad_lines_and_bad_base64_are_reported(tmp_path: Path) -> None:
    sealed = encrypted(session())
    broken = ndjson(sealed[1:2]).replace(b'"nonceB64":"', b'"nonceB64":"!!')
    path = write(tmp_path / "e.ndjson", ndjson(sealed[:1]) + broken + b"{\n")

    result = cli_inprocess("decrypt", path, "--key", KEY_HEX)

    assert result.status == 1
    reports = result.stderr.splitlines()
    assert reports[0].startswith(f"line 2: {SID} seq 2: cannot decrypt: nonceB64: invalid base64")
    assert reports[0].endswith("[invalid_encoding]")
    assert reports[1].startswith("line 3 (byte ")


def test_plaintext_is_refused_by_default(tmp_path: Path) -> None:
    events = session()
    path = write(tmp_path / "e.ndjson", ndjson([events[0], *encrypted(events)[1:]]))

    result = cli_inprocess("decrypt", path, "--key", KEY_HEX)

    assert result.status == 1
    assert result.stdout == ndjson(events[1:])
    assert result.stderr == f"line 1: {SID} seq 1: plaintext session_init event\n"


def test_a_malformed_key_is_a_usage_error_that_does_not_echo_it(tmp_path: Path) -> None:
    path = write(tmp_path / "e.ndjson", b"")
    secret = "ab" * 31 + "zz"

    result = cli("decrypt", path, "--key", secret)

    assert result.status == 2
    assert "the key must be 64 hex digits" in result.stderr
    assert secret not in result.stderr


def test_a_malformed_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("abcd")

    result = cli_inprocess("decrypt", "-", "--key-file", str(key_file))

    assert result.status == 2
    assert result.stderr == (
        f"enclave-stream decrypt: {key_file}: the key must be 64 hex digits"
        " (a raw 32-byte AES-256 key)\n"
    )


@pytest.mark.parametrize(
    "text", [KEY_HEX, KEY_HEX.upper(), f" 0x{KEY_HEX}\n", " ".join(KEY.hex(" ").split())]
)
def test_parse_key_accepts_hex_forms(text: str) -> None:
    assert parse_key(text) == KEY


@pytest.mark.parametrize("text", ["", "00" * 31, "00" * 33, "g" * 64, " ".join(KEY_HEX)])
def test_parse_key_refuses_other_lengths_and_digits(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_key(text)
