"""The package's shape: what the top level exports, what it needs, and how its modules depend."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import enclave_stream

PACKAGE = Path(enclave_stream.__file__).resolve().parent

# Lowest first: a module may import from its own layer or the ones before it.
LAYERS = [
    ("enclave_stream.protocol",),
    ("enclave_stream.errors", "enclave_stream._options"),
    ("enclave_stream.events",),
    ("enclave_stream._json", "enclave_stream.codec"),
    ("enclave_stream.ndjson",),
    ("enclave_stream.streams", "enclave_stream._lifetime"),
    ("enclave_stream.crypto",),
    ("enclave_stream.reconnect",),
    ("enclave_stream.producer",),
    ("enclave_stream.redis",),
    ("enclave_stream.starlette",),
    ("enclave_stream.cli", "enclave_stream.__main__"),
]

# Importable with the core dependencies only (msgspec, anyio, cryptography).
OPTIONAL = [
    "httpx",
    "httpcore",
    "starlette",
    "uvicorn",
    "rich",
    "aiohttp",
    "trio",
    "fastapi",
    "coredis",
]


def _modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), ast.parse(path.read_text(encoding="utf-8"))))
    return found


def _imports(name: str, tree: ast.Module) -> list[tuple[str, list[str], int]]:
    is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((module, [alias.name for alias in node.names], node.lineno))
    return out


def _layer(module: str) -> int:
    """The index of the layer ``module`` (or its package) is listed in; -1 if none."""
    if module == "enclave_stream":  # the top level re-exports from every layer
        return len(LAYERS) - 1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix != "enclave_stream" and (module == prefix or module.startswith(prefix + ".")):
                return index
    return -1


def test_top_level_lists_an_everyday_api_of_at_most_90_names() -> None:
    names = enclave_stream.__all__
    assert len(names) == len(set(names))
    assert len(names) <= 90
    for name in names:
        value = getattr(enclave_stream, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


def test_star_import_works_with_only_the_core_dependencies() -> None:
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {OPTIONAL!r}:
                    raise ImportError(f"{{name}} is not installed")
        sys.meta_path.insert(0, Block())
        from enclave_stream import *
        import enclave_stream, enclave_stream.crypto, enclave_stream.reconnect
        import enclave_stream.producer
        assert all(hasattr(enclave_stream, name) for name in enclave_stream.__all__)
        print(len(enclave_stream.__all__))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(enclave_stream.__all__)


@pytest.mark.parametrize(("name", "tree"), [pytest.param(*m, id=m[0]) for m in _modules()])
def test_no_private_name_is_imported_from_another_module(name: str, tree: ast.Module) -> None:
    for module, names, line in _imports(name, tree):
        if not module.startswith("enclave_stream"):
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{name}:{line} imports {private} from {module}"


def test_every_module_has_a_layer() -> None:
    # A module missing from LAYERS would escape the layering check.
    assert [name for name, _ in _modules() if _layer(name) < 0] == []


@pytest.mark.parametrize(("name", "tree"), [pytest.param(*m, id=m[0]) for m in _modules()])
def test_no_module_imports_a_layer_above_it(name: str, tree: ast.Module) -> None:
    own = _layer(name)
    for module, _, line in _imports(name, tree):
        if module.startswith("enclave_stream"):
            assert _layer(module) <= own, f"{name}:{line} imports {module}, a layer above"


def test_no_task_group_is_entered_by_hand() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert "__aenter__()" not in path.read_text(encoding="utf-8"), path


def _typescript_map() -> list[str]:
    text = (PACKAGE.parent / "docs" / "compatibility.md").read_text(encoding="utf-8")
    section = text.split("## Where each name of `@enclave-vm/stream` lives", 1)[1]
    names = []
    for row in section.splitlines():
        if not row.startswith("| `") or row.startswith("| `@enclave-vm/types`"):
            continue
        python = re.sub(r"\([^)]*\)", "", row.split("|")[2])
        module = ""
        for item in re.findall(r"`([^`]+)`", python):
            if item.startswith("."):
                names.append(module + item)
            else:
                module = item.rpartition(".")[0]
                names.append(item)
    return names


def test_every_typescript_export_has_its_counterpart_where_the_map_says() -> None:
    names = _typescript_map()
    assert len(names) == 44  # 9 codec, 27 crypto, 8 reconnect names in @enclave-vm/stream
    for dotted in names:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
        assert name in importlib.import_module(module).__all__, dotted
