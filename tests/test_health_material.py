"""The material verdict (engine.health.material) and the simulated materials (engine.sim.materials).

Simulated frames only, except the real-data test (skips when /work/shared/realdata is absent;
nothing derived from those frames is stored). The held-out accuracy run is slow (lab/material_eval.py).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from engine.health.material import GRAPHENE_A, VERDICTS, MaterialVerdict, classify_material
from engine.sim.imaging import ImagingParams
from engine.sim.materials import (EXPECTED_VERDICT, TMD, amorphous_carbon, graphene_grains, hbn, material_example,
                                  tmd, vacuum)

REALDATA = Path(os.environ.get("STEMWATCH_REALDATA", "/work/shared/realdata"))
SIZE = 512


def _frame(material, px, seed, dose=1e5, **kw):
    """A frame over the full random imaging ranges at a fixed dose (resolvable)."""
    rng = np.random.default_rng(seed)
    return material_example(rng, material, shape_px=(SIZE, SIZE), pixel_size_A=px, dose_range=(dose, dose), **kw)


# ---------------------------------------------------------------------------------------------- simulator
def test_tmd_has_metal_and_s2_columns_on_two_sublattices_with_vacancies_and_dopants():
    rng = np.random.default_rng(0)
    s = tmd((30.0, 30.0), "MoS2", rotation_deg=0.0, rng=rng, s_vacancy_fraction=0.1, dopant_fraction=0.1)
    metal = s.z >= 23
    sulfur = s.z == 16
    assert set(np.unique(s.z)) <= {16, 23, 34, 42}
    assert (s.z == 42).sum() > 0 and (s.z == 23).sum() > 0       # Mo and V dopants
    # two S per column: about 2 x (1 - vacancies) S per metal site
    ratio = (sulfur.sum() + (s.z == 34).sum()) / metal.sum()
    assert 1.6 < ratio < 1.95
    # metal-metal nearest distance is a = 3.16 A; metal to S2 column 1.82 A (projected)
    from scipy.spatial import cKDTree
    d, _ = cKDTree(s.xy_A[metal]).query(s.xy_A[metal], k=2)
    assert np.median(d[:, 1]) == pytest.approx(TMD["MoS2"][0], abs=0.01)
    d2, _ = cKDTree(s.xy_A[sulfur]).query(s.xy_A[metal])
    assert np.median(d2) == pytest.approx(3.16 / np.sqrt(3), abs=0.01)


def test_hbn_amorphous_vacuum_and_grains():
    rng = np.random.default_rng(1)
    b = hbn((20.0, 20.0), rng=rng)
    assert sorted(np.unique(b.z).tolist()) == [5, 7] and abs((b.z == 5).sum() - (b.z == 7).sum()) <= 4
    a = amorphous_carbon((30.0, 30.0), rng, layers=1.0)
    dens = len(a) / 36.0 ** 2
    assert 0.2 < dens < 0.5 and not a.lattice.any()               # ~ a graphene layer, no lattice
    assert len(vacuum()) == 0
    g = graphene_grains((40.0, 40.0), rng, n_grains=2)
    from scipy.spatial import cKDTree
    d, _ = cKDTree(g.xy_A).query(g.xy_A, k=2)
    assert d[:, 1].min() > 1.19 and np.median(d[:, 1]) == pytest.approx(1.42, abs=0.01)


def test_materials_use_the_graphene_imaging_model():
    """Same ImagingParams, same render: the MoS2 frame is brighter per area (heavier atoms) and
    its noise is Poisson like graphene's."""
    ip = ImagingParams(dose_e_per_A2=1e5, gain_counts_per_e=1.0)
    g = material_example(np.random.default_rng(2), "graphene", (256, 256), 0.1, params=ip)
    m = material_example(np.random.default_rng(2), "MoS2", (256, 256), 0.1, params=ip)
    assert m.image.mean() > 3 * g.image.mean()
    assert g.params["imaging"] == m.params["imaging"] and m.params["material"] == "MoS2"


# ---------------------------------------------------------------------------------------------- verdict
@pytest.mark.parametrize("material", ["MoS2", "WS2", "hBN", "amorphous", "vacuum"])
@pytest.mark.parametrize("px", [0.03, 0.1, 0.3])
def test_non_graphene_is_never_graphene_whatever_the_declared_pixel_size(material, px):
    # a seed fixed per case (str hashes differ between processes: with hash() the frames changed every
    # run and the test was flaky)
    ex = _frame(material, px, seed=zlib.crc32(f"{material}-{px}".encode()) % 1000)
    for declared in (px, 0.5 * px, 2.0 * px, None):
        v = classify_material(ex.image, declared)
        assert v.verdict != "graphene", (material, px, declared, v.reason)
        assert v.verdict in VERDICTS and v.mask is None


@pytest.mark.parametrize("size,px,seed", [(256, 0.1, 21), (512, 0.03, 26), (512, 0.03, 27)])
def test_hbn_is_not_read_as_graphene_through_a_second_lattice(size, px, seed):
    """hBN frames (simulated at 1e5 e/A^2) that were called graphene: a faint noise hexagon (strength
    ~4) or a higher order of the hBN lattice itself passed as 'another lattice' once hBN's own lattice
    was rejected. A second lattice must stand out clearly and must not be a reflection of the first."""
    ex = material_example(np.random.default_rng(seed), "hBN", (size, size), px, dose_range=(1e5, 1e5))
    for declared in (px, None):
        v = classify_material(ex.image, declared)
        assert v.verdict != "graphene", (declared, v.reason)


@pytest.mark.parametrize("kind,px", [("graphene", 0.05), ("graphene", 0.1), ("graphene", 0.2),
                                     ("graphene_hole", 0.1), ("graphene_grains", 0.1), ("graphene_patch", 0.15)])
def test_graphene_stays_graphene(kind, px):
    ex = _frame(kind, px, seed=11, holes=False, contamination=False) if kind == "graphene" else _frame(kind, px, seed=11)
    for declared in (px, 0.5 * px, 2.0 * px, None):
        v = classify_material(ex.image, declared)
        assert v.verdict == "graphene", (kind, px, declared, v.reason)
    assert v.sublattice_ratio > 0.7 and v.symmetry == "hexagonal"


@pytest.mark.parametrize("px,seed", [(0.045, 0), (0.035, 19), (0.035, 22)])
def test_fine_sampling_graphene_without_second_order_stays_graphene(px, seed):
    """A 512 px frame at 0.035-0.045 A/px is 18-23 A wide: graphene's first order lies 8-11 bins from
    the origin and its {11-20} spots are at the noise at 3e4 e/A^2, so the second-order confirmation
    failed and these frames were called vacuum or not_graphene. Three candidate spots finding the
    same hexagon confirm it instead."""
    ex = material_example(np.random.default_rng(seed), "graphene", (SIZE, SIZE), px, dose_range=(3e4, 3e4),
                          holes=False, contamination=False)
    for declared in (px, 0.5 * px, 2.0 * px, None):
        v = classify_material(ex.image, declared)
        assert v.verdict == "graphene", (declared, v.reason)
        assert v.lattice_constant_px == pytest.approx(GRAPHENE_A / px, rel=0.1)


