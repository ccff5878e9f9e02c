"""Fakes of ``tensorrt`` (11.4 Python API surface) and ``pycuda.driver`` for testing without a GPU.

They expose only what TensorRT 11.4's bindings contain (names checked against the 11.4.0.106
binary, docs/model.md): APIs removed in TensorRT 10/11 (``EXPLICIT_BATCH``, ``BuilderFlag.FP16``,
``build_engine``, ``max_workspace_size``, binding-index calls, ``execute_async_v2``,
``platform_has_fast_fp16``) do not exist, and every fake object has ``__slots__``, so reading
*or assigning* a removed attribute raises ``AttributeError`` exactly as on TensorRT 11.

"Device memory" is host memory in a registry keyed by fake pointers; the fake engine really runs
the ONNX model (ONNX Runtime) on the bytes at the input address and writes the output address,
so results can be compared with the CPU backend. pycuda's per-thread context stack is modelled:
a driver call from a thread with no current context raises ``LogicError`` like pycuda does.
Everything is recorded in :class:`FakeState` for assertions.
"""

from __future__ import annotations

import itertools
import json
import threading
import types
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"FAKETRT1"


@dataclass
class FakeState:
    """Knobs and records shared by one fake tensorrt + pycuda pair."""

    version: str = "11.4.0.106"
    gpu_name: str = "Fake GPU H100"
    compute_capability: tuple = (9, 0)
    device_count: int = 1
    # failure knobs
    cuda_init_error: bool = False          # pycuda.driver.init() raises cuda.Error
    runtime_typeerror: bool = False        # trt.Runtime()/Builder() raise TypeError (CUDA failed)
    parse_fails: bool = False
    build_returns_none: bool = False
    set_input_shape_false: bool = False
    execute_false: bool = False
    # records
    calls: list = field(default_factory=list)          # (name, thread ident)
    builds: int = 0
    deserialize_calls: int = 0
    network_flags: list = field(default_factory=list)
    pool_limits: dict = field(default_factory=dict)
    profiles: list = field(default_factory=list)
    allocations: dict = field(default_factory=dict)    # ptr -> bytearray
    freed: list = field(default_factory=list)
    alloc_count: int = 0
    pinned_count: int = 0
    non_pinned_copies: int = 0
    set_address_calls: int = 0
    set_shape_calls: int = 0
    execute_handles: list = field(default_factory=list)
    pushes: int = 0
    pops: int = 0
    detaches: int = 0
    retained: int = 0

    def record(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))


