"""Preprocessing: resampling geometry, normalisation invariances, padding and tiling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.infer.preprocess import (Resampler, grid_shape, make_tiles, normalise, pad_to_multiple,
                                     resample_matrix)
from engine.types import Probabilities


@pytest.mark.parametrize("n_in,n_out", [(512, 256), (300, 114), (256, 256), (100, 257), (7, 3)])
def test_resample_matrix_rows_are_weights(n_in, n_out):
    m = resample_matrix(n_in, n_out).toarray()
    assert m.shape == (n_out, n_in)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    assert (m >= 0).all()
    if n_in >= n_out:   # area weighting conserves the total flux
        np.testing.assert_allclose(m.sum(axis=0).sum() * n_in / n_out, n_in, rtol=1e-5)
        np.testing.assert_allclose(m.sum(axis=0), n_out / n_in, rtol=1e-5)


def test_resampling_keeps_positions_in_frame_coordinates():
    """A Gaussian blob at a known frame position is found at the same place through the grid."""
    H, W, px = 300, 220, 0.073
    yy, xx = np.mgrid[0:H, 0:W]
    x0, y0 = 131.3, 87.8
    frame = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 6.0 ** 2)).astype(np.float32)
    r = Resampler((H, W), px, 0.2)
    g = r(frame)
    assert g.shape == grid_shape((H, W), px, 0.2) == (round(H * px / 0.2), round(W * px / 0.2))
    gy, gx = np.mgrid[0:g.shape[0], 0:g.shape[1]]
    com = np.array([(gx * g).sum(), (gy * g).sum()]) / g.sum()
    probs = Probabilities(np.zeros((3,) + g.shape, np.float32), r.grid_px_A, (H, W), px)
    back = probs.to_frame_px(com[None])[0]
    assert np.hypot(*(back - [x0, y0])) < 0.05 * 0.2 / px   # within 0.01 A
    np.testing.assert_allclose(probs.to_grid_px(back[None])[0], com, atol=1e-9)


def test_area_resampling_conserves_mean_and_averages_noise():
    rng = np.random.default_rng(0)
    frame = rng.poisson(10.0, (400, 400)).astype(np.uint16)
    g = Resampler(frame.shape, 0.05, 0.2)(frame)
    assert g.shape == (100, 100) and g.dtype == np.float32
    assert abs(g.mean() - frame.mean()) < 1e-3
    assert abs(g.var() - frame.var() / 16) < 0.15 * frame.var() / 16    # 4x4 binning


def test_normalisation_cancels_gain_and_offset():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 1.0, (128, 96)).astype(np.float32)
    a = normalise(x)
    b = normalise(x * 37.5 + 1.2e5)
    np.testing.assert_allclose(a, b, atol=2e-3)
    flat = normalise(np.full((20, 20), 7.0, np.float32))
    assert np.isfinite(flat).all()
    nan = x.copy()
    nan[3, 4] = np.nan
    assert np.isfinite(normalise(nan)).all()


def test_normalisation_levels_stable_across_dose():
    """The normalised lattice contrast is nearly dose independent (smoothing before percentiles)."""
    yy, xx = np.mgrid[0:256, 0:256] * 0.2
    k = 2 * np.pi / 2.13
    lat = sum(np.cos(k * (np.cos(t) * xx + np.sin(t) * yy)) for t in (0, 2 * np.pi / 3, 4 * np.pi / 3))
    clean = (lat - lat.min()) / np.ptp(lat)
    rng = np.random.default_rng(2)
    means = []
    for counts in (2.0, 20.0, 2000.0):           # counts per pixel at the atom peaks
        img = rng.poisson(counts * (0.05 + clean)).astype(np.float32)
        n = normalise(img)
        means.append(float((n * clean).sum() / clean.sum()))   # mean normalised value on the lattice
    assert max(means) - min(means) < 0.2


@pytest.mark.parametrize("shape,m,min_side", [((37, 53), 4, 1), ((64, 64), 8, 1), ((1, 5), 4, 1), ((3, 2), 4, 32),
                                               ((83, 24), 4, 32)])
def test_pad_to_multiple(shape, m, min_side):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    p, (h, w) = pad_to_multiple(x, m, min_side)
    assert (h, w) == shape and p.shape[0] % m == 0 and p.shape[1] % m == 0
    assert min(p.shape) >= min_side
    np.testing.assert_array_equal(p[:h, :w], x)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), tile=st.sampled_from([64, 128, 256, 1024]), overlap=st.sampled_from([16, 32, 56]),
       m=st.sampled_from([4, 8]))
def test_tiles_partition_and_keep_margins(n, tile, overlap, m):
    tile = tile // m * m
    if overlap >= tile - m:
        return
    tiles = make_tiles((n, 7), tile, overlap, m)
    ys = sorted({(t.y0, t.y1, t.cy0, t.cy1) for t in tiles})
    cover = np.zeros(n, int)
    for a, b, ca, cb in ys:
        assert 0 <= a < b <= n and b - a <= tile and a % m == 0
        assert a <= ca < cb <= b
        if ca > 0:
            assert ca - a >= overlap // 2
        if cb < n:
            assert b - cb >= overlap // 2
        cover[ca:cb] += 1
    assert (cover == 1).all()