def _graphene_at_every_declaration(image, px: float, reason_part: str = "", rel: float = 0.1) -> list:
    """The frame is `graphene` declared at its true size, at none, at x0.5 and x2, with ``reason_part``
    in the reason and its true lattice constant (within ``rel``); the four verdicts."""
    out = []
    for declared in (px, None, 0.5 * px, 2.0 * px):
        v = classify_material(image, declared)
        assert v.verdict == "graphene", (declared, v.reason)
        assert reason_part in v.reason, (declared, v.reason)
        assert v.lattice_constant_px == pytest.approx(GRAPHENE_A / px, rel=rel)
        out.append(v)
    return out


@pytest.mark.parametrize("kind,kw,seed", [("graphene", {"si_per_nm2": 3.0}, 14), ("graphene", {"contamination": True}, 29),
                                          ("graphene_hole", {}, 1)])
def test_fine_sampling_graphene_rejected_by_the_fourier_cues_is_kept_by_its_resolved_columns(kind, kw, seed):
    """512 px at 0.04 A/px (a 20 A field, ~150 sites): Si on one sublattice by chance, a contamination
    patch or a hole put their own power on graphene's first-order ring, and the bispectrum read
    unequal sublattices (these frames were not_graphene). The columns are resolved here: the medians
    of the two sublattices' column intensities in real space are equal."""
    px = 0.04
    ex = material_example(np.random.default_rng(seed), kind, (SIZE, SIZE), px, dose_range=(1e5, 1e5), **kw)
    for v in _graphene_at_every_declaration(ex.image, px, "real space"):
        assert v.sublattice_ratio >= 0.9, v.reason


@pytest.mark.parametrize("px,seed", [(0.04, 24), (0.06, 22)])
def test_fine_sampled_graphene_hidden_by_heavy_adatoms_is_found_with_them_masked(px, seed):
    """A 512 px frame at 0.04-0.06 A/px with a hole and one or two heavy adatoms hundreds of times
    brighter than a carbon column: clipped at mean + 4 std (their own std) they stay flat discs whose
    transform fills graphene's first-order ring, and the frame was called amorphous. With them
    replaced by the background (a second pass) the lattice shows."""
    ex = material_example(np.random.default_rng(seed), "graphene_hole", (SIZE, SIZE), px, dose_range=(3e4, 1e6))
    _graphene_at_every_declaration(ex.image, px, "after masking")


def test_without_blobs_masks_isolated_objects_not_a_bright_sublattice():
    from engine.health.material import _binned
    from engine.health.material_blobs import without_blobs
    ex = material_example(np.random.default_rng(24), "graphene_hole", (SIZE, SIZE), 0.04, dose_range=(3e4, 1e6))
    img, _ = _binned(np.asarray(ex.image, np.float32))
    out = without_blobs(img)
    assert out is not None and 1 <= out[1] <= 3
    changed = out[0] != img
    assert 0 < changed.mean() < 0.25 and float(out[0].max()) < float(img.max())
    for material, seed in (("MoS2", 1), ("WS2", 2), ("hBN", 3)):     # Mo / W / N sublattices stay
        ex = _frame(material, 0.04, seed=seed)
        img, _ = _binned(np.asarray(ex.image, np.float32))
        r = without_blobs(img)
        assert r is None or r[1] <= 3, (material, r[1])
        assert classify_material(ex.image, 0.04).verdict != "graphene"


@pytest.mark.parametrize("px,kw,seed", [(0.045, {"contamination": True}, 7), (0.04, {"si_per_nm2": 3.0}, 19)])
def test_fine_sampled_graphene_whose_columns_merge_into_rings_is_tested_at_the_hexagon_centres(px, kw, seed):
    """Contamination or many Si tipped the bispectrum ('unequal sublattices') and the columns, as wide
    as the probe, merge into rings around the dark hexagon centres, so too few column maxima sat on a
    honeycomb for the real-space test: these frames were not_graphene. The centres anchor the lattice
    (centre_contrast): the sites around them are equally bright."""
    ex = material_example(np.random.default_rng(seed), "graphene", (SIZE, SIZE), px, dose_range=(3e4, 1e6), **kw)
    _graphene_at_every_declaration(ex.image, px, "real space")


def test_centre_contrast_finds_unequal_sublattices_of_hbn_mos2_and_ws2():
    from engine.health.material import _binned
    from engine.health.material_realspace import centre_contrast
    for material, a, seed in (("hBN", 2.50, 3), ("MoS2", 3.16, 1), ("WS2", 3.15, 2), ("hBN", 2.50, 5)):
        ex = _frame(material, 0.04, seed=seed)
        img, b = _binned(np.asarray(ex.image, np.float32))
        r = centre_contrast(img, a / 0.04 / b)
        assert r is None or r[0] < 0.6, (material, r)


def test_a_strong_non_graphene_lattice_is_not_rescanned_in_real_space():
    """A development frame (lab.material_eval, seed 2041, non-graphene kinds only, WS2 at 0.067 A/px):
    the real-space scale scan after its rejected (strong) hexagon found an aliased 'honeycomb' of
    4.07 A and called it graphene; the scan now runs only after a faint hexagon (clutter)."""
    from lab.material_eval import OTHER_KINDS, draw
    rng = np.random.default_rng(2041)
    ex = None
    for kind in OTHER_KINDS[:2]:
        for i in range(40):
            ex = draw(kind, rng, SIZE, (1e4, 1e6), (0.03, 0.1))
            if kind == "WS2" and i == 16:
                break
    assert ex.pixel_size_A == pytest.approx(0.067, abs=1e-3)
    for declared in (ex.pixel_size_A, None):
        assert classify_material(ex.image, declared).verdict == "not_graphene"


def test_fine_sampled_graphene_whose_fourier_hexagon_is_clutter_gets_its_scale_from_real_space():
    """Graphene with one large hole at 0.035 A/px (lab.material_eval's draw, its own stream): the hexagon
    the Fourier cues find is not graphene's, and the real-space scan over 36-90 px finds the honeycomb.

    The frame used to be the sixth graphene_hole frame of seed 2041's development stream (0.040 A/px), after
    160 other draws; on an AMD EPYC without AVX-512 (2026-12-03) the same code and stream drew other
    frames (cause not found; not numpy 2.3.5 / 2.4.5 / 2.4.6 nor scipy 1.17.0 / 1.17.1, not numpy's AVX2
    paths), so the test read a 0.092 A/px frame and failed. This frame is drawn from its own seed: found by
    scanning seeds ``[2041, s]`` for a fine-sampled hole frame whose verdict came from real space (s = 252 of
    0-252). (docs/model.md, "The held-out frames depend on the CPU", has the likely mechanism since.)"""
    from lab.material_eval import draw

    ex = draw("graphene_hole", np.random.default_rng([2041, 252]), SIZE, (1e4, 1e6), px_range=(0.035, 0.05))
    px = ex.pixel_size_A
    assert px == pytest.approx(0.035, abs=1e-3)
    for declared in (px, None):
        v = classify_material(ex.image, declared)
        assert v.verdict == "graphene", (declared, v.reason)
        assert "found a = " in v.reason and "real space" in v.reason, (declared, v.reason)
        assert v.lattice_constant_px == pytest.approx(GRAPHENE_A / px, rel=0.1)