def make_fakes(state: FakeState):
    """Build ``(tensorrt_module, pycuda_package, pycuda_driver_module)`` sharing ``state``."""
    local = threading.local()
    ptr_counter = itertools.count(0x7F0000001000, 0x100000)
    handle_counter = itertools.count(0x5000)

    # ------------------------------------------------------------------ pycuda.driver
    drv = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class CudaMemoryError(Error):
        pass

    class CudaRuntimeError(Error):
        pass

    drv.Error, drv.LogicError, drv.MemoryError, drv.RuntimeError = Error, LogicError, CudaMemoryError, CudaRuntimeError
    drv._initialised = False

    def _stack():
        if not hasattr(local, "stack"):
            local.stack = []
        return local.stack

    def _need_context(what: str):
        if not _stack():
            raise LogicError(f"{what} failed: invalid device context - no currently active context?")

    def init(flags=0):
        state.record("cuda.init")
        if state.cuda_init_error:
            raise CudaRuntimeError("cuInit failed: no CUDA-capable device is detected")
        drv._initialised = True

    class Context:
        __slots__ = ("device",)

        def __init__(self, device):
            self.device = device

        def push(self):
            state.record("ctx.push")
            state.pushes += 1
            _stack().append(self)

        @staticmethod
        def pop():
            state.record("ctx.pop")
            st = _stack()
            if not st:
                raise LogicError("cannot pop non-current context")
            st.pop()
            state.pops += 1

        def detach(self):
            state.record("ctx.detach")
            state.detaches += 1

        @staticmethod
        def get_current():
            st = _stack()
            return st[-1] if st else None

        @staticmethod
        def synchronize():
            _need_context("Context.synchronize")

    class Device:
        __slots__ = ("index",)

        def __init__(self, index):
            if not drv._initialised:
                raise LogicError("cuInit has not been called")
            if not 0 <= index < state.device_count:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            self.index = index

        @staticmethod
        def count():
            if not drv._initialised:
                raise LogicError("cuInit has not been called")
            return state.device_count

        def name(self):
            return state.gpu_name

        def compute_capability(self):
            return tuple(state.compute_capability)

        def retain_primary_context(self):
            state.record("retain_primary_context")
            state.retained += 1
            return Context(self)

        def make_context(self, flags=0):  # exists in pycuda, but we must not use it (non-primary)
            state.record("make_context")
            raise AssertionError("stemwatch must use the primary context, not make_context()")

    class DeviceAllocation:
        __slots__ = ("ptr", "nbytes", "alive")

        def __init__(self, nbytes):
            self.ptr = next(ptr_counter)
            self.nbytes = int(nbytes)
            self.alive = True
            state.allocations[self.ptr] = bytearray(self.nbytes)

        def __int__(self):
            return self.ptr

        def __index__(self):
            return self.ptr

        def free(self):
            _need_context("DeviceAllocation.free")
            if self.alive:
                self.alive = False
                state.freed.append(self.ptr)
                state.allocations.pop(self.ptr, None)

    class PinnedArray(np.ndarray):
        pass

    class Stream:
        __slots__ = ("_handle",)

        def __init__(self, flags=0):
            _need_context("Stream")
            state.record("Stream")
            self._handle = next(handle_counter)

        @property
        def handle(self):
            return self._handle

        def synchronize(self):
            _need_context("Stream.synchronize")
            state.record("Stream.synchronize")

    class Event:
        __slots__ = ("t",)

        def __init__(self, flags=0):
            _need_context("Event")
            self.t = 0.0

        def record(self, stream=None):
            _need_context("Event.record")
            import time

            self.t = time.perf_counter()
            return self

        def synchronize(self):
            return self

        def time_till(self, end):
            return (end.t - self.t) * 1e3

    def mem_alloc(nbytes):
        _need_context("mem_alloc")
        state.record("mem_alloc")
        state.alloc_count += 1
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        _need_context("pagelocked_empty")
        state.record("pagelocked_empty")
        state.pinned_count += 1
        return np.empty(shape, dtype, order=order).view(PinnedArray)

    def _dev_buffer(dev, nbytes):
        ptr = int(dev)
        buf = state.allocations.get(ptr)
        if buf is None:
            raise LogicError("invalid device pointer (freed?)")
        if nbytes > len(buf):
            raise LogicError(f"copy of {nbytes} B overruns a device allocation of {len(buf)} B")
        return buf

    def memcpy_htod_async(dest, src, stream=None):
        _need_context("memcpy_htod_async")
        state.record("memcpy_htod_async")
        if not isinstance(src, PinnedArray):
            state.non_pinned_copies += 1
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        _dev_buffer(dest, raw.size)[:raw.size] = raw.tobytes()

    def memcpy_dtoh_async(dest, src, stream=None):
        _need_context("memcpy_dtoh_async")
        state.record("memcpy_dtoh_async")
        if not isinstance(dest, PinnedArray):
            state.non_pinned_copies += 1
        out = dest.view(np.uint8).reshape(-1)
        buf = _dev_buffer(src, out.size)
        out[:] = np.frombuffer(bytes(buf[:out.size]), np.uint8)

    def get_driver_version():
        return 13000

    for name, obj in dict(init=init, Context=Context, Device=Device, DeviceAllocation=DeviceAllocation,
                          Stream=Stream, Event=Event, mem_alloc=mem_alloc, pagelocked_empty=pagelocked_empty,
                          memcpy_htod_async=memcpy_htod_async, memcpy_dtoh_async=memcpy_dtoh_async,
                          get_driver_version=get_driver_version).items():
        setattr(drv, name, obj)
    pycuda_pkg = types.ModuleType("pycuda")
    pycuda_pkg.driver = drv
    pycuda_pkg.__path__ = []  # a package

    # ------------------------------------------------------------------ tensorrt
    trt = types.ModuleType("tensorrt")
    trt.__version__ = state.version

    class _Enum:
        __slots__ = ("name", "value")

        def __init__(self, name, value):
            self.name, self.value = name, value

        def __int__(self):
            return self.value

        def __index__(self):
            return self.value

        def __eq__(self, other):
            return isinstance(other, _Enum) and (self.name, self.value) == (other.name, other.value)

        def __hash__(self):
            return hash((self.name, self.value))

        def __repr__(self):
            return f"<{self.name}: {self.value}>"

    def enum(cls_name, names):
        members = {n: _Enum(f"{cls_name}.{n}", i) for i, n in enumerate(names)}
        cls = type(cls_name, (), {"__slots__": (), **members})
        return cls

    # TensorRT 11: no EXPLICIT_BATCH; STRONGLY_TYPED deprecated-but-present
    trt.NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"])
    if state.version.startswith("10."):
        trt.NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    # TensorRT 11 builder flags: precision flags FP16/INT8/BF16/FP8/OBEY_PRECISION_CONSTRAINTS are gone
    trt.BuilderFlag = enum("BuilderFlag", ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
                                           "SPARSE_WEIGHTS", "SAFETY_SCOPE", "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS",
                                           "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "REFIT_IDENTICAL",
                                           "WEIGHT_STREAMING", "STRIP_PLAN", "REFIT_INDIVIDUAL"])
    trt.MemoryPoolType = enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                 "DLA_GLOBAL_DRAM", "TACTIC_DRAM", "TACTIC_SHARED_MEMORY"])
    trt.TensorIOMode = enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.DataType = enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64"])

    def _check_cuda_alive(what):
        if state.runtime_typeerror:
            raise TypeError("pybind11::init(): factory function returned nullptr")

    class Logger:
        __slots__ = ("min_severity",)
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

        def log(self, severity, msg):
            pass

    class IHostMemory(bytes):
        @property
        def nbytes(self):
            return len(self)

    class IOptimizationProfile:
        __slots__ = ("shapes",)

        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):
            mn, op, mx = tuple(min), tuple(opt), tuple(max)
            if not all(a <= b <= c for a, b, c in zip(mn, op, mx)):
                raise ValueError("profile must satisfy min <= opt <= max")
            self.shapes[input] = (mn, op, mx)

        def get_shape(self, input):
            return self.shapes[input]

    class IBuilderConfig:
        __slots__ = ("pools", "profiles", "flags")

        def __init__(self):
            self.pools, self.profiles, self.flags = {}, [], set()

        def set_memory_pool_limit(self, pool_type, pool_size):
            state.pool_limits[pool_type.name] = int(pool_size)
            self.pools[pool_type.name] = int(pool_size)

        def get_memory_pool_limit(self, pool_type):
            return self.pools.get(pool_type.name, 0)

        def add_optimization_profile(self, profile):
            if not profile.shapes:
                return -1
            self.profiles.append(profile)
            state.profiles.append(dict(profile.shapes))
            return len(self.profiles) - 1

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            self.flags.discard(flag.name)

        def get_flag(self, flag):
            return flag.name in self.flags or flag.name == "BuilderFlag.TF32"

    class ITensor:
        __slots__ = ("name", "shape")

        def __init__(self, name, shape):
            self.name, self.shape = name, tuple(shape)

    class INetworkDefinition:
        __slots__ = ("flags", "onnx_path", "input_names", "output_names", "inputs")

        def __init__(self, flags):
            self.flags = flags
            self.onnx_path = None
            self.input_names, self.output_names = [], []
            self.inputs = []

        def get_input(self, index):
            return self.inputs[index]

        @property
        def num_inputs(self):
            return len(self.input_names)

        @property
        def num_outputs(self):
            return len(self.output_names)

    class ParserError:
        __slots__ = ("msg",)

        def __init__(self, msg):
            self.msg = msg

        def desc(self):
            return self.msg

        def __str__(self):
            return f"In node -1 (parse): {self.msg}"

    class OnnxParser:
        __slots__ = ("network", "errors")

        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, model):
            state.record("parse_from_file")
            if state.parse_fails:
                self.errors.append(ParserError("UNSUPPORTED_NODE: fake parse failure"))
                return False
            import onnxruntime as ort

            sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            self.network.onnx_path = str(model)
            self.network.input_names = [i.name for i in sess.get_inputs()]
            self.network.inputs = [ITensor(i.name, [d if isinstance(d, int) else -1 for d in i.shape])
                                   for i in sess.get_inputs()]
            self.network.output_names = [o.name for o in sess.get_outputs()]
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def clear_errors(self):
            self.errors.clear()

    class Builder:
        __slots__ = ("logger",)

        def __init__(self, logger):
            state.record("Builder")
            _check_cuda_alive("Builder")
            self.logger = logger

        def create_network(self, flags=0):
            state.record("create_network")
            state.network_flags.append(int(flags))
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            state.record("build_serialized_network")
            if state.build_returns_none:
                return None
            if network.onnx_path is None or not config.profiles:
                return None
            state.builds += 1
            for t in network.inputs:      # a profile's batch range must fit the input's batch dimension
                b = config.profiles[0].shapes.get(t.name, ((1,),) * 3)[2][0]
                if t.shape[0] != -1 and b != t.shape[0]:
                    return None
            payload = {"onnx": network.onnx_path, "inputs": network.input_names, "outputs": network.output_names,
                       "profile": {k: [list(s) for s in v] for k, v in config.profiles[0].shapes.items()},
                       "flags": network.flags, "workspace": config.pools.get("MemoryPoolType.WORKSPACE")}
            return IHostMemory(MAGIC + json.dumps(payload).encode())

    class IExecutionContext:
        __slots__ = ("engine", "shapes", "addresses")

        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            state.record("set_input_shape")
            state.set_shape_calls += 1
            if state.set_input_shape_false or name not in self.engine.payload["inputs"]:
                return False
            mn, _, mx = self.engine.payload["profile"][name]
            shape = tuple(int(s) for s in shape)
            if len(shape) != 4 or not all(a <= s <= b for a, s, b in zip(mn, shape, mx)):
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            inp = self.engine.payload["inputs"][0]
            if name == inp:
                return self.shapes.get(name, (1, 1, -1, -1))
            s = self.shapes.get(inp)
            return (s[0], 3, s[2], s[3]) if s else (1, 3, -1, -1)

        def set_tensor_address(self, name, memory):
            state.record("set_tensor_address")
            state.set_address_calls += 1
            if name not in self.engine.payload["inputs"] + self.engine.payload["outputs"]:
                return False
            self.addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name):
            return self.addresses.get(name, 0)

        def execute_async_v3(self, stream_handle):
            state.record("execute_async_v3")
            _need_context("execute_async_v3")
            state.execute_handles.append(int(stream_handle))
            if state.execute_false:
                return False
            inp, out = self.engine.payload["inputs"][0], self.engine.payload["outputs"][0]
            if inp not in self.shapes or inp not in self.addresses or out not in self.addresses:
                return False
            shape = self.shapes[inp]
            n = int(np.prod(shape))
            xbuf = _dev_buffer(self.addresses[inp], n * 4)
            x = np.frombuffer(bytes(xbuf[:n * 4]), np.float32).reshape(shape)
            # the ONNX file has batch 1: run each item (TensorRT itself runs the batch at once)
            y = np.concatenate([self.engine.session().run([out], {inp: x[i:i + 1]})[0] for i in range(len(x))])
            y = y.astype(np.float32)
            raw = y.reshape(-1).view(np.uint8)
            _dev_buffer(self.addresses[out], raw.size)[:raw.size] = raw.tobytes()
            return True

        def execute_v2(self, bindings):
            raise NotImplementedError("not used by stemwatch")

        def set_optimization_profile_async(self, profile_index, stream_handle):
            return profile_index == 0

    class ICudaEngine:
        __slots__ = ("payload", "_session")

        def __init__(self, payload):
            self.payload, self._session = payload, None

        def session(self):
            if self._session is None:
                import onnxruntime as ort

                self._session = ort.InferenceSession(self.payload["onnx"], providers=["CPUExecutionProvider"])
            return self._session

        @property
        def num_io_tensors(self):
            return len(self.payload["inputs"]) + len(self.payload["outputs"])

        @property
        def num_optimization_profiles(self):
            return 1

        def get_tensor_name(self, index):
            return (self.payload["inputs"] + self.payload["outputs"])[index]

        def get_tensor_mode(self, name):
            if name in self.payload["inputs"]:
                return trt.TensorIOMode.INPUT
            if name in self.payload["outputs"]:
                return trt.TensorIOMode.OUTPUT
            return trt.TensorIOMode.NONE

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            return (1, 1, -1, -1) if name in self.payload["inputs"] else (1, 3, -1, -1)

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self.payload["profile"][name]]

        def create_execution_context(self):
            state.record("create_execution_context")
            return IExecutionContext(self)

        def serialize(self):
            return IHostMemory(MAGIC + json.dumps(self.payload).encode())

        @property
        def device_memory_size_v2(self):
            return 1 << 20

    class Runtime:
        __slots__ = ("logger",)

        def __init__(self, logger):
            state.record("Runtime")
            _check_cuda_alive("Runtime")
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            state.record("deserialize_cuda_engine")
            state.deserialize_calls += 1
            data = bytes(serialized_engine)
            if not data.startswith(MAGIC):
                return None  # what TensorRT does for a corrupt / foreign engine
            try:
                return ICudaEngine(json.loads(data[len(MAGIC):]))
            except ValueError:
                return None

    def nptype(dtype):
        return {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32}[dtype]

    def volume(shape):
        return int(np.prod(shape))

    for name, obj in dict(Logger=Logger, ILogger=Logger, Builder=Builder, Runtime=Runtime, OnnxParser=OnnxParser,
                          IHostMemory=IHostMemory, ICudaEngine=ICudaEngine, IExecutionContext=IExecutionContext,
                          ITensor=ITensor,
                          IBuilderConfig=IBuilderConfig, INetworkDefinition=INetworkDefinition,
                          IOptimizationProfile=IOptimizationProfile, nptype=nptype, volume=volume).items():
        setattr(trt, name, obj)
    return trt, pycuda_pkg, drv


def install(monkeypatch, state: FakeState | None = None) -> FakeState:
    """Put fresh fakes into ``sys.modules`` (undone by ``monkeypatch``) and reset the probe cache."""
    import sys

    from engine.infer import probe

    state = state or FakeState()
    trt, pkg, drv = make_fakes(state)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setattr(probe, "_probe_cache", {})
    return state
