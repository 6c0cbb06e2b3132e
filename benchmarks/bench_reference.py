"""Ours against the TypeScript reference on this machine: same corpus, alternating rounds.

The reference (``@enclave-vm/stream`` with its zod schemas, bundled for Node as
``benchmarks/reference/README.md`` says) runs in one warm Node process
(``benchmarks/reference/bench.mjs --serve``); this script runs our matching
paths in Python. Rounds alternate: our round, the reference's round, ... and
each figure is the best of ``--repeat`` rounds, so a slow patch of a shared
machine hits both sides. Each of our rounds starts ``--settle`` seconds (1)
after the reference's, once its helper threads are done. Both collectors are
on; each run starts after a full collection (``gc.collect()`` here,
``global.gc()`` in Node).

Paths (events/s, ours against the reference):

* ``parse_lines``: the 200,000-line corpus of ``bench_ndjson.py``
  (``build_corpus``), every event validated and kept; the reference's
  ``parseLines(text)`` (zod-validated) on the decoded text;
* ``stream_parser_64k``: ``NdjsonStreamParser`` with callbacks fed 64 KiB
  chunks of bytes (the reference decodes each chunk with a streaming
  ``TextDecoder``, as its ``parseNdjsonStream`` does);
* ``serialize_event``: one event at a time, over each side's parsed corpus;
* ``create_envelope_typed`` / ``create_envelope_dict``: our
  ``SessionEncryptionContext.create_envelope`` from a typed event / a wire
  dict, against the reference's ``ctx.createEnvelope`` (a plain object);
* ``seal_line``: our ``EncryptedSession.seal_line`` against the reference's
  ``serializeEvent(await ctx.createEnvelope(...))``;
* ``decrypt_json``: ``ctx.decrypt_json(payload)`` against ``ctx.decryptJson``;
* ``open``: our ``session.open(decode_event(line))`` against the reference's
  ``parseLine`` + ``ctx.decryptJson`` + ``parseStreamEventOrEncrypted`` of the
  inner event; both open the same lines, which we sealed.

The crypto paths use ``stdout`` events with a 200-byte chunk (``bench_crypto``).
Wire checks, printed under ``checks``: the reference reads every corpus line
(200,000 events, 0 errors), opens every line we sealed, and we open every
line it sealed; where its ``serializeEvent`` does not give back the corpus line
it read, our ``serialize_event`` of the same line is printed beside it.

Target (issue 11): ``parse_lines`` >= 1.8x the reference. The other rows are
printed for information (their targets are against floors, in
``bench_ndjson.py`` and ``bench_crypto.py``).

Without Node or without the bundle this prints why and exits 0.

Run: ``python benchmarks/bench_reference.py [--bundle PATH] [--lines N]
[--crypto-events N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec
from bench_crypto import C2S, KEY_ID, SESSION, client_session, make_events, server_session
from bench_ndjson import CHUNK, build_corpus
from harness import machine, race

from enclave_stream import EncryptedEnvelope, NdjsonStreamParser, parse_lines, serialize_event
from enclave_stream.codec import decode_event
from enclave_stream.crypto import SessionEncryptionContext, SessionKeyInfo

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "reference" / "bench.mjs"
DEFAULT_BUNDLE = (
    Path(os.environ.get("ENCLAVE_REF_DIR", "/tmp/enclave-ref")) / "dist" / "enclave-stream-ref.mjs"
)
NOT_BUILT = "reference not built: see benchmarks/reference/README.md"

# (row, our path, the reference's path, target ours/reference or None)
ROWS: list[tuple[str, str, str, float | None]] = [
    ("parse_lines", "parse_lines", "parse_lines", 1.8),
    ("stream_parser_64k", "stream_parser_64k", "stream_parser_64k", None),
    ("serialize_event", "serialize_event", "serialize_event", None),
    ("create_envelope_typed", "create_envelope_typed", "create_envelope", None),
    ("create_envelope_dict", "create_envelope_dict", "create_envelope", None),
    ("seal_line", "seal_line", "seal_line", None),
    ("decrypt_json", "decrypt_json", "decrypt_json", None),
    ("open", "open", "open", None),
]
# What issue 11 quotes for the reference, measured on another machine.
ISSUE_11_REFERENCE = {
    "parse_lines": 308_000,
    "stream_parser_64k": 381_000,
    "serialize_event": 659_000,
    "create_envelope": 28_000,
    "decrypt_json": 23_000,
}


def missing(bundle: Path) -> str | None:
    """Why the reference cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not bundle.is_file():
        return f"no bundle at {bundle}"
    return None


