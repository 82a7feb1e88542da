"""Kernel variants and the intra-op thread pool from Python: PYENGINE_ISA / PYENGINE_NUM_THREADS,
every variant against the generic one on whole models, and many callers on shared models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from models import cnn_graph, mlp_graph, mobilenet_v2_graph

import pyengine
from pyengine import _core

SMALL_MOBILENET = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2))


def info_json(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyengine", "info", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("isa", _core.kernels_available())
def test_isa_env_forces_variant(isa):
    out = info_json(PYENGINE_ISA=isa)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["kernel_variant"] == isa


def test_isa_env_errors():
    missing = next(i for i in ("neon", "avx2", "avx512") if i not in _core.kernels_available())
    out = info_json(PYENGINE_ISA=missing)
    assert out.returncode == 2
    assert f"instruction set '{missing}' is not available" in out.stderr
    assert "available: " + ", ".join(_core.kernels_available()) in out.stderr
    out = info_json(PYENGINE_ISA="sse9")
    assert out.returncode == 2 and "PYENGINE_ISA='sse9' is not one of generic" in out.stderr
    with pytest.raises(ValueError, match="'sse9' is not one of"):
        _core.set_isa("sse9")


def test_num_threads_env():
    out = info_json(PYENGINE_NUM_THREADS="3")
    assert out.returncode == 0 and json.loads(out.stdout)["threads"] == 3
    out = info_json(PYENGINE_NUM_THREADS="many")
    assert (
        out.returncode == 2
        and "PYENGINE_NUM_THREADS='many' is not an integer from 1 to 1024" in out.stderr
    )
    with pytest.raises(ValueError, match="thread count 0"):
        pyengine.sysinfo.set_thread_count(0)


@pytest.mark.parametrize("variable", ["PYENGINE_SPIN_US", "PYENGINE_RUN_SPIN_US"])
def test_spin_env(variable):
    """How long idle pool threads spin, between model runs and during one: any value from 0
    (never; during a run: as between runs) to 100000 works; a bad one is an error naming it."""
    for value in ("0", "200", "100000"):
        out = info_json(**{variable: value, "PYENGINE_NUM_THREADS": "2"})
        assert out.returncode == 0 and json.loads(out.stdout)["threads"] == 2, out.stderr
    for value in ("soon", "-1", "100001"):
        out = info_json(**{variable: value})
        assert out.returncode == 2
        assert f"{variable}='{value}' is not an integer from 0 to 100000" in out.stderr


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    return {
        "mobilenet": pyengine.load(
            mobilenet_v2_graph(size=33, width=8, blocks=SMALL_MOBILENET).save(str(d / "m.pyem"))
        ),
        "cnn": pyengine.load(
            cnn_graph(size=20, channels=8, in_channels=3, batchnorm=False).save(str(d / "c.pyem"))
        ),
        "mlp": pyengine.load(mlp_graph().save(str(d / "p.pyem"))),
    }


INPUTS = {"mobilenet": (3, 33, 33), "cnn": (3, 20, 20), "mlp": (64,)}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_variants_agree_on_models(models, name):
    rng = np.random.default_rng(7)
    before = _core.kernel_variant()
    try:
        for batch in (1, 5):
            x = rng.standard_normal((batch, *INPUTS[name])).astype(np.float32)
            _core.set_isa("generic")
            ref = models[name].predict(x)
            for isa in _core.kernels_available():
                _core.set_isa(isa)
                np.testing.assert_allclose(
                    models[name].predict(x), ref, rtol=1e-4, atol=1e-5, err_msg=isa
                )
    finally:
        _core.set_isa(before)


def test_many_callers_on_shared_models(models):
    """Callers on several models at once share one pool: results stay exact, nothing deadlocks."""
    old = pyengine.sysinfo.thread_count()
    pyengine.sysinfo.set_thread_count(3)
    try:
        rng = np.random.default_rng(8)
        cases = [
            (name, rng.standard_normal((b, *INPUTS[name])).astype(np.float32))
            for name in INPUTS
            for b in (1, 4)
        ]
        expected = [models[name].predict(x) for name, x in cases]
        errors: list[str] = []

        def worker(k: int) -> None:
            for i in range(12):
                j = (i + k) % len(cases)
                name, x = cases[j]
                if not np.array_equal(models[name].predict(x), expected[j]):
                    errors.append(f"thread {k} call {i} on {name}: result differs")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a caller is stuck"
        assert errors == []
    finally:
        pyengine.sysinfo.set_thread_count(old)


def test_gemm_binding():
    rng = np.random.default_rng(9)
    a, b = (
        rng.standard_normal((5, 7)).astype(np.float32),
        rng.standard_normal((7, 3)).astype(np.float32),
    )
    for isa in _core.kernels_available():
        c = np.empty((5, 3), np.float32)
        _core.gemm(a, b, c, isa=isa)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
        _core.gemm(a, np.ascontiguousarray(b.T), c, trans_b=True, isa=isa)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    with pytest.raises(
        ValueError, match=r"gemm shapes do not fit: a \[5, 7\], b \[7, 3\], out \[5, 4\]"
    ):
        _core.gemm(a, b, np.empty((5, 4), np.float32))