def test_real_space_test_finds_unequal_sublattices_of_hbn_and_mos2():
    """The real-space test on its own: simulated hBN and MoS2 at fine sampling measure clearly unequal
    sublattices (or too few resolved sites), graphene equal ones."""
    from engine.health.material import _binned
    from engine.health.material_realspace import site_contrast
    for material, a, want_equal in (("graphene", GRAPHENE_A, True), ("hBN", 2.50, False), ("MoS2", 3.16, False)):
        ex = _frame(material, 0.04, seed=7, **({"holes": False, "contamination": False} if material == "graphene" else {}))
        img, b = _binned(np.asarray(ex.image, np.float32))
        r = site_contrast(img, a / 0.04 / b)
        if want_equal:
            assert r is not None and r[0] >= 0.85 and r[2] >= 10, (material, r)
        else:
            assert r is None or r[0] < 0.8, (material, r)


def test_many_dopants_and_contamination_stay_graphene():
    ex = _frame("graphene", 0.1, seed=5, si_per_nm2=3.0, contamination=True)
    assert classify_material(ex.image, 0.1).verdict == "graphene"


def test_the_verdict_measures_the_lattice_and_says_why():
    mo = _frame("MoS2", 0.1, seed=3)
    v = classify_material(mo.image, 0.1)
    assert v.verdict == "not_graphene"
    assert v.lattice_constant_A == pytest.approx(3.16, rel=0.04)
    assert v.lattice_constant_px == pytest.approx(31.6, rel=0.04)
    assert v.sublattice_ratio < 0.6 and v.symmetry == "hexagonal"
    assert "hexagonal lattice a = 3." in v.reason and "unequal contrast" in v.reason and "not graphene" in v.reason
    assert np.isnan(classify_material(mo.image, None).lattice_constant_A)
    g = _frame("graphene", 0.1, seed=3, holes=False)
    vg = classify_material(g.image, 0.1)
    assert vg.verdict == "graphene" and vg.lattice_constant_A == pytest.approx(2.46, rel=0.03)
    assert vg.sublattice_ratio > 0.85
    d = vg.to_dict()
    assert d["verdict"] == "graphene" and "mask" not in d


def test_wrong_declared_pixel_size_is_reported_not_turned_into_another_material():
    g = _frame("graphene", 0.1, seed=4, holes=False)
    v = classify_material(g.image, 0.2)
    assert v.verdict == "graphene" and "pixel size looks wrong" in v.reason
    assert v.lattice_constant_A == pytest.approx(4.92, rel=0.04)


def test_graphene_mask_leaves_out_the_other_part_of_the_field():
    rng = np.random.default_rng(6)
    ex = material_example(rng, "graphene_patch", (SIZE, SIZE), 0.1, dose_range=(2e5, 2e5), other="vacuum",
                          fraction=0.4)
    v = classify_material(ex.image, 0.1)
    assert v.verdict == "graphene" and v.mask is not None and v.mask.shape == ex.image.shape
    # truth: which side of the cut each pixel lies on
    lat = ex.xy_px[ex.lattice]
    yy, xx = np.mgrid[0:SIZE:16, 0:SIZE:16]
    from scipy.spatial import cKDTree
    d, _ = cKDTree(lat).query(np.c_[xx.ravel(), yy.ravel()])
    graphene_here = (d * 0.1 < 3.0).reshape(xx.shape)
    assert 0.55 < graphene_here.mean() < 0.75                           # the sample honours fraction=0.4
    m = v.mask[::16, ::16]
    assert (m & graphene_here).sum() / graphene_here.sum() > 0.98     # graphene kept
    assert (~m & ~graphene_here).sum() / (~graphene_here).sum() > 0.5  # most of the vacuum side left out
    assert 0.5 < v.graphene_fraction < 0.9
    # every lattice atom of the graphene part lies inside the mask
    inside = (lat[:, 0] >= 0) & (lat[:, 0] <= SIZE - 1) & (lat[:, 1] >= 0) & (lat[:, 1] <= SIZE - 1)
    px_ = np.rint(lat[inside]).astype(int)
    assert v.mask[px_[:, 1], px_[:, 0]].mean() > 0.99


@pytest.mark.parametrize("kind,px,seed", [("graphene", 0.1, 21), ("graphene", 0.2, 22), ("graphene", 0.06, 23),
                                          ("graphene_grains", 0.15, 24), ("graphene_dopants", 0.1, 25)])
def test_whole_graphene_frames_get_no_mask(kind, px, seed):
    """A field that is graphene everywhere is analysed everywhere: no mask (the earlier coarse mask
    covered only 60-90 % of such fields and could not be applied)."""
    extra = {"si_per_nm2": 3.0} if kind == "graphene_dopants" else {}
    kind = "graphene" if kind == "graphene_dopants" else kind
    kw = {"holes": False, "contamination": False, **extra} if kind == "graphene" else {}
    ex = _frame(kind, px, seed=seed, **kw)
    v = classify_material(ex.image, px)
    assert v.verdict == "graphene", v.reason
    assert v.mask is None and v.graphene_fraction == 1.0


def test_blank_constant_nan_and_bad_frames():
    assert classify_material(np.full((256, 256), 7.0)).verdict == "vacuum"
    assert classify_material(np.full((256, 256), np.nan)).verdict == "vacuum"
    noisy = np.random.default_rng(0).poisson(50.0, (512, 512)).astype(np.float32)
    assert classify_material(noisy, 0.1).verdict == "vacuum"
    g = _frame("graphene", 0.1, seed=8, holes=False).image.copy()
    g[:10] = np.nan                                                     # a few bad rows do not hide the lattice
    assert classify_material(g, 0.1).verdict == "graphene"
    with pytest.raises(ValueError):
        classify_material(np.zeros((32, 32)))
    with pytest.raises(ValueError):
        classify_material(np.zeros((4, 64, 64)))


def test_expected_verdicts_cover_every_material():
    from engine.sim.materials import MATERIALS
    assert set(EXPECTED_VERDICT) == set(MATERIALS) and set(EXPECTED_VERDICT.values()) <= set(VERDICTS)
    assert MaterialVerdict("vacuum", "x").is_graphene is False


# ---------------------------------------------------------------------------------------------- held out
def test_held_out_handful():
    from lab.material_eval import evaluate
    res = evaluate(per_kind=1, seed=4242, size=SIZE, kinds=("graphene", "graphene_grains", "MoS2", "WS2", "hBN",
                                                              "amorphous", "vacuum"))
    assert res["non_graphene_rejected"] == 1.0
    assert res["graphene_kept"] == 1.0 or res["graphene_frames"] == 0


