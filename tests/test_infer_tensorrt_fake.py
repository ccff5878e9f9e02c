"""The TensorRT wrapper's logic, against fakes exposing exactly the TensorRT 11 API surface.

No GPU here: ``tests/_infer_fakes.py`` provides ``tensorrt`` (11.4 surface; removed APIs raise
AttributeError, also on assignment) and ``pycuda.driver`` (per-thread context stack; device memory
in host RAM; the fake engine runs the real ONNX model with ONNX Runtime).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import _infer_fakes as fakes
from engine.infer.model import DEFAULT_MODEL, DEFAULT_MODEL_FP16, ModelContract

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="shipped model missing")


@pytest.fixture
def fake(monkeypatch):
    return fakes.install(monkeypatch)


@pytest.fixture
def contract():
    return ModelContract.load()


def _backend(contract, tmp_path, **kw):
    from engine.infer.tensorrt_backend import TensorRTBackend

    args = dict(onnx_sha256=contract.sha256, cache_dir=tmp_path / "cache", min_side_px=32, opt_side_px=128,
                max_side_px=256, multiple=contract.multiple, input_name=contract.input_name,
                output_name=contract.output_name)
    args.update(kw)
    return TensorRTBackend(kw.pop("model_path", contract.path), **{k: v for k, v in args.items() if k != "model_path"})


def _reference(contract, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(contract.path), providers=["CPUExecutionProvider"])
    return s.run(None, {contract.input_name: x})[0]


def test_fakes_reject_removed_apis(fake):
    import tensorrt as trt

    for obj, name in [(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"), (trt.BuilderFlag, "FP16"),
                      (trt.BuilderFlag, "INT8"), (trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")]:
        with pytest.raises(AttributeError):
            getattr(obj, name)
    builder = trt.Builder(trt.Logger())
    for name in ("build_engine", "platform_has_fast_fp16", "max_batch_size"):
        with pytest.raises(AttributeError):
            getattr(builder, name)
    config = builder.create_builder_config()
    with pytest.raises(AttributeError):
        config.max_workspace_size = 1 << 30          # assignment to a removed attribute fails too


def test_build_cache_and_run_match_onnxruntime(fake, contract, tmp_path):
    be = _backend(contract, tmp_path)
    try:
        assert fake.network_flags == [0]                          # create_network(0): no EXPLICIT_BATCH
        assert fake.pool_limits == {"MemoryPoolType.WORKSPACE": 1 << 30}
        prof = fake.profiles[0][contract.input_name]
        assert prof == ((1, 1, 32, 32), (1, 1, 128, 128), (1, 1, 256, 256))
        assert fake.builds == 1 and be.engine_source.startswith("built")
        engines = list((tmp_path / "cache").glob("*.engine"))
        assert len(engines) == 1
        facts = json.loads(engines[0].with_suffix(".json").read_text())
        assert facts["onnx_sha256"] == contract.sha256 and facts["gpu"] == fake.gpu_name
        assert facts["compute_capability"] == "9.0" and facts["precision"] == "fp32"
        assert facts["tensorrt"] == fake.version
        assert not list((tmp_path / "cache").glob("*.tmp"))        # atomic write left no temp file
        x = np.random.default_rng(1).random((1, 1, 64, 96), dtype=np.float32)
        y = be.run(x)
        assert y.shape == (1, 3, 64, 96) and y.dtype == np.float32
        np.testing.assert_allclose(y, _reference(contract, x), atol=1e-6)
        assert "Fake GPU" in be.description and "fp32" in be.description
    finally:
        be.close()
    # second start: from the cache, no build
    be2 = _backend(contract, tmp_path)
    try:
        assert fake.builds == 1 and be2.engine_source == "cache"
    finally:
        be2.close()


def test_corrupt_cache_is_rebuilt(fake, contract, tmp_path):
    _backend(contract, tmp_path).close()
    (engine,) = (tmp_path / "cache").glob("*.engine")
    engine.write_bytes(b"not an engine")
    be = _backend(contract, tmp_path)
    try:
        assert fake.builds == 2 and be.engine_source.startswith("built")
        assert engine.read_bytes().startswith(fakes.MAGIC)
    finally:
        be.close()


def test_cache_key_changes_with_inputs():
    from engine.infer.tensorrt_backend import engine_cache_key

    base = ("a" * 64, "11.4.0.106", "GPU", (9, 0), "fp32", ((1, 1, 32, 32), (1, 1, 512, 512), (1, 1, 1024, 1024)))
    k0 = engine_cache_key(*base)[0]
    for i, alt in enumerate(["b" * 64, "10.13.0", "GPU2", (8, 9), "fp16",
                             ((1, 1, 32, 32), (1, 1, 256, 256), (1, 1, 1024, 1024))]):
        args = list(base)
        args[i] = alt
        assert engine_cache_key(*args)[0] != k0, i


def test_all_cuda_work_in_one_owner_thread_and_clean_close(fake, contract, tmp_path):
    be = _backend(contract, tmp_path)
    x = np.random.default_rng(2).random((1, 1, 64, 64), dtype=np.float32)
    results, errors = [], []

    def worker():
        try:
            results.append(be.run(x))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    be.run(x)                                        # and from the main thread
    be.close()
    assert not errors and len(results) == 4
    cuda_calls = {"ctx.push", "mem_alloc", "pagelocked_empty", "memcpy_htod_async", "execute_async_v3",
                  "memcpy_dtoh_async", "Stream", "set_tensor_address", "set_input_shape", "ctx.pop",
                  "deserialize_cuda_engine", "Runtime", "Builder", "create_execution_context"}
    owners = {tid for name, tid in fake.calls if name in cuda_calls}
    assert len(owners) == 1 and threading.get_ident() not in owners
    assert fake.retained == 1 and fake.pushes == fake.pops == 1 and fake.detaches == 1
    assert sorted(fake.freed) == sorted(set(fake.freed)) and not fake.allocations   # all device memory freed
    assert fake.non_pinned_copies == 0
    assert all(h != 0 for h in fake.execute_handles)                              # non-default stream
    with pytest.raises(RuntimeError, match="closed"):
        be.run(x)
    be.close()                                                                     # idempotent


def test_buffers_reused_and_reallocated_only_when_growing(fake, contract, tmp_path):
    be = _backend(contract, tmp_path)
    try:
        rng = np.random.default_rng(3)
        shapes = [(64, 64), (64, 64), (128, 96), (64, 64), (128, 96), (32, 40)]
        for h, w in shapes:
            x = rng.random((1, 1, h, w), dtype=np.float32)
            np.testing.assert_allclose(be.run(x), _reference(contract, x), atol=1e-6)
        assert fake.alloc_count == 4 and fake.pinned_count == 4     # in+out at 64x64, again at 128x96
        assert fake.set_address_calls == 4
        assert fake.set_shape_calls == 5                            # every change of shape, not every frame
    finally:
        be.close()


def test_shape_errors_and_false_returns_are_errors(fake, contract, tmp_path):
    be = _backend(contract, tmp_path)
    try:
        with pytest.raises(ValueError, match="optimisation profile"):
            be.run(np.zeros((1, 1, 512, 512), np.float32))
        with pytest.raises(ValueError, match="multiples"):
            be.run(np.zeros((1, 1, 63, 64), np.float32))
        fake.set_input_shape_false = True
        with pytest.raises(ValueError, match="set_input_shape"):
            be.run(np.zeros((1, 1, 64, 64), np.float32))
        fake.set_input_shape_false = False
        fake.execute_false = True
        with pytest.raises(RuntimeError, match="execute_async_v3"):
            be.run(np.zeros((1, 1, 64, 64), np.float32))
        fake.execute_false = False
        assert be.run(np.zeros((1, 1, 64, 64), np.float32)).shape == (1, 3, 64, 64)
    finally:
        be.close()


def test_build_failures_raise_with_reason_and_release_cuda(fake, contract, tmp_path):
    fake.parse_fails = True
    with pytest.raises(RuntimeError, match="UNSUPPORTED_NODE"):
        _backend(contract, tmp_path)
    fake.parse_fails = False
    fake.build_returns_none = True
    with pytest.raises(RuntimeError, match="build_serialized_network returned None"):
        _backend(contract, tmp_path)
    assert fake.pushes == fake.pops == 2 and fake.detaches == 2


def test_fp16_uses_fp16_onnx_and_strong_typing_only_on_trt10(monkeypatch, contract, tmp_path):
    if not DEFAULT_MODEL_FP16.is_file():
        pytest.skip("FP16 model missing")
    c16 = ModelContract.load(DEFAULT_MODEL_FP16)
    st = fakes.install(monkeypatch)
    be = _backend(c16, tmp_path, precision="fp16", model_path=c16.path)
    x = np.random.default_rng(4).random((1, 1, 64, 64), dtype=np.float32)
    try:
        y = be.run(x)
    finally:
        be.close()
    assert st.network_flags == [0]                                   # TRT 11: always strongly typed
    ref = _reference(contract, x)
    assert np.abs(y - ref).max() < 2e-2 and (y.argmax(1) == ref.argmax(1)).mean() > 0.999
    st10 = fakes.install(monkeypatch, fakes.FakeState(version="10.13.3.9"))
    _backend(c16, tmp_path / "t10", precision="fp16", model_path=c16.path).close()
    assert st10.network_flags == [1 << 1]                            # STRONGLY_TYPED on 10.x (index 1 here)


@pytest.mark.parametrize("version", ["10.8.0.43", "8.6.1", "12.0.0"])
def test_unsupported_tensorrt_versions_are_refused(monkeypatch, version):
    from engine.infer.probe import probe_gpu

    fakes.install(monkeypatch, fakes.FakeState(version=version))
    ok, why = probe_gpu()
    assert not ok and "not supported" in why


def test_probe_and_auto_fallback_reasons(monkeypatch):
    from engine.infer.probe import probe_gpu, select_backend
    from stemwatch.config import InferenceConfig

    st = fakes.install(monkeypatch)
    assert probe_gpu() == (True, "TensorRT 11.4.0.106 on Fake GPU H100 (compute capability 9.0)")

    fakes.install(monkeypatch, fakes.FakeState(runtime_typeerror=True))
    ok, why = probe_gpu()
    assert not ok and "TypeError" in why and "nullptr" in why
    backend, reason = select_backend("auto", InferenceConfig())
    try:
        assert backend.name == "onnxruntime" and "TypeError" in reason
    finally:
        backend.close()
    with pytest.raises(RuntimeError, match="not available.*TypeError"):
        select_backend("tensorrt", InferenceConfig())

    fakes.install(monkeypatch, fakes.FakeState(cuda_init_error=True))
    ok, why = probe_gpu()
    assert not ok and "cuInit failed" in why

    fakes.install(monkeypatch, fakes.FakeState(device_count=0))
    ok, why = probe_gpu()
    assert not ok and "no CUDA device" in why

    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    ok, why = probe_gpu(refresh=True)
    assert not ok and "tensorrt not importable" in why
    assert st.calls  # the first fake was exercised


def test_auto_selects_tensorrt_when_probe_passes(monkeypatch, tmp_path):
    from engine.infer import Inferencer
    from stemwatch.config import InferenceConfig

    st = fakes.install(monkeypatch)
    cfg = InferenceConfig(backend="auto", engine_cache_dir=str(tmp_path), tile_px=256)
    with Inferencer(cfg) as inf:
        assert inf.backend_name == "tensorrt" and "GPU found" in inf.selection_reason
        frame = np.random.default_rng(5).random((300, 200), dtype=np.float32)
        p = inf.predict(frame, 0.1)
        assert p.p.shape == (3, 150, 100)
    assert st.pushes == st.pops == 1


def test_gpu_benchmark_runs_on_fake(fake, contract, tmp_path):
    be = _backend(contract, tmp_path)
    try:
        res = be.benchmark((64, 64), n_iter=3, warmup=1)
    finally:
        be.close()
    assert set(res) >= {"h2d_ms", "compute_ms", "d2h_ms", "run_wall_ms"}
    assert all(res[k] >= 0 for k in ("h2d_ms", "compute_ms", "d2h_ms"))


def test_close_synchronises_the_stream_before_freeing_device_buffers(fake, contract, tmp_path):
    """Issue 14: freeing device memory a stream may still use is undefined; close() synchronises
    first. (Only testable against these fakes here: there is no GPU in the default run.)"""
    be = _backend(contract, tmp_path)
    be.run(np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32))

    class RecordedFrees(list):
        def append(self, ptr):
            fake.record("free")
            super().append(ptr)

    fake.freed = RecordedFrees(fake.freed)
    n = len(fake.calls)
    be.close()
    names = [name for name, _ in fake.calls[n:]]
    assert "free" in names and "Stream.synchronize" in names
    assert names.index("Stream.synchronize") < names.index("free"), names


def test_run_racing_close_fails_fast(fake, contract, tmp_path):
    """A run() that passed the 'closed?' check just before close() finished must fail, not wait
    forever for an owner thread that is gone (tested against the fakes; a hang guard of 30 s)."""
    be = _backend(contract, tmp_path)
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    be.close()
    be._closed = False                     # the race: run() saw the backend open
    outcome = []

    def late_run():
        try:
            be.run(x)
            outcome.append("returned")
        except RuntimeError as exc:
            outcome.append(str(exc))

    t = threading.Thread(target=late_run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "run() racing close() hung"
    assert outcome and "closed" in outcome[0]


def test_batch4_engine_profile_and_results(fake, contract, tmp_path):
    """Issue 20 criterion 6: an engine for up to 4 frames per call (profile batch 1..4, input batch made
    dynamic after parsing); each frame of a batch equals the ONNX Runtime reference; run() still takes 1."""
    be = _backend(contract, tmp_path, max_batch=4)
    try:
        prof = fake.profiles[-1][contract.input_name]
        assert [s[0] for s in prof] == [1, 4, 4]
        x = np.random.default_rng(3).random((4, 1, 64, 64), dtype=np.float32)
        y = be._submit(lambda: be._run(x))
        assert y.shape == (4, 3, 64, 64)
        for i in range(4):
            np.testing.assert_allclose(y[i:i + 1], _reference(contract, x[i:i + 1]), atol=1e-5)
        np.testing.assert_allclose(be.run(x[:1]), _reference(contract, x[:1]), atol=1e-5)
        res = be.benchmark((64, 64), n_iter=2, warmup=1, batch=4)
        assert res["batch"] == 4 and all(res[k] >= 0 for k in ("h2d_ms", "compute_ms", "d2h_ms", "run_wall_ms"))
        with pytest.raises(ValueError, match="batch 5"):
            be.benchmark((64, 64), n_iter=1, batch=5)
    finally:
        be.close()
    one = _backend(contract, tmp_path / "b1")                     # default: batch 1 only, as before
    try:
        assert [s[0] for s in fake.profiles[-1][contract.input_name]] == [1, 1, 1]
        with pytest.raises(ValueError, match="batch"):
            one.benchmark((64, 64), n_iter=1, batch=4)
    finally:
        one.close()


def test_bench_infer_gpu_rows_fp16_batch_1_and_4_with_cpu_ratio(fake, tmp_path, monkeypatch):
    """``stemwatch bench infer``'s GPU part on the fakes: FP32 batch 1, FP16 batch 1 and 4 (from the FP16
    twin, never the INT8 file), copies apart, per-frame figures and the ratio to the CPU network ms."""
    from engine.infer.tensorrt_backend import TensorRTBackend
    from lab.infer.bench import gpu_rows

    made = []

    def make(path, **kw):
        made.append((path.name, kw["precision"], kw["max_batch"]))
        return TensorRTBackend(path, cache_dir=tmp_path, **kw)

    notes = {}
    rows = gpu_rows(1000.0, {64: 8.0}, 1, notes, sides=(64,), make_backend=make)
    assert made == [("stemwatch_fcn.onnx", "fp32", 1), ("stemwatch_fcn_fp16.onnx", "fp16", 4)]
    assert [(r["device"], r["batch"]) for r in rows] == [("gpu fp32", 1), ("gpu fp16", 1), ("gpu fp16", 4)]
    for r in rows:
        assert r["network ms"] > 0 and r["h2d ms"] >= 0 and r["d2h ms"] >= 0
        assert r["x cpu"] == pytest.approx(8.0 / r["network ms"])
    assert "tensorrt fp16" in notes and "int8" not in notes["tensorrt fp16"]
