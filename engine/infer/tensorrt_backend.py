"""TensorRT backend (tensorrt >= 10.12, < 12, with pycuda), written for the TensorRT 10/11 API only.

Rules this module follows (see docs/model.md and the TensorRT 10->11 migration guides):

* ``tensorrt`` and ``pycuda`` are imported lazily, inside the owner thread / the probe only;
* ``builder.create_network(0)`` (``STRONGLY_TYPED`` only on 10.x for the FP16 graph); FP16 comes
  from the FP16-weight ONNX file, never from a builder flag; ``set_memory_pool_limit``; one
  optimisation profile for dynamic H/W; ``build_serialized_network``;
* an engine cache keyed by ONNX hash, TensorRT version, GPU name, compute capability, precision
  and profile, written atomically; a cached engine that ``deserialize_cuda_engine`` rejects (None)
  is deleted and rebuilt;
* name-based I/O: ``set_input_shape``, ``get_tensor_shape``, ``set_tensor_address``,
  ``execute_async_v3`` on a non-default stream; every return value is checked;
* all CUDA state (primary context, engine, execution context, stream, pinned host buffers and
  device buffers) is created, used and freed by ONE owner thread; :meth:`TensorRTBackend.run`
  hands work to it and waits, so callers may use any thread; buffers are reused across frames and
  reallocated only when a frame needs more room; :meth:`TensorRTBackend.close` frees everything in
  order, then pops the context.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

from engine.infer.backends import check_input

log = logging.getLogger(__name__)

MIN_TRT = (10, 12)
MAX_TRT_EXCLUSIVE = (12, 0)


def parse_version(text: str) -> tuple[int, ...]:
    """``"11.4.0.106"`` -> ``(11, 4, 0, 106)`` (non-numeric tails ignored)."""
    out = []
    for part in str(text).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_trt_version(version: str) -> tuple[int, ...]:
    """Raise ``RuntimeError`` unless ``MIN_TRT <= version < MAX_TRT_EXCLUSIVE``."""
    v = parse_version(version)
    if not (MIN_TRT <= v[:2] < MAX_TRT_EXCLUSIVE):
        raise RuntimeError(f"TensorRT {version} is not supported (need >= 10.12, < 12)")
    return v


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stemwatch" / "tensorrt"


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: tuple[int, int],
                     precision: str, profile: tuple) -> tuple[str, dict]:
    """The cache key (hex) and the facts it is made of."""
    facts = {
        "onnx_sha256": onnx_sha256,
        "tensorrt": str(trt_version),
        "gpu": str(gpu_name),
        "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
        "precision": precision,
        "profile": [list(map(int, s)) for s in profile],
    }
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:40]
    return key, facts


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def probe_tensorrt(device_index: int = 0) -> tuple[bool, str]:
    """Can the TensorRT backend run here? ``(ok, reason)``; catches every exception.

    Imports tensorrt (version check), pycuda (driver init, a device), and creates a TensorRT
    runtime (which raises ``TypeError`` when CUDA cannot start). Nothing is left allocated.
    """
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, OSError from missing libnvinfer, ...
        return False, f"tensorrt not importable ({type(exc).__name__}: {exc})"
    try:
        version = str(trt.__version__)
        check_trt_version(version)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    try:
        import pycuda.driver as cuda
    except Exception as exc:
        return False, f"pycuda not importable ({type(exc).__name__}: {exc})"
    try:
        cuda.init()
        n = cuda.Device.count()
        if n <= device_index:
            return False, f"no CUDA device {device_index} (pycuda sees {n})"
        dev = cuda.Device(device_index)
        name = dev.name()
        cc = dev.compute_capability()
        logger = trt.Logger(trt.Logger.ERROR)
        runtime = trt.Runtime(logger)
        if runtime is None:
            return False, "tensorrt.Runtime() returned None"
        del runtime
    except Exception as exc:  # TypeError from pybind11 when CUDA fails, pycuda.driver.Error, ...
        return False, f"CUDA/TensorRT failed to start ({type(exc).__name__}: {exc})"
    return True, f"TensorRT {version} on {name} (compute capability {cc[0]}.{cc[1]})"


class TensorRTBackend:
    """Runs the ONNX model through a TensorRT engine on an NVIDIA GPU (see module docstring).

    Parameters
    ----------
    model_path : the ONNX file (FP32 weights for ``precision="fp32"``, FP16 weights for ``"fp16"``).
    onnx_sha256 : hash of the ONNX bytes (cache key); computed when None.
    precision : ``"fp32"`` or ``"fp16"`` (recorded in the cache key and the description).
    cache_dir : engine cache folder (default ``~/.cache/stemwatch/tensorrt``).
    min_side_px, opt_side_px, max_side_px : optimisation profile for H and W (model px).
    multiple : input sides must be multiples of this.
    workspace_bytes : builder workspace memory-pool limit.
    max_batch : frames per call the engine accepts (profile batch 1..max_batch, optimised for max_batch;
        the network input's batch dimension is made dynamic after parsing). :meth:`run` takes batch 1;
        :meth:`benchmark` times any batch up to this (``stemwatch bench infer``: 1 and 4).
    """

    name = "tensorrt"

    def __init__(self, model_path: str | Path, *, onnx_sha256: str | None = None, precision: str = "fp32",
                 cache_dir: str | Path | None = None, min_side_px: int = 32, opt_side_px: int = 512,
                 max_side_px: int = 1024, multiple: int = 1, input_name: str = "input",
                 output_name: str = "probabilities", workspace_bytes: int = 1 << 30, device_index: int = 0,
                 max_batch: int = 1):
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"ONNX model {self.model_path} not found")
        self.onnx_sha256 = onnx_sha256 or hashlib.sha256(self.model_path.read_bytes()).hexdigest()
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        m = max(1, int(multiple))
        up = lambda v: -(-int(v) // m) * m  # noqa: E731
        self.min_side_px, self.max_side_px = up(min_side_px), up(max_side_px)
        self.opt_side_px = min(max(up(opt_side_px), self.min_side_px), self.max_side_px)
        self.multiple = m
        self.input_name, self.output_name = input_name, output_name
        self.workspace_bytes = int(workspace_bytes)
        self.device_index = int(device_index)
        self.max_batch = max(1, int(max_batch))
        self.description = "TensorRT (starting)"
        self.engine_source = ""          # "cache" or "built in N s"
        self.cache_path: Path | None = None
        self._closed = False
        self.call_timeout_s = 300.0      # a run() that takes longer raises TimeoutError (hung GPU)
        self._jobs: queue.Queue = queue.Queue()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="stemwatch-tensorrt", daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join(timeout=30)
            self._closed = True
            raise

    # ------------------------------------------------------------------ public API (any thread)
    @property
    def profile(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        b = getattr(self, "max_batch", 1)
        return ((1, 1, self.min_side_px, self.min_side_px), (b, 1, self.opt_side_px, self.opt_side_px),
                (b, 1, self.max_side_px, self.max_side_px))

    def run(self, x: np.ndarray) -> np.ndarray:
        """``x`` float32 (1, 1, h, w) -> probabilities float32 (1, 3, h, w), computed on the GPU."""
        x = check_input(x, self.multiple)
        return self._submit(lambda: self._run(x))

    def benchmark(self, shape: tuple[int, int], n_iter: int = 50, warmup: int = 5, batch: int = 1) -> dict:
        """Median ms of host->device copy, engine execution, device->host copy (CUDA events, each
        timed apart), and of a whole call as seen from Python, for ``batch`` ``(h, w)`` inputs at once
        (``batch`` <= ``max_batch``); ``batch`` is in the result."""
        if not 1 <= int(batch) <= self.max_batch:
            raise ValueError(f"batch {batch} outside 1..{self.max_batch} (max_batch of this engine)")
        x1 = check_input(np.random.default_rng(0).random((1, 1) + tuple(shape), dtype=np.float32), self.multiple)
        x = np.ascontiguousarray(np.repeat(x1, int(batch), axis=0))
        res = self._submit(lambda: self._bench_events(x, n_iter, warmup))
        walls = []
        for _ in range(max(3, n_iter // 2)):
            t0 = time.perf_counter()
            self._submit(lambda: self._run(x))
            walls.append(time.perf_counter() - t0)
        res["run_wall_ms"] = float(np.median(walls) * 1e3)
        res["batch"] = int(batch)
        return res

    def close(self) -> None:
        """Free every GPU resource in the owner thread and stop it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((None, done))
        done.result(timeout=60)
        self._thread.join(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ owner thread
    def _submit(self, fn, timeout_s: float | None = None):
        """Run ``fn`` on the owner thread. Fails fast (RuntimeError) when the backend is closed or
        closes meanwhile (a call racing :meth:`close`), and raises TimeoutError after
        ``timeout_s`` (default :attr:`call_timeout_s`) instead of waiting forever on a hung GPU."""
        if self._closed:
            raise RuntimeError("TensorRTBackend is closed")
        timeout_s = self.call_timeout_s if timeout_s is None else timeout_s
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return fut.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                pass
            if not self._thread.is_alive() and not fut.done():
                raise RuntimeError("TensorRTBackend was closed while this call waited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"TensorRT call did not finish within {timeout_s:.0f} s (GPU hung?)")

    def _serve(self, ready: concurrent.futures.Future) -> None:
        self._cuda = None
        try:
            self._init()
        except BaseException as exc:
            self._teardown()
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while True:
            fn, fut = self._jobs.get()
            if fn is None:
                try:
                    self._teardown()
                    fut.set_result(None)
                except BaseException as exc:
                    fut.set_exception(exc)
                while True:                       # calls that raced close(): fail them now
                    try:
                        _fn, late = self._jobs.get_nowait()
                    except queue.Empty:
                        return
                    if not late.done():
                        late.set_exception(RuntimeError("TensorRTBackend is closed"))
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def _init(self) -> None:
        import tensorrt as trt  # lazy: only here, in the owner thread

        from engine.infer.cuda_adapter import PyCudaAdapter

        self._trt = trt
        self.trt_version = str(trt.__version__)
        self._trt_major = check_trt_version(self.trt_version)[0]
        self._engine = self._context = self._runtime = None
        self._stream = None
        self._host_in = self._host_out = None
        self._dev_in = self._dev_out = None
        self._cap_in = self._cap_out = 0
        self._shape: tuple | None = None
        self._out_shape: tuple | None = None
        self._cuda = PyCudaAdapter(self.device_index)
        self.gpu_name = self._cuda.device_name()
        self.compute_capability = self._cuda.compute_capability()
        self._logger = trt.Logger(trt.Logger.WARNING)   # must outlive runtime and engine
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise RuntimeError("tensorrt.Runtime() returned None")
        self._engine = self._load_or_build()
        self._check_io()
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeError("ICudaEngine.create_execution_context() returned None (out of GPU memory?)")
        self._stream = self._cuda.stream()
        self.description = (f"TensorRT {'.'.join(map(str, parse_version(self.trt_version)[:3]))} on "
                            f"{self.gpu_name}, {self.precision}")

    def _load_or_build(self):
        key, facts = engine_cache_key(self.onnx_sha256, self.trt_version, self.gpu_name, self.compute_capability,
                                      self.precision, self.profile)
        path = self.cache_dir / f"{key}.engine"
        self.cache_path = path
        if path.is_file():
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                self.engine_source = "cache"
                log.info("TensorRT engine loaded from cache %s", path)
                return engine
            log.warning("cached TensorRT engine %s could not be deserialised; rebuilding", path)
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
        t0 = time.perf_counter()
        log.warning("building TensorRT engine for %s (%s, profile %s); this takes a while once per GPU",
                    self.model_path.name, self.precision, self.profile)
        data = self._build()
        build_s = time.perf_counter() - t0
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise RuntimeError("deserialize_cuda_engine returned None for a freshly built engine")
        atomic_write(path, data)
        atomic_write(path.with_suffix(".json"),
                     json.dumps({**facts, "build_s": round(build_s, 3), "model": str(self.model_path),
                                 "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2).encode())
        self.engine_source = f"built in {build_s:.1f} s"
        return engine

    def _build(self) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        if builder is None:
            raise RuntimeError("tensorrt.Builder() returned None")
        flags = 0
        if self.precision == "fp16" and self._trt_major == 10:
            # TensorRT 10.12+: the FP16-weight graph must be built strongly typed (11.x: always is)
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        if network is None:
            raise RuntimeError("Builder.create_network() returned None")
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self.model_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f"TensorRT could not parse {self.model_path}: " + "; ".join(errors or ["no detail"]))
        if self.max_batch > 1:            # the ONNX input has batch 1; the convolutional graph takes any batch
            for i in range(network.num_inputs):
                t = network.get_input(i)
                if t.name == self.input_name:
                    t.shape = (-1,) + tuple(t.shape)[1:]
        config = builder.create_builder_config()
        if config is None:
            raise RuntimeError("Builder.create_builder_config() returned None")
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        profile = builder.create_optimization_profile()
        if profile is None:
            raise RuntimeError("Builder.create_optimization_profile() returned None")
        lo, opt, hi = self.profile
        profile.set_shape(self.input_name, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise RuntimeError(f"invalid optimisation profile {self.profile} for input {self.input_name!r}")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT build_serialized_network returned None (see the TensorRT log above)")
        return memoryview(serialized).tobytes()

    def _check_io(self) -> None:
        trt = self._trt
        engine = self._engine
        modes = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            modes[name] = engine.get_tensor_mode(name)
        if modes.get(self.input_name) != trt.TensorIOMode.INPUT:
            raise RuntimeError(f"engine has no input tensor {self.input_name!r} (I/O: {sorted(modes)})")
        if modes.get(self.output_name) != trt.TensorIOMode.OUTPUT:
            raise RuntimeError(f"engine has no output tensor {self.output_name!r} (I/O: {sorted(modes)})")
        for name in (self.input_name, self.output_name):
            dt = engine.get_tensor_dtype(name)
            if dt != trt.DataType.FLOAT:
                raise RuntimeError(f"engine tensor {name!r} has dtype {dt}; the model must have float32 I/O")

    def _prepare(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """Set the input shape and make sure buffers and tensor addresses fit; returns element counts."""
        if shape == self._shape:
            return self._n_in, self._n_out
        h, w = shape[2], shape[3]
        if not 1 <= shape[0] <= self.max_batch:
            raise ValueError(f"batch {shape[0]} outside this engine's 1..{self.max_batch}")
        if not (self.min_side_px <= h <= self.max_side_px and self.min_side_px <= w <= self.max_side_px):
            raise ValueError(f"input {h}x{w} is outside the TensorRT optimisation profile "
                             f"[{self.min_side_px}, {self.max_side_px}] px per side")
        ctx = self._context
        if not ctx.set_input_shape(self.input_name, shape):
            raise ValueError(f"TensorRT rejected input shape {shape} (set_input_shape returned False)")
        out_shape = tuple(int(d) for d in ctx.get_tensor_shape(self.output_name))
        if out_shape != (shape[0], 3, h, w):
            raise RuntimeError(f"engine output shape {out_shape} != expected {(shape[0], 3, h, w)}")
        n_in, n_out = int(np.prod(shape)), int(np.prod(out_shape))
        moved = False
        if n_in > self._cap_in:
            self._free_buffer("in")
            self._host_in = self._cuda.pinned(n_in, np.float32)
            self._dev_in = self._cuda.alloc(n_in * 4)
            self._cap_in = n_in
            moved = True
        if n_out > self._cap_out:
            self._free_buffer("out")
            self._host_out = self._cuda.pinned(n_out, np.float32)
            self._dev_out = self._cuda.alloc(n_out * 4)
            self._cap_out = n_out
            moved = True
        if moved or self._shape is None:
            if not ctx.set_tensor_address(self.input_name, self._cuda.ptr(self._dev_in)):
                raise RuntimeError("set_tensor_address failed for the input")
            if not ctx.set_tensor_address(self.output_name, self._cuda.ptr(self._dev_out)):
                raise RuntimeError("set_tensor_address failed for the output")
        self._shape, self._out_shape = tuple(shape), out_shape
        self._n_in, self._n_out = n_in, n_out
        return n_in, n_out

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._cuda.stream_handle(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 returned False")

    def _run(self, x: np.ndarray) -> np.ndarray:
        n_in, n_out = self._prepare(x.shape)
        host_in, host_out = self._host_in[:n_in], self._host_out[:n_out]
        np.copyto(host_in, x.reshape(-1))
        self._cuda.h2d(self._dev_in, host_in, self._stream)
        self._execute()
        self._cuda.d2h(host_out, self._dev_out, self._stream)
        self._cuda.sync(self._stream)
        return host_out.reshape(self._out_shape).copy()

    def _bench_events(self, x: np.ndarray, n_iter: int, warmup: int) -> dict:
        n_in, n_out = self._prepare(x.shape)
        host_in, host_out = self._host_in[:n_in], self._host_out[:n_out]
        np.copyto(host_in, x.reshape(-1))
        ev = [self._cuda.event() for _ in range(4)]
        h2d, comp, d2h = [], [], []
        for i in range(warmup + n_iter):
            self._cuda.record(ev[0], self._stream)
            self._cuda.h2d(self._dev_in, host_in, self._stream)
            self._cuda.record(ev[1], self._stream)
            self._execute()
            self._cuda.record(ev[2], self._stream)
            self._cuda.d2h(host_out, self._dev_out, self._stream)
            self._cuda.record(ev[3], self._stream)
            self._cuda.sync(self._stream)
            if i >= warmup:
                h2d.append(self._cuda.elapsed_ms(ev[0], ev[1]))
                comp.append(self._cuda.elapsed_ms(ev[1], ev[2]))
                d2h.append(self._cuda.elapsed_ms(ev[2], ev[3]))
        return {"h2d_ms": float(np.median(h2d)), "compute_ms": float(np.median(comp)),
                "d2h_ms": float(np.median(d2h)), "n_iter": n_iter}

    def _free_buffer(self, which: str) -> None:
        dev = getattr(self, f"_dev_{which}", None)
        if dev is not None and self._cuda is not None:
            self._cuda.free(dev)
        setattr(self, f"_dev_{which}", None)
        setattr(self, f"_host_{which}", None)
        setattr(self, f"_cap_{which}", 0)
        self._shape = None

    def _teardown(self) -> None:
        """Owner thread: free buffers, drop context/engine/runtime, then pop the CUDA context."""
        try:
            if getattr(self, "_cuda", None) is not None:
                # finish every queued copy and kernel first: freeing device memory that the stream
                # still reads or writes is undefined behaviour
                if getattr(self, "_stream", None) is not None:
                    self._cuda.sync(self._stream)
                if hasattr(self, "_dev_in"):
                    self._free_buffer("in")
                    self._free_buffer("out")
            self._context = None
            self._engine = None
            self._runtime = None
            self._stream = None
        finally:
            cuda = getattr(self, "_cuda", None)
            self._cuda = None
            if cuda is not None:
                cuda.close()
