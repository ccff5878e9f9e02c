"""Criterion 7: the shipped model on the held-out simulated set (seed 90417, never used in training).

Frames are regenerated deterministically from that seed by ``lab.infer.heldout`` (the simulator
is seeded and deterministic). The default test covers 0.05 and 0.1 A/px at every dose (about 100
Si per dose); criterion 7 is met at 1e5 and 1e6 e/A^2 and not yet at 1e4 and 1e3 (strict xfails that turn
into failures once a better model meets them; the misses are in frames whose C-atom signal-to-noise
ratio is below 2, ``stemwatch eval-model --snr``); the full dose x pixel-size table with the heavy-adatom and contamination rows is the
slow test (and ``stemwatch eval-model``), reported in docs/model.md.
"""

from __future__ import annotations

import pytest

from engine.infer.model import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="shipped model missing")
sim = pytest.importorskip("engine.sim")


@pytest.fixture(scope="module")
def inferencer():
    from engine.infer import Inferencer
    from stemwatch.config import InferenceConfig

    with Inferencer(InferenceConfig(backend="onnx")) as inf:
        yield inf


def _dose_counts(inf, dose, pixel_sizes, frames, variant="plain"):
    from lab.infer.evaluate import Counts
    from lab.infer.heldout import score_cell

    total = Counts()
    for px in pixel_sizes:
        total.add(score_cell(inf, dose, px, variant, frames))
    return total


_CACHE: dict = {}


def _cached(inf, dose):
    if dose not in _CACHE:
        _CACHE[dose] = _dose_counts(inf, dose, (0.05, 0.1), 12)
        print(dose, _CACHE[dose].summary())
    return _CACHE[dose]


@pytest.mark.parametrize("dose", [1e5, 1e6])
def test_criterion7_high_dose(inferencer, dose):
    s = _cached(inferencer, dose).summary()
    assert s["atoms"] > 4000 and s["si"] > 80
    assert s["f1"] >= 0.99
    assert s["si_precision"] >= 0.99 and s["si_recall"] >= 0.99


@pytest.mark.xfail(strict=True, reason="criterion 7 NOT met yet at 1e4 e/A^2 on the current simulator: "
                                       "F1 0.92-0.99, Si recall 0.81-1.0 (docs/model.md)")
def test_criterion7_dose_1e4(inferencer):
    s = _cached(inferencer, 1e4).summary()
    assert s["f1"] >= 0.99 and s["si_precision"] >= 0.99 and s["si_recall"] >= 0.99


@pytest.mark.xfail(strict=True, reason="criterion 7 NOT met yet at 1e3 e/A^2 on the current simulator: "
                                       "F1 0.47-0.73 (docs/model.md)")
def test_criterion7_dose_1e3(inferencer):
    assert _cached(inferencer, 1e3).f1 >= 0.95


def test_low_dose_regression_floor(inferencer):
    """Below criterion 7 (see the xfails above): guards the level the shipped model reaches."""
    assert _cached(inferencer, 1e4).f1 >= 0.94
    assert _cached(inferencer, 1e3).f1 >= 0.45


def test_heldout_frames_are_deterministic():
    from lab.infer.heldout import cell_frames

    a = next(cell_frames(1e4, 0.1, "plain", 1))
    b = next(cell_frames(1e4, 0.1, "plain", 1))
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


@pytest.mark.slow
def test_full_table():
    """The docs/model.md table (every dose x pixel size, heavy adatoms, contamination, other simulators'
    styles): printed; asserts the cells where criterion 7 holds today and the out-of-family rows."""
    from lab.infer.heldout import accuracy_table, format_table
    from stemwatch.config import InferenceConfig

    table = accuracy_table(InferenceConfig(backend="onnx"), frames_per_cell=6)
    print(format_table(table))
    for r in table["rows"]:
        if r["variant"] == "plain" and r["dose"] >= 1e5:
            assert r["f1"] >= 0.985 and r["si_recall"] >= 0.99, r
        if r["variant"].startswith("foreign:"):
            assert r["f1"] >= 0.97, r
