"""What a benchmark ran on: the header of every ``pyengine bench`` report and bench/ table.

Only the standard library is used here (the native core is asked through
:func:`pyengine.sysinfo.info` when it imports), so the emulation check also runs where the core
cannot load, e.g. an ARM Python under qemu-user importing this module from a source tree.
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import Any, Optional

#: Architecture families: a process of one family on a kernel of another runs under a binary
#: translator (qemu-user, FEX, box64). Within a family (armv7l on aarch64, i686 on x86_64) the
#: CPU runs the code itself.
_FAMILIES = {
    "x86": ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"),
    "arm": ("aarch64", "arm64", "armv8l", "armv7l", "armv6l", "armv7", "arm"),
    "riscv": ("riscv64", "riscv32", "riscv"),
    "ppc": ("ppc64le", "ppc64", "ppc", "powerpc"),
    "s390": ("s390x", "s390"),
    "mips": ("mips64", "mips"),
    "loongarch": ("loongarch64", "loongarch"),
}


def arch_family(machine: str) -> str:
    """The family of a ``uname -m``-style name ("aarch64" -> "arm"); the name itself if unknown."""
    m = machine.lower()
    for family, names in _FAMILIES.items():
        if m in names or any(m.startswith(n) for n in names if len(n) > 3):
            return family
    return m


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def kernel_arch() -> tuple[Optional[str], str]:
    """The architecture the kernel itself runs, and where it was read.

    qemu-user translates ``uname`` (and, since QEMU 8.1, /proc/cpuinfo) to the guest's
    architecture, but not sysctl files or sysfs: ``/proc/sys/kernel/arch`` (Linux >= 6.1) and
    the CPU type in ``/sys/devices/system/cpu/modalias`` stay the host's. Older kernels without
    either fall back to /proc/cpuinfo's vendor lines, which qemu 7 passes through unchanged.
    """
    arch = _read("/proc/sys/kernel/arch")
    if arch and arch.strip():
        return arch.strip(), "/proc/sys/kernel/arch"
    modalias = _read("/sys/devices/system/cpu/modalias")
    if modalias and modalias.startswith("cpu:type:"):
        return modalias[len("cpu:type:"):].split(":", 1)[0].split(",", 1)[0], \
            "/sys/devices/system/cpu/modalias"
    cpuinfo = _read("/proc/cpuinfo") or ""
    if "vendor_id" in cpuinfo and ("GenuineIntel" in cpuinfo or "AuthenticAMD" in cpuinfo):
        return "x86", "/proc/cpuinfo"
    if "CPU implementer" in cpuinfo:
        return "arm", "/proc/cpuinfo"
    return None, ""


def emulation() -> dict[str, Any]:
    """Whether this process runs under a binary translator (qemu-user and the like).

    Returns
    -------
    ``{"emulated": bool, "detail": str}``; ``detail`` says what was compared (or why nothing
    could be), e.g. "aarch64 process on a x86_64 kernel (/proc/sys/kernel/arch): qemu-user or
    another binary translator; timings measure the emulator, not the CPU".
    """
    process = platform.machine()
    kernel, source = kernel_arch()
    if kernel is None:
        return {"emulated": False, "detail": f"{process} process; the kernel's architecture "
                                             "is not readable, so emulation is not ruled out"}
    if arch_family(kernel) != arch_family(process):
        return {"emulated": True,
                "detail": f"{process} process on a {kernel} kernel ({source}): qemu-user or "
                          "another binary translator; timings measure the emulator, not the CPU"}
    return {"emulated": False, "detail": f"{process} process on a {kernel} kernel ({source})"}


def governor() -> Optional[str]:
    """The CPU frequency governors in use (e.g. "performance", "ondemand x3, performance x1"),
    or None where cpufreq is not exposed (most VMs)."""
    base = "/sys/devices/system/cpu"
    seen: dict[str, int] = {}
    try:
        cpus = sorted(d for d in os.listdir(base) if d.startswith("cpu") and d[3:].isdigit())
    except OSError:
        return None
    for cpu in cpus:
        g = _read(f"{base}/{cpu}/cpufreq/scaling_governor")
        if g:
            seen[g.strip()] = seen.get(g.strip(), 0) + 1
    if not seen:
        return None
    if len(seen) == 1:
        return next(iter(seen))
    return ", ".join(f"{g} x{n}" for g, n in sorted(seen.items()))


def throttling() -> Optional[str]:
    """A Raspberry Pi's throttle flags (``vcgencmd get_throttled`` as sysfs exposes it), or None."""
    value = _read("/sys/devices/platform/soc/soc:firmware/get_throttled")
    return value.strip() if value else None


def cpu_description() -> dict[str, Any]:
    """CPU model, architecture, logical cores and features, from the native core when it loads
    (its own detection, which picks the kernels) and from /proc/cpuinfo otherwise."""
    cpuinfo = _read("/proc/cpuinfo") or ""
    model = ""
    for line in cpuinfo.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("model name", "Model", "Hardware", "cpu model") and not model:
            model = line.split(":", 1)[1].strip()
    out: dict[str, Any] = {"model": model, "arch": platform.machine(), "cores": os.cpu_count() or 1,
                           "features": []}
    try:
        from pyengine import _core

        feats = dict(_core.cpu_features())
        out["model"] = feats.get("model") or model
        out["features"] = sorted(k for k, v in feats.items() if v is True)
    except ImportError:
        for line in cpuinfo.splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                wanted = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "neon", "asimd")
                out["features"] = [f for f in wanted if f in have]
                break
    return out


def memory_bytes() -> Optional[int]:
    """Physical memory (MemTotal), or None."""
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def header() -> dict[str, Any]:
    """Everything a result needs to be compared with another machine's: see docs/benchmarking.md
    for the fields."""
    try:
        load: Optional[list[float]] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    out: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_description(),
        "memory_bytes": memory_bytes(),
        "governor": governor(),
        "throttled": throttling(),
        "load_average": load,
        "emulation": emulation(),
        "pyengine": None,
        "kernel_variant": None,
        "kernels_available": [],
        "threads_default": None,
    }
    try:
        from pyengine import _core

        out["pyengine"] = _core.__version__
        out["kernel_variant"] = _core.kernel_variant()
        out["kernels_available"] = list(_core.kernels_available())
        out["threads_default"] = int(_core.num_threads())
    except ImportError:
        pass
    return out


def header_lines(h: dict[str, Any]) -> list[str]:
    """The header as short "key: value" lines for a terminal or a markdown list."""
    cpu = h["cpu"]
    mem = f", {h['memory_bytes'] / 2**30:.0f} GiB" if h.get("memory_bytes") else ""
    load = h.get("load_average")
    lines = [
        f"pyengine {h['pyengine'] or '(core not loaded)'} on {h['os']}, Python {h['python']}",
        f"CPU: {cpu['model'] or 'unknown'} ({cpu['arch']}, {cpu['cores']} logical cores{mem}; "
        f"{' '.join(cpu['features']) or 'no SIMD features detected'})",
        f"kernels: {h['kernel_variant']} (available: {', '.join(h['kernels_available'])}); "
        f"default threads: {h['threads_default']}",
        f"governor: {h['governor'] or 'not readable'}; load average: "
        + (" ".join(f"{x:.2f}" for x in load) if load else "not readable")
        + (f"; throttled: {h['throttled']}" if h.get("throttled") else ""),
    ]
    emu = h["emulation"]
    if emu["emulated"]:
        lines.append(f"EMULATED: {emu['detail']}. These numbers check correctness only, "
                     "never speed.")
    else:
        lines.append(f"emulation: none detected ({emu['detail']})")
    return lines
