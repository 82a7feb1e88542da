"""pyengine native core (C++). Typed stub, checked in; regenerate with
`pybind11-stubgen pyengine._core` after changing a binding and keep the edits below
(BatchNotifier.drain returns BatchRequest objects)."""
from __future__ import annotations
import collections.abc
import typing
__all__: list[str] = ['BatchNotifier', 'BatchRequest', 'Batcher', 'BatcherClosedError', 'DeviceModel', 'DeviceUnavailableError', 'Model', 'ModelFormatError', 'QueueFullError', 'cpu_features', 'cuda_devices', 'cuda_status', 'device_steps', 'gemm', 'kernel_variant', 'kernels_available', 'nchwc_block', 'num_threads', 'op_names', 'pack_conv_weights', 'set_isa', 'set_num_threads', 'write_pyem']
class ModelFormatError(ValueError):
    pass
class QueueFullError(RuntimeError):
    pass
class BatcherClosedError(RuntimeError):
    pass
class DeviceUnavailableError(RuntimeError):
    pass
class Model:
    """
    A .pyem model mapped from disk.
    """
    def __init__(self, path: str) -> None:
        ...
    def layout(self, input_shapes: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt]]) -> dict:
        """
        The layout plan for these input shapes: {'block': channels per block (0: plain NCHW), 'blocked': nodes run blocked, 'fused': 'conv + add [+ act]' chains run as one step, 'reorders': 'value to plain|blocked' conversions}.
        """
    def run(self, inputs: collections.abc.Sequence) -> list:
        """
        Run on arrays in input order; returns arrays in output order.
        """
    def run1(self, x: typing.Any) -> typing.Any:
        """
        Run a one-input, one-output model on one array; returns the output array.
        """
    def profile(self, inputs: collections.abc.Sequence, runs: typing.SupportsInt | typing.SupportsIndex) -> dict:
        """
        Run `runs` times on arrays in input order, timing each node: {'nodes': [{name, op, input_shapes, output_shapes, layout, kernel}] in execution order, 'start_ns' and 'end_ns': per run, per node (steady clock), 'calls_ns': per run (start, end), 'outputs': the last run's outputs}.
        """
    @property
    def inputs(self) -> list:
        """
        [(name, shape, dtype)] with -1 for free dimensions
        """
    @property
    def node_count(self) -> int:
        ...
    @property
    def outputs(self) -> list:
        ...
    @property
    def path(self) -> str:
        ...
    @property
    def weight_bytes(self) -> int:
        ...
class BatchNotifier:
    """
    Finished async requests, signalled on an eventfd for an event loop.
    """
    def __init__(self) -> None:
        ...
    def drain(self) -> list[BatchRequest]:
        """
        Take every finished request; clears the signal.
        """
    @property
    def fd(self) -> int:
        ...
class BatchRequest:
    """
    A request queued in a Batcher.
    """
    def result(self) -> list:
        """
        Output arrays (views of the batch output), or raises the request's error.
        """
    @property
    def done(self) -> bool:
        ...
    @property
    def id(self) -> int:
        ...
    @property
    def rows(self) -> int:
        ...
class Batcher:
    """
    Dynamic batcher over a native model or a Python batch callback.
    """
    def __init__(self, target: typing.Any, max_batch_size: typing.SupportsInt | typing.SupportsIndex = 32, preferred_batch_sizes: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = [], max_queue_delay_us: typing.SupportsInt | typing.SupportsIndex = 1000, max_queue_size: typing.SupportsInt | typing.SupportsIndex = 1024, timeout_us: typing.SupportsInt | typing.SupportsIndex = 0, workers: typing.SupportsInt | typing.SupportsIndex = 1, input_shapes: collections.abc.Sequence[tuple[str, collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]]] = []) -> None:
        """
        target: a _core.Model (runs natively, no GIL) or a callable taking a list of arrays and returning one. input_shapes: [(name, shape)] a callable's requests are checked against (-1: any size).
        """
    def abandon(self) -> None:
        """
        At process exit: stop the workers, answer nobody (waiting daemon threads stay parked).
        """
    def cancel(self, request: BatchRequest, timeout: bool = False) -> bool:
        """
        Fail a still-queued request (TimeoutError if timeout, else cancelled); False if it already runs.
        """
    def close(self, drain: bool = True) -> None:
        """
        Stop taking requests; drain=True runs the queued ones, False fails them with BatcherClosedError.
        """
    def reset_stats(self) -> None:
        ...
    def run(self, arrays: collections.abc.Sequence, timeout_us: typing.SupportsInt | typing.SupportsIndex = -1) -> list:
        """
        Queue arrays (input order) and wait for this request's rows of each output.
        """
    def run1(self, x: typing.Any) -> typing.Any:
        """
        run() for one array in and one out; with max_queue_delay_us=0 and nobody waiting, the model runs on the caller's thread (the lean path of Model.run1).
        """
    def stats(self) -> dict:
        ...
    def submit(self, arrays: collections.abc.Sequence, notifier: BatchNotifier, timeout_us: typing.SupportsInt | typing.SupportsIndex = -1) -> BatchRequest:
        """
        Queue C-contiguous arrays the caller keeps alive; the request is pushed to `notifier` when done.
        """
    @property
    def closed(self) -> bool:
        ...
