"""The hook for ``enclave-stream demo``: the demo lives in ``enclave_stream.demo``.

The demo needs the ``demo`` extra (Starlette, uvicorn, httpx, rich), so it is
imported only when asked for. Its module provides ``main(argv) -> int | None``.
"""

from __future__ import annotations

__all__ = ["DEMO_INSTALL_HINT", "DEMO_MODULE", "run_demo"]

import importlib
from collections.abc import Callable, Sequence
from typing import Final

from .stdio import StdIO

DEMO_MODULE: Final = "enclave_stream.demo"
"""Where the demo's ``main(argv)`` lives."""

DEMO_INSTALL_HINT: Final = (
    "enclave-stream: the demo needs its extra: pip install 'enclave-stream[demo]'"
)

# The demo module itself and the top-level packages of the `demo` extra.
_DEMO_IMPORTS: Final = frozenset({"starlette", "uvicorn", "httpx", "rich"})


def run_demo(argv: Sequence[str], stdio: StdIO, module_name: str = DEMO_MODULE) -> int:
    """Run the demo's ``main(argv)``; if it (or what it needs) is missing, say how to install it.

    Returns the demo's exit status (``None`` counts as 0), or 2 when it is
    not installed. An import error of anything else is a bug and propagates.
    """
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module_name and missing.partition(".")[0] not in _DEMO_IMPORTS:
            raise
        stdio.stderr.write(f"{DEMO_INSTALL_HINT}\n(missing module: {missing})\n")
        return 2
    demo_main: Callable[[list[str]], int | None] | None = getattr(module, "main", None)
    if not callable(demo_main):
        stdio.stderr.write(f"enclave-stream: {module_name} has no main(argv) to run\n")
        return 2
    status = demo_main(list(argv))
    return 0 if status is None else status