def banner(bundle: Path) -> str:
    """The bundle's first line: the build's banner names the reference commit."""
    with bundle.open(encoding="utf-8") as f:
        first = f.readline().strip()
    return first.removeprefix("//").strip() if first.startswith("//") else "(no banner)"


class Reference:
    """The reference's bench.mjs in ``--serve`` mode: one warm Node process."""

    def __init__(self, argv: list[str]) -> None:
        self._process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"bench.mjs did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        out: IO[str] | None = self._process.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise RuntimeError(f"bench.mjs ended early (exit code {self._process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _send(self, command: str) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()

    def round(self) -> dict[str, float]:
        """One timed round of every reference path: seconds per path."""
        self._send("round")
        taken: dict[str, float] = self._read()["round"]
        return taken

    def finish(self) -> dict[str, Any]:
        """The summary: best figures and the reference's checks."""
        self._send("end")
        summary = self._read()
        if self._process.wait() != 0:
            raise RuntimeError("bench.mjs failed")
        return summary


def our_paths(
    corpus: bytes, n: int, crypto_events: int, sealed_lines: list[bytes]
) -> tuple[dict[str, Callable[[], object]], list[Any]]:
    """Our side of every row, and our parsed corpus."""
    chunks = [corpus[i : i + CHUNK] for i in range(0, len(corpus), CHUNK)]
    our_events = parse_lines(corpus).events
    assert len(our_events) == n
    typed = make_events(crypto_events)
    wire = [msgspec.to_builtins(e) for e in typed]
    envelopes = [decode_event(line) for line in sealed_lines]
    payloads = [e.payload for e in envelopes if isinstance(e, EncryptedEnvelope)]
    assert len(payloads) == len(sealed_lines)

    def context() -> SessionEncryptionContext:
        return SessionEncryptionContext(C2S, SessionKeyInfo(KEY_ID))

    def run_parse_lines() -> None:
        result = parse_lines(corpus)
        assert len(result.events) == n
        assert not result.errors

    def run_stream_parser() -> None:
        count = 0

        def on_event(_: object) -> None:
            nonlocal count
            count += 1

        def on_error(error: object) -> None:
            raise AssertionError(error)

        parser = NdjsonStreamParser(on_event, on_error)
        for chunk in chunks:
            parser.feed(chunk)
        parser.flush()
        assert count == n

    def run_serialize_event() -> None:
        total = 0
        for event in our_events:
            total += len(serialize_event(event))
        assert total > 0

    def run_create_envelope_typed() -> None:
        create = context().create_envelope
        out = [create(SESSION, e.seq, e) for e in typed]
        assert len(out) == crypto_events

    def run_create_envelope_dict() -> None:
        create = context().create_envelope
        out = [create(SESSION, e["seq"], e) for e in wire]
        assert len(out) == crypto_events

    def run_seal_line() -> None:
        seal_line = client_session().seal_line
        out = [seal_line(e) for e in typed]
        assert len(out) == crypto_events

    def run_decrypt_json() -> None:
        decrypt = context().decrypt_json
        out = [decrypt(p) for p in payloads]
        assert len(out) == len(payloads)

    def run_open() -> None:
        open_ = server_session().open
        out = [open_(decode_event(line)) for line in sealed_lines]  # type: ignore[arg-type]
        assert len(out) == len(sealed_lines)
        assert out[-1] == typed[-1]

    paths: dict[str, Callable[[], object]] = {
        "parse_lines": run_parse_lines,
        "stream_parser_64k": run_stream_parser,
        "serialize_event": run_serialize_event,
        "create_envelope_typed": run_create_envelope_typed,
        "create_envelope_dict": run_create_envelope_dict,
        "seal_line": run_seal_line,
        "decrypt_json": run_decrypt_json,
        "open": run_open,
    }
    return paths, our_events


def wire_checks(
    reference: dict[str, Any], corpus_lines: list[bytes], our_events: list[Any], theirs: Path
) -> dict[str, Any]:
    """What each side makes of the other's lines."""
    checks: dict[str, Any] = dict(reference["checks"])
    ours_same = sum(
        serialize_event(e).encode("utf-8") == line
        for e, line in zip(our_events, corpus_lines, strict=True)
    )
    checks["ours_serialize_event_same_line"] = ours_same
    # Where the reference does not write back the line it read, what do we write?
    for different in checks.get("serialize_event_first_different_lines", []):
        index = different["line"] - 1
        different["read"] = corpus_lines[index].decode("utf-8")
        different["ours_written"] = serialize_event(our_events[index])
        different["same_as_ours"] = different["ours_written"] == different["written"]
    receiver = server_session()
    their_lines = [line for line in theirs.read_bytes().split(b"\n") if line]
    opened = [receiver.open(decode_event(line)) for line in their_lines]  # type: ignore[arg-type]
    checks["ours_opened_reference_sealed"] = len(opened)
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--crypto-events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds to wait before each of our rounds (V8's helper threads finish)",
    )
    args = parser.parse_args()

    why = missing(args.bundle)
    if why is not None:
        print(json.dumps({"reference": NOT_BUILT, "reason": why}, indent=2))
        return

    corpus = build_corpus(args.lines)
    corpus_lines = corpus.split(b"\n")[:-1]
    n = len(corpus_lines)
    sealer = client_session()
    sealed_lines = [sealer.seal_line(e) for e in make_events(args.crypto_events)]

    with tempfile.TemporaryDirectory(prefix="enclave-ref-bench-") as tmp:
        corpus_path = Path(tmp) / "corpus.ndjson"
        corpus_path.write_bytes(corpus)
        ours_sealed = Path(tmp) / "ours-sealed.ndjson"
        ours_sealed.write_bytes(b"\n".join(sealed_lines) + b"\n")
        theirs_sealed = Path(tmp) / "reference-sealed.ndjson"
        argv = [
            "node",
            "--expose-gc",
            str(SCRIPT),
            "--bundle",
            str(args.bundle),
            "--corpus",
            str(corpus_path),
            "--crypto-events",
            str(args.crypto_events),
            "--sealed",
            str(ours_sealed),
            "--write-sealed",
            str(theirs_sealed),
            "--warmup",
            "--serve",
        ]
        paths, our_events = our_paths(corpus, n, args.crypto_events, sealed_lines)
        race(1, paths)  # our warm-up round, as the reference gets one
        reference = Reference(argv)
        ours_rounds: list[dict[str, float]] = []
        theirs_rounds: list[dict[str, float]] = []
        for _ in range(args.repeat):
            # Node's collector and compiler go on in helper threads after its
            # round; on a two-core machine they would run during ours.
            time.sleep(args.settle)
            ours_rounds.append(race(1, paths))
            theirs_rounds.append(reference.round())
        summary = reference.finish()
        checks = wire_checks(summary, corpus_lines, our_events, theirs_sealed)

    corpus_paths = {"parse_lines", "stream_parser_64k", "serialize_event"}
    counts = {name: n if name in corpus_paths else args.crypto_events for name in paths}
    ref_counts = {name: value["events"] for name, value in summary["paths"].items()}
    rows: dict[str, dict[str, Any]] = {}
    for row, ours_name, their_name, target in ROWS:
        ours_each = [counts[ours_name] / taken[ours_name] for taken in ours_rounds]
        their_each = [ref_counts[their_name] / taken[their_name] for taken in theirs_rounds]
        ours_rate, their_rate = max(ours_each), max(their_each)
        entry: dict[str, Any] = {
            "ours_events_per_s": round(ours_rate),
            "reference_events_per_s": round(their_rate),
            "ratio": round(ours_rate / their_rate, 3),
            "ours_each_round": [round(rate) for rate in ours_each],
            "reference_each_round": [round(rate) for rate in their_each],
        }
        if target is not None:
            entry["target"] = target
            entry["ok"] = ours_rate / their_rate >= target
        rows[row] = entry

    results: dict[str, Any] = {
        "machine": machine(msgspec=msgspec.__version__, node=summary["node"]),
        "reference": banner(args.bundle),
        "lines": n,
        "crypto_events": args.crypto_events,
        "chunk_bytes": 200,
        "rounds": args.repeat,
        "alternating": "our round, the reference's round, ...; figures are each side's best",
        "paths": rows,
        "issue_11_reference_events_per_s_other_machine": ISSUE_11_REFERENCE,
        "checks": checks,
    }
    print(json.dumps(results, indent=2, ensure_ascii=False))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
