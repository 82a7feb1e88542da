"""docs/group.md stays true: its example group validates, and every top-level, resource, model
and function key the validator accepts is documented there."""

from __future__ import annotations

import grp
import os
import re

import pytest

from pyengine.deploy import load_group
from pyengine.deploy.validate import validate_group

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "group.md")


def _doc() -> str:
    with open(DOC) as f:
        return f.read()


def test_example_group_validates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = re.search(r"## Example\n\n```yaml\n(.*?)```", _doc(), re.S)
    assert m, "docs/group.md has no example"
    text = m.group(1)
    try:
        grp.getgrnam("video")
    except KeyError:  # the example's owner group; any existing group stands in for it
        text = text.replace("group: video", f"group: {os.getgid()}")
    (tmp_path / "functions" / "classify").mkdir(parents=True)
    (tmp_path / "functions" / "classify" / "classify.py").write_text(
        "def function_handler(event, context):\n    return event\n")
    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / "labels.tar.gz").write_bytes(b"")
    (tmp_path / "g.yaml").write_text(text)
    g = load_group(str(tmp_path / "g.yaml"))
    assert [r.id for r in g.resources] == ["digits", "detector", "labels", "camera"]
    assert g.resources[0].model is not None and g.resources[0].model.kms_key_arn


def _accepted_keys() -> set[str]:
    """Every key validation accepts, learnt from its 'unknown field' messages."""
    probes = {
        "": {"name": "g", "zz": 1},
        "resources[0]": {"name": "g", "resources": [{"id": "a", "zz": 1}]},
        "resources[0].model": {"name": "g", "resources": [{"id": "a", "model": {"zz": 1}}]},
        "functions[0]": {"name": "g", "functions": [{"zz": 1}]},
        "functions[0].resources[0]": {"name": "g", "functions": [{"resources": [{"zz": 1}]}]},
        "subscriptions[0]": {"name": "g", "subscriptions": [{"zz": 1}]},
    }
    keys: set[str] = set()
    for where, data in probes.items():
        with pytest.raises(Exception) as info:
            validate_group(data)
        m = re.search(r"unknown field 'zz'; expected one of ([^\n]+)", str(info.value))
        assert m, (where, str(info.value))
        keys.update(k.strip() for k in m.group(1).split(","))
    return keys


def test_every_key_is_documented() -> None:
    doc = _doc()
    missing = sorted(k for k in _accepted_keys() if f"`{k}`" not in doc)
    assert not missing, f"keys the validator accepts but docs/group.md does not describe: {missing}"