@pytest.mark.slow
def test_held_out_accuracy_full_range():
    """Criterion 4 over 0.03-0.3 A/px, pooled over seeds 4009-4012 (the eighth pass's four fresh seeds; 4011
    and 4012 were run once on its final code, a8bea97). On that machine: 4009 99.58 % / 100 %, 4010 **98.72 %** /
    99.50 %, 4011 99.14 % / 99.00 %, 4012 99.16 % / 100 % (graphene kept / non-graphene rejected), pooled 99.15 %
    / 99.63 %. The same seeds are other frames on another CPU (docs/model.md, "The held-out frames depend on the
    CPU"): on an AMD EPYC without AVX-512 (2026-12-03) 100 / 100, 99.14 / 100, 99.13 / 100 and **98.71 %** /
    99.00 %, pooled 99.25 % / 99.75 %, so the test held on seed 4012 alone failed there. The criterion holds
    pooled on both; not every seed does. The graphene lost is at 0.03-0.05 A/px (fields of 15-25 A at low C-atom
    SNR, clutter or Si) and a hole at 0.13 A/px (docs/material.md)."""
    from lab.material_eval import evaluate

    g_ok = g_n = o_ok = o_n = 0
    for seed in (4009, 4010, 4011, 4012):
        res = evaluate(per_kind=40, seed=seed, size=SIZE)
        g_ok += res["graphene_kept"] * res["graphene_frames"]
        g_n += res["graphene_frames"]
        o_ok += res["non_graphene_rejected"] * res["non_graphene_frames"]
        o_n += res["non_graphene_frames"]
        assert res["graphene_kept"] >= 0.985 and res["non_graphene_rejected"] >= 0.985, (seed, res["graphene_kept"],
                                                                                          res["non_graphene_rejected"])
    assert g_n >= 3600 and o_n >= 3200, (g_n, o_n)
    assert g_ok / g_n >= 0.99, g_ok / g_n
    assert o_ok / o_n >= 0.99, o_ok / o_n


@pytest.mark.slow
def test_held_out_accuracy_at_0p1_to_0p3_A_per_px():
    """Criterion 4 where the field holds >= 51 A (512 px at >= 0.1 A/px): seed 4003, fresh when first run
    (commit 465fbf8): graphene 100 % of 960, non-graphene 99.5 % of 800 (seed 4004: 99.6 % / 99.5 %;
    seed 2029, the old strict xfail: 100 % / 99.5 %)."""
    from lab.material_eval import evaluate
    res = evaluate(per_kind=40, seed=4003, size=SIZE, px_range=(0.1, 0.3))
    assert res["graphene_kept"] >= 0.99, res["graphene_kept"]
    assert res["non_graphene_rejected"] >= 0.99, res["non_graphene_rejected"]


# ---------------------------------------------------------------------------------------------- real frames
REAL = {"aicr_graphene_si_frames.npz": {"G_Si_2nm_image": 0.076, "G_dimSi_image": 0.038, "G_trimSi_image": 0.038,
                                        "G_Si_4fold_image": 0.039},
        "aicr_graphene_grainboundary.npz": {"G_GB_4nm_image": 0.078, "G_GB_6nm_image": 0.117}}


@pytest.mark.skipif(not REALDATA.is_dir(), reason="real frames not available")
def test_real_graphene_frames_stay_graphene():
    for fname, keys in REAL.items():
        data = np.load(REALDATA / fname)
        for key, px in keys.items():
            for declared in (px, None, 0.5 * px, 2.0 * px):
                v = classify_material(data[key], declared)
                assert v.verdict == "graphene", (key, declared, v.reason)


def test_no_lattice_counts_atoms_against_the_analysed_area():
    """A frame analysed only inside its graphene mask holds fewer atoms than a whole field of graphene:
    the no_lattice check compares them with the masked area (HealthMonitor.after's area_fraction)."""
    from types import SimpleNamespace

    from engine.health.monitor import GRAPHENE_ATOMS_PER_A2, FrameHealth, HealthMonitor
    from engine.types import Atoms

    ps, shape = 0.1, (512, 512)
    whole = shape[0] * shape[1] * ps * ps * GRAPHENE_ATOMS_PER_A2
    n = int(0.3 * whole * 0.5)                    # 30 % of the field is graphene, half its atoms found
    rng = np.random.default_rng(0)
    atoms = Atoms(rng.uniform(0, 150, (n, 2)), np.zeros(n, np.int8), np.ones(n, np.float32),
                  np.zeros((n, 3), np.float32), np.zeros(n, bool), ps)
    chem = SimpleNamespace(atoms=atoms)
    mon = HealthMonitor()
    assert "no_lattice" in mon.after(FrameHealth(), chem, shape).verdicts
    assert "no_lattice" not in HealthMonitor().after(FrameHealth(), chem, shape, area_fraction=0.3).verdicts


def _eval_frame(kind: str, state: dict, px_range=(0.03, 0.3)):
    """One frame of lab.material_eval's draws, from the random generator's state just before it (the
    PCG64 state is stable across numpy versions, so a development frame is made without its
    predecessors). ``px_range``: the run's --pixel-size."""
    from lab.material_eval import draw
    rng = np.random.default_rng()
    rng.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": state.get("has_uint32", 0),
                               "uinteger": state.get("uinteger", 0),
                               "state": {"state": state["state"], "inc": state["inc"]}}
    return draw(kind, rng, SIZE, (1e4, 1e6), px_range)


#: development frames (lab.material_eval --seed 3001), by the generator state before each
HBN_3001_12 = {"state": 237833610191237318832759475984202927058, "inc": 257728463480096675034125136739104960507,
               "uinteger": 1159737323}
HOLE_2041_25 = {"state": 300210349590246149337940230922010650298, "inc": 166587201906037647880830121697583594335,
                "has_uint32": 1, "uinteger": 4169317235}
WS2_2041_19 = {"state": 305088400993442848802275370267583570819, "inc": 166587201906037647880830121697583594335,
               "has_uint32": 1, "uinteger": 3063634132}
VACUUM_3001_16 = {"state": 131000386900445590394675545470061510067, "inc": 257728463480096675034125136739104960507,
                  "uinteger": 3922265573}


