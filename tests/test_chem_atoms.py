"""Atom finding from probability maps (engine.chem.atoms): positions, splitting, species, borders."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from engine.chem import find_atoms
from engine.chem.atoms import assign_other
from engine.chem.refine import refine_gaussian
from engine.chem.reference import defect_field, graphene
from lab.chem.synth import grid_for, render_probabilities
from engine.types import Atoms, Probabilities
from stemwatch.config import ChemistryConfig

CFG = ChemistryConfig()


def match(found_A: np.ndarray, true_A: np.ndarray, r_A: float = 0.5):
    """Distances from each true atom to the nearest found atom, and that atom's index."""
    return cKDTree(found_A).query(true_A, distance_upper_bound=r_A)


@pytest.mark.parametrize("px,sigma,saturate", [(0.2, 0.3, 1.0), (0.2, 0.35, 4.0), (0.1, 0.25, 1.0)])
def test_subpixel_positions_on_a_lattice(px, sigma, saturate):
    rng = np.random.default_rng(3)
    s = graphene(40, 40, rotation_deg=17.0)
    s.xy_A += rng.normal(0, 0.05, s.xy_A.shape)       # off-grid, jittered positions
    probs = render_probabilities(s.xy_A, s.species, grid_for(s.xy_A, px, 1.0), px, sigma_A=sigma,
                                 saturate=saturate, noise=0.02, rng=rng)
    atoms = find_atoms(probs, CFG)
    d, i = match(atoms.xy_A, s.xy_A)
    assert np.isfinite(d).all(), "every atom is found"
    assert len(atoms) == len(s.xy_A), "and nothing else"
    err = atoms.xy_A[i] - s.xy_A
    assert np.sqrt((err**2).sum(1).mean()) < 0.05          # A, far below a pixel
    assert np.abs(err.mean(0)).max() < 0.01                # no systematic bias