class DeviceModel:
    """
    A Model whose weights live on a CUDA GPU.
    """
    def __init__(self, model: Model, index: typing.SupportsInt | typing.SupportsIndex, emulate: bool = False) -> None:
        """
        Bind `model` to CUDA GPU `index`; emulate=True runs the device executor on the host (the CUDA kernels' element bodies and a reference SGEMM) to check the lowering without a GPU.
        """
    def run(self, inputs: collections.abc.Sequence) -> list:
        """
        Run on arrays in input order on the GPU; returns arrays in output order.
        """
    @property
    def device(self) -> dict:
        ...
    @property
    def device_bytes(self) -> int:
        """
        Device memory held: weights plus pooled workspaces.
        """
def cpu_features() -> dict:
    """
    CPU features detected once at start-up.
    """
def cuda_devices() -> list:
    """
    The CUDA GPUs seen: [{index, name, memory_bytes, compute_capability, pci_bus_id, integrated}].
    """
def cuda_status() -> dict:
    """
    Whether this build has CUDA support, whether its backend loaded, and why GPUs are unusable (error).
    """
def device_steps(model: Model, input_shapes: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]]) -> list:
    """
    How a device runs `model` for these input shapes: [(node, step kind)]; kind 'Host' is the CPU fallback for an op without a device kernel. Needs no GPU.
    """
def gemm(a: typing.Any, b: typing.Any, out: typing.Any, trans_b: bool = False, isa: str = '') -> None:
    """
    out[M,N] = a[M,K] @ b[K,N] (b[N,K] when trans_b) with the kernels of `isa` (default: the variant in use). For benchmarks and tests of the GEMM itself.
    """
def int8_kernel() -> str:
    """
    The int8 GEMM path of the kernel variant in use (avx512-vnni, avx-vnni, avx2, neon-dot, neon, generic).
    """
def kernel_variant() -> str:
    """
    Name of the kernel variant in use (generic, avx2, neon).
    """
def kernels_available() -> list[str]:
    """
    Kernel variants this build and CPU can run, best first.
    """
def nchwc_block() -> int:
    """
    The NCHW[c] block of the kernel variant in use (16 avx512, 8 avx2 and generic, 4 neon).
    """
def num_threads() -> int:
    """
    Intra-op threads (PYENGINE_NUM_THREADS, else the core count).
    """
def op_names() -> list[str]:
    """
    Ops the native engine runs.
    """
def pack_conv_weights(weight: typing.Any, groups: typing.SupportsInt, block: typing.SupportsInt) -> typing.Any:
    """
    An NCHW Conv2D's OIHW float32 weight in the blocked form the engine uses for `block` (4, 8 or 16), as a .pyem file stores it beside the plain one; None when this convolution has no blocked form (grouped channels that are not whole blocks).
    """
def set_isa(isa: str) -> None:
    """
    Switch the kernel variant in use (for comparing variants); ValueError if unavailable.
    """
def set_num_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Change the intra-op thread count of the process-wide pool.
    """
def write_pyem(path: str, graph_json: str, tensors: list) -> None:
    """
    Write a .pyem file: graph JSON text and (name, array) tensors, atomically.
    """
__version__: str
