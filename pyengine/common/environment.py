"""Which variables a function's ``environment`` may set: the loader and interpreters must not
be steered by a tenant.

A worker starts from an allow-list the core builds (PATH, LANG, HOME, TMPDIR and pyengine's own
``PYENGINE_*``) plus the function's vetted ``environment``. A variable that makes the dynamic
loader, libc or an interpreter load or run something before (or instead of) the handler would
run it before the worker confines itself, or in every program the handler starts: those are
refused when the group is validated (and again by the core before it starts a worker, for a
state written before this check existed).
"""

from __future__ import annotations

import re
from typing import Optional

#: Refused name prefixes, with why (checked case-sensitively, as the loader does).
REFUSED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LD_", "the dynamic loader reads it (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT...)"),
    ("DYLD_", "the dynamic loader reads it"),
    ("GLIBC_", "libc reads it (GLIBC_TUNABLES)"),
    ("PYTHON", "the Python interpreter reads it (PYTHONPATH, PYTHONSTARTUP, PYTHONHOME...)"),
    ("PYENGINE_", "the core sets pyengine's own variables"),
    ("BASH_FUNC_", "bash imports it as a function"),
)

#: Refused names: glibc's list of variables unsafe for privileged programs
#: (sysdeps/generic/unsecvars.h), shells' and other interpreters' start-up hooks, and what the
#: core sets itself.
REFUSED_NAMES: dict[str, str] = {
    **{n: "libc loads files or modules named by it" for n in (
        "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
        "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR")},
    **{n: "a shell or interpreter runs code named by it at start" for n in (
        "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "PERL5LIB", "PERL5OPT",
        "PERLLIB", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS")},
    **{n: "the core sets it for every worker" for n in ("PATH", "HOME", "TMPDIR")},
}

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Caps on a function's environment: one value (Linux refuses a longer ``NAME=value`` string,
#: MAX_ARG_STRLEN, 128 KiB, at exec) and all names and values together (they share the
#: worker's ARG_MAX with its arguments). Larger data belongs in a resource.
VALUE_MAX_BYTES = 32 << 10
TOTAL_MAX_BYTES = 128 << 10


def environment_problem(name: str, value: str) -> Optional[str]:
    """Why ``name=value`` may not be in a function's environment; None when it may.

    Parameters
    ----------
    name, value
        One entry of the function's ``environment``.
    """
    if not _NAME_RE.match(name):
        return f"{name!r} is not a variable name (letters, digits and _, not starting with a digit)"
    if "\0" in value:
        return f"the value of {name!r} contains a NUL byte"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return f"the value of {name!r} is not valid Unicode text (a lone surrogate)"
    if size > VALUE_MAX_BYTES:
        return (f"the value of {name!r} is {size} bytes, more than the {VALUE_MAX_BYTES} a "
                "variable may hold; put large data in a resource")
    reason = REFUSED_NAMES.get(name)
    if reason is None:
        reason = next((why for prefix, why in REFUSED_PREFIXES if name.startswith(prefix)), None)
    if reason is not None:
        return (f"{name!r} is not allowed: {reason}; functions may not set it (see "
                "docs/core.md, 'The confinement model')")
    return None


def environment_size_problem(environment: dict[str, str]) -> Optional[str]:
    """Why the environment as a whole is too large (over :data:`TOTAL_MAX_BYTES`); None when
    it is not."""
    total = sum(len(k.encode("utf-8", "replace")) + len(v.encode("utf-8", "replace")) + 2
                for k, v in environment.items())
    if total > TOTAL_MAX_BYTES:
        return (f"{len(environment)} variables of {total} bytes in all, more than the "
                f"{TOTAL_MAX_BYTES} a function's environment may hold; put large data in a "
                "resource")
    return None
