"""Type-check the README's Python code blocks with ``mypy --strict``, and them and examples/
with pyright (basic mode, VS Code's default).

Each ```` ```python ```` block becomes the body of an ``async def`` (blocks
may ``async with`` at the top level, as in a notebook or ``python -m
asyncio``), preceded by declarations of the names the README leaves to the
reader (``broker``, ``chunks``, ``session`` ...; :data:`GIVEN`). A name a
block uses that is neither defined by it nor given is an error here, so the
table grows with the README on purpose.

pyright runs in basic mode with ``reportUnnecessaryComparison`` on: there a
string pattern on ``event.type`` (``case "stdout":``) narrows the event to
``Never`` and the branch goes unchecked, so it is an error here ("Pattern will
never be matched"). pyright comes with the ``dev`` extra (pinned in
constraints.txt) and runs on the machine's ``node``.

Run: ``python tools/typecheck_readme.py [README.md]`` (exit status: 0 when both pass).
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# Names a README block may use without defining them, and their types.
GIVEN = {
    "broker": "str",
    "sid": "str",
    "session_id": "str",
    "chunks": "list[bytes]",
    "data": "bytes",
    "report": "Callable[[LineError], None]",
    "handle": "Callable[[ParsedEvent], None]",
    "send": "Callable[[ClientHello], None]",
    "client_hello": "ClientHello",
    "event": "StreamEvent",
    "session": "EncryptedSession",
    "run": "SessionRunner",
}
PREAMBLE = """\
from __future__ import annotations

from collections.abc import Callable

from enclave_stream import EncryptedSession, LineError, ParsedEvent, StreamEvent
from enclave_stream.events import ClientHello
from enclave_stream.producer import SessionRunner
"""


def blocks(readme: str) -> list[str]:
    """The README's Python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", readme, re.S)


def free_names(code: str) -> set[str]:
    """Names ``code`` reads but never binds (builtins aside)."""
    tree = ast.parse(code)
    bound: set[str] = set()
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return read - bound - set(dir(builtins))


def module_for(code: str, index: int) -> str:
    """A module that type-checks block ``index`` as the body of an async function."""
    missing = free_names(code) - GIVEN.keys()
    if missing:
        raise SystemExit(f"README block {index} uses {sorted(missing)}: add them to GIVEN")
    given = [f"    {name}: {GIVEN[name]}," for name in sorted(free_names(code))]
    head = f"async def block_{index}(\n" + "\n".join(given) + "\n) -> None:\n"
    if not given:
        head = f"async def block_{index}() -> None:\n"
    return PREAMBLE + "\n\n" + head + textwrap.indent(code, "    ") + "\n"


PYRIGHT_CONFIG = {
    "typeCheckingMode": "basic",
    "pythonVersion": "3.10",
    "reportUnnecessaryComparison": "error",
}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(command: list[str], directory: str, readme: Path, **options: object) -> int:
    """Run a checker; its output with the temporary paths named after the README."""
    result = subprocess.run(command, check=False, capture_output=True, text=True, **options)  # type: ignore[call-overload]
    print(result.stdout.replace(directory + "/", f"{readme}:"), end="")
    print(result.stderr, end="", file=sys.stderr)
    return int(result.returncode)


def main() -> int:
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for index, code in enumerate(blocks(readme.read_text(encoding="utf-8"))):
            path = Path(directory) / f"readme_block_{index}.py"
            path.write_text(module_for(code, index), encoding="utf-8")
            paths.append(str(path))
        mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *paths]
        failed = run(mypy, directory, readme)
        config = Path(directory) / "pyrightconfig.json"
        config.write_text(json.dumps(PYRIGHT_CONFIG), encoding="utf-8")
        pyright = [
            sys.executable,
            "-m",
            "pyright",
            "--pythonpath",
            sys.executable,
            "--project",
            str(config),
            *paths,
            str(EXAMPLES),
        ]
        # The bundled pyright runs offline; only its "new version" notice would
        # ask PyPI.
        environment = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
        failed |= run(pyright, directory, readme, env=environment)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
