"""Inference backends behind one small protocol, and the ONNX Runtime (CPU) backend.

A backend runs the network on one normalised, padded model-grid image:
``run(x: float32 (1, 1, h, w)) -> float32 (1, 3, h, w)`` probabilities in CLASSES order, with
``h`` and ``w`` multiples of the model's ``multiple``. ``close()`` releases everything.
The TensorRT backend lives in :mod:`engine.infer.tensorrt_backend` (imported only when chosen).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """What every inference backend provides."""

    name: str            # "onnxruntime" | "tensorrt"
    description: str     # e.g. "ONNX Runtime 1.32.0 CPU, 2 threads"

    def run(self, x: np.ndarray) -> np.ndarray:
        """``x`` float32 (1, 1, h, w) -> probabilities float32 (1, 3, h, w)."""
        ...

    def close(self) -> None:
        """Release all resources; the backend cannot run afterwards."""
        ...


def physical_cores() -> int:
    """Physical CPU cores usable by this process (hyper-threads not counted)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores = set()
    try:
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
            elif not line.strip():
                if core is not None:
                    cores.add((phys, core))
                phys = core = None
        if core is not None:
            cores.add((phys, core))
    except OSError:
        pass
    n = len(cores) if cores else usable
    return max(1, min(n, usable))


def check_input(x: np.ndarray, multiple: int = 1) -> np.ndarray:
    """Validate a backend input; returns it as a C-contiguous float32 array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[:2] != (1, 1):
        raise ValueError(f"backend input must be float32 (1, 1, h, w), got shape {x.shape}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(f"input sides {x.shape[2:]} must be multiples of {multiple} (pad first)")
    return x


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU execution provider (threads = physical cores, full graph optimisation)."""

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, threads: int | None = None, multiple: int = 1,
                 input_name: str = "input", output_name: str = "probabilities", precision: str = "fp32",
                 spin_wait: bool = False):
        import onnxruntime as ort

        self.threads = int(threads) if threads else physical_cores()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if not spin_wait:
            # pool threads sleep between operators instead of spinning: on two cores the spinning
            # thread took the core the chemistry of the frame (or the next frame's) runs on
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.spin_wait = bool(spin_wait)
        self.session_options = so                # (read-only use: what the session was made with)
        self._session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        names_in = [i.name for i in self._session.get_inputs()]
        names_out = [o.name for o in self._session.get_outputs()]
        if input_name not in names_in or output_name not in names_out:
            raise ValueError(f"{model_path}: expected input {input_name!r} and output {output_name!r}, "
                             f"model has inputs {names_in} and outputs {names_out}")
        self._input, self._output = input_name, output_name
        self.multiple = multiple
        self.model_path = Path(model_path)
        self.precision = precision       # "fp32" or "int8": the kind of model file (for descriptions)
        self.precision_reason = ""
        self.description = (f"ONNX Runtime {ort.__version__} CPU{' int8' * (precision == 'int8')}, "
                            f"{self.threads} thread{'s' * (self.threads > 1)}")

    def run(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError("OnnxRuntimeBackend is closed")
        x = check_input(x, self.multiple)
        (y,) = self._session.run([self._output], {self._input: x})
        return y

    def close(self) -> None:
        self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