def test_hbn_read_as_graphene_through_a_second_fourier_lattice_is_overruled_in_real_space():
    """hBN at 0.056 A/px (seed 3001, frame 12): the Fourier cues saw its B/N lattice (0.60) and then a
    second hexagon of a = 2.39 A with 'equal' sublattices (0.86) and called the frame graphene. Its
    columns are resolved (a = 44 px): in real space the two sublattices are clearly unequal."""
    ex = _eval_frame("hBN", HBN_3001_12)
    assert ex.pixel_size_A == pytest.approx(0.0561, abs=1e-4)
    for f in (1.0, 0.5, 2.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict == "not_graphene", (f, v.reason)
        assert "real space" in v.reason


def test_three_noise_bins_that_form_a_hexagon_do_not_make_a_lattice_at_coarse_sampling():
    """Vacuum at 0.042 A/px and 5e5 e/A^2 (seed 3001, frame 16): the three strongest noise bins formed a
    faint hexagon of a = 8.4 px whose second order did not show; each was the other two's partner, so
    'three candidates agree' held by construction and the frame was called graphene. Agreement now
    counts only for lattices of >= 28 px (fine sampling, where the second order cannot show)."""
    ex = _eval_frame("vacuum", VACUUM_3001_16)
    assert ex.pixel_size_A == pytest.approx(0.0422, abs=1e-4)
    for f in (1.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict != "graphene", (f, v.reason)


def test_graphene_seen_through_its_second_order_at_fine_sampling_is_kept():
    """Graphene with a large hole at 0.059 A/px and 5e5 e/A^2 (seed 2041, frame 25): the hexagon found
    is the {11-20} one (a = 1.41 A) with a phase-derived ratio of 0.22, above the 0.1 from which the
    first order 30 degrees off was looked for; so the frame was not_graphene. A faint hexagon whose
    implied first order has resolved columns now looks up to 0.3 (a strong WS2 lattice, ~0.15, does not)."""
    ex = _eval_frame("graphene_hole", HOLE_2041_25)
    assert ex.pixel_size_A == pytest.approx(0.0587, abs=1e-4)
    for f in (1.0, 0.5, 2.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict == "graphene", (f, v.reason)
        assert v.lattice_constant_px == pytest.approx(GRAPHENE_A / ex.pixel_size_A, rel=0.1)
    # a strong WS2 lattice (0.15 A/px, seed 2041 frame 19: ratio ~0.14) is not looked at 30 degrees off:
    # noise bins there once made a 'graphene' of a = 42 px
    ws2 = _eval_frame("WS2", WS2_2041_19)
    for f in (1.0, None):
        v = classify_material(ws2.image, None if f is None else ws2.pixel_size_A * f)
        assert v.verdict == "not_graphene", (f, v.reason)


#: development frames of `lab.material_eval --seed S --pixel-size 0.03 0.08`, by the generator state before each
FINE = (0.03, 0.08)
G_3002_4 = {"state": 332616790253533547039155231751061992195, "inc": 245786268854034137617712031131362166355,
            "uinteger": 1218244242}
HOLE_3001_23 = {"state": 105802422037134821409766956671121437250, "inc": 257728463480096675034125136739104960507,
                "uinteger": 2182107832}
CONT_3003_36 = {"state": 15918168964507997176689112688276561259, "inc": 214303318195647511510080140166268740621,
                "uinteger": 2391817896}
WS2_3002_20 = {"state": 215773391454335787991597078767380850673, "inc": 245786268854034137617712031131362166355,
               "uinteger": 2458231891}
#: ... and of `--seed 4003 --pixel-size 0.1 0.3` (vacuum, frame 30)
VACUUM_4003_30 = {"state": 107148420240669431370248935847731418818, "inc": 110281136136789642217605312779254150625,
                  "uinteger": 668537463}


@pytest.mark.parametrize("kind,state,px", [("graphene", G_3002_4, 0.0404), ("graphene_hole", HOLE_3001_23, 0.0497)])
def test_fine_sampled_graphene_at_the_noise_of_the_windowed_spectrum_is_found_at_exact_frequencies(kind, state, px):
    """Graphene at 0.040 A/px (SNR 15) and with a large hole at 0.050 A/px (SNR 4.9): fields of 20-25 A,
    called `amorphous` at every declaration (the windowed spectrum's first-order spots at the noise). The
    unwindowed transform at exact frequencies finds the hexagon (score 23 and 13, noise <= 5.3 on the
    development frames) with equal sublattices."""
    from engine.health.material import _binned
    from engine.health.material_fine import FINE_SCORE, fine_hexagon
    ex = _eval_frame(kind, state, FINE)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    m = fine_hexagon(*_binned(ex.image.astype(np.float32)))
    assert m["score"] >= FINE_SCORE and m["rho"] >= 0.8
    assert m["a_px"] == pytest.approx(GRAPHENE_A / ex.pixel_size_A, rel=0.05)
    for f in (1.0, 0.5, 2.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict == "graphene", (f, v.reason)
        assert "exact frequencies" in v.reason


def test_fine_sampled_graphene_seen_through_its_second_order_is_found_at_exact_frequencies():
    """Contaminated graphene at 0.037 A/px (SNR 18): the strongest unwindowed hexagon is the {11-20} one
    (ratio ~0); its first order, 30 degrees off at 1/sqrt(3) the radius, is found there with equal
    sublattices. A strong WS2 lattice (0.054 A/px, score ~220) is not read that way: noise 30 degrees off
    scored 4.4 with a ratio of 0.95 and called it graphene before the first order had to reach 0.1 of the
    {11-20} hexagon's score."""
    ex = _eval_frame("graphene_contamination", CONT_3003_36, FINE)
    assert ex.pixel_size_A == pytest.approx(0.0374, abs=1e-4)
    for f in (1.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict == "graphene", (f, v.reason)
        assert v.lattice_constant_px == pytest.approx(GRAPHENE_A / ex.pixel_size_A, rel=0.05)
    ws2 = _eval_frame("WS2", WS2_3002_20, FINE)
    for f in (1.0, None):
        v = classify_material(ws2.image, None if f is None else ws2.pixel_size_A * f)
        assert v.verdict == "not_graphene", (f, v.reason)


def test_line_gain_noise_on_the_ky_axis_makes_no_fine_hexagon():
    """Vacuum at 0.22 A/px with 3 % row-to-row gain noise: power all along kx = 0. Against a ring level
    (or a 2-D neighbourhood) one spot of a noise hexagon sat there: score 7.2, ratio 0.91, and the frame was
    called graphene. The columns by the axis are now compared with their own column."""
    from engine.health.material import _binned
    from engine.health.material_fine import FINE_SCORE, fine_hexagon
    ex = _eval_frame("vacuum", VACUUM_4003_30, (0.1, 0.3))
    assert ex.pixel_size_A == pytest.approx(0.2200, abs=1e-4)
    assert fine_hexagon(*_binned(ex.image.astype(np.float32)))["score"] < FINE_SCORE
    for f in (1.0, 2.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict != "graphene", (f, v.reason)


#: development frames of the seventh pass (`--seed 3002 --pixel-size 0.03 0.08`; `--seed 5001` / `5002`, full range)
HOLE_3002_37 = {"state": 39724674223417671692434065351455941374, "inc": 245786268854034137617712031131362166355,
                "uinteger": 690548214, "has_uint32": 1}
CONT_3002_16 = {"state": 282355451075530146931253669769879741892, "inc": 245786268854034137617712031131362166355,
                "uinteger": 218081551}
AMORPHOUS_5001_4 = {"state": 190294462799199553713468905365823010767, "inc": 317915725153918023317776201916402039279,
                    "uinteger": 1118835156}
VACUUM_5002_28 = {"state": 3562326420246088401468474843425968510, "inc": 326554236499084160480157201633014703191,
                  "uinteger": 712235513, "has_uint32": 1}


@pytest.mark.parametrize("kind,state,px", [("graphene_hole", HOLE_3002_37, 0.0306),
                                           ("graphene_contamination", CONT_3002_16, 0.0385)])
def test_fine_sampled_graphene_with_a_heavy_adatom_is_found_at_exact_frequencies_with_it_masked(kind, state, px):
    """Fields of 16-20 A with one heavy adatom: clipped, its disc fills graphene's first-order ring of the
    unwindowed transform too (best hexagon 1.9 and 4.8, threshold 6), and the frames were `amorphous`.
    With the object replaced by the background (as the windowed spectrum's second try does) the
    hexagon scores 14 and 17 with equal sublattices."""
    from engine.health.material import _binned
    from engine.health.material_blobs import without_blobs
    from engine.health.material_fine import FINE_SCORE, fine_hexagon
    ex = _eval_frame(kind, state, FINE)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    img, b = _binned(ex.image.astype(np.float32))
    assert fine_hexagon(img, b)["score"] < FINE_SCORE
    cleaned = without_blobs(img)
    assert cleaned is not None and cleaned[1] == 1
    m = fine_hexagon(cleaned[0], b)
    assert m["score"] >= 2 * FINE_SCORE and m["rho"] >= 0.9
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, "exact frequencies", rel=0.05)


@pytest.mark.parametrize("kind,state,px", [("amorphous", AMORPHOUS_5001_4, 0.0616), ("vacuum", VACUUM_5002_28, 0.0581)])
def test_faint_noise_hexagon_of_many_unit_cells_is_no_lattice(kind, state, px):
    """Amorphous carbon and vacuum at 0.06 A/px: three noise bins of the windowed spectrum formed a hexagon of
    a = 8-10 px (53-63 unit cells across the field) with spots 9.9 and 8.7 over their surroundings and "equal
    sublattices" (0.95, 0.90): graphene, "the pixel size looks wrong". A real lattice of that many cells
    concentrates its power into spots far above that (graphene on the development frames: >= 15.9)."""
    from engine.health.material import RICH_CELLS, RICH_STRENGTH
    ex = _eval_frame(kind, state)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    for f in (1.0, 0.5, 2.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict != "graphene", (f, v.reason)
        assert not (v.symmetry == "hexagonal" and SIZE / v.lattice_constant_px >= RICH_CELLS
                    and v.peak_strength < RICH_STRENGTH), v.reason


HOLE_5001_35 = {"state": 86093703267656078989438977550818633503, "inc": 317915725153918023317776201916402039279,
                "uinteger": 1007422219}


def test_heavy_adatoms_beside_many_hot_pixels_are_masked():
    """Graphene with a hole at 0.045 A/px (SNR 32) and two heavy adatoms ~10 x brighter than a dozen hot
    pixels that also clear the objects' core level: more than BLOB_MAX regions, so nothing was masked and
    the frame was `amorphous`. The two objects far above all the others are masked now, and the lattice is
    found at exact frequencies (hexagon ~37, equal sublattices)."""
    from engine.health.material import _binned
    from engine.health.material_blobs import BLOB_MAX, without_blobs
    ex = _eval_frame("graphene_hole", HOLE_5001_35)
    assert ex.pixel_size_A == pytest.approx(0.0447, abs=1e-4)
    cleaned = without_blobs(_binned(ex.image.astype(np.float32))[0])
    assert cleaned is not None and cleaned[1] == 2 < BLOB_MAX
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, rel=0.05)


GRAINS_3002_39 = {"state": 209918601321295646197303909536306434195, "inc": 245786268854034137617712031131362166355,
                  "uinteger": 1140425831, "has_uint32": 1}
DOPANTS_3002_2 = {"state": 34236230255984195427628232921394681818, "inc": 245786268854034137617712031131362166355,
                  "uinteger": 248469431, "has_uint32": 1}


@pytest.mark.parametrize("kind,state,px", [("graphene_grains", GRAINS_3002_39, 0.0339),
                                           ("graphene_dopants", DOPANTS_3002_2, 0.0311)])
def test_faint_fine_hexagon_with_a_noisy_sublattice_ratio_stays_graphene(kind, state, px):
    """Graphene at 0.031-0.034 A/px and C-atom SNR 1.4-2.6: the fine hexagon scores 6-10 and the bispectrum
    of spots that faint measures 0.73-0.79, below the 0.80 a hexagon under 10 needed, so the frames were
    `vacuum`. Hexagons that faint now need 0.72 (hBN measured <= 0.63)."""
    from engine.health.material import _binned
    from engine.health.material_fine import FINE_RHO_WEAK, FINE_SCORE, FINE_SCORE_SURE, fine_hexagon
    ex = _eval_frame(kind, state, FINE)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    m = fine_hexagon(*_binned(ex.image.astype(np.float32)))
    assert FINE_SCORE <= m["score"] < FINE_SCORE_SURE and FINE_RHO_WEAK <= m["rho"] < 0.8
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, rel=0.05)


#: development frames of the eighth pass (`lab.material_eval --seed S`, full range), by the generator state before each
G_4005_18 = {"state": 129483599571382292411912033771461743138, "inc": 125003787317445103993828515317411737087,
             "uinteger": 2477157682}
CONT_4006_7 = {"state": 21054798521784711159813840158233229437, "inc": 142223598021201528735937829208504118835,
               "uinteger": 1501486222, "has_uint32": 1}
HOLE_4006_4 = {"state": 68194285499336360897020637578089576371, "inc": 142223598021201528735937829208504118835,
               "uinteger": 3553012405}
DOPANTS_4008_13 = {"state": 100937688048082809273798884664312397661, "inc": 36057568284679101997326185492623549593,
                   "uinteger": 3697911490}


@pytest.mark.parametrize("kind,state,px,how", [("graphene", G_4005_18, 0.0445, ""),
                                                ("graphene_contamination", CONT_4006_7, 0.0486, "")])
def test_graphene_half_covered_by_clutter_is_found_in_its_clean_half(kind, state, px, how):
    """Graphene at 0.044-0.049 A/px (C-atom SNR 20-21) with a contamination patch over about half of the
    22-25 A field: the patch's power at the columns' own frequencies raises the whole field's transform
    around graphene's spots (windowed and unwindowed), and the frames were `amorphous` / `not_graphene`
    (the {11-20} hexagon, 0.12) at every declaration. The clean half alone shows the hexagon (>= 30, equal
    sublattices; the best half of ~1,050 amorphous, vacuum, hBN, MoS2 and WS2 development frames at 0.03-0.13
    A/px not called vacuum: <= 12.7 with a ratio >= 0.8). Since the fine search starts at a = 25 px
    (FINE_A_PX) the second frame is already graphene from its whole field (a = 2.40 A, ratio 0.95), and since
    the search over the part of the field at the lattice's level (fine_hexagon_level, 2026-12-03) the first one
    is found there before its halves are searched: either path is asserted, the clean half's hexagon in both."""
    from engine.health.material import _binned
    from engine.health.material_blobs import without_blobs
    from engine.health.material_fine import FINE_PART_RHO, FINE_PART_SCORE, fine_hexagon_parts
    ex = _eval_frame(kind, state)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    img, b = _binned(ex.image.astype(np.float32))
    cleaned = without_blobs(img)
    img = img if cleaned is None else cleaned[0]
    m = fine_hexagon_parts(img, b)
    assert m["score"] >= 1.5 * FINE_PART_SCORE and m["rho"] >= FINE_PART_RHO
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, how, rel=0.05)


@pytest.mark.parametrize("kind,state,px", [("graphene_hole", HOLE_4006_4, 0.0497),
                                           ("graphene_dopants", DOPANTS_4008_13, 0.0557)])
def test_faint_fine_hexagon_in_a_frame_with_nothing_else_above_the_noise_is_graphene(kind, state, px):
    """Graphene at 0.050-0.056 A/px and C-atom SNR 1.2-1.3: nothing in the windowed spectrum, no diffuse
    structure (`vacuum`), and the unwindowed hexagon scores 4.5-5.8 (< FINE_SCORE 6) with equal sublattices
    (0.94-1.0). In a frame called vacuum that hexagon competes with white noise only, whose best hexagon
    scored <= 4.4 on ~630 development frames called vacuum (<= 4.04 with a ratio >= 0.8)."""
    from engine.health.material import _binned
    from engine.health.material_fine import FINE_RHO_VACUUM, FINE_SCORE, FINE_SCORE_VACUUM, fine_hexagon
    ex = _eval_frame(kind, state)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    m = fine_hexagon(*_binned(ex.image.astype(np.float32)))
    assert FINE_SCORE_VACUUM <= m["score"] < FINE_SCORE and m["rho"] >= FINE_RHO_VACUUM
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, "nothing else above the noise", rel=0.05)


#: calibration frames of the eighth pass: px log-uniform 0.03-0.13 A/px, then material_example (not lab.material_eval)
VACUUM_6001_13 = {"state": 301482458170899445972795945949217478695, "inc": 300907240832899162282962895343960164421,
                  "uinteger": 1661112812}
AMORPHOUS_6001_10 = {"state": 135394945272399829820531491766848693969, "inc": 300907240832899162282962895343960164421,
                     "uinteger": 2424286167, "has_uint32": 1}
HBN_6002_37 = {"state": 236393900833102331290287455340723178578, "inc": 87596964037630492004808057442777608837,
               "uinteger": 1783045996}


@pytest.mark.parametrize("kind,state,px", [("vacuum", VACUUM_6001_13, 0.0841), ("amorphous", AMORPHOUS_6001_10, 0.0311),
                                           ("hBN", HBN_6002_37, 0.0347)])
def test_faint_hexagons_of_vacuum_amorphous_and_faint_hbn_stay_not_graphene(kind, state, px):
    """The calibration frames nearest to the two rules above: vacuum whose best noise hexagon has equal
    'sublattices' (3.7, ratio 0.85), amorphous carbon with a half-field hexagon of 9.0 (ratio 0.99), and hBN at
    C-atom SNR 1.2 called vacuum by the windowed spectrum (whole field 10.7 with ratio 0.71; a half 19 with
    0.94: halves are not searched in a frame called vacuum)."""
    from engine.sim.materials import material_example
    rng = np.random.default_rng()
    rng.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": state.get("has_uint32", 0),
                               "uinteger": state["uinteger"], "state": {"state": state["state"], "inc": state["inc"]}}
    p = float(np.exp(rng.uniform(np.log(0.03), np.log(0.13))))
    assert p == pytest.approx(px, abs=1e-4)
    ex = material_example(rng, kind, (SIZE, SIZE), p, dose_range=(1e4, 1e6))
    for f in (1.0, 0.5, 2.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict != "graphene", (f, v.reason)


HOLE_4007_17 = {"state": 19361662787778487079766693473909800238, "inc": 204992623370734465488315782212154783749,
                "uinteger": 4264172267, "has_uint32": 1}


def test_fine_hexagon_refined_just_past_the_finest_lattice_searched_is_kept():
    """Graphene with a hole at 0.0835 A/px (C-atom SNR 8.3): the fine hexagon (11.7, equal sublattices 1.00) was
    found at the search's finest a (30 px) and refined to a = 29.3 px, then dropped as outside the range
    searched, and the frame was `amorphous` at every declaration. The refinement moves a spot up to a bin
    (~5 % there): FINE_A_EDGE. Since the search starts at 25 px (FINE_A_PX) a = 29.3 px lies inside it."""
    from engine.health.material_fine import FINE_A_EDGE, FINE_A_PX
    ex = _eval_frame("graphene_hole", HOLE_4007_17)
    assert ex.pixel_size_A == pytest.approx(0.0835, abs=1e-4)
    for f in (1.0, 0.5, 2.0, None):
        v = classify_material(ex.image, None if f is None else ex.pixel_size_A * f)
        assert v.verdict == "graphene", (f, v.reason)
        assert FINE_A_PX[0] * FINE_A_EDGE <= v.lattice_constant_px <= FINE_A_PX[1]
        assert v.lattice_constant_px == pytest.approx(GRAPHENE_A / ex.pixel_size_A, rel=0.05)


#: development frame (lab.material_eval --seed 4006, graphene_grains 11), by the generator state before it
GRAINS_4006_11 = {"state": 17699336631965148407800811902692883905, "inc": 142223598021201528735937829208504118835,
                  "has_uint32": 1, "uinteger": 3371296297}


def test_first_order_predicted_from_a_one_sublattice_hexagon_is_searched_over_its_uncertainty():
    """Graphene grains at 0.0306 A/px (a 16 A field, C-atom SNR 2.2, a sharp 0.76 A probe): the best unwindowed
    hexagon is graphene's {11-20} triple (4.9, one 'sublattice', ratio 0.23), whose first order lies at 1/sqrt 3
    its radius, 30 degrees on. Read at that one predicted point it scored 3.6 (< FINE_ALT_SCORE 4), and the frame
    was `vacuum` at every declaration; three degrees on (0.4 bin at the first order, within the {11-20} spots'
    main lobe at theirs) it scores 5.0 with equal sublattices (0.89)."""
    from engine.health.material import _binned
    from engine.health.material_fine import FINE_ALT_SCORE, FINE_RHO_VACUUM, FINE_SCORE_VACUUM, fine_hexagon
    ex = _eval_frame("graphene_grains", GRAINS_4006_11)
    assert ex.pixel_size_A == pytest.approx(0.0306, abs=1e-4)
    m = fine_hexagon(*_binned(ex.image.astype(np.float32)))
    assert m["via_11_20"] and m["score_11_20"] >= FINE_SCORE_VACUUM
    assert m["score"] >= FINE_ALT_SCORE + 0.5 and m["rho"] >= FINE_RHO_VACUUM
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, "nothing else above the noise", rel=0.1)


def _mos2_flake_beside_graphene(shape):
    """Frame 0 of a static simulated field, graphene with a MoS2 flake over 32 % of it (engine.sim
    MaterialMovie ``graphene_patch`` seed 18 at 0.15 A/px, 1e5 e/A^2): graphene's lattice is a = 16.4 px."""
    from engine.sim.materials import MaterialMovie
    from engine.sim.movie import MovieSpec

    spec = MovieSpec(n_frames=12, shape_px=shape, pixel_size_A=0.15, drift_A_per_frame=(0.1, 0.05),
                     drift_bound_A=5.0, seed=18)
    return next(iter(MaterialMovie(spec, "graphene_patch").frames()))


@pytest.mark.parametrize("shape", [(512, 512), (768, 768)])
@pytest.mark.parametrize("declared", [0.15, None])
def test_graphene_beside_a_mos2_flake_is_found_at_its_own_lattice_and_the_flake_left_out(shape, declared):
    """Issue 21 criteria 2 and 3. Before: at 512^2 the MoS2 lattice (a = 3.2 A, ratio 0.43) was the only one
    tried, its strain-smeared spots used up the second lattice's candidates and the frame was `not_graphene`
    (68 % of it graphene, not analysed); at 768^2 the verdict stepped down from MoS2's spots to a faint
    sub-harmonic 30 degrees off (a = 37.8 px, column FWHM / a = 0.01) whose 'honeycomb' of Mo columns the
    real-space test found equally bright: `graphene` with a = 5.67 A ("the pixel size looks wrong"), which
    the pipeline's scale check then took for graphene's lattice (0.065 A/px). Now: graphene's own lattice,
    a = 16.4 px (2.46 A at the declared 0.15 A/px), and a mask that leaves the flake out."""
    from engine.types import OTHER

    img, truth = _mos2_flake_beside_graphene(shape)
    v = classify_material(img, declared)
    assert v.verdict == "graphene", v.reason
    assert v.lattice_constant_px == pytest.approx(GRAPHENE_A / 0.15, rel=0.03), v.reason
    assert "another hexagonal lattice" in v.reason and "pixel size looks wrong" not in v.reason
    assert np.isfinite(v.column_width_ratio) and 0.2 < v.column_width_ratio < 0.7
    assert v.mask is not None and 0.5 < v.graphene_fraction < 0.9
    h, w = img.shape
    xy = truth.xy_px
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)
    ix, iy = np.rint(xy[inside]).astype(int).T
    in_mask = v.mask[iy, ix]
    mos2 = truth.species[inside] == OTHER
    assert in_mask[mos2].mean() < 0.1            # the flake is left out
    assert in_mask[~mos2].mean() > 0.8           # the graphene is analysed (but for cells along the edge)


