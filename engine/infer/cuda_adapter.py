"""The only code that touches pycuda: a tiny adapter (init, primary context, stream, buffers, copies).

Kept this small so cuda-python could replace pycuda without touching the TensorRT code. pycuda is
imported lazily in :class:`PyCudaAdapter` and every object it creates belongs to the thread that
created the adapter: the device's *primary* context (the one the CUDA runtime, hence TensorRT, uses)
is retained and pushed on that thread in ``__init__`` and popped/detached in :meth:`close`.
"""

from __future__ import annotations

import numpy as np


class PyCudaAdapter:
    """CUDA through pycuda, on the primary context of one device, owned by the calling thread."""

    def __init__(self, device_index: int = 0):
        import pycuda.driver as cuda  # lazy: only on a GPU machine with pycuda installed

        self.cuda = cuda
        cuda.init()
        count = cuda.Device.count()
        if count < 1:
            raise RuntimeError("pycuda found no CUDA device")
        if not 0 <= device_index < count:
            raise ValueError(f"CUDA device {device_index} does not exist ({count} found)")
        self.device = cuda.Device(device_index)
        self._context = self.device.retain_primary_context()
        self._context.push()
        self._pushed = True

    # ---- device facts
    def device_name(self) -> str:
        return str(self.device.name())

    def compute_capability(self) -> tuple[int, int]:
        major, minor = self.device.compute_capability()
        return int(major), int(minor)

    # ---- streams, buffers, copies
    def stream(self):
        return self.cuda.Stream()

    @staticmethod
    def stream_handle(stream) -> int:
        return int(stream.handle)

    def pinned(self, n: int, dtype=np.float32) -> np.ndarray:
        """Page-locked host array of ``n`` elements (needed for truly asynchronous copies)."""
        return self.cuda.pagelocked_empty(int(n), dtype)

    def alloc(self, nbytes: int):
        return self.cuda.mem_alloc(int(nbytes))

    @staticmethod
    def ptr(dev) -> int:
        return int(dev)

    @staticmethod
    def free(dev) -> None:
        dev.free()

    def h2d(self, dev, host: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(dev, host, stream)

    def d2h(self, host: np.ndarray, dev, stream) -> None:
        self.cuda.memcpy_dtoh_async(host, dev, stream)

    @staticmethod
    def sync(stream) -> None:
        stream.synchronize()

    # ---- timing
    def event(self):
        return self.cuda.Event()

    @staticmethod
    def record(event, stream) -> None:
        event.record(stream)

    @staticmethod
    def elapsed_ms(start, end) -> float:
        end.synchronize()
        return float(start.time_till(end))

    def error_types(self) -> tuple[type, ...]:
        return (self.cuda.Error,)

    def close(self) -> None:
        """Pop and release the primary context (call after freeing everything made in it)."""
        if self._pushed:
            self._pushed = False
            self.cuda.Context.pop()
            self._context.detach()
