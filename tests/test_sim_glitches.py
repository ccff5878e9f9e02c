"""Issue 15 criterion 4: the simulator's one-frame glitches (a dose dip to 30 %, a scan tear)."""

import dataclasses

import numpy as np
import pytest

from engine.sim.movie import MovieSpec, run_movie, simulate_movie

SPEC = MovieSpec(n_frames=6, shape_px=(128, 128), pixel_size_A=0.1, dopants=("si3",), seed=11,
                 output="float32", dose_e_per_A2=1e5)


def _frames(spec):
    return [img for img, _ in simulate_movie(spec)]


def test_dose_dip_and_scan_tear_change_only_their_frame():
    plain = _frames(SPEC)
    dip = _frames(dataclasses.replace(SPEC, glitches=[(2, "dose_dip")]))
    glitchy = _frames(dataclasses.replace(SPEC, glitches=[(4, "scan_tear")]))
    offset = 100.0                                                     # default_imaging: detector offset (counts)
    ratio = (dip[2].mean() - offset) / (plain[2].mean() - offset)
    assert ratio == pytest.approx(0.3, rel=0.05)                      # 30 % of the dose
    diff_rows = np.flatnonzero(np.abs(glitchy[4] - plain[4]).max(1) > 0)
    assert 0.08 * 128 - 1 <= len(diff_rows) <= 0.25 * 128 + 1          # one band of rows ...
    assert np.all(np.diff(diff_rows) == 1)                             # ... contiguous
    band = plain[4][diff_rows]
    shifted = [s for s in (-3, -2, 2, 3)
               if np.allclose(glitchy[4][diff_rows][:, 5:-5], np.roll(band, s, axis=1)[:, 5:-5])]
    assert len(shifted) == 1                                           # moved sideways by 2-3 px
    for f in (0, 1, 2, 3, 5):
        assert np.array_equal(glitchy[f], plain[f])                    # nothing else changed
    assert np.array_equal(dip[1], plain[1])


def test_glitches_are_in_the_truth_metadata_and_random_ones_are_reproducible():
    spec = dataclasses.replace(SPEC, n_frames=40, glitch_rate_per_frame=0.2)
    _, gt = run_movie(spec)
    g = gt.meta["glitches"]
    assert g and all(k in ("dose_dip", "scan_tear") for _, k in g) and len({k for _, k in g}) == 2
    assert run_movie(spec)[1].meta["glitches"] == g
    with pytest.raises(ValueError, match="unknown glitch"):
        run_movie(dataclasses.replace(SPEC, glitches=[(1, "lightning")]))
