"""Backend selection: ``auto`` probes TensorRT once and falls back to ONNX Runtime, saying why.

``select_backend(kind)`` returns ``(backend, reason)``. ``kind`` is ``"auto"``, ``"tensorrt"`` or
``"onnx"`` (the environment variable ``STEMWATCH_BACKEND`` overrides ``"auto"``). The TensorRT probe
(:func:`engine.infer.tensorrt_backend.probe_tensorrt`) catches every exception (a missing library,
the ``TypeError`` TensorRT raises when CUDA fails to start, pycuda's own errors); its result is kept
for the life of the process (:func:`probe_gpu`, ``refresh=True`` to probe again).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from stemwatch.config import InferenceConfig, choices

log = logging.getLogger(__name__)

BACKEND_KINDS = choices(InferenceConfig, "backend")      # ("auto", "tensorrt", "onnx")

_probe_lock = threading.Lock()
_probe_cache: dict[int, tuple[bool, str]] = {}


def probe_gpu(device_index: int = 0, refresh: bool = False) -> tuple[bool, str]:
    """``(available, reason)`` for the TensorRT backend; probed once per process and device."""
    with _probe_lock:
        if refresh or device_index not in _probe_cache:
            from engine.infer.tensorrt_backend import probe_tensorrt

            try:
                _probe_cache[device_index] = probe_tensorrt(device_index)
            except Exception as exc:  # the probe catches everything; belt and braces
                _probe_cache[device_index] = (False, f"probe failed ({type(exc).__name__}: {exc})")
        return _probe_cache[device_index]


def _make_onnx(cfg: InferenceConfig, contract):
    """ONNX Runtime CPU on the FP32 model or its INT8 variant (``cfg.cpu_precision``, see
    :mod:`engine.infer.cpu_precision`); the choice and why are in the backend's ``precision_reason``."""
    from engine.infer import cpu_precision as cp
    from engine.infer.backends import OnnxRuntimeBackend

    def make(path, precision):
        return OnnxRuntimeBackend(path, threads=cfg.threads, multiple=contract.multiple,
                                  input_name=contract.input_name, output_name=contract.output_name,
                                  precision=precision, spin_wait=cfg.cpu_spin_wait)

    requested = getattr(cfg, "cpu_precision", "auto")
    if contract.metadata.get("stemwatch.precision") == "int8":       # --model given an INT8 file: run it as is
        be = make(contract.path, "int8")
        be.precision_reason = f"the model file {contract.path.name} is INT8" + \
            (" (cpu_precision fp32 cannot apply to it)" if requested == "fp32" else "")
        return be
    q = cp.int8_path(contract.path)
    ok = cp.int8_matches(q, contract.sha256) if requested != "fp32" else (False, "not looked for")
    precision, reason = cp.choose(requested, ok, cp.cpu_flags())
    be = make(q if precision == "int8" else contract.path, precision)
    be.precision_reason = reason
    if precision == "int8" and getattr(cfg, "int8_fp32_fallback", True):
        from engine.infer.fallback import Int8WithFallback

        be = Int8WithFallback(be, lambda: make(contract.path, "fp32"))
        be.precision_reason = reason + "; the FP32 reference reruns marginal maps (engine/infer/fallback.py)"
    return be


def _make_tensorrt(cfg: InferenceConfig, contract):
    from engine.infer.model import DEFAULT_MODEL_FP16, ModelContract
    from engine.infer.tensorrt_backend import TensorRTBackend

    model = contract
    if contract.metadata.get("stemwatch.precision") == "int8":
        # TensorRT builds FP16/FP32 engines from the FP32 (or FP16) graph, never from the INT8 QDQ file
        raise ValueError(f"{contract.path.name} is the INT8 model for the CPU backend; TensorRT uses the FP32 "
                         "model (and its _fp16 twin)")
    if cfg.precision == "fp16":
        fp16_path = Path(cfg.model_path).with_name(Path(cfg.model_path).stem + "_fp16.onnx") \
            if cfg.model_path else DEFAULT_MODEL_FP16
        model = ModelContract.load(fp16_path)
    tile = -(-int(cfg.tile_px) // contract.multiple) * contract.multiple
    return TensorRTBackend(model.path, onnx_sha256=model.sha256, precision=cfg.precision,
                           cache_dir=cfg.engine_cache_dir, min_side_px=max(32, contract.multiple),
                           opt_side_px=min(512, tile), max_side_px=tile, multiple=contract.multiple,
                           input_name=model.input_name, output_name=model.output_name)


def select_backend(kind: str = "auto", cfg: InferenceConfig | None = None, contract=None):
    """Create the backend to use: ``(backend, reason)``.

    ``onnx``: ONNX Runtime CPU. ``tensorrt``: TensorRT or an error saying why it cannot run.
    ``auto``: TensorRT when the probe succeeds and the engine starts, else ONNX Runtime, with the
    reason. ``cfg`` gives the model path, precision, threads, tile size and engine cache folder.
    """
    from engine.infer.model import ModelContract

    cfg = cfg or InferenceConfig()
    kind = (kind or "auto").lower()
    if kind == "auto":
        env = os.environ.get("STEMWATCH_BACKEND", "").strip().lower()
        if env:
            if env not in BACKEND_KINDS:
                raise ValueError(f"STEMWATCH_BACKEND={env!r}: expected one of {BACKEND_KINDS}")
            kind = env
    if kind == "cpu":
        kind = "onnx"
    if kind not in BACKEND_KINDS:
        raise ValueError(f"backend must be one of {BACKEND_KINDS}, got {kind!r}")
    contract = contract or ModelContract.load(cfg.model_path)

    if kind == "onnx":
        return _with_precision(_make_onnx(cfg, contract), "ONNX Runtime requested (--backend onnx)")
    ok, why = probe_gpu()
    if kind == "tensorrt":
        if not ok:
            raise RuntimeError(f"TensorRT backend requested but not available: {why}")
        return _make_tensorrt(cfg, contract), f"TensorRT requested: {why}"
    # auto
    if ok:
        try:
            backend = _make_tensorrt(cfg, contract)
            return backend, f"auto: GPU found: {why}; engine {backend.engine_source}"
        except Exception as exc:
            reason = f"auto: TensorRT probe passed ({why}) but the engine failed: {type(exc).__name__}: {exc}"
            log.warning("%s; falling back to ONNX Runtime", reason)
            return _with_precision(_make_onnx(cfg, contract), reason + " -> ONNX Runtime CPU")
    reason = f"auto: TensorRT unavailable ({why}) -> ONNX Runtime CPU"
    log.info(reason)
    return _with_precision(_make_onnx(cfg, contract), reason)


def _with_precision(backend, reason: str):
    """``(backend, reason)`` with the CPU precision choice appended to the reason."""
    why = getattr(backend, "precision_reason", "")
    return backend, f"{reason}; precision {backend.precision}: {why}" if why else reason
