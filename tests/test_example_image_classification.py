"""The image-classification example (examples/image-classification, run by scripts/main.sh):
its CNN is really trained on scikit-learn's digits and converted, and the deployed group
classifies held-out test digits sent as base64 PNG and JPEG, or named by their path in the
granted capture volume, through a real core."""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
from typing import Any

import pytest
from core_helpers import CoreProcess
from example_helpers import EXAMPLE, example_build

import pyengine.deploy as dp

for _module, _package in (("chainer", "chainer"), ("sklearn", "scikit-learn"), ("PIL", "Pillow")):
    # Imported here, as the framework tests do (chainer's import-time warnings are filtered
    # for its own modules only while collecting).
    pytest.importorskip(_module, reason=f"the example needs {_package} (pip install "
                        "'pyengine[examples]', which scripts/setup.sh installs)")

build_module = example_build()


@pytest.fixture(scope="module")
def demo() -> Any:
    """The example built into a directory every user can traverse (the core runs the function
    as a user of its own when the tests run as root)."""
    base = tempfile.mkdtemp(prefix="pyengine-example-")
    os.chmod(base, 0o755)
    built = build_module.build(os.path.join(base, "packages"))
    yield base, built
    shutil.rmtree(base, ignore_errors=True)


def test_model_is_trained_and_converted(demo: Any) -> None:
    _, built = demo
    # 450 held-out digits: a trained CNN gets above 95 %, chance is 10 %.
    assert built.n_test == 450
    assert built.accuracy >= 0.95, built
    # The converted model predicts what Chainer itself predicts.
    assert abs(built.accuracy - built.framework_accuracy) <= 1 / built.n_test


def _png(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def _jpeg(path: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((64, 64)).save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def test_deployed_function_classifies_test_digits(demo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    base, built = demo
    monkeypatch.setenv("PYENGINE_DEMO_DIR", base)
    root = os.path.join(base, "root")
    d = dp.deploy(dp.load_group(os.path.join(EXAMPLE, "group.yaml")), root)
    assert d.status == "Success", d
    pngs = sorted(os.listdir(built.test_digits))
    # One test digit of each class (the first of each in the held-out split).
    per_class = {name.rsplit(".", 1)[0].split("-")[1]: name for name in reversed(pngs)}
    assert sorted(per_class) == [str(i) for i in range(10)]
    core = CoreProcess(root).wait_ready()
    try:
        right, confident = 0, 0
        for label, name in sorted(per_class.items()):
            path = os.path.join(built.test_digits, name)
            for encoded in (_png(path), _jpeg(path)):
                status, answer = core.invoke("classify-image", {"image": encoded, "top_k": 4})
                assert status == 200, (answer, core.log())
                result = answer["result"]
                assert [t["label"] for t in result["top"]][:1] == [result["label"]]
                assert len(result["top"]) == 4
                probs = [t["probability"] for t in result["top"]]
                assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
                right += result["label"] == label
                confident += result["probability"] >= 0.9
        # 20 images (10 digits as PNG and JPEG); the model errs on about 2 % of test digits.
        assert right >= 18 and confident >= 16, (right, confident)
        # By path in the granted volume (relative, and absolute), and refusals for paths
        # outside it: the handler names them, and the OS would refuse the read anyway.
        for label, name in sorted(per_class.items())[:3]:
            for path in (name, os.path.join(built.test_digits, name)):
                status, answer = core.invoke("classify-image", {"path": path})
                assert status == 200, (answer, core.log())
                assert answer["result"]["label"] == label, (path, answer)
        for path in ("../digits-cnn.tar.gz", "/etc/passwd", "missing.png"):
            status, answer = core.invoke("classify-image", {"path": path})
            assert status != 200, (path, answer)
            message = answer["error"]["message"]
            assert repr(path) in message and ("outside" in message or "cannot be read" in message), message
        status, answer = core.invoke("classify-image", {"image": "not base64!"})
        assert status != 200 and "'image' is not valid base64" in answer["error"]["message"]
        status, answer = core.invoke(
            "classify-image", {"image": base64.b64encode(b"GIF89a nonsense").decode()})
        assert status != 200 and "not a PNG or JPEG" in answer["error"]["message"]
    finally:
        core.stop()
