"""Criterion 7: the shipped model on the held-out simulated set (seed 90417, never used in training).

Frames are regenerated deterministically from that seed by ``lab.infer.heldout`` (the simulator
is seeded and deterministic). The default test covers 0.05 and 0.1 A/px at every dose (about 100
Si per dose); criterion 7 is met at 1e5 and 1e6 e/A^2; at 1e4 and 1e3 it is scored, as issue 13
redefined it, on the frames whose C-atom signal-to-noise ratio (estimated by the analyzer from the frame,
engine.health) is >= 2 -- the others are ``low_snr`` and raise no events; the full dose x pixel-size table with the heavy-adatom and contamination rows is the
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


_ROWS: dict = {}


def _rows(inf, dose):
    """Per-frame held-out rows (0.05 and 0.1 A/px, 12 frames each) with estimated and true C-atom SNR
    (lab.health.evaluate.frame_accuracy)."""
    from lab.health.evaluate import frame_accuracy

    if dose not in _ROWS:
        _ROWS[dose] = frame_accuracy(inf, dose, (0.05, 0.1), 12)
    return _ROWS[dose]


def test_criterion7_dose_1e4_resolvable_frames(inferencer):
    """Criterion 7 as redefined by issue 13: at 1e4 on the frames the analyzer itself measures at C-atom
    SNR >= 2 (engine.health.atoms.estimate_snr; the others are low_snr and raise no events)."""
    from lab.health.evaluate import pooled

    c, n = pooled(_rows(inferencer, 1e4), "snr_est")
    s = c.summary()
    assert n >= 12, n
    assert s["f1"] >= 0.99 and s["si_precision"] >= 0.99 and s["si_recall"] >= 0.99, s


def test_criterion7_dose_1e3_resolvable_frames(inferencer):
    """At 1e3 almost no frame is resolvable (no held-out frame has a true C-atom SNR >= 2): the analyzer
    says so for nearly all of them, and the few it keeps are read at F1 >= 0.95."""
    from lab.health.evaluate import pooled

    rows = _rows(inferencer, 1e3)
    c, n = pooled(rows, "snr_est")
    assert n <= 0.1 * len(rows), n                     # the rest are low_snr
    if n:
        assert c.f1 >= 0.95, c.summary()


def test_snr_estimate_agrees_with_the_simulator_on_the_side_of_2(inferencer):
    """Criterion 3: the estimate from the image and the network alone is on the same side of 2 as
    ImagingParams.atom_snr for >= 90 % of the held-out frames at 1e3 and 1e4 (1e5-1e6: the slow test)."""
    from lab.health.evaluate import snr_agreement

    for dose in (1e3, 1e4):
        rows = [{"dose": r["dose"], "estimated": r["snr_est"], "true": r["snr_true"]} for r in _rows(inferencer, dose)]
        (t,) = snr_agreement(rows)
        assert t["agree"] >= 0.9, t


def test_low_dose_regression_floor(inferencer):
    """All frames, resolvable or not: guards the level the shipped model reaches."""
    from lab.health.evaluate import pooled

    assert pooled(_rows(inferencer, 1e4), None)[0].f1 >= 0.94
    assert pooled(_rows(inferencer, 1e3), None)[0].f1 >= 0.45


@pytest.mark.slow
def test_resolvability_at_every_dose(inferencer):
    """SNR agreement >= 90 % at every dose, and no lattice in empty space on any frame at 1e5-1e6."""
    from lab.health.evaluate import snr_agreement

    for dose in (1e5, 1e6):
        rows = _rows(inferencer, dose)
        (t,) = snr_agreement([{"dose": dose, "estimated": r["snr_est"], "true": r["snr_true"]} for r in rows])
        assert t["agree"] >= 0.9, t
        for r in rows:
            assert r["empty_space"] <= 0.01 * r["n_pred"], r


@pytest.mark.xfail(strict=True, reason="issue 13 criterion 3 NOT met at 1e4: on one resolvable held-out frame 3 of 170 "
                                       "atoms (1.8 %) sit > 1.5 A from every true atom (docs/model.md)")
def test_no_lattice_in_empty_space_at_1e4(inferencer):
    for r in _rows(inferencer, 1e4):
        if r["snr_est"] >= 2:
            assert r["empty_space"] <= 0.01 * r["n_pred"], r


def test_no_lattice_in_empty_space_in_what_the_analyzer_reports_at_1e4(inferencer):
    """What the analyzer reports (engine.chem: every network atom must show contrast on the raw frame)
    on the resolvable 1e4 frames: at most 1 % of the atoms > 1.5 A from every true atom. The network's
    own maps (the strict xfail above) continue the lattice into a hole on one frame; the contrast check
    removes those atoms."""
    rows = [r for r in _rows(inferencer, 1e4) if r["snr_est"] >= 2]
    assert len(rows) >= 12
    for r in rows:
        assert r["empty_space_reported"] <= 0.01 * r["n_reported"], r


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
