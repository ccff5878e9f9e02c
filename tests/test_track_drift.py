"""Global drift from point sets: large shifts in any direction, lattice ambiguity resolved by Si."""

import numpy as np
import pytest

from engine.track.drift import estimate_shift
from engine.types import SI

from _track_lattice import honeycomb


def _lattice_with_si(size, n_si, rng):
    """A honeycomb of ``size`` A at a random rotation with ``n_si`` Si at least 8 A inside its edges."""
    pts = honeycomb(size, rotation_deg=rng.uniform(0, 60))
    sp = np.zeros(len(pts), np.int8)
    inner = np.flatnonzero(np.all((pts > 8) & (pts < size - 8), axis=1))
    sp[rng.choice(inner, n_si, replace=False)] = SI
    return pts, sp


def _frame(pts, sp, shift, size, rng, jitter=0.05, p_miss=0.02):
    xy = pts + shift + rng.normal(0, jitter, pts.shape)
    keep = np.all((xy >= 0) & (xy <= size), axis=1) & (rng.random(len(pts)) > p_miss)
    return xy[keep], sp[keep]


@pytest.mark.parametrize("seed", range(12))
def test_recovers_shifts_up_to_2A_without_prediction(seed):
    rng = np.random.default_rng(seed)
    size = 40.0
    pts, sp = _lattice_with_si(size, 3, rng)
    ang = rng.uniform(0, 2 * np.pi)
    true = rng.uniform(0.3, 2.0) * np.array([np.cos(ang), np.sin(ang)])
    a, sa = _frame(pts, sp, np.zeros(2), size, rng)
    b, sb = _frame(pts, sp, true, size, rng)
    est = estimate_shift(a, sa, b, sb, predicted_A=np.zeros(2), max_shift_A=2.5)
    assert np.linalg.norm(est.shift_A - true) < 0.03, (true, est)


def test_prediction_accepted_without_search_when_it_fits():
    rng = np.random.default_rng(3)
    pts = honeycomb(30.0)
    sp = np.zeros(len(pts), np.int8)
    a, sa = _frame(pts, sp, np.zeros(2), 30.0, rng)
    b, sb = _frame(pts, sp, np.array([0.55, -0.2]), 30.0, rng)
    est = estimate_shift(a, sa, b, sb, predicted_A=np.array([0.5, -0.25]), max_shift_A=2.5)
    assert not est.searched
    assert np.linalg.norm(est.shift_A - [0.55, -0.2]) < 0.02


def test_too_few_atoms_returns_prediction():
    est = estimate_shift(np.zeros((2, 2)), np.zeros(2, np.int8), np.ones((5, 2)), np.zeros(5, np.int8),
                         predicted_A=np.array([0.1, 0.2]), max_shift_A=2.0)
    assert est.shift_A.tolist() == [0.1, 0.2] and est.score == 0.0


def test_slow_scan_shear_between_frames_is_recovered():
    """Frames whose drift differs are sheared differently along the slow-scan axis: the shift grows
    with the row. A pure translation fits only a band of rows; the refined map fits all of them."""
    rng = np.random.default_rng(7)
    size = 30.0
    pts = honeycomb(size, rotation_deg=13.0)
    sp = np.zeros(len(pts), np.int8)
    a, sa = _frame(pts, sp, np.zeros(2), size, rng)
    shift, slope = np.array([0.4, -0.9]), np.array([0.01, 0.045])     # 1.35 A more in y at the bottom
    moved = pts + shift + slope * pts[:, 1:2]
    b, sb = _frame(moved, sp, np.zeros(2), size, rng)
    est = estimate_shift(a, sa, b, sb, predicted_A=np.array([0.4, -0.6]), max_shift_A=2.5)
    assert np.abs(est.shift_A - shift).max() < 0.03 and np.abs(est.slope - slope).max() < 0.003
    assert est.n_matched > 0.9 * len(b)


@pytest.mark.parametrize("seed", range(4))
def test_drift_reversal_during_the_scan_is_recovered(seed):
    """The drift reversed (+1.8 -> -1.8 A/frame) while the frame was scanned: the top rows moved as
    predicted, the bottom rows 3.6 A the other way. A least-squares fit from the prediction locks onto
    a band of rows (rows between land on wrong neighbours); growing the map band by band fits all."""
    rng = np.random.default_rng(seed)
    size = 35.0
    pts, sp = _lattice_with_si(size, 4, rng)
    ang = rng.uniform(0, 2 * np.pi)
    v = 1.8 * np.array([np.cos(ang), np.sin(ang)])
    a, sa = _frame(pts, sp, np.zeros(2), size, rng)
    shift, slope = v, -2 * v / size
    b, sb = _frame(pts + shift + slope * pts[:, 1:2], sp, np.zeros(2), size, rng)
    est = estimate_shift(a, sa, b, sb, predicted_A=v, max_shift_A=2.5)
    assert np.abs(est.shift_A - shift).max() < 0.05 and np.abs(est.slope - slope).max() < 0.003, (shift, slope, est)



#: the dopants of the frame where it happened (seed 979019, frame 8): a Si pair and a Si3 cluster and a
#: Si, all in the upper half of the rows
SI_AT_979019 = np.array([[26.5, 8.4], [17.8, 10.2], [25.1, 10.8], [18.0, 12.0], [16.4, 12.9], [19.6, 21.2]])


@pytest.mark.parametrize("seed,rotation_deg", [(0, 0.0), (1, 1.0), (2, 0.0), (2, 1.0), (3, 0.0), (0, -1.0)])
def test_reversal_in_a_skipped_frame_is_not_taken_for_a_lattice_alias(seed, rotation_deg):
    """The frame between was skipped (a dose dip) and the drift (2 A/frame along x, a lattice vector's
    direction) reversed in it: the prediction is 2 frames x 2 A, but the top rows moved ~0 and the
    bottom rows 4 A the other way. Every pure translation fits only a band of rows, and the band
    grown from the best ones is a lattice alias 2.46 A off (C on C, the dopants on C); the dopants'
    own displacements give the true map (seed 979019's frames 10 and 70 reported a false si_hop and
    vacancies so)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(100 + seed)
    size = 35.0
    pts = honeycomb(size, rotation_deg=rotation_deg)
    sp = np.zeros(len(pts), np.int8)
    sp[cKDTree(pts).query(SI_AT_979019)[1]] = SI
    v = np.array([1.95, -0.32])
    a, sa = _frame(pts, sp, np.zeros(2), size, rng)
    shift, slope = np.array([0.0, 2 * v[1]]), np.array([-2 * v[0] / size, 0.0])
    b, sb = _frame(pts + shift + slope * pts[:, 1:2], sp, np.zeros(2), size, rng)
    est = estimate_shift(a, sa, b, sb, predicted_A=2 * v, max_shift_A=5.0)
    assert np.abs(est.shift_A - shift).max() < 0.05 and np.abs(est.slope - slope).max() < 0.003, est