def test_integer_frames_are_binned_from_their_counts_bit_for_bit():
    """8- and 16-bit frames skip the float32 copy of the whole frame (issue 21 criterion 5, cost): their 2 x 2
    sums are integers below 2^18, so binning the counts gives the float32 frame's binning exactly, and the
    verdict of an integer frame is the verdict of its float32 copy."""
    from engine.chem.filters import block_sum
    from engine.health.material import _binned, _binned_window

    rng = np.random.default_rng(8)
    for dtype, lo, hi in ((np.uint16, 0, 65536), (np.uint8, 0, 256), (np.int16, -32768, 32768)):
        for shape in ((512, 512), (384, 401), (1100, 1031)):               # (odd sides; > 1024: cropped)
            a = rng.integers(lo, hi, size=shape).astype(dtype)
            want, b = _binned(a.astype(np.float32))
            assert b == 2 and np.array_equal(block_sum(_binned_window(a), 2), want)
    for material, seed in (("graphene", 3), ("MoS2", 1)):
        img = np.clip(np.rint(_frame(material, 0.1, seed=seed).image), 0, 65535).astype(np.uint16)
        for px in (0.1, None):
            u, f = classify_material(img, px), classify_material(img.astype(np.float32), px)
            assert u.to_dict() == f.to_dict()
            assert (u.mask is None and f.mask is None) or np.array_equal(u.mask, f.mask)


