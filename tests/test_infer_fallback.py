"""Issue 20, criterion 1: the INT8 network where its answer is FP32's, the FP32 reference where an INT8
map is marginal (engine/infer/fallback.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.infer.fallback import Int8WithFallback, marginal, marginal_si_sites, undecided_fraction
from engine.infer.model import DEFAULT_MODEL, MODELS_DIR
from stemwatch.config import InferenceConfig

INT8 = MODELS_DIR / "stemwatch_fcn_int8.onnx"
needs_models = pytest.mark.skipif(not (DEFAULT_MODEL.is_file() and INT8.is_file()), reason="shipped models missing")


def _map(blobs, shape=(40, 40), radius=2.5):
    """(3, h, w) probabilities: background 0.98 away from the atoms; at each ``(x, y, si_share)`` an atom
    disc of ``radius`` px whose P(atom) falls steeply at its edge and peaks (0.97) at its centre, split
    between C and Si by ``si_share``."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    atom = np.full(shape, 0.02)
    share = np.zeros(shape)
    for x, y, s in blobs:
        d = np.hypot(xx - x, yy - y)
        g = 0.95 * (1 - 0.02 * d) / (1 + np.exp(4 * (d - radius)))
        share = np.where(0.02 + g > atom, s, share)
        atom = np.maximum(atom, 0.02 + g)
    return np.stack([1 - atom, atom * (1 - share), atom * share]).astype(np.float32)


def test_undecided_fraction():
    assert undecided_fraction(np.stack([np.ones((8, 8)), np.zeros((8, 8)), np.zeros((8, 8))])) == 0.0  # nothing likely
    crisp = _map([(10, 10, 0.0), (25, 20, 1.0)])
    assert undecided_fraction(crisp) < 0.6
    grey = np.stack([np.full((8, 8), 0.5), np.full((8, 8), 0.4), np.full((8, 8), 0.1)])
    assert undecided_fraction(grey) == 1.0                  # every likely pixel between 0.2 and 0.8
    assert marginal(grey)


def test_marginal_si_sites_counts_atom_peaks_with_an_even_share():
    assert marginal_si_sites(_map([(10, 10, 0.0), (30, 30, 1.0)])) == 0          # a C and a Si
    assert marginal_si_sites(_map([(10, 10, 0.0), (30, 30, 0.55)])) == 1         # a Si share of 0.55
    assert marginal_si_sites(_map([(10, 10, 0.75), (30, 30, 0.45), (20, 32, 0.9)])) == 2
    assert marginal_si_sites(_map([(10, 10, 0.75)]), margin=0.2) == 0             # 0.25 from an even share
    assert marginal_si_sites(_map([(0, 0, 0.5), (39, 20, 0.5)])) == 2             # peaks on the grid's edge
    # an even share on the flank of a decided atom is not a site
    p = _map([(20, 20, 1.0)])
    p[1, 20, 21], p[2, 20, 21] = p[2, 20, 21] / 2, p[2, 20, 21] / 2
    assert marginal_si_sites(p) == 0
    assert not marginal(_map([(10, 10, 0.0), (30, 30, 1.0)]))
    assert marginal(_map([(10, 10, 0.0), (30, 30, 0.5)]))


class _Fake:
    def __init__(self, out, name="fake", **attrs):
        self.out, self.name, self.calls, self.closed = out, name, 0, False
        self.description = name
        self.__dict__.update(attrs)

    def run(self, x):
        self.calls += 1
        return self.out[None]

    def close(self):
        self.closed = True


def test_fallback_backend_reruns_marginal_maps_with_fp32_made_once():
    decided, even = _map([(10, 10, 0.0), (30, 30, 1.0)]), _map([(10, 10, 0.5)])
    ref = np.full((3, 40, 40), 1 / 3, np.float32)
    made = []
    i8 = _Fake(decided, "int8", threads=3, precision="int8")
    be = Int8WithFallback(i8, lambda: made.append(_Fake(ref, "fp32")) or made[-1])
    x = np.zeros((1, 1, 40, 40), np.float32)
    assert np.array_equal(be.run(x)[0], decided) and not be.last_fell_back and not made
    i8.out = even
    assert np.array_equal(be.run(x)[0], ref) and be.last_fell_back
    assert np.array_equal(be.run(x)[0], ref)
    assert len(made) == 1 and made[0].calls == 2 and (be.runs, be.fallbacks) == (3, 2)
    assert be.threads == 3 and be.precision == "int8" and be.name == "int8"
    assert "FP32 for marginal maps" in be.description
    be.close()
    assert i8.closed and made[0].closed


@needs_models
def test_int8_backend_has_the_fallback_unless_turned_off():
    from engine.infer.backends import OnnxRuntimeBackend
    from engine.infer.probe import select_backend

    be, reason = select_backend("onnx", InferenceConfig(cpu_precision="int8"))
    try:
        assert isinstance(be, Int8WithFallback) and be.precision == "int8" and "marginal" in reason
    finally:
        be.close()
    for cfg in (InferenceConfig(cpu_precision="int8", int8_fp32_fallback=False), InferenceConfig(cpu_precision="fp32")):
        be, _ = select_backend("onnx", cfg)
        try:
            assert isinstance(be, OnnxRuntimeBackend)
        finally:
            be.close()


@needs_models
def test_low_dose_frame_gets_fp32_probabilities_and_high_dose_frame_int8():
    """A held-out 1e3 e/A^2 frame (an undecided map) gets exactly the FP32 probabilities; a 1e5 one the
    INT8 network's own (which differ from FP32's by a few hundredths somewhere)."""
    from engine.infer.inferencer import Inferencer
    from lab.infer.heldout import cell_frames

    (low, *_), = list(cell_frames(1e3, 0.1, "plain", 1))
    (high, *_), = list(cell_frames(1e5, 0.1, "plain", 1))
    with Inferencer(InferenceConfig(backend="onnx", cpu_precision="int8")) as i8, \
            Inferencer(InferenceConfig(backend="onnx", cpu_precision="fp32")) as f32:
        assert np.array_equal(i8.predict(low, 0.1).p, f32.predict(low, 0.1).p)
        assert i8.backend.fallbacks == 1
        p8, p32 = i8.predict(high, 0.1).p, f32.predict(high, 0.1).p
        assert i8.backend.fallbacks == 1 and np.abs(p8 - p32).max() > 1e-3
