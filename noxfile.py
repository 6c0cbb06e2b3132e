"""Developer sessions: ``nox -s tests lint typecheck bench latest``.

Every session but ``latest`` installs with ``-c constraints.txt``: the exact
versions CI checked. ``latest`` ignores the pins and takes the newest release
of every dependency, so that a new release that breaks us is seen on purpose.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
PINNED = ("-c", "constraints.txt")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite (asyncio and trio backends), at the pinned versions."""
    session.install("-e", ".[test]", *PINNED)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check, with the pinned ruff."""
    session.install("ruff", *PINNED)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the examples and the README's code blocks (pinned)."""
    session.install("-e", ".[dev]", *PINNED)
    session.run("mypy", "--strict", "enclave_stream", "examples")
    session.run("python", "tools/typecheck_readme.py")


@nox.session
def latest(session: nox.Session) -> None:
    """Suite, ruff and mypy on the newest release of everything: drift, seen on purpose.

    Runs on the Python that runs nox (``nox -s latest --force-python 3.13`` for
    another). When it passes, refresh constraints.txt from the ``pip freeze``
    it prints (and from a Python 3.10 one, for the lines marked
    ``python_version < "3.11"``).
    """
    session.install("--upgrade", "--upgrade-strategy", "eager", "-e", ".[dev]")
    session.run("python", "-m", "pip", "freeze", "--exclude-editable")
    session.run("python", "-m", "pytest", *session.posargs)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "enclave_stream", "examples")
    session.run("python", "tools/typecheck_readme.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark script; each prints figures and same-run ratios."""
    session.install("-e", ".[test]", *PINNED)
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
