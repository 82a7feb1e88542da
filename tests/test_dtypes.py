"""Graph tensors of other element types than float32: inputs, outputs and values between ops
(int64, int32, bool, uint8...), the .pyem reader's dtype checks and predict's dtype errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import pyengine
from pyengine.builder import GraphBuilder


def _save(b: GraphBuilder, tmp_path, name: str = "m.pyem") -> str:
    return b.save(tmp_path / name)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "uint8", "int8", "int16", "uint64",
                                   "float64"])
def test_data_movement_keeps_any_dtype(tmp_path, dtype):
    """Reshape, Transpose, Slice and Concat move int64/bool/... values bit for bit, and predict
    returns arrays of the graph's dtype."""
    b = GraphBuilder()
    b.input("x", [-1, 3, 4], dtype)
    t = b.node("Transpose", ["x"], perm=[0, 2, 1])
    s = b.node("Slice", [t], axis=1, start=1, end=-1)
    c = b.node("Concat", [s, s], axis=2)
    r = b.node("Reshape", [c], shape=[0, -1])
    b.output(r)
    m = pyengine.load(_save(b, tmp_path))
    assert m.inputs[0].dtype == dtype and m.outputs[0].dtype == dtype
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 2, (2, 3, 4)) if dtype == "bool" else rng.integers(0, 100, (2, 3, 4))).astype(dtype)
    got = m.predict(x)
    ts = x.transpose(0, 2, 1)[:, 1:-1]
    want = np.concatenate([ts, ts], axis=2).reshape(2, -1)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)


def test_predict_names_input_and_dtypes(tmp_path):
    b = GraphBuilder()
    b.input("ids", [2], "int64")
    b.output(b.node("Identity", ["ids"]))
    m = pyengine.load(_save(b, tmp_path))
    with pytest.raises(ValueError, match=r"input 'ids' has dtype float32, expected int64"):
        m.predict(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"input 'ids' has dtype int32, expected int64"):
        m.predict(np.zeros(2, np.int32))
    np.testing.assert_array_equal(m.predict(np.array([7, -3], np.int64)), [7, -3])


def test_float_op_given_int64_is_refused_at_load(tmp_path):
    """A float32-only op reading an int64 value is a ModelFormatError naming node, input,
    value and dtype (never reinterpreted bytes)."""
    b = GraphBuilder()
    b.input("x", [2], "int64")
    b.output(b.node("Relu", ["x"], name="act"))
    with pytest.raises(pyengine.ModelFormatError,
                       match=r"node 'act' \(Relu\): input 0 \('x'\) has dtype int64; it takes float32"):
        pyengine.load(_save(b, tmp_path))


def test_builder_rejects_unknown_input_dtype():
    with pytest.raises(ValueError, match=r"input 'x' has dtype 'complex64'"):
        GraphBuilder().input("x", [2], "complex64")


def test_reader_rejects_bad_dtype_code_naming_the_tensor(tmp_path):
    b = GraphBuilder()
    b.input("x", [2])
    b.constant("weights_w", np.ones(2, np.float32))
    b.output(b.node("Add", ["x", "weights_w"]))
    path = _save(b, tmp_path)
    data = bytearray((tmp_path / "m.pyem").read_bytes())
    assert path.endswith("m.pyem")
    # The table entry: name_length u32, dtype u8, ndim u8, u16, dims, rel_off, length, name.
    # The name also appears in the graph JSON: take the occurrence a table entry precedes.
    entries = [
        at - 16 - 8 - 8 for at in range(len(data)) if data.startswith(b"weights_w", at)
        and at >= 32 and struct.unpack_from("<I", data, at - 32)[0] == len("weights_w")
    ]
    assert len(entries) == 1
    entry = entries[0]
    assert data[entry + 4] == 1 and data[entry + 5] == 1  # float32, rank 1
    for code in (0, 12, 255):
        data[entry + 4] = code
        bad = tmp_path / f"bad{code}.pyem"
        bad.write_bytes(bytes(data))
        with pytest.raises(pyengine.ModelFormatError,
                           match=rf"tensor 'weights_w' \(table entry 0\) has unknown dtype code {code}"):
            pyengine.load(str(bad))


