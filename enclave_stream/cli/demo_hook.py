"""The hook for ``enclave-stream demo``: run the demo of the source checkout.

The demo is an example, not part of the package: it is ``examples/demo/`` in
the repository. An editable install (``pip install -e '.[demo]'``) imports
``enclave_stream`` from the checkout, so the demo sits two directories above
this package; an installed wheel has no examples, and the command then says
where to get them. The demo needs the ``demo`` extra (Starlette, uvicorn,
httpx, rich), so it is imported only when asked for. Its package provides
``main(argv) -> int | None``.
"""

from __future__ import annotations

__all__ = [
    "DEMO_DIRECTORY",
    "DEMO_INSTALL_HINT",
    "DEMO_MODULE",
    "demo_not_found",
    "load_demo",
    "run_demo",
]

import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

from .stdio import StdIO

# enclave_stream/cli/demo_hook.py -> the checkout's root.
DEMO_DIRECTORY: Final = Path(__file__).resolve().parents[2] / "examples" / "demo"
"""Where a source checkout keeps the demo's package."""

DEMO_MODULE: Final = "examples.demo"
"""The name the demo's package is imported under (as ``python -m examples.demo`` does)."""

_REPOSITORY: Final = "https://github.com/enclave-stream/enclave_stream"

DEMO_INSTALL_HINT: Final = (
    "enclave-stream: the demo needs its extra: pip install -e '.[demo]' (in the checkout)"
)

# The top-level packages of the `demo` extra.
_DEMO_IMPORTS: Final = frozenset({"starlette", "uvicorn", "httpx", "rich"})


def demo_not_found(directory: Path) -> str:
    """What to say when ``directory`` holds no demo (an installed wheel, say)."""
    return (
        "enclave-stream: the demo is an example in the source repository, not part of the "
        f"installed package (there is no {directory / '__init__.py'}). To run it:\n"
        f"    git clone {_REPOSITORY} && cd enclave_stream\n"
        "    pip install -e '.[demo]' && enclave-stream demo\n"
    )


def load_demo(directory: Path, module_name: str = DEMO_MODULE) -> ModuleType:
    """Import the package in ``directory`` as ``module_name`` (once; later calls reuse it)."""
    init = (directory / "__init__.py").resolve()
    loaded = sys.modules.get(module_name)
    if loaded is not None and loaded.__file__ and Path(loaded.__file__).resolve() == init:
        return loaded
    spec = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None, "a .py file always has a spec"
    assert spec.loader is not None, "and a loader"
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its relative imports look their package up here.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def run_demo(
    argv: Sequence[str],
    stdio: StdIO,
    directory: Path = DEMO_DIRECTORY,
    module_name: str = DEMO_MODULE,
) -> int:
    """Run the demo's ``main(argv)``; if it (or what it needs) is missing, say what to do.

    Returns the demo's exit status (``None`` counts as 0), or 2 when there
    is no demo in ``directory`` or a package of the ``demo`` extra is
    missing. An import error of anything else is a bug and propagates.
    """
    if not (directory / "__init__.py").is_file():
        stdio.stderr.write(demo_not_found(directory))
        return 2
    try:
        module = load_demo(directory, module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.partition(".")[0] not in _DEMO_IMPORTS:
            raise
        stdio.stderr.write(f"{DEMO_INSTALL_HINT}\n(missing module: {missing})\n")
        return 2
    demo_main: Callable[[list[str]], int | None] | None = getattr(module, "main", None)
    if not callable(demo_main):
        stdio.stderr.write(f"enclave-stream: {directory} has no main(argv) to run\n")
        return 2
    status = demo_main(list(argv))
    return 0 if status is None else status
