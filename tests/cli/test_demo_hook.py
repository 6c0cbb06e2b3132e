"""``enclave-stream demo``: it finds the checkout's demo, runs it, or says what to do."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from enclave_stream.cli.demo_hook import (
    DEMO_DIRECTORY,
    DEMO_INSTALL_HINT,
    demo_not_found,
    load_demo,
    run_demo,
)
from enclave_stream.cli.stdio import StdIO
from tests.cli.helpers import cli

REPO = Path(__file__).resolve().parents[2]
FAKE = "fake_enclave_demo"  # the module name the fake demos are imported under

WriteDemo = Callable[..., Path]


def _stdio() -> tuple[StdIO, io.StringIO]:
    stderr = io.StringIO()
    return StdIO(io.BytesIO(), io.TextIOWrapper(io.BytesIO()), stderr), stderr


@pytest.fixture
def write_demo(tmp_path: Path) -> Iterator[WriteDemo]:
    """Writes a fake demo package (``__init__.py`` and submodules); forgets it afterwards."""

    def write(init: str, **modules: str) -> Path:
        directory = tmp_path / "demo"
        directory.mkdir()
        (directory / "__init__.py").write_text(init, encoding="utf-8")
        for name, text in modules.items():
            (directory / f"{name}.py").write_text(text, encoding="utf-8")
        return directory

    yield write
    for name in [name for name in sys.modules if name.partition(".")[0] == FAKE]:
        del sys.modules[name]


def test_the_checkout_demo_is_found_next_to_the_package() -> None:
    assert REPO / "examples" / "demo" == DEMO_DIRECTORY
    assert (DEMO_DIRECTORY / "__init__.py").is_file()


def test_the_command_passes_every_argument_to_the_demo() -> None:
    # Through `python -m enclave_stream`, an option first: the real demo's help.
    result = cli("demo", "--help")

    assert result.status == 0, result.stderr
    assert result.out.startswith("usage: enclave-stream demo")
    assert "--replay-all" in result.out


def test_arguments_and_status_go_through(write_demo: WriteDemo) -> None:
    directory = write_demo("calls = []\ndef main(argv):\n    calls.append(argv)\n    return 3\n")

    assert run_demo(("--port", "0"), _stdio()[0], directory, FAKE) == 3
    assert sys.modules[FAKE].calls == [["--port", "0"]]


def test_status_none_means_success(write_demo: WriteDemo) -> None:
    directory = write_demo("def main(argv):\n    return None\n")

    assert run_demo([], _stdio()[0], directory, FAKE) == 0


def test_the_demo_package_imports_its_own_modules(write_demo: WriteDemo) -> None:
    directory = write_demo("from .run import main\n", run="def main(argv):\n    return 7\n")

    assert run_demo([], _stdio()[0], directory, FAKE) == 7
    assert load_demo(directory, FAKE) is sys.modules[FAKE]  # loaded once


def test_no_demo_says_where_to_get_it(tmp_path: Path) -> None:
    # As in an installed wheel: there is no examples/ next to the package.
    stdio, stderr = _stdio()

    assert run_demo(["x"], stdio, tmp_path / "examples" / "demo", FAKE) == 2
    assert stderr.getvalue() == demo_not_found(tmp_path / "examples" / "demo")
    assert "git clone https://github.com/" in stderr.getvalue()
    assert "pip install -e '.[demo]' && enclave-stream demo" in stderr.getvalue()
    assert FAKE not in sys.modules


def test_a_missing_package_of_the_extra_says_how_to_install_it(write_demo: WriteDemo) -> None:
    directory = write_demo(
        "raise ModuleNotFoundError(\"No module named 'starlette'\", name='starlette')\n"
    )
    stdio, stderr = _stdio()

    assert run_demo([], stdio, directory, FAKE) == 2
    assert stderr.getvalue() == f"{DEMO_INSTALL_HINT}\n(missing module: starlette)\n"
    assert "pip install -e '.[demo]'" in DEMO_INSTALL_HINT
    assert FAKE not in sys.modules  # a failed import leaves nothing half-made


def test_import_errors_of_other_modules_are_not_hidden(write_demo: WriteDemo) -> None:
    directory = write_demo("import typo_module_that_does_not_exist\n")

    with pytest.raises(ModuleNotFoundError, match="typo_module"):
        run_demo([], _stdio()[0], directory, FAKE)


def test_a_demo_without_main_is_reported(write_demo: WriteDemo) -> None:
    directory = write_demo("")
    stdio, stderr = _stdio()

    assert run_demo([], stdio, directory, FAKE) == 2
    assert stderr.getvalue() == f"enclave-stream: {directory} has no main(argv) to run\n"
