"""Reading the core's configuration file (JSON, or YAML with PyYAML), and the one setting of it
that group validation needs before any core runs: ``functions.allow_root``.

The core validates the whole file (:func:`pyengine.core.config.load_config`, which reads it
here); deploy validation only asks :func:`functions_allow_root`, and the core checks its own
configuration again before it starts a function as root.
"""

from __future__ import annotations

import json
from typing import Any, Optional


class ConfigFileError(ValueError):
    """The file cannot be read or parsed; ``problem`` says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.problem = problem


def read_config_file(path: str) -> Any:
    """The data in the configuration file at ``path`` (JSON when it ends in .json or starts with
    ``{``, else YAML); :class:`ConfigFileError` when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigFileError(path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        if path.endswith(".json") or text.lstrip().startswith("{"):
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except ImportError:
        raise ConfigFileError(path, "YAML needs PyYAML: pip install 'pyengine[yaml]' (or write "
                              "the configuration as JSON)") from None
    except Exception as exc:  # noqa: BLE001 - JSON and YAML syntax errors alike
        raise ConfigFileError(path, f"not valid JSON or YAML: {exc}") from None


def functions_allow_root(path: Optional[str]) -> bool:
    """Whether the configuration file at ``path`` sets ``functions.allow_root: true``; False
    when there is no path, or the file cannot be read or does not say so."""
    if not path:
        return False
    try:
        data = read_config_file(path)
    except ConfigFileError:
        return False
    functions = data.get("functions") if isinstance(data, dict) else None
    return isinstance(functions, dict) and functions.get("allow_root") is True