def test_bool_and_int_constants_are_outputs(tmp_path):
    """A graph that answers typed constants (no inputs) returns them with their dtypes."""
    b = GraphBuilder()
    b.constant("mask", np.array([True, False, True]))
    b.constant("idx", np.array([[1, 2]], np.int32))
    b.output(b.node("Identity", ["mask"]))
    b.output("idx")
    m = pyengine.load(_save(b, tmp_path))
    mask, idx = m.predict({}).values()
    assert mask.dtype == np.bool_ and idx.dtype == np.int32
    np.testing.assert_array_equal(mask, [True, False, True])
    np.testing.assert_array_equal(idx, [[1, 2]])


def test_typed_ops_on_builder_graphs(tmp_path):
    """Cast (float -> int truncates, saturates), Compare -> bool, Logic, Where on int64, Gather
    with negative int32 indices and ArgMax -> int64, checked against numpy."""
    b = GraphBuilder()
    b.input("x", [2, 3], "float32")
    b.input("idx", [2], "int32")
    xi = b.node("Cast", ["x"], to="int64")
    big = b.node("Compare", [xi, b.constant("two", np.array(2, np.int64))], fn="greater")
    neg = b.node("Compare", [xi, b.constant("zero", np.array(0, np.int64))], fn="less")
    either = b.node("Logic", [big, neg], fn="or")
    picked = b.node("Where", [either, xi, b.constant("minus", np.array(-1, np.int64))])
    b.output(b.node("Gather", [picked, "idx"], axis=1))
    b.output(b.node("ArgReduce", ["x"], kind="max", axis=-1, keepdims=False))
    b.output(b.node("Logic", [either], fn="not"))
    m = pyengine.load(_save(b, tmp_path))
    x = np.array([[3.7, -1.2, 1e20], [0.5, 2.0, -7.9]], np.float32)
    idx = np.array([-1, 0], np.int32)
    gathered, argmax, keep = m.predict({"x": x, "idx": idx}).values()
    xi_np = np.array([[3, -1, np.iinfo(np.int64).max], [0, 2, -7]], np.int64)
    either_np = (xi_np > 2) | (xi_np < 0)
    np.testing.assert_array_equal(gathered, np.where(either_np, xi_np, -1)[:, [2, 0]])
    assert argmax.dtype == np.int64 and gathered.dtype == np.int64 and keep.dtype == np.bool_
    np.testing.assert_array_equal(argmax, x.argmax(axis=-1))
    np.testing.assert_array_equal(keep, ~either_np)
    with pytest.raises(ValueError, match=r"Gather index 5 is out of range for a dimension of 3"):
        m.predict({"x": x, "idx": np.array([5, 0], np.int32)})


def test_typed_op_dtype_errors_name_the_input(tmp_path):
    b = GraphBuilder()
    b.input("x", [3], "float32")
    b.input("i", [3], "int64")
    b.output(b.node("Compare", ["x", "i"], fn="equal", name="cmp"))
    with pytest.raises(pyengine.ModelFormatError,
                       match=r"node 'cmp' \(Compare\): input 1 \('i'\) has dtype int64; it takes "
                             r"float32 \(input 0's dtype\)"):
        pyengine.load(_save(b, tmp_path))
    b = GraphBuilder()
    b.input("x", [3], "float32")
    b.output(b.node("Gather", ["x", "x"], name="g"))
    with pytest.raises(pyengine.ModelFormatError, match=r"input 1 \('x'\) has dtype float32; it "
                                                        r"takes int32 or int64"):
        pyengine.load(_save(b, tmp_path, "g.pyem"))
