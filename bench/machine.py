"""The machine description every bench table starts with."""

from __future__ import annotations

import os
import platform
import subprocess


def describe() -> str:
    """CPU model, cores, SIMD flags, memory, OS and pyengine's kernel variant, as markdown lines."""
    model = "unknown"
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith(("flags", "Features")) and not flags:
                    have = set(line.split(":", 1)[1].split())
                    flags = [x for x in ("sse4_2", "avx", "avx2", "fma", "avx512f", "neon", "asimd") if x in have]
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError):
        pass
    variant = ""
    try:
        import pyengine

        info = pyengine.info()
        variant = f"{info['kernel_variant']} kernels, {info['threads']} threads, pyengine {info['version']}"
    except Exception:  # noqa: BLE001 - the description must not fail the bench
        pass
    try:
        kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    except OSError:
        kernel = ""
    return (
        f"- CPU: {model} ({platform.machine()}, {os.cpu_count()} logical cores; {' '.join(flags)})\n"
        f"- Memory: {mem}; OS: Linux {kernel}; Python {platform.python_version()}\n"
        f"- {variant}\n"
    )
