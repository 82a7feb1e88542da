"""The boundaries issue 19 drew around the deploy layer, read from the source with ``ast``
(imports inside functions included): the core sees deploy only through its read API
(``pyengine.deploy.installed``), the fleet uses public APIs only (``pyengine.deploy``,
``pyengine.sources``, ``pyengine.common``, never a module inside them or the core), and only
the deploy layer's schema names the state's files."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pyengine")


def _sources(sub: str) -> dict[str, ast.Module]:
    out = {}
    top = os.path.join(PACKAGE, sub)
    for folder, _, files in os.walk(top):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    out[os.path.relpath(path, ROOT)] = ast.parse(fh.read(), path)
    return out


def _imports(tree: ast.Module) -> list[str]:
    """Every module an import statement names (``from a import b`` gives ``a.b`` too, since b
    may be a submodule)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _is_module(name: str) -> bool:
    return os.path.exists(os.path.join(ROOT, *name.split(".")) + ".py") or os.path.isdir(
        os.path.join(ROOT, *name.split(".")))


def test_the_core_sees_deploy_only_through_its_read_api() -> None:
    wrong = []
    for path, tree in _sources("core").items():
        for name in _imports(tree):
            if not name.startswith("pyengine.deploy") or not _is_module(name):
                continue
            if name not in ("pyengine.deploy", "pyengine.deploy.installed"):
                wrong.append(f"{path} imports {name}")
            elif name == "pyengine.deploy" and not any(
                    n == "pyengine.deploy.installed" for n in _imports(tree)):
                wrong.append(f"{path} imports the deploy package, not its read API")
    assert not wrong, "the core reaches past pyengine.deploy.installed:\n  " + "\n  ".join(wrong)


def test_the_fleet_uses_public_apis_only() -> None:
    allowed = ("pyengine.deploy", "pyengine.sources")
    wrong = []
    for path, tree in _sources("fleet").items():
        for name in _imports(tree):
            if name.startswith(("pyengine.fleet", "pyengine.common")) or not _is_module(name):
                continue
            if name.startswith("pyengine.core") or (
                    name.startswith(allowed) and name not in allowed):
                wrong.append(f"{path} imports {name}")
    assert not wrong, "the fleet imports internals:\n  " + "\n  ".join(wrong)


def test_only_the_schema_names_the_state_files() -> None:
    found = []
    for path, tree in _sources("").items():
        if path == os.path.join("pyengine", "deploy", "schema.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.startswith("state.db"):
                found.append(f"{path}:{node.lineno}: {node.value!r}")
    assert not found, "state file names outside pyengine/deploy/schema.py:\n  " + \
        "\n  ".join(found)
