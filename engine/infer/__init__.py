"""Inference: frame -> per-pixel background/C/Si probabilities, on ONNX Runtime (CPU) or TensorRT (GPU).

Public API (heavy modules load on first use, so ``import engine.infer`` stays light):

* :class:`Inferencer` (``engine.infer.inferencer``): ``predict(image, pixel_size_A) -> Probabilities``;
* :func:`select_backend` (``engine.infer.probe``): ``("auto"|"tensorrt"|"onnx") -> (backend, reason)``;
* :class:`OnnxRuntimeBackend` (``engine.infer.backends``), :class:`TensorRTBackend`
  (``engine.infer.tensorrt_backend``; imports tensorrt/pycuda only when constructed).
"""

from __future__ import annotations

_LAZY = {
    "Inferencer": "engine.infer.inferencer",
    "select_backend": "engine.infer.probe",
    "probe_gpu": "engine.infer.probe",
    "Backend": "engine.infer.backends",
    "OnnxRuntimeBackend": "engine.infer.backends",
    "TensorRTBackend": "engine.infer.tensorrt_backend",
    "ModelContract": "engine.infer.model",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.infer' has no attribute {name!r}")
