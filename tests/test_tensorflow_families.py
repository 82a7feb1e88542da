"""TensorFlow ops of the segmentation / detection families (pyengine/convert/_tf_ops.py): image
resizes in each of TensorFlow's coordinate rules and Conv2DBackpropInput (Conv2DTranspose) with
SAME and VALID padding on odd sizes, frozen from tf.functions and compared with TensorFlow."""

from __future__ import annotations

import pytest
from framework_models import assert_close, data, tf_quiet
from framework_models import tf_freeze_function as freeze

import pyengine

pytestmark = pytest.mark.frameworks
tf_quiet()
tf = pytest.importorskip(
    "tensorflow",
    reason="the tensorflow extra (pip install 'pyengine[tensorflow]') is not installed",
)


@pytest.mark.parametrize("method,align,half,size", [
    ("bilinear", False, True, (11, 6)), ("bilinear", True, False, (9, 13)),
    ("bilinear", False, False, (14, 5)), ("nearest", False, True, (11, 6)),
    ("nearest", True, False, (9, 13)), ("nearest", False, False, (14, 20)),
])
def test_resize_matches_tensorflow(tmp_path, method, align, half, size):
    op = (tf.compat.v1.image.resize_bilinear if method == "bilinear"
          else tf.compat.v1.image.resize_nearest_neighbor)
    path, fn = freeze(tmp_path, lambda x: op(x, size, align_corners=align, half_pixel_centers=half),
                      [None, 7, 9, 3])
    model = pyengine.load(path, backend="native")
    for batch in (1, 2):
        x = data((batch, 7, 9, 3), seed=batch)
        assert_close(model.predict(x), fn(x).numpy())


@pytest.mark.parametrize("padding,stride,kernel,out", [
    ("SAME", 2, 3, (14, 10)), ("VALID", 2, 3, (15, 11)), ("SAME", 1, 4, (7, 5)),
    ("SAME", 2, 1, (14, 10)), ("VALID", 3, 2, (22, 16)),
])
def test_conv2d_transpose_matches_tensorflow(tmp_path, padding, stride, kernel, out):
    w = tf.constant(data((kernel, kernel, 4, 3), seed=5))
    b = tf.constant(data((4,), seed=6))

    def fn(x):  # type: ignore[no-untyped-def]
        y = tf.nn.conv2d_transpose(x, w, [tf.shape(x)[0], *out, 4], stride, padding)
        return tf.nn.relu(tf.nn.bias_add(y, b))

    path, concrete = freeze(tmp_path, fn, [None, 7, 5, 3])
    model = pyengine.load(path, backend="native")  # the output size's batch is read at run time
    for batch in (1, 3):
        x = data((batch, 7, 5, 3), seed=batch)
        assert_close(model.predict(x), concrete(x).numpy())


def test_resize_with_both_corner_rules_is_refused_naming_it(tmp_path):
    """align_corners together with half_pixel_centers has no native form: refused at convert."""
    from tensorflow.python.ops import gen_image_ops

    path, _ = freeze(tmp_path, lambda x: gen_image_ops.resize_bilinear(
        x, [5, 5], align_corners=True, half_pixel_centers=True), [1, 3, 3, 2])
    with pytest.raises(pyengine.UnsupportedOpsError, match="align_corners and half_pixel_centers"):
        pyengine.convert(path, str(tmp_path / "m.pyem"))
