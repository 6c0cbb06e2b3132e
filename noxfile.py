"""Developer sessions: ``nox -s tests lint typecheck bench latest mutants``.

Every session but ``latest`` installs with ``-c constraints.txt``: the exact
versions CI checked. ``latest`` ignores the pins and takes the newest release
of every dependency, so that a new release that breaks us is seen on purpose.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections import Counter
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
    """mypy --strict on the package, the examples and the README's code blocks; pyright basic
    on the README's blocks and the examples (pinned)."""
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


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing of the modules that refuse attacks or decide exactly-once delivery.

    Not run by CI (it takes an hour; docs/mutation.md). Positional arguments
    are mutant-name globs passed to ``mutmut run``, to test part of it::

        nox -s mutants -- 'enclave_stream.crypto.session*'

    Fails listing every mutant of the selection that the tests did not kill
    and docs/mutation.md does not list as equivalent; prints each module's
    score. ``MUTANTS_MAX_CHILDREN`` (default 1) sets mutmut's parallelism.
    """
    session.install("-e", ".[test,mutation]", *PINNED)
    children = os.environ.get("MUTANTS_MAX_CHILDREN", "1")
    session.run("mutmut", "run", "--max-children", children, *session.posargs)
    results = session.run("mutmut", "results", "--all", "true", silent=True)
    equivalent = set(EQUIVALENT.findall(Path("docs/mutation.md").read_text("utf-8")))
    table, unexplained = mutation_report(str(results), session.posargs, equivalent)
    session.log("\n" + table)
    if unexplained:
        session.error(
            f"{len(unexplained)} mutants not killed and not listed as equivalent in "
            "docs/mutation.md (`mutmut show NAME` shows one):\n" + "\n".join(unexplained)
        )


# A mutant docs/mutation.md lists as equivalent: a list item that starts with its name.
EQUIVALENT = re.compile(r"^\s*[-*] `([^`]+__mutmut_\d+)`", re.MULTILINE)
# `mutmut results --all true` writes "    <module>.x_<function>__mutmut_<n>: <status>".
RESULT = re.compile(
    r"^\s*(?P<name>(?P<module>[\w.]+?)\.x[_\u01c1]\S+): (?P<status>.+?)\s*$", re.MULTILINE
)
DETECTED = frozenset({"killed", "timeout", "caught by type check"})


def mutation_report(results: str, globs: list[str], equivalent: set[str]) -> tuple[str, list[str]]:
    """Each module's score and the mutants neither killed nor listed as equivalent.

    Only mutants matching ``globs`` (all, without any) count; one that was not
    checked in the selection is reported, as a survivor is.
    """
    counts: dict[str, Counter[str]] = {}
    unexplained = []
    for match in RESULT.finditer(results):
        name = match["name"]
        if globs and not any(fnmatch.fnmatch(name, glob) for glob in globs):
            continue
        status = match["status"]
        count = counts.setdefault(match["module"], Counter())
        count["total"] += 1
        if status in DETECTED:
            count["killed"] += 1
        elif name in equivalent:
            count["equivalent"] += 1
        else:
            count["left"] += 1
            unexplained.append(f"{name}: {status}")
    lines = ["module: killed / total (equivalent listed, left)"]
    for module, count in sorted(counts.items()):
        lines.append(
            f"{module}: {count['killed']} / {count['total']} "
            f"({count['equivalent']} equivalent, {count['left']} left)"
        )
    return "\n".join(lines), unexplained
