"""Same atoms as before the speed work (issue 20): the atom finder + bond graph on frozen frames.

tests/data/atoms_reference.npz holds three simulated frames, the network's class probabilities for
them and what ``engine.pipeline.analyze_frame`` found, written by ``lab.chem.atoms_reference`` from
the code before issue 20's changes to engine/chem and engine/health/atoms.py. The current code must
find the same atoms (positions within 0.01 A), species, bonds, coordination, defects and SNR.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lab.chem.atoms_reference import BENCH_FILE, REFERENCE_FILE, analyze, load, outputs

# tests/data/atoms_reference_512.npz: one 512x512 frame of the bench's kind (~1,000 atoms, the size
# of issue 20's atoms + graph target), written from the code before issue 20's second round
# (``python -m lab.chem.atoms_reference --bench --write`` run on the h20 branch point, 2416d17)
FRAMES = {**load(REFERENCE_FILE), **load(BENCH_FILE)}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_finder_and_graph_match_the_frozen_outputs(name):
    ref = FRAMES[name]
    chem, snr = analyze(ref["image"], ref["probs"], ref["pixel_size_A"])
    now = outputs(chem, snr)
    assert len(now["species"]) == len(ref["species"]) > 150
    shift_A = np.abs(now["xy_px"] - ref["xy_px"]).max() * ref["pixel_size_A"]
    assert shift_A <= 0.01, f"{name}: an atom moved by {shift_A:.4f} A"
    np.testing.assert_array_equal(now["species"], ref["species"])
    np.testing.assert_array_equal(now["bonds"], ref["bonds"])
    np.testing.assert_array_equal(now["coordination"], ref["coordination"])
    assert list(now["defects"]) == list(ref["defects"])
    assert now["snr"] == pytest.approx(float(ref["snr"]), rel=1e-5)


def test_gaussian_at_equals_smoothing_the_whole_frame():
    """The pore brightness samples a Gaussian-smoothed frame at a few points, from windows around
    them: the same values as smoothing the whole frame (edges reflected) and interpolating."""
    from engine.chem.atoms import gaussian_at

    rng = np.random.default_rng(5)
    for shape in ((64, 80), (7, 3), (26, 26), (1, 5)):
        img = rng.integers(0, 4000, shape).astype(np.uint16)
        H, W = shape
        xy = np.c_[rng.uniform(-3, W + 2, 300), rng.uniform(-3, H + 2, 300)]
        xy[:4] = [[0, 0], [W - 1, H - 1], [W - 1, 0], [0.5, H - 1]]
        for sigma in (0.5, 1.7, 3.0):
            whole = ndimage.map_coordinates(ndimage.gaussian_filter(img.astype(np.float32), sigma), [xy[:, 1], xy[:, 0]],
                                            order=1, mode="nearest")
            np.testing.assert_allclose(gaussian_at(img, sigma, xy), whole, rtol=1e-5, atol=1e-3)
