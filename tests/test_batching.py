"""The dynamic batcher: every caller gets its own rows back (native and framework models), and
queue limits, timeouts, shutdown, callback errors and bad input reach the right callers."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import mlp
from onnx_models import OrtModel, mlp_onnx

import pyengine
from pyengine import BatcherClosedError, BatchingConfig, QueueFullError


@pytest.fixture(scope="module")
def mlp_model(tmp_path_factory: pytest.TempPathFactory) -> pyengine.Model:
    return pyengine.load(mlp(str(tmp_path_factory.mktemp("batching") / "mlp.pyem")))


@pytest.fixture(scope="module")
def exact_model(tmp_path_factory: pytest.TempPathFactory) -> pyengine.Model:
    """y = relu(x) on [-1, 8]: for positive inputs each output row equals its input row exactly."""
    g = pyengine.GraphBuilder()
    g.output(g.node("Relu", [g.input("x", [-1, 8])], name="y"))
    return pyengine.load(g.save(str(tmp_path_factory.mktemp("batching") / "relu.pyem")))


@pytest.fixture(scope="module")
def mlp_bytes() -> bytes:
    """The MLP as ONNX; the framework-callback tests run it with onnxruntime (pyengine[onnx])."""
    for module in ("onnx", "onnxruntime"):
        pytest.importorskip(
            module, reason=f"the framework-path tests need {module}: pip install 'pyengine[onnx]'"
        )
    return mlp_onnx()


class GatedModel(OrtModel):
    """An onnxruntime MLP whose batches wait at a gate, so a test can keep the worker busy."""

    def __init__(self, model_bytes: bytes) -> None:
        super().__init__(model_bytes)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batch_rows: list[int] = []

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.batch_rows.append(len(arrays[0]))
        return super()._run(arrays)


POISON = -12345.0


class PoisonModel(GatedModel):
    """Fails any batch holding a row whose first value is POISON, like a model that rejects data."""

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if np.any(arrays[0][:, 0] == POISON):
            raise RuntimeError(f"poisoned row in a batch of {len(arrays[0])}")
        return super()._run(arrays)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.002)


def in_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """fn(i) on n threads at once; each result, or the exception it raised."""
    barrier = threading.Barrier(n)

    def call(i: int) -> Any:
        barrier.wait()
        try:
            return fn(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects what each caller got
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def unique_rows(caller: int, req: int, rows: int, width: int) -> np.ndarray:
    """Positive rows that name their caller, request and row."""
    base = np.arange(rows * width, dtype=np.float32).reshape(rows, width) / 1000.0
    return (base + caller * 10.0 + req * 0.5 + 1.0).astype(np.float32)


# ---- every caller gets exactly its own rows ----

plans = st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=6), min_size=2, max_size=12)
configs = st.fixed_dictionaries(
    {
        "max_batch_size": st.sampled_from([5, 8, 16, 64]),
        "max_delay_us": st.sampled_from([0, 200, 2000]),
        "workers": st.integers(1, 3),
        "preferred": st.sampled_from([(), (4,), (2, 5)]),
    }
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=plans, cfg=configs)
def test_native_callers_get_their_own_rows(
    exact_model: pyengine.Model, plan: list[list[int]], cfg: dict[str, Any]
) -> None:
    with exact_model.batched(
        cfg["max_batch_size"],
        cfg["max_delay_us"],
        workers=cfg["workers"],
        preferred_batch_sizes=cfg["preferred"],
    ) as b:

        def caller(i: int) -> bool:
            for r, rows in enumerate(plan[i]):
                x = unique_rows(i, r, rows, 8)
                y = b.predict(x)
                assert y.shape == x.shape and np.array_equal(y, x), (i, r)
                if cfg["max_delay_us"] > 0:  # (with 0, an idle batcher may run it on this thread)
                    assert not y.flags.owndata  # a view of the batch output, not a copy
            return True

        assert in_threads(len(plan), caller) == [True] * len(plan)
        s = b.stats()
    assert s["requests"] == s["completed"] == sum(len(p) for p in plan)
    assert s["rows"] == sum(sum(p) for p in plan)
    assert sum(k * v for k, v in s["batch_size_histogram"].items()) == s["rows"]


def test_native_mlp_batches_and_matches_unbatched(mlp_model: pyengine.Model) -> None:
    rng = np.random.default_rng(1)
    xs = [
        [rng.standard_normal((int(rng.integers(1, 4)), 64)).astype(np.float32) for _ in range(20)]
        for _ in range(16)
    ]
    with mlp_model.batched(max_batch_size=32, max_delay_us=2000) as b:
        outs = in_threads(16, lambda i: [b.predict(x) for x in xs[i]])
        s = b.stats()
    for i in range(16):
        for x, y in zip(xs[i], outs[i]):
            np.testing.assert_allclose(y, mlp_model.predict(x), rtol=1e-5, atol=1e-6)
    assert s["mean_batch_size"] > 1.5, s  # requests really were gathered
    assert s["latency_us"]["count"] == 320 and s["latency_us"]["p99"] >= s["latency_us"]["p50"] > 0
    assert s["queue_time_us"]["count"] == 320


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=plans, delay=st.sampled_from([0, 500, 3000]))
def test_framework_callers_get_their_own_rows(
    mlp_bytes: bytes, plan: list[list[int]], delay: int
) -> None:
    model = OrtModel(mlp_bytes)
    reference = OrtModel(mlp_bytes)
    with model.batched(max_batch_size=16, max_delay_us=delay) as b:

        def caller(i: int) -> list[tuple[np.ndarray, np.ndarray]]:
            out = []
            for r, rows in enumerate(plan[i]):
                x = unique_rows(i, r, rows, 64)
                out.append((x, b.predict(x)))
            return out

        results = in_threads(len(plan), caller)
        s = b.stats()
    for got in results:
        assert not isinstance(got, Exception), got
        for x, y in got:
            np.testing.assert_allclose(y, reference.predict(x), rtol=1e-5, atol=1e-6)
    assert model.calls == s["batches"] <= s["requests"] == sum(len(p) for p in plan)


def test_framework_batches_form(mlp_bytes: bytes) -> None:
    model = GatedModel(mlp_bytes)
    with model.batched(max_batch_size=64, max_delay_us=0) as b:
        first = threading.Thread(target=b.predict, args=(np.ones((1, 64), np.float32),))
        first.start()
        assert model.entered.wait(10)
        xs = [unique_rows(i, 0, 1 + i % 3, 64) for i in range(10)]
        with ThreadPoolExecutor(10) as pool:
            futs = [pool.submit(b.predict, x) for x in xs]
            wait_until(lambda: b.stats()["requests"] == 11)
            model.gate.set()
            outs = [f.result(10) for f in futs]
        first.join()
    assert model.batch_rows == [
        1,
        sum(len(x) for x in xs),
    ]  # the ten queued requests ran as one batch
    reference = OrtModel(mlp_bytes)
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y, reference.predict(x), rtol=1e-5, atol=1e-6)


def test_several_inputs_and_outputs(tmp_path: Any) -> None:
    g = pyengine.GraphBuilder()
    a, c = g.input("a", [-1, 3]), g.input("c", [-1, 3])
    g.output(g.node("Add", [a, c], name="sum"))
    g.output(g.node("Relu", [a], name="relu_a"))
    model = pyengine.load(g.save(str(tmp_path / "two.pyem")))
    sum_name, relu_name = (o.name for o in model.outputs)
    with model.batched(max_batch_size=8, max_delay_us=1000) as b:

        def caller(i: int) -> None:
            a_ = unique_rows(i, 0, 1 + i % 3, 3)
            out = b.predict({"a": a_, "c": a_ * 2})
            assert isinstance(out, dict) and list(out) == [sum_name, relu_name]
            np.testing.assert_array_equal(out[sum_name], a_ * 3)
            np.testing.assert_array_equal(out[relu_name], a_)

        assert in_threads(8, caller) == [None] * 8


# ---- asyncio ----


def test_predict_async_native_and_framework(mlp_model: pyengine.Model, mlp_bytes: bytes) -> None:
    ort_model = OrtModel(mlp_bytes)
    xs = [unique_rows(i, 0, 1 + i % 4, 64) for i in range(40)]

    async def main(b: pyengine.BatchedModel) -> list[np.ndarray]:
        return list(await asyncio.gather(*[b.predict_async(x) for x in xs]))

    for model in (mlp_model, ort_model):
        with model.batched(max_batch_size=32, max_delay_us=2000) as b:
            outs = asyncio.run(main(b))
            s = b.stats()
        for x, y in zip(xs, outs):
            np.testing.assert_allclose(y, model.predict(x), rtol=1e-5, atol=1e-6)
        assert s["batches"] < len(xs), s


def test_predict_async_cancel_and_timeout(mlp_bytes: bytes) -> None:
    model = GatedModel(mlp_bytes)
    x = np.ones((1, 64), np.float32)

    async def main(b: pyengine.BatchedModel) -> None:
        busy = asyncio.ensure_future(b.predict_async(x))
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(b.predict_async(x))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await b.predict_async(
                x, timeout_s=0.05
            )  # the only worker is busy: the loop's timer fires
        assert time.monotonic() - t0 >= 0.045
        model.gate.set()
        y = await busy
        assert y.shape == (1, 10)

    with model.batched(max_batch_size=4, max_delay_us=0) as b:
        asyncio.run(main(b))
        s = b.stats()
    assert (s["cancelled"], s["timed_out"], s["completed"]) == (1, 1, 1)
    assert model.batch_rows == [1]  # neither the cancelled nor the timed-out request ever ran


# ---- limits, errors, shutdown ----


def test_queue_full_fails_at_once(mlp_bytes: bytes) -> None:
    model = GatedModel(mlp_bytes)
    x = np.ones((1, 64), np.float32)
    with (
        model.batched(max_batch_size=1, max_delay_us=0, max_queue_size=2) as b,
        ThreadPoolExecutor(3) as pool,
    ):
        running = pool.submit(b.predict, x)
        assert model.entered.wait(10)
        queued = [pool.submit(b.predict, x) for _ in range(2)]
        wait_until(lambda: b.stats()["requests"] == 3)
        t0 = time.monotonic()
        with pytest.raises(QueueFullError, match="max_queue_size"):
            b.predict(x)
        assert time.monotonic() - t0 < 1.0
        model.gate.set()
        for f in [running, *queued]:
            assert f.result(10).shape == (1, 10)
        s = b.stats()
    assert (s["queue_full"], s["completed"]) == (1, 3)
    assert issubclass(QueueFullError, RuntimeError)


def test_timeout_while_queued(mlp_bytes: bytes) -> None:
    model = GatedModel(mlp_bytes)
    x = np.ones((2, 64), np.float32)
    with (
        model.batched(max_batch_size=4, max_delay_us=0, timeout_s=5) as b,
        ThreadPoolExecutor(2) as pool,
    ):
        running = pool.submit(b.predict, x)
        assert model.entered.wait(10)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="timeout"):
            b.predict(x, timeout_s=0.05)
        waited = time.monotonic() - t0
        assert 0.045 <= waited < 2.0
        queued = pool.submit(b.predict, x)  # the config's 5 s timeout: long enough
        wait_until(lambda: b.stats()["requests"] == 3)
        model.gate.set()
        assert running.result(10).shape == queued.result(10).shape == (2, 10)
        s = b.stats()
    assert (s["timed_out"], s["completed"]) == (1, 2)
    assert model.batch_rows == [2, 2]


@pytest.mark.parametrize("drain", [True, False])
def test_close_with_pending_requests(mlp_bytes: bytes, drain: bool) -> None:
    model = GatedModel(mlp_bytes)
    b = model.batched(max_batch_size=1, max_delay_us=0)
    x = np.ones((1, 64), np.float32)
    answers: list[Any] = []
    lock = threading.Lock()

    def caller() -> None:
        try:
            got: Any = b.predict(x)
        except Exception as exc:  # noqa: BLE001
            got = exc
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    threads[0].start()
    assert model.entered.wait(10)
    for t in threads[1:]:
        t.start()
    wait_until(lambda: b.stats()["requests"] == 4)
    closer = threading.Thread(target=b.close, kwargs={"drain": drain})
    closer.start()
    if not drain:  # the three queued requests fail at once, while the first still runs
        wait_until(lambda: len(answers) == 3)
        assert all(isinstance(a, BatcherClosedError) for a in answers)
    model.gate.set()
    closer.join(10)
    for t in threads:
        t.join(10)
    assert not closer.is_alive() and len(answers) == 4
    ok = [a for a in answers if isinstance(a, np.ndarray)]
    assert len(ok) == (4 if drain else 1)
    s = b.stats()
    assert s["completed"] == len(ok) and s["closed"] == 4 - len(ok)
    with pytest.raises(BatcherClosedError):
        b.predict(x)
    assert b.closed


def test_close_answers_pending_async_requests(mlp_bytes: bytes) -> None:
    model = GatedModel(mlp_bytes)
    b = model.batched(max_batch_size=1, max_delay_us=0)
    x = np.ones((1, 64), np.float32)

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(b.predict_async(x))]
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        tasks += [asyncio.ensure_future(b.predict_async(x)) for _ in range(3)]
        await asyncio.sleep(0.01)
        threading.Timer(0.05, model.gate.set).start()
        b.close(drain=False)  # fails the three queued ones, waits for the running one
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    answers = asyncio.run(main())
    assert isinstance(answers[0], np.ndarray)
    assert all(isinstance(a, BatcherClosedError) for a in answers[1:])


def test_callback_errors_reach_only_their_callers(mlp_bytes: bytes) -> None:
    model = PoisonModel(mlp_bytes)
    reference = OrtModel(mlp_bytes)
    with model.batched(max_batch_size=64, max_delay_us=0) as b, ThreadPoolExecutor(9) as pool:
        model.gate.set()
        model.gate.clear()
        first = pool.submit(b.predict, np.ones((1, 64), np.float32))
        assert model.entered.wait(10)
        xs = [unique_rows(i, 0, 2, 64) for i in range(8)]
        for i in (2, 5):
            xs[i][1, 0] = POISON
        futs = [pool.submit(b.predict, x) for x in xs]
        wait_until(lambda: b.stats()["requests"] == 9)
        model.gate.set()  # the eight queued requests run as one batch, which fails, then one by one
        assert first.result(10).shape == (1, 10)
        for i, (x, f) in enumerate(zip(xs, futs)):
            if i in (2, 5):
                with pytest.raises(RuntimeError, match="poisoned row in a batch of 2"):
                    f.result(10)
            else:
                np.testing.assert_allclose(f.result(10), reference.predict(x), rtol=1e-5, atol=1e-6)
        s = b.stats()
    assert (s["failed"], s["completed"], s["isolation_runs"]) == (2, 7, 8)


def test_framework_error_reaches_its_caller(mlp_bytes: bytes) -> None:
    """onnxruntime itself refuses float64 input: that caller gets ORT's error, others answers."""
    ort = pytest.importorskip("onnxruntime")
    model = OrtModel(mlp_bytes)
    with model.batched(max_batch_size=16, max_delay_us=1000) as b:

        def caller(i: int) -> Any:
            x = unique_rows(i, 0, 2, 64)
            return b.predict(x.astype(np.float64) if i == 3 else x)

        answers = in_threads(6, caller)
    assert isinstance(answers[3], ort.capi.onnxruntime_pybind11_state.InvalidArgument)
    assert all(
        isinstance(a, np.ndarray) and a.shape == (2, 10) for i, a in enumerate(answers) if i != 3
    )


