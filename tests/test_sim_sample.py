"""Random samples and training examples: distortions keep the chemistry, overrides and margins work."""

import numpy as np
import pytest

from engine.sim import ImagingParams, make_training_example
from engine.sim import structures as st
from engine.sim.sample import distort_lattice, random_sample


def test_strain_and_ripples_keep_every_coordination():
    rng = np.random.default_rng(4)
    s = random_sample(rng, (60.0, 60.0), si_per_nm2=0.5, holes=False, contamination=False, adatoms=False,
                      distort=False, thermal_jitter_A=0.0)
    before = st.coordination(s)
    xy0 = s.xy_A.copy()
    distort_lattice(s, np.random.default_rng(9), centre_A=(30.0, 30.0), strain_std=0.02, ripple_max_A=0.15)
    moved = np.hypot(*(s.xy_A - xy0).T)
    assert moved.max() > 0.2                      # it really distorts (strain over 30 A + ripples)
    assert np.array_equal(st.coordination(s), before)


def test_imaging_overrides_and_fixed_params():
    ex = make_training_example(np.random.default_rng(1), (64, 64), 0.1, gamma=1.45, dose_e_per_A2=2e4)
    assert ex.params["imaging"]["gamma"] == 1.45 and ex.params["imaging"]["dose_e_per_A2"] == 2e4
    p = ImagingParams(gamma=1.9, tail_fraction=0.0)
    ex2 = make_training_example(np.random.default_rng(1), (64, 64), 0.1, params=p, probe_fwhm_A=0.8)
    assert ex2.params["imaging"]["gamma"] == 1.9 and ex2.params["imaging"]["probe_fwhm_A"] == 0.8
    with pytest.raises(TypeError):
        make_training_example(np.random.default_rng(1), (64, 64), 0.1, not_a_parameter=1)


def test_truth_covers_the_field_and_a_margin_outside():
    ex = make_training_example(np.random.default_rng(2), (128, 96), 0.1, holes=False, contamination=False)
    x, y = ex.xy_px.T
    h, w = ex.image.shape
    assert (h, w) == (128, 96)
    # atoms just outside the field are listed (their probe tails light the edges), none far outside
    assert (x < -0.5).any() and (x > w - 0.5).any() and (y < -0.5).any() and (y > h - 0.5).any()
    assert x.min() > -3.0 / 0.1 - 1 and y.max() < h - 1 + 3.0 / 0.1 + 1
    # every C site of the interior is there: graphene density 0.382 atoms/A^2
    inner = (x > 5) & (x < w - 6) & (y > 5) & (y < h - 6) & ex.lattice
    area = (w - 11) * (h - 11) * 0.01
    assert inner.sum() == pytest.approx(0.382 * area, rel=0.1)