#: frames of lab.material_eval --seed 4022 / 4023 (fresh seeds when first run: 2026-12-03), by the generator
#: state before each
DOPANTS_4022_10 = {"state": 127817819526241009476118672130195468972, "inc": 42541160934791938193393437412431812117,
                   "uinteger": 106141659}
HOLE_4023_35 = {"state": 52586566733647076882977164122636824776, "inc": 300417906522245214032686307434702463339,
                "uinteger": 3472565213}


@pytest.mark.parametrize("kind,state,px", [("graphene_dopants", DOPANTS_4022_10, 0.0873),
                                           ("graphene_hole", HOLE_4023_35, 0.0897)])
def test_graphene_just_coarser_than_the_old_fine_range_whose_first_order_is_faint(kind, state, px):
    """Graphene at 0.087-0.090 A/px (a = 27-28 px; C-atom SNR 13.8 and 6.7) whose windowed spectrum shows
    only its {11-20} spots (39 Si under a 67 % / 5.3 A probe tail; a sharp 0.80 A probe): the frames were
    `not_graphene` ("not hexagonal, period 1.21 A"; "a = 1.41 A, unequal sublattices 0.14") at every
    declaration, just outside the fine search's lattice constants (30-100 px, graphene at <= 0.082 A/px).
    From 25 px the exact-frequency transform finds the first order with equal sublattices (0.96, 0.98)."""
    ex = _eval_frame(kind, state)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, "exact frequencies", rel=0.05)


