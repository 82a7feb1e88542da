"""No source file under pyengine/ or csrc/ passes LINES_MAX lines (issue 19): a module that
grows past it holds more than one job and gets split by job. The exceptions are named below,
each with its reason: generated files and kernel bodies that say why they are one file.
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINES_MAX = 600
SOURCE_SUFFIXES = (".py", ".pyi", ".cpp", ".h", ".cu", ".cuh", ".cmake", "CMakeLists.txt")

#: Path (from the repository root) -> why it may pass LINES_MAX. "being split" marks a file
#: whose split is on its way (it may leave the list before its entry does).
ALLOWED: dict[str, str] = {
}


def _sources() -> dict[str, int]:
    sizes = {}
    for top in ("pyengine", "csrc"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(SOURCE_SUFFIXES):
                    path = os.path.join(folder, name)
                    with open(path, "rb") as fh:
                        sizes[os.path.relpath(path, ROOT)] = fh.read().count(b"\n")
    return sizes


def test_no_source_file_passes_the_limit() -> None:
    sizes = _sources()
    over = {p: n for p, n in sizes.items() if n > LINES_MAX and p not in ALLOWED}
    assert not over, (f"files over {LINES_MAX} lines (split them by job, see "
                      f"docs/architecture.md): " + ", ".join(f"{p} ({n})" for p, n in
                                                             sorted(over.items())))


def test_every_exception_is_still_needed() -> None:
    sizes = _sources()
    stale = sorted(p for p, why in ALLOWED.items()
                   if sizes.get(p, 0) <= LINES_MAX and not why.startswith("being split"))
    assert not stale, f"no longer over {LINES_MAX} lines (or gone): remove from ALLOWED: {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())
