"""The image-classification example's build script (examples/image-classification/build.py),
loaded as a module for the tests that deploy the example."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "image-classification")


def example_build() -> Any:
    """The build script as a module (``build(out_dir)`` trains, converts and packages)."""
    if "example_build" in sys.modules:
        return sys.modules["example_build"]
    spec = importlib.util.spec_from_file_location("example_build", os.path.join(EXAMPLE, "build.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_build"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
