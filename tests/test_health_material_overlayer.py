"""Issue 21, criterion 2: contamination lying on graphene is left out of the analysis (no invented Si
there); clean graphene, even with dense Si and adatoms under a wide probe tail that raise the floor, is
untouched (engine/health/material_overlayer.py, lab/contamination_eval.py)."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

import engine.pipeline as pipeline_module
from engine.health import material_overlayer
from _networks import V2_MODEL
from lab.contamination_eval import analyzer, score


@pytest.fixture(autouse=True)
def _region_alone():
    """These tests measure the overlayer region alone: the per-atom rule (pipeline.OVERLAYER_SI,
    tests/test_health_overlayer_si.py) off."""
    with mock.patch.object(pipeline_module, "OVERLAYER_SI", False):
        yield


@pytest.fixture(scope="module")
def pipe():
    """The analyzer with the shipped network."""
    p = analyzer()
    yield p
    p.close()


@pytest.fixture(scope="module")
def pipe_v2():
    """The analyzer with the network shipped until 2026-12-03 (tests/_networks.py): the traps below were
    written for its false Si near contamination; the shipped network reads few of them
    (test_the_shipped_network_reads_fewer_false_si_on_the_traps)."""
    p = analyzer(str(V2_MODEL))
    yield p
    p.close()


def _process(pipe, ex, region: bool = True):
    from streamer.frame import Frame

    pipe.reset()
    f = Frame(data=ex.image, series="contamination", seq=0, t_acquired=0.0, pixel_size_A=ex.pixel_size_A)
    if region:
        return pipe.process(f)
    with mock.patch.object(pipeline_module, "overlayer_region", lambda *a, **k: None):
        return pipe.process(f)


def _contaminated():
    """Graphene with a contamination patch (engine.sim add_contamination), 384^2 at 0.15 A/px, 1e5 e/A^2."""
    from engine.sim.materials import material_example

    return material_example(np.random.default_rng(4), "graphene", (384, 384), 0.15, dose_range=(1e5, 1e5),
                            contamination=True, holes=False)


def _dense_si_wide_tail():
    """Clean graphene (no contamination) with 4 Si/nm^2 and three Cu-like adatoms under a probe tail of
    60 % of the intensity and 7 A FWHM, 384^2 at 0.25 A/px, 1e5 e/A^2: the floor rises beside the Si
    clusters and the adatoms, and the frame passes the fast path."""
    from engine.sim.imaging import ImagingParams
    from engine.sim.materials import material_example

    rng = np.random.default_rng(1)
    ip = ImagingParams.random(rng, (1e5, 1e5))
    ip.tail_fraction, ip.tail_fwhm_A = 0.6, 7.0
    return material_example(rng, "graphene", (384, 384), 0.25, params=ip, contamination=False, holes=False,
                            si_per_nm2=4.0)


def test_contamination_on_graphene_gets_no_invented_si(pipe_v2):
    """Without the overlayer region 10 reported Si lie within 3 A of the contamination atoms and none of
    them is a lattice Si (the network is sure of them: no unsure region); with it the patch is left out
    (the mask, the reason) and at most 2 remain; the 13 true Si of the clean graphene are all kept."""
    pipe = pipe_v2   # the network the trap was written for
    ex = _contaminated()
    before = score(_process(pipe, ex, region=False), ex)
    assert before["false_si_near"] >= 8, before            # the trap is still there
    r = _process(pipe, ex)
    after = score(r, ex)
    assert r.material.verdict == "graphene"
    assert "hollows are filled" in r.material.reason
    assert r.material.mask is not None and 0.6 < r.material.graphene_fraction < 0.95
    assert after["false_si_near"] <= 2, after
    assert after["true_si_kept"] == before["true_si_kept"] == after["true_si"], (before, after)
    assert after["lattice_kept"] >= before["lattice_kept"] - 5, (before, after)


def test_dense_si_and_adatoms_under_a_wide_tail_are_not_contamination(pipe):
    """The floor rises there (the frame passes the fast path) but the hollows are not filled, or the
    rise is an adatom's: no region, the same atoms as without the check."""
    _passes_the_gate_and_gets_no_region(pipe, _dense_si_wide_tail())


