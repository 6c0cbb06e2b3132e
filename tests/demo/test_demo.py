"""The demo (examples/demo) end to end: loopback service, cutting proxy, client, summary.

Each run takes under a second with ``--fast``. In-process, output goes to a
string (so it is the plain, line-per-event view); the README's command and
``python -m examples.demo`` run as subprocesses, as a user runs them.
"""

from __future__ import annotations

import doctest
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from examples.demo import main

REPO = Path(__file__).resolve().parents[2]
VERDICT = re.compile(
    r"OK: all (\d+) events arrived exactly once, in order and decrypted "
    r"\(2 cuts, (\d+) reconnects\)\."
)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["--fast", *argv], out=out)
    return status, out.getvalue()


def summary_value(output: str, label: str) -> str:
    match = re.search(rf"^  {label} +(.+)$", output, re.MULTILINE)
    assert match is not None, f"no {label!r} row in:\n{output}"
    return match.group(1)


def event_lines(output: str) -> list[int]:
    return [int(seq) for seq in re.findall(r"^  #\s*(\d+)  ", output, re.MULTILINE)]


def test_every_event_arrives_once_decrypted_across_two_cuts() -> None:
    status, output = run("--seed", "11")
    assert status == 0, output
    verdict = output.strip().splitlines()[-1]
    assert VERDICT.fullmatch(verdict), verdict
    assert int(summary_value(output, "reconnects")) >= 2
    total = int(summary_value(output, "events").split()[0])
    assert f"the server's log holds {total} (1..{total})" in summary_value(output, "events")
    # Shown live: each event once, in order.
    assert event_lines(output) == list(range(1, total + 1))
    assert summary_value(output, "exactly once").startswith("every seq once, in order")
    assert summary_value(output, "cuts").startswith("2, mid-line")
    assert output.count("✂ connection") == 2
    assert "AES-256-GCM envelopes on the wire" in summary_value(output, "encryption")
    assert "server signature verified against the pinned key" in output
    # POST, then two resumes, each from where the cut left the client.
    connections = summary_value(output, "connections")
    assert re.fullmatch(r"3: POST /sessions, GET \?fromSeq=\d+, GET \?fromSeq=\d+", connections)
    assert int(summary_value(output, "heartbeats").split()[0]) >= 1
    assert "session_init" in output
    assert "tool_call" in output
    assert "partial_result" in output


def test_whole_session_replays_are_deduplicated() -> None:
    status, output = run("--seed", "3", "--replay-all", "--plain", "--events", "80")
    assert status == 0, output
    duplicates = int(summary_value(output, "duplicates").split()[0])
    assert duplicates > 0
    assert "GET (whole session), GET (whole session)" in summary_value(output, "connections")
    assert summary_value(output, "encryption").startswith("off")
    total = int(summary_value(output, "events").split()[0])
    assert event_lines(output) == list(range(1, total + 1))
    assert output.strip().endswith("(2 cuts, 2 reconnects).")


def test_no_cuts_means_one_connection() -> None:
    status, output = run("--no-cuts", "--events", "40")
    assert status == 0, output
    assert summary_value(output, "connections") == "1: POST /sessions"
    assert summary_value(output, "reconnects") == "0"
    assert summary_value(output, "cuts") == "none (--no-cuts)"


def test_an_impostor_service_is_refused() -> None:
    status, output = run("--impostor", "--events", "40")
    assert status == 1
    assert "FAILED: the stream stopped" in output
    assert "ENCRYPTION_SIGNATURE_VERIFICATION_FAILED" in output
    assert "0 events delivered" in output
    assert event_lines(output) == []


@pytest.mark.parametrize(
    ("argv", "status"),
    [(["--events", "3"], 2), (["--plain", "--impostor"], 2), (["--help"], 0)],
)
def test_usage(argv: list[str], status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, out=io.StringIO()) == status
    captured = capsys.readouterr()
    assert "enclave-stream demo" in captured.out + captured.err


def _run_outside(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONWARNINGS": "error"}
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def test_the_readme_command_runs_the_checkout_demo(tmp_path: Path) -> None:
    # `enclave-stream demo`, from any directory: the console script of the
    # editable install finds examples/demo in the checkout.
    script = shutil.which("enclave-stream", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "enclave_stream"]
    result = _run_outside([*command, "demo", "--fast", "--seed", "5"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert VERDICT.fullmatch(result.stdout.strip().splitlines()[-1]), result.stdout
    assert result.stderr == ""


def test_python_m_examples_demo_runs_it_from_the_checkout() -> None:
    result = _run_outside(
        [sys.executable, "-m", "examples.demo", "--fast", "--no-cuts", "--events", "40"],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "arrived exactly once" in result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("module", ["loopback", "options", "run", "verify", "view"])
def test_the_examples_in_the_docstrings_hold(module: str) -> None:
    # --doctest-modules covers the package only; the demo is outside it.
    tested = importlib.import_module(f"examples.demo.{module}")
    failed, attempted = doctest.testmod(tested)
    assert (failed, attempted > 0) == (0, True)