#: development frames (2026-12-03 session): lab.material_eval draws with --pixel-size 0.03 0.08 (seed 4003) and
#: 0.03 0.06 (seed 4006), by the generator state before each
HOLE_4003_26 = {"state": 199744765765311265374973371331851143069, "inc": 110281136136789642217605312779254150625,
                "uinteger": 951014302}
GRAINS_4006_22 = {"state": 321749372028048150143737409151954124703, "inc": 142223598021201528735937829208504118835,
                  "uinteger": 1068516304}
DOPANTS_4006_37 = {"state": 223596512151344498518662242054809972533, "inc": 142223598021201528735937829208504118835,
                   "uinteger": 1239321107}
DOPANTS_4006_0 = {"state": 141616367284262941542602828775341967355, "inc": 142223598021201528735937829208504118835,
                  "uinteger": 2547727319}


@pytest.mark.parametrize("kind,state,px_range,px", [("graphene_hole", HOLE_4003_26, FINE, 0.0315),
                                                    ("graphene_grains", GRAINS_4006_22, (0.03, 0.06), 0.0308),
                                                    ("graphene_dopants", DOPANTS_4006_37, (0.03, 0.06), 0.0353)])
def test_graphene_of_few_unit_cells_is_found_over_the_part_of_the_field_at_its_level(kind, state, px_range, px):
    """Graphene at 0.031-0.035 A/px (15-18 A fields, C-atom SNR 5.2-8.7) with a hole, a grain boundary and
    contamination, or many Si and a heavy cluster: the hole's noise and edges or the bright objects compete
    with graphene's first-order spots over the whole field (unwindowed hexagon below FINE_SCORE), and the frames
    were `amorphous` at every declaration. Over the part of the field at the lattice's own level the hexagon
    passes with equal sublattices."""
    from engine.health.material import _binned
    from engine.health.material_fine import fine_accept, fine_hexagon
    ex = _eval_frame(kind, state, px_range)
    assert ex.pixel_size_A == pytest.approx(px, abs=1e-4)
    img, b = _binned(ex.image.astype(np.float32))
    assert fine_accept(fine_hexagon(img, b)) is None
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, "at the lattice's own level", rel=0.05)


def test_a_uniform_field_gets_no_second_fine_search():
    """Vacuum, amorphous carbon and whole graphene fields leave nothing out: the search over the part at the
    lattice's level is not made (it would only be another look at the same noise)."""
    from engine.health.material import _binned
    from engine.health.material_fine import fine_hexagon_level, level_weights
    for kind, seed in (("vacuum", 3), ("amorphous", 4), ("graphene", 5)):
        ex = material_example(np.random.default_rng(seed), kind, (SIZE, SIZE), 0.04, dose_range=(1e5, 1e5),
                              **({"holes": False, "contamination": False} if kind == "graphene" else {}))
        img, b = _binned(ex.image.astype(np.float32))
        assert level_weights(img, b) is None, kind
        assert fine_hexagon_level(img, b) is None, kind


def test_a_few_si_on_one_sublattice_of_a_few_sites_veto_nothing():
    """Graphene with 1-4 Si/nm^2 at 0.035 A/px (C-atom SNR 7.3): a Fourier hexagon of 16.8 with equal
    sublattices (0.80-0.89), but in real space the Si tipped the medians of the 8 sites per sublattice found
    (0.46, z 13), and the real-space veto made the frame `not_graphene`. A veto now needs RS_VETO_MIN_SITES
    sites per sublattice (the hBN frame it was made for: 122)."""
    from engine.health.material import _binned
    from engine.health.material_realspace import RS_VETO_MIN_SITES, RS_VETO_RHO, RS_Z, site_contrast
    ex = _eval_frame("graphene_dopants", DOPANTS_4006_0, (0.03, 0.06))
    assert ex.pixel_size_A == pytest.approx(0.0346, abs=1e-4)
    img, b = _binned(ex.image.astype(np.float32))
    rho, sites, z = site_contrast(img, GRAPHENE_A / ex.pixel_size_A / b)
    assert rho < RS_VETO_RHO and z >= RS_Z and sites < RS_VETO_MIN_SITES
    _graphene_at_every_declaration(ex.image, ex.pixel_size_A, rel=0.05)