def test_probability_weighting_beats_binary_centre_of_mass():
    """A binary (thresholded) centre of mass is biased to the pixel grid; ours is not."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    xy = rng.uniform(3, 37, (1, 2)) + np.array([[0.0, 0.0]])
    pts = np.array([[x, y] for x in np.arange(3, 38, 2.1) for y in np.arange(3, 38, 2.1)])
    pts += rng.uniform(-0.5, 0.5, pts.shape)
    probs = render_probabilities(pts, np.zeros(len(pts), np.int8), grid_for(pts, 0.2, 2.0), 0.2, sigma_A=0.3)
    atoms = find_atoms(probs, CFG)
    d, i = match(atoms.xy_A, pts)
    ours = np.sqrt((d**2).mean())
    mask = probs.p[0] < 0.5
    lab, n = ndimage.label(mask)
    com = np.array(ndimage.center_of_mass(mask, lab, range(1, n + 1)))[:, ::-1] * 0.2
    dc, _ = match(com, pts)
    binary = np.sqrt((dc**2).mean())
    assert ours < 0.02 and ours < binary / 2, (ours, binary)
    assert xy.shape == (1, 2)


def test_touching_blobs_are_split_and_close_peaks_merge():
    px = 0.2
    # two atoms 1.1 A apart (a compressed bond) with overlapping blobs, and two peaks 0.4 A apart
    pts = np.array([[5.0, 5.0], [6.1, 5.0], [10.0, 5.0], [10.4, 5.0]])
    probs = render_probabilities(pts, np.zeros(4, np.int8), (50, 80), px, sigma_A=0.35, saturate=2.0)
    atoms = find_atoms(probs, CFG)
    xs = np.sort(atoms.xy_A[:, 0])
    assert len(atoms) == 3, xs
    assert abs(xs[0] - 5.0) < 0.1 and abs(xs[1] - 6.1) < 0.1
    assert 9.9 < xs[2] < 10.5
    d = np.hypot(*(atoms.xy_A[:, None] - atoms.xy_A[None]).transpose(2, 0, 1))
    assert d[np.triu_indices(len(atoms), 1)].min() >= CFG.min_atom_separation_A


def test_one_atom_per_site_across_classes_and_species():
    px = 0.2
    pts = np.array([[4.0, 4.0], [8.0, 4.0], [12.0, 4.0]])
    probs = render_probabilities(pts, np.array([0, 1, 0], np.int8), (40, 80), px, sigma_A=0.3)
    # site 3: probability shared between C and Si, Si slightly larger
    p = probs.p.copy()
    r0, c0 = 20, 60
    yy, xx = np.mgrid[:40, :80]
    blob = np.exp(-((xx - c0) ** 2 + (yy - r0) ** 2) / (2 * 1.5**2))
    p[1] = np.where(blob > 1e-3, 0.45 * blob, p[1])
    p[2] = np.where(blob > 1e-3, 0.5 * blob, p[2])
    p[0] = 1 - p[1] - p[2]
    probs = Probabilities(p.astype(np.float32), px, (40, 80), px)
    atoms = find_atoms(probs, CFG)
    assert len(atoms) == 3
    order = np.argsort(atoms.xy_px[:, 0])
    assert list(atoms.species[order]) == [0, 1, 1]
    assert np.allclose(atoms.class_prob.sum(1), 1, atol=1e-5)
    assert ((atoms.confidence > 0) & (atoms.confidence <= 1)).all()
    # the shared site is less certain of its species than the clean ones
    assert atoms.confidence[order[2]] < atoms.confidence[order[0]]


def test_border_atoms_are_kept_and_flagged():
    px = 0.2
    pts = np.array([[0.1, 3.0], [3.0, 3.0], [7.9, 3.0]])     # first and last within 1 A of the edge
    probs = render_probabilities(pts, np.zeros(3, np.int8), (30, 40), px, sigma_A=0.3)
    atoms = find_atoms(probs, CFG)
    order = np.argsort(atoms.xy_px[:, 0])
    assert len(atoms) == 3
    assert list(atoms.border[order]) == [True, False, True]


def test_maps_grid_positions_to_frame_pixels():
    """The model grid (0.2 A/px) covers a frame sampled at 0.05 A/px: positions come back in frame px."""
    frame_px = 0.05
    s = graphene(20, 20)
    shape = (100, 100)                                   # 20 A at 0.2 A/px
    probs = render_probabilities(s.xy_A - 0.1, s.species, shape, 0.2, sigma_A=0.3,
                                 frame_shape=(400, 400), frame_pixel_size_A=frame_px)
    atoms = find_atoms(probs, CFG)
    assert atoms.pixel_size_A == frame_px and atoms.frame_shape == (400, 400)
    # grid pixel centre j sits at (j + 0.5) * 0.2 A, i.e. frame pixel (j + 0.5) * 4 - 0.5
    expected_frame_px = (s.xy_A - 0.1) / 0.2
    expected_frame_px = (expected_frame_px + 0.5) * 4 - 0.5
    d, i = cKDTree(atoms.xy_px).query(expected_frame_px)
    inner = (s.xy_A > 1.5).all(1) & (s.xy_A < 18.5).all(1)
    assert (d[inner] * frame_px < 0.05).all()


def test_no_atoms_and_bad_input():
    probs = Probabilities(np.stack([np.ones((20, 20)), np.zeros((20, 20)), np.zeros((20, 20))]).astype(np.float32),
                          0.2, (20, 20), 0.2)
    atoms = find_atoms(probs, CFG)
    assert len(atoms) == 0 and atoms.frame_shape == (20, 20)
    with pytest.raises(ValueError, match="shape"):
        find_atoms(Probabilities(np.zeros((2, 5, 5), np.float32), 0.2, (5, 5), 0.2), CFG)


def _render_image(xy_px, amp, shape, sigma_px, bg=10.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, bg)
    for (x, y), a in zip(xy_px, amp):
        img += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_px**2))
    return img


def test_gaussian_refinement_recovers_true_positions():
    rng = np.random.default_rng(2)
    px = 0.05
    s = graphene(12, 12, rotation_deg=10)
    true = s.xy_A / px
    img = rng.poisson(_render_image(true, np.full(len(true), 100.0), (241, 241), 0.4 / px)).astype(float)
    inner = (s.xy_A > 2).all(1) & (s.xy_A < 10).all(1)
    start = true + rng.normal(0, 2, true.shape)          # ~0.15 A off
    out = refine_gaussian(img, start, px, window_A=0.6)

    def rmse(xy):
        return np.sqrt(((xy - true)[inner] ** 2).sum(1).mean()) * px

    assert rmse(start) > 0.1
    assert rmse(out) < 0.02
    # a position on empty background does not wander off
    far = refine_gaussian(np.full((60, 60), 10.0), np.array([[30.0, 30.0]]), px)
    assert np.hypot(*(far[0] - [30.0, 30.0])) * px <= 0.35


def test_assign_other_from_intensity():
    px = 0.1
    s = graphene(20, 20)
    xy_px = s.xy_A / px
    amp = np.full(len(xy_px), 50.0)
    si, heavy = 10, 40
    amp[si] = 50 * (14 / 6) ** 1.7                        # Si at gamma 1.7
    amp[heavy] = 50 * (40 / 6) ** 1.7                     # a much heavier atom
    img = _render_image(xy_px, amp, (201, 201), 0.5 / px, bg=5.0)
    species = np.zeros(len(xy_px), np.int8)
    species[[si, heavy]] = 1                              # the network calls both "heavy" (Si channel)
    atoms = Atoms(xy_px, species, np.ones(len(xy_px), np.float32), np.zeros((len(xy_px), 3), np.float32),
                  np.zeros(len(xy_px), bool), px, (201, 201))
    assign_other(atoms, img, CFG)
    assert atoms.species[heavy] == 2 and atoms.species[si] == 1
    assert (np.delete(atoms.species, [si, heavy]) == 0).all()


def test_assign_other_is_not_fooled_by_dim_contamination_called_si():
    """The network calls many atoms of amorphous contamination "Si" (2-5 x a C's contrast on held-out
    frames, against 5-8 for the lattice's Si): outnumbering the real Si, they must not pull the Si
    level down so far that the real Si read as "other" (they did with a median Si level)."""
    px = 0.1
    s = graphene(20, 20)
    xy_px = s.xy_A / px
    amp = np.full(len(xy_px), 50.0)
    centre = xy_px.mean(0)
    order = np.argsort(np.hypot(*(xy_px - centre).T))
    si = order[[0, 40, 80]]                                # three lattice Si, well apart
    dim = order[120:128]                                   # eight contamination atoms called "Si"
    amp[si] = 50 * 6.0
    amp[dim] = 50 * 2.6
    img = _render_image(xy_px, amp, (201, 201), 0.5 / px, bg=5.0)
    species = np.zeros(len(xy_px), np.int8)
    species[np.r_[si, dim]] = 1
    atoms = Atoms(xy_px, species, np.ones(len(xy_px), np.float32), np.zeros((len(xy_px), 3), np.float32),
                  np.zeros(len(xy_px), bool), px, (201, 201))
    assign_other(atoms, img, CFG)
    assert (atoms.species[si] == 1).all()
    assert (atoms.species[dim] == 1).all()


def test_defect_field_atoms_found_with_noise_and_confusion():
    rng = np.random.default_rng(11)
    s = defect_field(50, 50, ["Si-3fold", "Si-4fold", "vacancy", "Si-dimer"], rng)
    probs = render_probabilities(s.xy_A, s.species, grid_for(s.xy_A, 0.2, 1.0), 0.2, sigma_A=0.32,
                                 confusion=0.2, noise=0.03, rng=rng)
    atoms = find_atoms(probs, CFG)
    d, i = match(atoms.xy_A, s.xy_A)
    assert np.isfinite(d).all() and len(atoms) == len(s.xy_A)
    assert (atoms.species[i] == s.species).all()


def test_no_second_peak_on_a_heavy_atoms_flank():
    px = 0.2
    pts = np.array([[5.0, 5.0], [6.0, 5.0], [10.0, 5.0], [11.42, 5.0]])   # Si + a flank peak; C-C pair
    probs = render_probabilities(pts, np.array([1, 0, 0, 0], np.int8), (50, 80), px, sigma_A=0.25)
    atoms = find_atoms(probs, CFG)
    xs = np.sort(atoms.xy_A[:, 0])
    assert len(atoms) == 3 and abs(xs[0] - 5.0) < 0.05        # the Si stays, its flank peak goes
    assert abs(xs[1] - 10.0) < 0.05 and abs(xs[2] - 11.42) < 0.05
    off = find_atoms(probs, ChemistryConfig(heavy_separation_A=0.0))
    assert len(off) == 4


def test_atoms_with_no_contrast_on_the_frame_are_dropped():
    """The network 'fills in' a vacancy: the raw frame shows nothing there, so the atom goes."""
    px = 0.1
    s = graphene(20, 20)
    vac = s.nearest(10, 10)
    shown = np.ones(len(s.xy_A), bool)
    shown[vac] = False
    img = _render_image(s.xy_A[shown] / px, np.full(shown.sum(), 50.0), (201, 201), 0.45 / px, bg=5.0)
    probs = render_probabilities(s.xy_A, s.species, (201, 201), px, sigma_A=0.3)   # includes the vacancy
    with_frame = find_atoms(probs, CFG, image=img)
    without = find_atoms(probs, CFG)
    assert len(without) == len(s.xy_A)
    assert len(with_frame) == len(s.xy_A) - 1
    d, _ = match(with_frame.xy_A, s.xy_A[[vac]])
    assert not np.isfinite(d).any()


def test_a_dim_si_between_bright_ones_is_a_c():
    px = 0.1
    s = graphene(20, 20)
    si = [s.nearest(8, 10), s.nearest(12, 10)]
    mid = s.nearest(10, 10)
    amp = np.full(len(s.xy_A), 50.0)
    amp[si] = 50 * (14 / 6) ** 1.7
    img = _render_image(s.xy_A / px, amp, (201, 201), 0.45 / px, bg=5.0)
    species = np.zeros(len(s.xy_A), np.int8)
    species[si + [mid]] = 1                                # the network also calls the C between them Si
    probs = render_probabilities(s.xy_A, species, (201, 201), px, sigma_A=0.3)
    atoms = find_atoms(probs, CFG, image=img)
    d, i = match(atoms.xy_A, s.xy_A[si + [mid]])
    assert list(atoms.species[i]) == [1, 1, 0]
    assert list(find_atoms(probs, CFG).species[i]) == [1, 1, 1]   # without the frame: as the network said


def _overlayer_scene(blob_amp: float, heavy: bool = False):
    """A 40 A graphene field (0.1 A/px) rendered as Gaussians, one Si trimer-like bright group, and a
    smooth bright blob (an amorphous overlayer) of ``blob_amp`` x the C peak in one corner."""
    from engine.chem import build_chemistry

    px = 0.1
    s = graphene(40, 40, rotation_deg=7)
    xy = s.xy_A / px
    sp = np.zeros(len(xy), np.int8)
    sp[np.argsort(np.hypot(*(s.xy_A - 12.0).T))[:3]] = 1          # three Si near (12, 12) A
    if heavy:
        sp[np.argmin(np.hypot(*(s.xy_A - 30.0).T))] = 2          # a heavy adatom in the blob
    amp = np.array([1.0, 4.5, 30.0])[sp]
    img = _render_image(xy, amp, (400, 400), 0.45 / px)
    yy, xx = np.mgrid[:400, :400]
    img += blob_amp * np.exp(-((xx - 300) ** 2 + (yy - 300) ** 2) / (2 * 40.0 ** 2))
    n = len(xy)
    atoms = Atoms(xy, sp, np.ones(n, np.float32), np.tile([0, 1, 0], (n, 1)).astype(np.float32),
                  np.zeros(n, bool), px, (400, 400))
    return atoms, img, build_chemistry(atoms, CFG, image=img)


def test_bright_overlayer_is_a_contamination_region():
    """An overlayer the network reads as lattice is still reported, from the raw frame (local_excess):
    the region covers the blob, not the dopants; a dopant group alone never makes one."""
    from engine.chem.atoms import local_excess

    atoms, img, chem = _overlayer_scene(blob_amp=6.0)
    exc = local_excess(atoms, img)
    si = atoms.species == 1
    assert exc[si].max() < 1.0 and abs(float(np.median(exc))) < 1e-6
    regions = [d for d in chem.defects if d.kind == "contamination"]
    assert len(regions) == 1 and len(regions[0].members) >= 10
    cx, cy = regions[0].centre_px
    assert np.hypot(cx - 300, cy - 300) < 40
    assert not np.isin(np.flatnonzero(si), regions[0].members).any()
    _, _, clean = _overlayer_scene(blob_amp=0.0)
    assert not [d for d in clean.defects if d.kind == "contamination"]


def test_bright_heavy_adatom_is_not_an_overlayer():
    """A heavy adatom lifts its surroundings too: it is reported as itself, not as contamination."""
    _, _, chem = _overlayer_scene(blob_amp=0.0, heavy=True)
    assert (chem.atoms.species == 2).sum() == 1
    assert not [d for d in chem.defects if d.kind == "contamination"]


def test_overlayer_rule_can_be_switched_off():
    from dataclasses import replace

    from engine.chem import build_chemistry

    atoms, img, _ = _overlayer_scene(blob_amp=6.0)
    plain = build_chemistry(atoms, replace(CFG, overlayer_excess=0.0), image=img)
    assert not [d for d in plain.defects if d.kind == "contamination"]
