"""What a repaired (manylinux) wheel must satisfy, for any architecture: every ELF file in it
needs no newer GLIBC/GLIBCXX/CXXABI/GCC symbol versions than its tag's policy allows, and links
only libraries of the policy's allow-list or ones bundled in the wheel. Read with readelf, which
parses any architecture's ELF files, against auditwheel's own policy table (installed by
``scripts/build_wheels.sh --tools-only`` into build/wheel-tools). Used by test_wheels (x86-64)
and test_arm (aarch64, armv7l)."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "build", "wheel-tools")

_TAG = re.compile(r"-(manylinux_\d+_\d+)_(x86_64|aarch64|armv7l)[.-]")


def wheel_tools() -> str:
    """build/wheel-tools (auditwheel and its policy table), made by build_wheels.sh if missing."""
    if not os.path.exists(os.path.join(TOOLS, "bin", "auditwheel")):
        done = subprocess.run([os.path.join(REPO, "scripts", "build_wheels.sh"), "--tools-only"],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
    return TOOLS


def policy(tag: str, arch: str) -> tuple[dict[str, list[str]], set[str]]:
    """auditwheel's policy ``tag`` (e.g. manylinux_2_35) on ``arch``: the symbol versions it
    allows by prefix, and the libraries a wheel may link without bundling them."""
    files = glob.glob(os.path.join(wheel_tools(), "lib", "python3*", "site-packages", "auditwheel",
                                   "policy", "manylinux-policy.json"))
    assert files, "build_wheels.sh installs auditwheel into build/wheel-tools"
    with open(files[0]) as fh:
        policies = {p["name"]: p for p in json.load(fh)}
    entry = policies[tag]
    return dict(entry["symbol_versions"][arch]), set(entry["lib_whitelist"])


def elf_needs(elf: str) -> tuple[dict[str, set[str]], list[str]]:
    """The symbol versions ``elf`` needs from other objects (GLIBC_2.34, GLIBCXX_3.4.30, ...)
    by prefix, and its DT_NEEDED libraries."""
    text = subprocess.run(["readelf", "--wide", "--dynamic", "--version-info", elf],
                          capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", text)
    # Only the version-needs section: a bundled library's own definitions are not needs.
    section = text.split("Version needs section", 1)[1] if "Version needs section" in text else ""
    section = section.split("\nVersion definition section", 1)[0]
    versions: dict[str, set[str]] = {}
    for prefix, version in re.findall(r"Name: (GLIBC|GLIBCXX|CXXABI|GCC)_([0-9.]+)\s", section):
        versions.setdefault(prefix, set()).add(version)
    return versions, needed


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(v) for v in version.split("."))


def check_wheel(wheel: str, tmp: str) -> tuple[str, str]:
    """Assert every ELF file in the repaired ``wheel`` fits its manylinux tag (symbol versions
    and linked libraries); returns (policy, architecture), e.g. ("manylinux_2_35", "aarch64")."""
    m = _TAG.search(os.path.basename(wheel))
    assert m, f"{os.path.basename(wheel)} has no manylinux_X_Y_ARCH tag"
    tag, arch = m.group(1), m.group(2)
    allowed, whitelist = policy(tag, arch)
    with zipfile.ZipFile(wheel) as zf:
        elves = [n for n in zf.namelist() if n.endswith(".so") or ".so." in n]
        assert any(os.path.basename(n).startswith("_core.") for n in elves), elves
        zf.extractall(tmp, elves)
    bundled = {os.path.basename(n) for n in elves}
    for name in elves:
        versions, needed = elf_needs(os.path.join(tmp, name))
        assert versions.get("GLIBC"), f"{name}: no GLIBC version needs found (readelf output?)"
        for prefix, wanted in versions.items():
            # Numeric versions only: the GCC list also names FLOAT128 and the like.
            top = max(_key(v) for v in [*allowed.get(prefix, []), "0"]
                      if re.fullmatch(r"[0-9.]+", v))
            too_new = sorted((v for v in wanted if _key(v) > top), key=_key)
            assert not too_new, f"{name} needs {prefix} {too_new}, beyond {tag}'s {top}"
        # The dynamic loader (ld-linux-*.so.N) is glibc's own, on every system of the policy.
        outside = sorted(n for n in set(needed) - whitelist - bundled
                         if not re.fullmatch(r"ld-linux[-\w]*\.so\.\d+", n))
        assert not outside, f"{name} links {outside}: neither in {tag}'s allow-list nor bundled"
    return tag, arch