def _passes_the_gate_and_gets_no_region(pipe, ex):
    """``ex`` passes the fast path (the region is looked for), gets none, and has the same atoms and species
    as without the check; the result."""
    calls = []
    real = material_overlayer._region
    with mock.patch.object(material_overlayer, "_region", lambda *a, **k: calls.append(1) or real(*a, **k)):
        r = _process(pipe, ex)
    assert calls, "the frame should pass the fast path"
    assert r.material.mask is None and "hollows" not in r.material.reason, r.material.reason
    ref = _process(pipe, ex, region=False)
    assert np.array_equal(r.chemistry.atoms.xy_px, ref.chemistry.atoms.xy_px)
    assert np.array_equal(r.chemistry.atoms.species, ref.chemistry.atoms.species)
    return r


def _bright_si_under_a_short_tail(seed: int = 1):
    """Clean graphene (no contamination, no adatoms) with 3 Si/nm^2 imaged as held-out clean frame 2 of
    seed 8109 was (contamination_eval): Si of ~7.6 C contrasts (gamma 1.93, heavy boost 1.55), a 1.25 A
    probe with 60 % of the current in a 2.7 A tail, 7e4 e/A^2; 384^2 at 0.223 A/px."""
    from engine.sim.imaging import ImagingParams
    from engine.sim.materials import material_example

    ip = ImagingParams.from_dict(dict(
        gamma=1.93, heavy_boost=1.55, sigma_C_A2=0.0147, probe_fwhm_A=1.25, astig_ratio=1.2, astig_angle_deg=138.0,
        tail_fraction=0.605, tail_fwhm_A=2.74, tail_shift_A=0.23, dose_e_per_A2=7e4, background_fraction=0.026,
        gradient_fraction=0.6, gradient_angle_deg=332.0, gain_counts_per_e=0.33, read_noise_counts=0.59))
    return material_example(np.random.default_rng(seed), "graphene", (384, 384), 0.223, params=ip,
                            contamination=False, holes=False, adatoms=False, si_per_nm2=3.0)


def test_hollows_lit_by_bright_si_are_not_contamination(pipe):
    """The tail of a bright Si fills the hollows of its hexagons (by 0.45 C contrasts at the median on
    such frames, 1.03 at the 90th percentile): the region found there left out 24 of this frame's 153 true
    Si. A part whose filled hollows are mostly lit by a bright Si is now dropped: no region, the same atoms
    and species as without the check."""
    ex = _bright_si_under_a_short_tail()
    r = _passes_the_gate_and_gets_no_region(pipe, ex)
    assert score(r, ex)["true_si_kept"] >= score(r, ex)["true_si"] - 5


def test_clean_graphene_takes_the_fast_path(pipe):
    """A plain graphene frame (no contamination, default dopants): the floor under its heavy atoms stays
    low, and the region is not looked for."""
    from engine.sim.materials import material_example

    ex = material_example(np.random.default_rng(7), "graphene", (256, 256), 0.1, dose_range=(1e5, 1e5),
                          contamination=False, holes=False)
    calls = []
    real = material_overlayer._region
    with mock.patch.object(material_overlayer, "_region", lambda *a, **k: calls.append(1) or real(*a, **k)):
        r = _process(pipe, ex)
    assert r.chemistry is not None and len(r.chemistry.atoms) > 100
    assert not calls and r.material.mask is None


