"""One contract suite for every backend, and the shipped model files' contract.

Backends: ``onnx`` (ONNX Runtime CPU) always; ``tensorrt-fake`` (the TensorRT wrapper driven by the
TensorRT-11 fakes, so its buffer/shape logic is covered here too); ``tensorrt`` (real, skips with the
probe's reason where no GPU exists). Reference: ONNX Runtime with every graph optimisation disabled,
one thread (a different execution path). Tolerances: FP32 CPU 1e-4 absolute on probabilities;
TensorRT FP32 3e-3 (TF32 is on by default on Ampere and newer); FP16 engines 2e-2 plus argmax
agreement >= 99.9 %.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import _infer_fakes as fakes
from engine.infer.model import DEFAULT_MODEL, DEFAULT_MODEL_FP16, ModelContract
from engine.infer.preprocess import pad_to_multiple
from stemwatch.config import InferenceConfig

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="shipped model missing")

TOL = {"onnx": 1e-4, "tensorrt-fake": 1e-4, "tensorrt": 3e-3}


@pytest.fixture(scope="module")
def reference():
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    c = ModelContract.load()
    s = ort.InferenceSession(str(c.path), so, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {c.input_name: x})[0]


@pytest.fixture(params=["onnx", "tensorrt-fake", pytest.param("tensorrt", marks=pytest.mark.gpu)])
def inferencer(request, monkeypatch, tmp_path):
    from engine.infer import Inferencer
    from engine.infer.probe import probe_gpu

    kind = request.param
    if kind == "tensorrt":
        ok, why = probe_gpu()
        if not ok:
            pytest.skip(f"TensorRT unavailable: {why}")
    if kind == "tensorrt-fake":
        fakes.install(monkeypatch)
    cfg = InferenceConfig(backend="onnx" if kind == "onnx" else "tensorrt", engine_cache_dir=str(tmp_path),
                          tile_px=256, cpu_precision="fp32")   # the FP32 path against the FP32 reference
                                                               # (INT8: tests/test_infer_int8.py)
    inf = Inferencer(cfg)
    inf.kind = kind
    yield inf
    inf.close()


@pytest.mark.parametrize("shape,px", [((256, 256), 0.1), ((137, 211), 0.1), ((333, 97), 0.05), ((64, 80), 0.2),
                                      ((600, 520), 0.1)])
def test_backend_matches_reference(inferencer, reference, shape, px):
    rng = np.random.default_rng(hash(shape) % 2**32)
    frame = rng.gamma(2.0, 50.0, shape).astype(np.float32)
    probs = inferencer.predict(frame, px)
    h, w = probs.shape
    assert probs.p.shape == (3, h, w) and probs.p.dtype == np.float32
    assert (h, w) == (round(shape[0] * px / 0.2), round(shape[1] * px / 0.2))
    assert probs.frame_shape == shape and probs.frame_pixel_size_A == px
    np.testing.assert_allclose(probs.p.sum(0), 1.0, atol=1e-4)
    x, _ = inferencer.preprocess(frame, px)
    xp, _ = pad_to_multiple(x, inferencer.multiple, inferencer.min_side_px)
    ref = reference(xp[None, None])[0, :, :h, :w]
    if max(h, w) <= inferencer.tile_px:     # tiled runs are compared to the whole-frame run below
        assert np.abs(probs.p - ref).max() < TOL[inferencer.kind]
    else:
        assert np.abs(probs.p - ref).max() < TOL[inferencer.kind] * 10
        assert (probs.p.argmax(0) == ref.argmax(0)).mean() > 0.9999


def test_backend_description_and_reason(inferencer):
    assert inferencer.backend_name in ("onnxruntime", "tensorrt")
    assert inferencer.description and inferencer.selection_reason


def test_dtypes_accepted(inferencer):
    rng = np.random.default_rng(7)
    base = rng.poisson(30, (96, 96))
    outs = [inferencer.predict(base.astype(dt), 0.1).p for dt in (np.uint8, np.uint16, np.int32, np.float32,
                                                                   np.float64)]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-4)


def test_bad_inputs_raise_clear_errors(inferencer):
    with pytest.raises(ValueError, match="2-D"):
        inferencer.predict(np.zeros((4, 4, 3)), 0.1)
    with pytest.raises(ValueError, match="pixel_size_A"):
        inferencer.predict(np.zeros((64, 64)), 0.0)
    with pytest.raises(ValueError, match="too small"):
        inferencer.predict(np.zeros((5, 5)), 0.1)


# ---------------------------------------------------------------------------------------- model files

def test_model_files_contract():
    onnx = pytest.importorskip("onnx")
    for path, precision in ((DEFAULT_MODEL, "fp32"), (DEFAULT_MODEL_FP16, "fp16")):
        assert path.stat().st_size <= 10 * 1024 * 1024
        assert not list(path.parent.glob(path.name + ".data"))
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
        from onnx.external_data_helper import uses_external_data

        assert not any(uses_external_data(t) for t in proto.graph.initializer)
        assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 18
        (inp,), (out,) = proto.graph.input, proto.graph.output
        assert inp.name == "input" and out.name == "probabilities"
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT == out.type.tensor_type.elem_type
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims[:2] == [1, 1] and all(isinstance(d, str) for d in dims[2:])    # dynamic H, W
        assert "Softmax" in {n.op_type for n in proto.graph.node}
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["stemwatch.classes"]) == ["background", "C", "Si"]
        assert float(meta["stemwatch.pixel_size_A"]) > 0 and json.loads(meta["stemwatch.normalisation"])
        assert meta["stemwatch.precision"] == precision
        inits = {t.data_type for t in proto.graph.initializer if len(t.dims) == 4}
        assert inits == ({onnx.TensorProto.FLOAT16} if precision == "fp16" else {onnx.TensorProto.FLOAT})
        # our dependency-free metadata reader agrees with onnx
        assert ModelContract.load(path).metadata == meta


def test_fp16_model_agrees_with_fp32_on_cpu():
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 0.3, (1, 1, 128, 96)).astype(np.float32)
    s32 = ort.InferenceSession(str(DEFAULT_MODEL), providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(str(DEFAULT_MODEL_FP16), providers=["CPUExecutionProvider"])
    a, b = s32.run(None, {"input": x})[0], s16.run(None, {"input": x})[0]
    assert np.abs(a - b).max() < 2e-2
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.999


def test_tiled_inference_equals_whole_frame():
    from engine.infer import Inferencer

    rng = np.random.default_rng(11)
    frame = rng.gamma(2.0, 50.0, (700, 530)).astype(np.float32)
    with Inferencer(InferenceConfig(backend="onnx", tile_px=4096)) as whole, \
            Inferencer(InferenceConfig(backend="onnx", tile_px=256, tile_overlap_px=0)) as tiled:
        assert tiled.tile_overlap_px >= 2 * tiled.contract.receptive_radius_px
        a, b = whole.predict(frame, 0.1).p, tiled.predict(frame, 0.1).p
    assert np.abs(a - b).max() < 1e-5
