"""Every script in examples/ runs on its own and says it succeeded.

The scripts run as subprocesses, all at once (each starts its own loopback
server on a free port), and each must exit 0 and print its success line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT_S = 60

# What each example prints when it worked (every example must be listed).
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        "round trip OK: 9/9 events identical, 1 bad line reported",
        "line 5 skipped (json)",
    ],
    "consume_httpx.py": [
        "#2 stdout  'fetching the weather for 東京\\n'",
        "#4 final   ok=True result={'count': 3}",
        "consumed 4 events over HTTP, in order, ending with final",
    ],
    "serve_starlette.py": [
        "#6 tool_call",
        "9 events, sent encrypted, received decrypted and identical",
    ],
    "serve_fastapi.py": [
        "mounted routes: 5 events, session_init ... final",
        "own route: read 2 events, resumed from seq 3, 7 in all, once each",
        "cancelled: final ok=False SESSION_CANCELLED",
        "encrypted route: 4 events opened, last final",
        "background tasks: 5 events, ending with final",
        "CORS: only the allowed origin",
    ],
    "serve_aiohttp.py": [
        "#3 stdout  compiled parser",
        "aiohttp served 6 events, the client parsed all 6 intact",
    ],
    "encrypted_session.py": [
        "server signature verified",
        "-> stdout {'chunk': 'the secret is 42\\n'}",
        "tampered envelope refused: authentication_failed",
        "decrypted all 4 events of session s_",
    ],
    "serve_redis.py": [
        "read seq 1-10 from the first replica, resumed on the second from seq 11",
        "42 events, each once, in order, decrypted",
    ],
    "resume_after_drop.py": [
        "  GET /stream\n  GET /stream?fromSeq=25\n",
        "connecting -> connected -> reconnecting -> connecting -> connected -> closed",
        "all 60 events arrived exactly once, in order, across 1 dropped connection",
    ],
}


class Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _scripts() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.py"))


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    """Run every example at once; their results by file name."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONWARNINGS": "error"}
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        for name in _scripts()
    }
    results: dict[str, Run] = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
            results[name] = Run(process.returncode, stdout, stderr)
        yield results
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_every_example_is_checked() -> None:
    assert sorted(EXPECTED) == _scripts()


@pytest.mark.parametrize("script", _scripts())
def test_example_runs_and_succeeds(script: str, runs: dict[str, Run]) -> None:
    result = runs[script]
    assert result.returncode == 0, result.stderr
    for expected in EXPECTED.get(script, []):
        assert expected in result.stdout, f"{script}: {expected!r} not in:\n{result.stdout}"
    assert result.stderr == "", result.stderr


@pytest.mark.parametrize("script", _scripts())
def test_example_is_documented(script: str) -> None:
    text = (EXAMPLES / script).read_text(encoding="utf-8")
    assert text.startswith('"""'), f"{script} needs a docstring saying what it shows"
    assert f"python examples/{script}" in text, f"{script}'s docstring should say how to run it"


def test_the_demo_package_says_how_to_run_it() -> None:
    # examples/demo is a package (tests/demo runs it); its docstring is its README.
    text = (EXAMPLES / "demo" / "__init__.py").read_text(encoding="utf-8")
    assert text.startswith('"""')
    assert "pip install -e '.[demo]' && enclave-stream demo" in text
    assert "python -m examples.demo" in text
