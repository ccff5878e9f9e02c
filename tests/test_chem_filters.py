"""The atom finder's fast filters (engine/chem/filters.py) give what the scipy/numpy one-liners give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from engine.chem.filters import binomial5, block_mean, pad2d, shift_max

RNG = np.random.default_rng(11)
SHAPES = [(1, 1), (1, 7), (9, 1), (13, 17), (64, 48)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 12])
def test_running_max_and_min_equal_scipy(shape, size):
    a = RNG.normal(size=shape).astype(np.float32)
    for axis in (0, 1):
        # centred window: scipy puts the extra sample of an even window before the centre, as here
        np.testing.assert_array_equal(shift_max(a, size, axis), ndimage.maximum_filter1d(a, size, axis, mode="nearest"))
        np.testing.assert_array_equal(shift_max(a, size, axis, np.minimum),
                                      ndimage.minimum_filter1d(a, size, axis, mode="nearest"))


@pytest.mark.parametrize("shape", SHAPES)
def test_binomial_smoothing_equals_scipy(shape):
    a = RNG.normal(size=shape).astype(np.float32)
    w = np.array([1, 4, 6, 4, 1], np.float64) / 16
    ref = ndimage.correlate1d(ndimage.correlate1d(a.astype(np.float64), w, 1, mode="nearest"), w, 0, mode="nearest")
    np.testing.assert_allclose(binomial5(a), ref, rtol=1e-5, atol=1e-6)
    u = RNG.integers(0, 60000, shape).astype(np.uint16)
    ref = ndimage.correlate1d(ndimage.correlate1d(u.astype(np.float64), w, 1, mode="nearest"), w, 0, mode="nearest")
    np.testing.assert_allclose(binomial5(u), ref, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_padding_equals_np_pad(shape):
    a = RNG.normal(size=shape).astype(np.float32)
    widths = ((2, 0), (1, 3))
    np.testing.assert_array_equal(pad2d(a, widths), np.pad(a, widths, mode="edge"))
    np.testing.assert_array_equal(pad2d(a, widths, -np.inf), np.pad(a, widths, constant_values=-np.inf))


@pytest.mark.parametrize("f", [1, 2, 3, 4])
def test_block_mean_equals_reshape_mean_with_edges_replicated(f):
    for shape in [(12, 12), (13, 10), (5, 7)]:
        a = RNG.normal(size=shape).astype(np.float32)
        H, W = -(-shape[0] // f) * f, -(-shape[1] // f) * f
        p = np.pad(a, ((0, H - shape[0]), (0, W - shape[1])), mode="edge").astype(np.float64)
        ref = p.reshape(H // f, f, W // f, f).mean(axis=(1, 3))
        np.testing.assert_allclose(block_mean(a, f), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (40, 57), (86, 86), (300, 20)])
@pytest.mark.parametrize("sigma", [0.7, 3.0, 5.0, 12.0])
def test_gaussian_smoothing_equals_scipy(shape, sigma):
    """Matrix products (small maps) or the separable filter (large): scipy's reflect-mode Gaussian,
    also when the kernel is wider than the map (the reflection repeats)."""
    from engine.chem.filters import gaussian_matrix, gaussian_smooth

    a = RNG.normal(size=shape).astype(np.float32)
    ref = ndimage.gaussian_filter(a.astype(np.float64), sigma)
    got = gaussian_smooth(a, sigma)
    assert got.dtype == np.float32 and got.shape == a.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    x = RNG.normal(size=shape[0])
    np.testing.assert_allclose(gaussian_matrix(shape[0], sigma) @ x, ndimage.gaussian_filter1d(x, sigma), atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3, 0), (4000, 61, 3), (700, 9, 0), (171, 171, 171)])
def test_row_blocked_matmul_equals_one_product(shape):
    """engine.chem.linalg.matmul splits the rows (so OpenBLAS keeps each block on the calling
    thread): the same numbers as one product, matrix or vector right-hand side."""
    from engine.chem.linalg import matmul

    m, k, n = shape
    a = RNG.normal(size=(m, k)).astype(np.float32)
    b = RNG.normal(size=(k, n) if n else k).astype(np.float32)
    # equal to float32 rounding: any summation order stays within k eps (|a| @ |b|) of the exact product
    # (a fixed 1e-5 failed at k = 171 whenever OpenBLAS ran the one product on several threads)
    bound = k * np.finfo(np.float32).eps * (np.abs(a) @ np.abs(b))
    assert np.all(np.abs(matmul(a, b).astype(np.float64) - a.astype(np.float64) @ b.astype(np.float64)) <= bound)
    assert np.all(np.abs(matmul(a, b) - a @ b) <= 2 * bound)
    assert matmul(a, b).shape == (a @ b).shape and matmul(a, b).dtype == (a @ b).dtype


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (43, 43), (86, 90), (171, 171), (300, 20), (2, 43, 43), (2, 86, 86)])
@pytest.mark.parametrize("mode", ["reflect", "nearest", "constant"])
def test_gaussian_filter_equals_scipy_in_every_mode(shape, mode):
    """engine.chem.filters.gaussian_filter (the vacuum check's and the overlayer check's smoothing):
    dense products on small maps, banded ones on larger maps, ndimage above MATRIX_MAX_SIDE, a (S, h, w)
    stack map by map; scipy's Gaussian in the same mode, also when the kernel is wider than the map."""
    from engine.chem.filters import gaussian_filter, gaussian_matrix

    for sigma in (0.7, 2.08, 3.3, 5.0):
        a = RNG.normal(size=shape).astype(np.float32)
        flat = a.reshape((-1,) + shape[-2:])
        ref = np.stack([ndimage.gaussian_filter(m.astype(np.float64), sigma, mode=mode) for m in flat]).reshape(shape)
        got = gaussian_filter(a, sigma, mode)
        assert got.dtype == np.float32 and got.shape == a.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        x = RNG.normal(size=shape[-2])
        np.testing.assert_allclose(gaussian_matrix(shape[-2], sigma, mode=mode) @ x,
                                   ndimage.gaussian_filter1d(x, sigma, mode=mode), atol=1e-12)
