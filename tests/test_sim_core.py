"""Simulator core: structures agree with their geometry; image statistics follow gamma and dose."""

import numpy as np
import pytest

from engine.sim import ImagingParams, make_training_example, render
from engine.sim import structures as st
from engine.types import OTHER, SI


def _sheet():
    return st.graphene((40.0, 40.0), rotation_deg=17.0, rng=np.random.default_rng(3))


def test_graphene_bond_length_and_coordination():
    s = _sheet()
    c = st.coordination(s)
    inner = (s.xy_A > 4).all(1) & (s.xy_A < 36).all(1)
    assert np.all(c[inner] == 3)
    from scipy.spatial import cKDTree
    d, _ = cKDTree(s.xy_A).query(s.xy_A[inner], 2)
    assert np.allclose(d[:, 1], st.A_LATTICE_A / np.sqrt(3), atol=1e-9)


@pytest.mark.parametrize("add, expect_coord, si_c", [(st.add_si3, 3, (1.7, 1.85)), (st.add_si4, 4, (1.85, 1.95))])
def test_si_coordination_matches_geometry(add, expect_coord, si_c):
    s = _sheet()
    (sid,) = add(s, s.nearest((20.0, 20.0)))
    i = s.index(sid)[0]
    assert s.species[i] == SI
    d = np.sort(np.hypot(*(s.xy_A - s.xy_A[i]).T))[1:]
    assert np.all((d[:expect_coord] > si_c[0]) & (d[:expect_coord] < si_c[1]))
    assert d[expect_coord] > 2.3          # next shell clearly outside any Si-C cutoff
    assert st.coordination(s)[i] == expect_coord


@pytest.mark.parametrize("add", [st.add_dimer, lambda s, a: st.add_cluster(s, a, 3), lambda s, a: st.add_cluster(s, a, 4)])
def test_si_groups_are_threefold(add):
    s = _sheet()
    ids = add(s, s.nearest((20.0, 20.0)))
    assert np.all(st.coordination(s)[s.index(ids)] == 3)


def test_vacancy_and_585_and_stone_wales():
    s = _sheet()
    n0 = len(s)
    edge = st.add_vacancy(s, s.nearest((10.0, 10.0)))
    assert len(s) == n0 - 1 and np.all(st.coordination(s)[s.index(edge)] == 2)
    rec = st.add_divacancy_585(s, s.nearest((30.0, 30.0)))
    assert len(s) == n0 - 3 and np.all(st.coordination(s)[s.index(rec)] == 3)
    sw = st.add_stone_wales(s, s.nearest((10.0, 30.0)))
    assert np.all(st.coordination(s)[s.index(sw)] == 3)


def test_same_seed_same_example_and_different_seed_differs():
    a = make_training_example(np.random.default_rng(11), (96, 96), 0.12)
    b = make_training_example(np.random.default_rng(11), (96, 96), 0.12)
    c = make_training_example(np.random.default_rng(12), (96, 96), 0.12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.xy_px, b.xy_px)
    assert not np.array_equal(a.image, c.image)


def _peak(img, xy):
    x, y = np.round(xy).astype(int)
    return img[y - 1:y + 2, x - 1:x + 2].mean()


@pytest.mark.parametrize("gamma", [1.4, 1.7, 2.0])
def test_si_to_c_peak_ratio_follows_gamma(gamma):
    s = st.graphene((30.0, 30.0), rotation_deg=0.0)
    (sid,) = st.add_si3(s, s.nearest((15.0, 15.0)))
    cid = s.nearest((8.0, 8.0))
    p = ImagingParams(gamma=gamma, tail_fraction=0.0, background_fraction=0.0, probe_fwhm_A=0.8)
    img, xy = render(s, p, (300, 300), 0.1, np.random.default_rng(0), noise=False)
    ratio = _peak(img, xy[s.index(sid)[0]]) / _peak(img, xy[s.index(cid)[0]])
    expected = (14 / 6) ** gamma
    assert ratio == pytest.approx(expected, rel=0.12)


def test_noise_follows_dose_poisson():
    s = st.graphene((20.0, 20.0))
    s.remove(s.ids)                                  # empty field: background only
    for dose in (1e3, 1e5):
        p = ImagingParams(dose_e_per_A2=dose, background_fraction=0.01, gain_counts_per_e=2.0)
        img, _ = render(s, p, (200, 200), 0.1, np.random.default_rng(1))
        lam = dose * 0.01 * 0.01                     # electrons per pixel
        assert img.mean() == pytest.approx(2.0 * lam, rel=0.05)
        assert img.var() == pytest.approx(4.0 * lam, rel=0.1)  # Poisson: var = gain^2 * lam


def test_heavy_adatom_is_other_and_brighter():
    s = st.graphene((30.0, 30.0))
    (aid,) = st.add_adatom(s, st.hollow_site(s, (15.0, 15.0)), z=29)
    assert s.species[s.index(aid)[0]] == OTHER
    img, xy = render(s, ImagingParams(tail_fraction=0.0), (300, 300), 0.1, np.random.default_rng(0), noise=False)
    assert _peak(img, xy[s.index(aid)[0]]) > 5 * _peak(img, xy[s.index(s.nearest((5.0, 5.0)))[0]])


def test_atom_snr_follows_the_noise_sources():
    """ImagingParams.atom_snr: sqrt(dose) scaling without read noise; read noise costs more at fine
    sampling (more pixels per atom); a heavier atom stands out more; background lowers it."""
    from engine.sim.imaging import ImagingParams

    p = ImagingParams(dose_e_per_A2=1e4, read_noise_counts=0.0, background_fraction=0.005)
    s1, s2 = p.atom_snr(0.1), ImagingParams(**{**p.__dict__, "dose_e_per_A2": 4e4}).atom_snr(0.1)
    assert abs(s2 / s1 - 2.0) < 1e-9
    assert p.atom_snr(0.05) == s1                                  # no read noise: sampling does not matter
    noisy = ImagingParams(**{**p.__dict__, "read_noise_counts": 1.0})
    assert noisy.atom_snr(0.05) < noisy.atom_snr(0.1) < s1
    assert p.atom_snr(0.1, z=14) > 2 * s1
    assert ImagingParams(**{**p.__dict__, "background_fraction": 0.05}).atom_snr(0.1) < s1
