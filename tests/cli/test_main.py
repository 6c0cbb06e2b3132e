"""The command as a whole: entry points, help, usage errors, pipes, rich missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import enclave_stream
from enclave_stream.cli import main
from tests.cli.helpers import cli, cli_inprocess, ndjson, session, write
from tests.project import load_toml

REPO = Path(__file__).resolve().parents[2]


def test_version() -> None:
    result = cli("--version")

    assert result.status == 0
    assert result.out == f"enclave-stream {enclave_stream.__version__}\n"


def test_help_lists_the_commands_and_exit_statuses() -> None:
    result = cli("--help")

    assert result.status == 0
    for word in ("validate", "cat", "decrypt", "demo", "exit status:", "enclave-stream[cli]"):
        assert word in result.out


def test_decrypt_help_states_the_plaintext_policy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["decrypt", "--help"])

    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "A plaintext event in an encrypted stream may be an injection" in text
    assert "unless --allow-plaintext (for debugging a mixed stream) copies it through" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["validate"], "the following arguments are required: FILE"),
        (["decrypt", "-"], "one of the arguments --key --key-file is required"),
        (["cat", "-", "--max-line-bytes", "0"], "expected a positive integer, got '0'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_file_exits_2_with_a_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"

    result = cli("validate", str(missing))

    assert result.status == 2
    assert result.stderr == f"enclave-stream: {missing}: No such file or directory\n"
    assert result.stdout == b""


def test_a_directory_is_not_a_stream(tmp_path: Path) -> None:
    result = cli_inprocess("cat", str(tmp_path))

    assert result.status == 2
    assert result.stderr == f"enclave-stream: {tmp_path}: Is a directory\n"


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    events = session() * 3000  # about 1 MB of output, far more than a pipe holds
    path = write(tmp_path / "big.ndjson", ndjson(events))
    proc = subprocess.Popen(
        [sys.executable, "-m", "enclave_stream", "cat", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    status = proc.wait(timeout=30)
    stderr = proc.stderr.read()
    proc.stderr.close()

    assert first.startswith(b"\xe2\x94\x80\xe2\x94\x80 session ")
    assert status == 141
    assert stderr == b""  # no traceback, no "Exception ignored" message


def test_works_without_rich(tmp_path: Path) -> None:
    # A None entry in sys.modules makes `import rich` fail, as if not installed.
    path = write(tmp_path / "s.ndjson", ndjson(session()) + b"{\n")
    code = (
        "import sys; sys.modules['rich'] = None; "
        "from enclave_stream.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = (sys.executable, "-c", code)

    shown = cli("cat", "--color", "always", path, executable=command)
    checked = cli("validate", "--color", "always", path, executable=command)

    assert shown.status == checked.status == 1
    assert shown.out == cli_inprocess("cat", path).out
    assert "\x1b" not in shown.out + shown.stderr + checked.out
    assert "line 7 (byte" in checked.out


def test_the_console_script_is_declared_for_main() -> None:
    project = load_toml((REPO / "pyproject.toml").read_text(encoding="utf-8"))

    assert project["project"]["scripts"]["enclave-stream"] == "enclave_stream.cli:main"
    assert "rich" not in " ".join(project["project"]["dependencies"])
    assert any(dep.startswith("rich") for dep in project["project"]["optional-dependencies"]["cli"])


def test_the_installed_console_script_runs(tmp_path: Path) -> None:
    script = shutil.which("enclave-stream", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the console script is not installed (pip install -e . creates it)")
    path = write(tmp_path / "s.ndjson", ndjson(session()))

    result = cli("validate", path, executable=(script,))

    assert result.status == 0
    assert result.out.endswith("OK: no problems found\n")
