"""pyengine's imports go one way: no circle between modules, and no import from a lower layer
into a higher one, per the layer list in docs/architecture.md (read from there, so the document
and the check cannot drift apart); likewise the C++ includes between the folders of csrc/.

Imports are read with ``ast`` from the source, including imports inside functions (not those
under ``if TYPE_CHECKING:``, which only annotations use); an import of ``pyengine.a.b`` counts
as an import of that module only (not of the packages Python runs on the way).
"""

from __future__ import annotations

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pyengine")
DOC = os.path.join(ROOT, "docs", "architecture.md")


def _modules() -> dict[str, str]:
    """Module name -> source file, for every module of the package (``_core`` from its stub)."""
    mods = {"pyengine._core": os.path.join(PACKAGE, "_core.pyi")}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                mods[mod.removesuffix(".__init__")] = path
    return mods


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
             mods: dict[str, str]) -> set[str]:
    """The package modules an import statement imports."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, up level-1 packages
            parts = module.split(".")[: None if is_package else -1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in mods:  # a name inside a module: that module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        graph[mod] = set()
        if path.endswith(".pyi"):
            continue
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        type_only = {id(n) for block in ast.walk(tree)
                     if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                     for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in type_only:  # only annotations use it: no dependency at run time
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[mod] |= _targets(mod, path.endswith("__init__.py"), node, mods) - {mod}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_list() -> list[list[str]]:
    """The layers, top first, as docs/architecture.md lists them: each a list of independent
    groups (module name prefixes)."""
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    block = re.search(r"<!-- layers: .*?-->\s*```text\n(.*?)```", text, re.S)
    assert block, f"{DOC}: no layer list (a ```text block after '<!-- layers: ... -->')"
    layers = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            layers.append([g.strip() for g in line.split("|")])
    return layers


def _placement(module: str, layers: list[list[str]]) -> tuple[int, str] | None:
    """(layer index, group) of the most specific prefix naming ``module``."""
    best: tuple[int, str] | None = None
    for i, groups in enumerate(layers):
        for group in groups:
            covers = module == group or module.startswith(group + ".")
            if covers and (best is None or len(group) > len(best[1])):
                best = (i, group)
    return best


def test_no_import_circles() -> None:
    found = circles(import_graph())
    assert not found, "import circles (each a set of modules that import each other):\n" + \
        "\n".join("  " + " <-> ".join(c) for c in found)


def test_every_module_has_a_layer() -> None:
    layers = layer_list()
    missing = sorted(m for m in import_graph() if _placement(m, layers) is None)
    assert not missing, f"modules no layer of docs/architecture.md names: {missing}"


def test_imports_point_down() -> None:
    layers = layer_list()
    graph = import_graph()
    wrong = []
    for mod, targets in sorted(graph.items()):
        here = _placement(mod, layers)
        for target in sorted(targets):
            there = _placement(target, layers)
            if here is None or there is None or here[1] == there[1]:
                continue
            if there[0] < here[0]:
                wrong.append(f"{mod} ({here[1]}) imports {target} ({there[1]}), a higher layer")
            elif there[0] == here[0]:
                wrong.append(f"{mod} ({here[1]}) imports {target} ({there[1]}), an independent "
                             "group of its own layer")
    assert not wrong, "imports against the layers of docs/architecture.md:\n  " + "\n  ".join(wrong)


def test_the_check_sees_circles_and_inside_functions() -> None:
    # The reader itself: an import inside a function counts, and a two-module circle is found.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from pyengine.model import Model\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _targets("pyengine.loader", False, node, _modules()) == {"pyengine.model"}


# -- C++ ------------------------------------------------------------------------------------------

CSRC = os.path.join(ROOT, "csrc")


def cpp_layer_list() -> list[list[str]]:
    """The C++ folders by layer, top first, as docs/architecture.md lists them."""
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    block = re.search(r"<!-- cpp-layers: .*?-->\s*```text\n(.*?)```", text, re.S)
    assert block, f"{DOC}: no C++ layer list (a ```text block after '<!-- cpp-layers: ... -->')"
    return [[g.strip() for g in line.split("#", 1)[0].split("|")]
            for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def cpp_includes() -> dict[str, set[str]]:
    """Source file (relative to csrc/) -> the csrc/ headers it includes."""
    found: dict[str, set[str]] = {}
    for folder, _, files in os.walk(CSRC):
        for name in files:
            if name.endswith((".h", ".cpp", ".cu", ".cuh")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    heads = re.findall(r'^\s*#\s*include\s+"([^"]+)"', fh.read(), re.M)
                found[os.path.relpath(path, CSRC)] = {
                    h for h in heads if os.path.exists(os.path.join(CSRC, h))}
    return found


def test_cpp_includes_point_down() -> None:
    layers = cpp_layer_list()
    wrong = []
    for src, heads in sorted(cpp_includes().items()):
        here = _placement(src.replace(os.sep, ".").rsplit(".", 1)[0].replace("/", "."), layers)
        for head in sorted(heads):
            there = _placement(head.rsplit(".", 1)[0].replace("/", "."), layers)
            if here is None or there is None or here[1] == there[1]:
                continue
            if there[0] <= here[0]:
                wrong.append(f"csrc/{src} ({here[1]}) includes {head} ({there[1]})")
    assert not wrong, "includes against the C++ layers of docs/architecture.md:\n  " + \
        "\n  ".join(wrong)


def test_every_endif_names_its_condition() -> None:
    """`#endif  // CONDITION` in every C++ file: the house style, so a reader of a long kernel
    sees which branch closes without scrolling back."""
    bare = []
    for folder, _, files in os.walk(CSRC):
        for name in files:
            if not name.endswith((".h", ".cpp", ".cu", ".cuh")):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    if re.match(r"\s*#\s*endif\s*$", line):
                        bare.append(f"csrc/{os.path.relpath(path, CSRC)}:{number}")
    assert not bare, "#endif without a // CONDITION comment:\n  " + "\n  ".join(bare)