def test_wrong_input_is_that_callers_value_error(
    mlp_model: pyengine.Model, mlp_bytes: bytes
) -> None:
    for model in (mlp_model, OrtModel(mlp_bytes)):
        with model.batched(max_batch_size=8, max_delay_us=2000) as b:

            def caller(i: int) -> Any:
                x = unique_rows(i, 0, 2, 64)
                return b.predict(x[:, :5] if i == 1 else x)

            answers = in_threads(5, caller)
            assert isinstance(answers[1], ValueError) and "expected [-1, 64]" in str(answers[1])
            assert all(
                isinstance(a, np.ndarray) and a.shape == (2, 10)
                for i, a in enumerate(answers)
                if i != 1
            )
            with pytest.raises(ValueError, match="9 rows, more than max_batch_size=8"):
                b.predict(np.ones((9, 64), np.float32))
            with pytest.raises(ValueError, match="0 rows"):
                b.predict(np.ones((0, 64), np.float32))
            with pytest.raises(ValueError, match="numpy array"):
                b.predict([[1.0] * 64])  # type: ignore[arg-type]
            assert b.stats()["completed"] == 4
    with (
        mlp_model.batched() as b,
        pytest.raises(ValueError, match="dtype float64, expected float32"),
    ):
        b.predict(np.ones((1, 64)))


