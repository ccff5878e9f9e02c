"""Real TensorRT on a real GPU (marked ``gpu``; skip with the probe's reason where there is none).

Run on a GPU machine with ``pytest -m gpu tests/test_infer_gpu.py``. Tolerances: FP32 engines
3e-3 absolute on probabilities (TF32 is on by default on Ampere+), FP16 engines 2e-2 and argmax
agreement >= 99.9 % against ONNX Runtime CPU.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.infer.model import DEFAULT_MODEL, DEFAULT_MODEL_FP16, ModelContract
from engine.infer.probe import probe_gpu

_ok, _why = probe_gpu()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _ok, reason=f"TensorRT unavailable: {_why}")]


def _ort(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


@pytest.mark.parametrize("precision,path,tol", [("fp32", DEFAULT_MODEL, 3e-3), ("fp16", DEFAULT_MODEL_FP16, 2e-2)])
def test_engine_matches_onnxruntime_and_is_cached(tmp_path, precision, path, tol):
    from engine.infer.tensorrt_backend import TensorRTBackend

    c = ModelContract.load(path)
    kw = dict(onnx_sha256=c.sha256, precision=precision, cache_dir=tmp_path, min_side_px=32, opt_side_px=256,
              max_side_px=1024, multiple=c.multiple, input_name=c.input_name, output_name=c.output_name)
    rng = np.random.default_rng(0)
    with TensorRTBackend(c.path, **kw) as be:
        assert be.engine_source.startswith("built")
        for h, w in ((64, 64), (256, 256), (132, 200), (1024, 512)):
            x = rng.normal(0.3, 0.3, (1, 1, h, w)).astype(np.float32)
            y, ref = be.run(x), _ort(DEFAULT_MODEL, x)
            assert np.abs(y - ref).max() < tol
            assert (y.argmax(1) == ref.argmax(1)).mean() > 0.999
    with TensorRTBackend(c.path, **kw) as be:
        assert be.engine_source == "cache"


def test_inferencer_on_gpu_from_several_threads(tmp_path):
    from engine.infer import Inferencer
    from stemwatch.config import InferenceConfig

    frame = np.random.default_rng(1).poisson(30, (512, 512)).astype(np.uint16)
    with Inferencer(InferenceConfig(backend="tensorrt", engine_cache_dir=str(tmp_path))) as inf, \
            Inferencer(InferenceConfig(backend="onnx")) as cpu:
        assert inf.backend_name == "tensorrt"
        ref = cpu.predict(frame, 0.1).p
        outs = []
        ts = [threading.Thread(target=lambda: outs.append(inf.predict(frame, 0.1).p)) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(outs) == 4
        for o in outs:
            assert np.abs(o - ref).max() < 3e-3


def test_gpu_memory_flat_over_many_frames(tmp_path):
    from engine.infer import Inferencer
    from stemwatch.config import InferenceConfig

    import pycuda.driver as cuda

    rng = np.random.default_rng(2)
    with Inferencer(InferenceConfig(backend="tensorrt", engine_cache_dir=str(tmp_path))) as inf:
        frames = [rng.poisson(30, (512, 512)).astype(np.float32) for _ in range(4)]
        for f in frames:
            inf.predict(f, 0.1)
        free0 = inf.backend._submit(lambda: cuda.mem_get_info()[0])
        for i in range(500):
            inf.predict(frames[i % 4], 0.1)
        free1 = inf.backend._submit(lambda: cuda.mem_get_info()[0])
    assert abs(free0 - free1) < 16 * 1024 * 1024