def test_a_contamination_blob_read_as_a_heavy_atom_is_still_left_out(pipe_v2):
    """A static graphene_hole field with a contamination blob (engine.sim MaterialMovie seed 31, 512^2 at
    0.2 A/px) raised 10 false events in 10 frames. The blob's brightest spot is often read as a heavy
    "other" atom (8 x a C, ~2 x a Si): that is no adatom (those are >= 2.5 x a Si), so the region stays
    (it was dropped in 6 of 10 frames when every "other" atom cleared its surroundings)."""
    pipe = pipe_v2   # the network the trap was written for
    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec
    from streamer.frame import Frame

    spec = MovieSpec(n_frames=1, shape_px=(512, 512), pixel_size_A=0.2, drift_A_per_frame=(0.0, 0.0),
                     drift_bound_A=0.0, seed=31)
    img = next(iter(MaterialMovie(spec, "graphene_hole").frames()))[0]
    f = Frame(data=img, series="blob", seq=0, t_acquired=0.0, pixel_size_A=0.2)
    pipe.reset()
    with mock.patch.object(pipeline_module, "overlayer_region", lambda *a, **k: None):
        before = pipe.process(f)
    pipe.reset()
    r = pipe.process(f)
    n_si = lambda res: int((np.asarray(res.chemistry.atoms.species) != 0).sum())  # noqa: E731
    assert (np.asarray(before.chemistry.atoms.species) == 2).any()          # the blob read as "other"
    assert "hollows are filled" in r.material.reason
    assert n_si(r) <= n_si(before) - 5, (n_si(before), n_si(r))


def test_thin_contamination_under_a_sharp_probe_is_left_out(pipe_v2):
    """The bundled movies' imaging (0.95 A probe, a 15 %/3 A tail, 1e5 e/A^2) and a contamination patch
    on graphene (engine.sim MaterialMovie "graphene_hole" seed 33, contamination forced, 512^2 at
    0.2 A/px): the floor under the false Si rises by 0.1-0.7 C contrasts only, below the thick path's
    gate, and 28 of the 30 reported Si were false, none left out. The thin path (the Si's own hollows
    filled, the region grown over the connected filled hollows; off by default, see THIN_PATH) leaves the
    patch out; the true Si of the clean graphene are all kept."""
    pipe = pipe_v2   # the network the trap was written for
    ex = _thin_patch_seed_33()
    before = score(_process(pipe, ex, region=False), ex)
    thick_only = score(_process(pipe, ex), ex)                  # (the default: the thin path is off)
    with mock.patch.object(material_overlayer, "THIN_PATH", True):
        r = _process(pipe, ex)
    after = score(r, ex)
    assert before["false_si_near"] >= 20, before                 # the trap
    assert thick_only["false_si_near"] == before["false_si_near"]  # the thick path does not see it
    assert "hollows are filled" in r.material.reason
    assert after["false_si_near"] <= 5, after
    assert after["true_si_kept"] == before["true_si_kept"] == after["true_si"], (before, after)
    assert after["lattice_kept"] >= before["lattice_kept"] - 5, (before, after)


def _thin_patch_seed_33():
    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec
    from lab.contamination_eval import _truth_example

    spec = MovieSpec(n_frames=1, shape_px=(512, 512), pixel_size_A=0.2, drift_A_per_frame=(0.0, 0.0),
                     drift_bound_A=0.0, seed=33)
    img, truth = next(iter(MaterialMovie(spec, "graphene_hole", contamination=True).frames()))
    return _truth_example(img, truth, 0.2)


@pytest.mark.parametrize("frame", [_contaminated, _thin_patch_seed_33], ids=["patch", "thin_patch"])
def test_the_shipped_network_reads_fewer_false_si_on_the_traps(pipe, pipe_v2, frame):
    """The shipped network, interpolated with the contamination fine-tune (docs/model.md), reads the lattice
    C under contamination as C itself: on the two trap frames above, before any guard, at most half the
    false Si near contamination of the network shipped until 2026-12-03 (measured: 3 / 6 against 10 / 28),
    with every true Si it kept and the lattice within 5 atoms."""
    ex = frame()
    new, old = score(_process(pipe, ex, region=False), ex), score(_process(pipe_v2, ex, region=False), ex)
    assert old["false_si_near"] >= 8, old                                    # the trap
    assert new["false_si_near"] <= old["false_si_near"] // 2, (new, old)
    assert new["true_si_kept"] == old["true_si_kept"] == new["true_si"], (new, old)
    assert new["lattice_kept"] >= old["lattice_kept"] - 5, (new, old)