def test_native_batches_run_without_the_gil(mlp_model: pyengine.Model, mlp_bytes: bytes) -> None:
    """While this thread holds the GIL (a huge switch interval), native requests still complete;
    framework ones cannot (their callback needs the GIL), which shows the check can tell."""
    x = np.ones((2, 64), np.float32)
    old = sys.getswitchinterval()
    for model, completes in ((mlp_model, True), (OrtModel(mlp_bytes), False)):
        # A 200 ms delay: the batch runs only after this thread has taken the GIL for good.
        with model.batched(max_batch_size=64, max_delay_us=200_000, workers=2) as b:
            callers = [threading.Thread(target=b.predict, args=(x,)) for _ in range(4)]
            for t in callers:
                t.start()
            wait_until(lambda b=b: b.stats()["requests"] == 4)
            sys.setswitchinterval(30)
            try:
                end = time.monotonic() + 1.5
                done = 0
                while time.monotonic() < end and done < 4:  # pure Python: never gives up the GIL
                    done = b.stats()["completed"]
            finally:
                sys.setswitchinterval(old)
            for t in callers:
                t.join(10)
            assert (done == 4) is completes, (model.backend, done)
            assert b.stats()["completed"] == 4


def test_workers_stop_when_the_batched_model_goes(mlp_model: pyengine.Model) -> None:
    def workers() -> int:
        names = []
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    names.append(f.read().strip())
            except OSError:  # the thread ended while we looked
                pass
        return names.count("pyengine-batch")

    before = workers()
    b = mlp_model.batched(workers=3)
    wait_until(lambda: workers() == before + 3)  # each worker names itself as it starts
    assert b.predict(np.ones((1, 64), np.float32)).shape == (1, 10)
    del b
    gc.collect()
    assert workers() == before


