"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re

from tests.project import ROOT, pyproject


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Set-up.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no Set-up code block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_two_setup_commands() -> None:
    demo, tests = _setup_commands()
    assert "enclave-stream demo" in demo
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = _setup_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci


def _pins() -> dict[str, list[str]]:
    """constraints.txt as {normalized name: [pinned lines]} (a name may have one per Python)."""
    pins: dict[str, list[str]] = {}
    for raw in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, rest = line.partition("==")
            assert rest, f"constraints.txt: {raw!r} is not an exact pin"
            pins.setdefault(canonical(name), []).append(line)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def test_every_install_command_uses_the_constraints() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    installs = [line for line in ci.splitlines() if "pip install" in line]
    assert len(installs) == 3
    assert all("-c constraints.txt" in line for line in installs)
    assert all("-c constraints.txt" in line for line in _setup_commands())


def test_constraints_pin_every_declared_dependency() -> None:
    project = pyproject()["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += [dep for dep in extra if not dep.startswith("enclave-stream")]
    pins = _pins()
    for dep in declared:
        name = canonical(re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0])
        assert name in pins, f"{dep} is not pinned in constraints.txt"
    assert {"ruff", "mypy", "pytest", "hypothesis"} <= pins.keys()
