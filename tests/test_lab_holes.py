"""The hole metric of issue 13 criterion 3 (lab.infer.holes) on hand-made truth: where the hole is,
which predicted atoms count, and what makes one false."""

from __future__ import annotations

import numpy as np

from engine.chem.reference import graphene
from lab.infer.holes import HOLE_CORE_A, hole_core, hole_score, in_zone

PX = 0.1
SHAPE = (200, 200)                                        # 20 A x 20 A


def _lattice():
    s = graphene(26, 26, rotation_deg=7.0)
    return s.xy_A - 3.0                                   # covers the frame and 3 A around it


def test_a_full_lattice_has_no_hole_and_no_vacancy_counts_as_one():
    xy = _lattice()
    assert not hole_core(xy / PX, SHAPE, PX).any()
    one_missing = np.delete(xy, np.argmin(np.hypot(*(xy - 10.0).T)), axis=0)       # a vacancy: max 1.42 A
    two_missing = np.delete(xy, np.argsort(np.hypot(*(xy - 10.0).T))[:2], axis=0)  # a divacancy: ~1.7 A
    assert not hole_core(one_missing / PX, SHAPE, PX).any()
    assert not hole_core(two_missing / PX, SHAPE, PX).any()


def test_lattice_put_into_a_hole_is_false_and_the_rim_counts():
    xy = _lattice()
    hole = np.hypot(*(xy - 10.0).T) < 5.0
    true = xy[~hole]
    core = hole_core(true / PX, SHAPE, PX)
    assert core.any() and core[100, 100] and not core[10, 10]
    d_core_centre = np.hypot(*(np.argwhere(core)[:, ::-1] * PX - 10.0).T).max()
    assert 5.0 - HOLE_CORE_A - 0.8 < d_core_centre < 5.0 - HOLE_CORE_A + 1.42   # (rim atoms sit at 5-6.4 A)

    rim = in_zone(true / PX, core, PX)
    assert rim.any() and not rim.all()                    # the rim atoms, not the whole lattice
    assert (np.hypot(*(true[rim] - 10.0).T) < 6.6).all()

    perfect = hole_score(true / PX, true / PX, core, PX)  # the truth itself: all in the zone are right
    assert perfect["n"] == rim.sum() and perfect["false"] == 0 and perfect["precision"] == 1.0

    filled = hole_score(xy / PX, true / PX, core, PX)     # the lattice continued into the hole
    assert filled["false"] == hole.sum() and filled["core_false"] >= 1
    assert filled["far_false"] == hole.sum()              # lattice in the hole: >= 1.42 A from every true atom
    assert filled["precision"] == (filled["n"] - hole.sum()) / filled["n"]

    moved = true.copy()
    moved[np.flatnonzero(rim)[0]] += [0.6, 0.0]           # a rim atom read 0.6 A off: false too
    s = hole_score(moved / PX, true / PX, core, PX)
    assert s["false"] == 1 and s["far_false"] == 0        # ... but no lattice put into the hole


def test_no_atoms_in_the_zone_is_no_precision():
    xy = _lattice()
    true = xy[np.hypot(*(xy - 10.0).T) >= 5.0]
    core = hole_core(true / PX, SHAPE, PX)
    s = hole_score(np.zeros((0, 2)), true / PX, core, PX)
    assert s["n"] == 0 and s["false"] == 0 and s["precision"] != s["precision"]


def test_snr_bands_pool_frames_by_their_estimated_snr():
    from lab.infer.holes import format_snr_bands, snr_bands

    def row(dose, snr, n, false, far):
        return {"dose": dose, "snr_est": snr, "reported": {"n": n, "false": false, "far_false": far}}

    rows = [row(1e4, 1.5, 10, 2, 1), row(1e4, 2.5, 20, 1, 0), row(1e4, 2.9, 30, 0, 0),
            row(1e4, 5.0, 100, 0, 0), row(1e4, float("nan"), 5, 5, 5), row(1e3, 0.5, 4, 4, 4)]
    bands = {(b["dose"], b["snr_lo"]): b for b in snr_bands(rows)}
    assert set(bands) == {(1e3, 0.0), (1e4, 1.0), (1e4, 2.0), (1e4, 4.0)}        # no estimate: left out
    b = bands[1e4, 2.0]
    assert (b["frames"], b["atoms"], b["false"], b["far_false"], b["failing"], b["failing_far"]) == (2, 50, 1, 0, 1, 0)
    assert abs(b["pooled"] - 0.98) < 1e-12 and b["pooled_far"] == 1.0
    assert bands[1e4, 4.0]["pooled"] == 1.0 and bands[1e4, 4.0]["snr_hi"] == float("inf")
    assert "| 1e+04 | >= 4 | 1 | 100 | 0 |" in format_snr_bands(snr_bands(rows))