def test_interpreter_exit_with_a_busy_batcher(mlp_bytes: bytes) -> None:
    """Daemon threads still calling a framework-batched model when the interpreter exits."""
    code = textwrap.dedent("""
        import threading, numpy as np
        from onnx_models import OrtModel, mlp_onnx
        b = OrtModel(mlp_onnx()).batched(max_batch_size=8, max_delay_us=500)
        def loop():
            while True:
                b.predict(np.ones((1, 64), np.float32))
        for _ in range(4):
            threading.Thread(target=loop, daemon=True).start()
        while b.stats()["completed"] < 50:
            pass
        print("exiting", flush=True)
    """)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ["PYTHONPATH"]]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "exiting"


def test_batcher_collected_inside_its_own_callback() -> None:
    """The last reference to a batcher dropped by the garbage collector while its own callback
    runs on a worker thread (a worker cannot join itself): no crash, the request is answered."""
    code = textwrap.dedent("""
        import gc, os, select, time
        import numpy as np
        from pyengine import _core

        def callback(arrays):
            gc.collect()  # collects the cycle below: the last reference to the batcher
            return [arrays[0] * 2]

        notifier = _core.BatchNotifier()
        b = _core.Batcher(callback, max_batch_size=4, max_queue_delay_us=1000)
        x = np.ones((2, 3), np.float32)
        req = b.submit([x], notifier)
        cycle = [b]
        cycle.append(cycle)
        del b, cycle
        assert select.select([notifier.fd], [], [], 10)[0], "no answer"
        (done,) = notifier.drain()
        assert done.id == req.id
        np.testing.assert_array_equal(done.result()[0], x * 2)
        time.sleep(0.2)  # the batcher is closed off the worker thread meanwhile
        print("ok", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ---- configuration ----


def test_batching_config_from_dict() -> None:
    c = BatchingConfig.from_dict(
        {
            "max_batch_size": 16,
            "max_delay_us": 500,
            "preferred_batch_sizes": [8, 4, 8],
            "max_queue_size": None,
            "timeout_s": 0.25,
            "workers": 2,
        }
    )
    assert c == BatchingConfig(16, 500, (4, 8), None, 0.25, 2)
    assert c.timeout_us == 250_000
    assert BatchingConfig.from_dict({}) == BatchingConfig()
    bad = [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0"),
        ({"max_batch_size": True}, "max_batch_size must be an integer >= 1, got True"),
        ({"max_delay_us": -1}, "max_delay_us must be an integer >= 0, got -1"),
        ({"max_delay_us": 1.5}, "max_delay_us must be an integer >= 0, got 1.5"),
        (
            {"preferred_batch_sizes": [4, 64]},
            "preferred batch size must be an integer between 1 and 32, got 64",
        ),
        (
            {"preferred_batch_sizes": "8"},
            "preferred_batch_sizes must be a list of integers, got '8'",
        ),
        ({"max_queue_size": 0}, "max_queue_size must be an integer >= 1, got 0"),
        ({"timeout_s": 0}, "timeout_s must be a number of seconds > 0 or None, got 0"),
        ({"timeout_s": "3"}, "timeout_s must be a number of seconds > 0 or None, got '3'"),
        ({"workers": 0}, "workers must be an integer between 1 and 256, got 0"),
        ({"max_batch": 8}, "unknown key(s) ['max_batch']; the keys are ['max_batch_size'"),
    ]
    for data, message in bad:
        with pytest.raises(ValueError) as err:
            BatchingConfig.from_dict(data, where="functions[0].resources[0].batching")
        assert str(err.value).startswith("functions[0].resources[0].batching")
        assert message in str(err.value), (data, str(err.value))
    with pytest.raises(ValueError, match="must be a mapping"):
        BatchingConfig.from_dict([1, 2], where="batching")  # type: ignore[arg-type]


def test_idle_batcher_runs_a_request_on_its_callers_thread(mlp_model: pyengine.Model) -> None:
    """max_delay_us=0 with nobody queued: no hand-off to a worker, the caller runs the model."""
    x = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)
    with mlp_model.batched(max_batch_size=4, max_delay_us=0) as b:
        for _ in range(50):
            np.testing.assert_array_equal(b.predict(x), mlp_model.predict(x))
        s = b.stats()
        assert s["requests"] == s["completed"] == s["batches"] == 50 and s["rows"] == 150
        assert s["batch_size_histogram"] == {3: 50} and s["queue_time_us"]["max"] == 0.0
        with pytest.raises(ValueError, match="5 rows, more than max_batch_size=4"):
            b.predict(np.zeros((5, 64), np.float32))
        with pytest.raises(ValueError, match="shape"):
            b.predict(np.zeros((1, 63), np.float32))
        with pytest.raises(ValueError, match="float32"):
            b.predict(np.zeros((1, 64), np.float64))
    with pytest.raises(pyengine.BatcherClosedError):
        b.predict(x)


def test_batched_options_and_stats(mlp_model: pyengine.Model) -> None:
    with pytest.raises(ValueError, match="max_delay_us must be an integer >= 0, got -5"):
        mlp_model.batched(max_delay_us=-5)
    cfg = BatchingConfig(max_batch_size=4, max_delay_us=5_000_000, preferred_batch_sizes=(2,))
    with mlp_model.batched(config=cfg) as b:
        assert b.config is cfg and b.native and b.backend == "native"
        assert b.inputs == mlp_model.inputs and b.outputs == mlp_model.outputs
        x = np.ones((1, 64), np.float32)
        t0 = time.monotonic()
        in_threads(2, lambda i: b.predict(x))
        # Two one-row requests fill the preferred size 2: they go without waiting the 5 s delay.
        assert time.monotonic() - t0 < 2.5
        s = b.stats()
        assert s["batch_size_histogram"] == {2: 1} and s["mean_batch_size"] == 2.0
        b.reset_stats()
        assert b.stats()["requests"] == 0 and b.stats()["latency_us"] == {"count": 0}
    assert "closed" in repr(b)
