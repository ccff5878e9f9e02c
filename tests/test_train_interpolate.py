"""WiSE-FT weight interpolation of two exported networks (lab.train.interpolate, ``stemwatch export --interpolate``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
from onnx import numpy_helper  # noqa: E402

from engine.infer.model import DEFAULT_MODEL  # noqa: E402


def _perturbed_copy(path, out, scale=0.2, seed=0):
    """The shipped model with every convolution weight and bias multiplied by (1 + scale * N(0, 1)): a
    stand-in 'fine-tune'."""
    rng = np.random.default_rng(seed)
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:
        a = numpy_helper.to_array(init)
        if init.name.startswith("net.") and a.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array((a * (1 + scale * rng.standard_normal(a.shape))).astype(np.float32),
                                                  init.name))
    onnx.save(proto, str(out))
    return out


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _export(base, tuned, alpha, out):
    return subprocess.run([sys.executable, "-m", "stemwatch", "export", "--interpolate", str(base), str(tuned),
                           "--alpha", str(alpha), "--out", str(out)], capture_output=True, text=True)


def _weights(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_interpolation_ends_are_the_two_models_and_the_middle_is_their_mean(tmp_path):
    tuned = _perturbed_copy(DEFAULT_MODEL, tmp_path / "tuned.onnx")
    from lab.train.export import torch_reference
    from lab.train.interpolate import interpolate_nets

    x = np.random.default_rng(1).random((1, 1, 96, 128), dtype=np.float32)
    for alpha, ref in ((0.0, DEFAULT_MODEL), (1.0, tuned)):
        net, _, _ = interpolate_nets(DEFAULT_MODEL, tuned, alpha)
        np.testing.assert_allclose(torch_reference(net, x), _run(ref, x), atol=2e-5)
    r = _export(DEFAULT_MODEL, tuned, 0.5, tmp_path / "mid")
    assert r.returncode == 0, r.stderr
    mid = tmp_path / "mid" / "stemwatch_fcn.onnx"
    wb, wt, wm = _weights(DEFAULT_MODEL), _weights(tuned), _weights(mid)
    first = "net.enc.0.0.weight"
    np.testing.assert_allclose(wm[first], 0.5 * (wb[first] + wt[first]), rtol=1e-5, atol=1e-7)
    assert not np.allclose(_run(mid, x), _run(DEFAULT_MODEL, x), atol=1e-3)
    assert (tmp_path / "mid" / "stemwatch_fcn_fp16.onnx").is_file()
    meta = {p.key: p.value for p in onnx.load(str(mid), load_external_data=False).metadata_props}
    interp = json.loads(meta["stemwatch.training"])["interpolation"]
    assert interp["alpha"] == 0.5 and interp["tuned"]["file"] == "tuned.onnx"
    assert interp["base"]["file"] == DEFAULT_MODEL.name
    assert interp["base"]["sha256"] == hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    assert interp["tuned"]["sha256"] == hashlib.sha256(tuned.read_bytes()).hexdigest()
    assert meta["stemwatch.pixel_size_A"] == "0.2"


def test_interpolation_refuses_other_architectures_and_bad_alpha_in_one_line(tmp_path):
    proto = onnx.load(str(DEFAULT_MODEL))
    for p in proto.metadata_props:
        if p.key == "stemwatch.architecture":
            p.value = json.dumps({"type": "StemFCN", "widths": [8, 16, 32, 48], "convs": 2})
    other = tmp_path / "other.onnx"
    onnx.save(proto, str(other))
    for args, needle in (((DEFAULT_MODEL, other, 0.5), "differ in stemwatch.architecture"),
                         ((DEFAULT_MODEL, DEFAULT_MODEL, 1.5), "alpha must be in [0, 1]"),
                         ((DEFAULT_MODEL, tmp_path / "absent.onnx", 0.5), "not found")):
        r = _export(*args, tmp_path / "out")
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "stemwatch_fcn.onnx").exists()


def test_the_shipped_network_is_v2_interpolated_with_the_stored_fine_tune(tmp_path):
    """Provenance of the shipped network (docs/model.md, "Status"): both parents are stored
    (tests/data/models: v2 and the contamination fine-tune of it), the shipped file's metadata names them
    by sha256 with alpha 0.6, and exporting the interpolation again gives the shipped weights bit for bit."""
    from _networks import FINETUNE_MODEL, V2_MODEL

    meta = {p.key: p.value for p in onnx.load(str(DEFAULT_MODEL), load_external_data=False).metadata_props}
    interp = json.loads(meta["stemwatch.training"])["interpolation"]
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert interp["base"]["sha256"] == sha(V2_MODEL) and interp["tuned"]["sha256"] == sha(FINETUNE_MODEL)
    r = _export(V2_MODEL, FINETUNE_MODEL, interp["alpha"], tmp_path)
    assert r.returncode == 0, r.stderr
    again, shipped = _weights(tmp_path / "stemwatch_fcn.onnx"), _weights(DEFAULT_MODEL)
    assert interp["alpha"] == 0.6 and again.keys() == shipped.keys()
    for name, w in shipped.items():
        assert np.array_equal(again[name], w), name
