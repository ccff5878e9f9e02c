"""engine/chem/quantile.py gives numpy's median / percentile / nanmedian bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine.chem.quantile import median, nanmedian, percentile


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_numbers_as_numpy(dtype):
    rng = np.random.default_rng(7)
    for trial in range(120):
        n = int(rng.integers(1, 40)) if trial % 2 else int(rng.integers(1, 2500))
        x = (rng.normal(size=n) * rng.uniform(0.1, 100)).astype(dtype)
        if trial % 5 == 0:
            x = np.round(x)                                # ties
        for q in (75, 50, 25, 1, 95, 100, 0):
            assert percentile(x, q) == float(np.percentile(x, q)), (n, q)
        assert median(x) == float(np.median(x)), n
        y = x.copy()
        y[rng.random(n) < 0.2] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = float(np.nanmedian(y))
        got = nanmedian(y)
        assert got == want or (np.isnan(got) and np.isnan(want)), n


def test_nan_and_other_types():
    assert np.isnan(median(np.array([1.0, np.nan, 2.0])))
    assert np.isnan(percentile(np.array([1.0, np.nan], np.float32), 75))
    assert np.isnan(nanmedian(np.array([np.nan, np.nan])))
    assert median(np.array([3, 1, 2])) == 2.0                 # integers: numpy's own
    assert percentile(np.array([1, 2, 3, 4]), 75) == float(np.percentile([1, 2, 3, 4], 75))


def test_several_percentiles_at_once():
    from engine.chem.quantile import percentiles

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100, 4096):
        x = rng.normal(size=n) * 50
        assert percentiles(x, (1.0, 99.0)) == tuple(float(v) for v in np.percentile(x, (1.0, 99.0)))
        assert percentiles(x, (25, 50, 75)) == tuple(float(v) for v in np.percentile(x, (25, 50, 75)))
    # float32 (the network's normalisation levels): numpy interpolates the array's neighbours' difference in
    # float32 and the rest in float64 when q is a sequence; a strided 2D view as the normaliser passes it
    for n in (1, 2, 50, 4096):
        f32 = (rng.normal(size=n) * 30 + 7).astype(np.float32)
        assert percentiles(f32, (1.0, 95.0)) == tuple(float(v) for v in np.percentile(f32, (1.0, 95.0)))
    img = rng.normal(size=(128, 128)).astype(np.float32)[::2, ::2]
    assert percentiles(img, (1.0, 95.0)) == tuple(float(v) for v in np.percentile(img, (1.0, 95.0)))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
def test_percentile_of_integers(dtype):
    rng = np.random.default_rng(9)
    for _ in range(200):
        n = int(rng.integers(1, 3000))
        x = rng.integers(0, 250, n).astype(dtype)
        for q in (0.1, 1, 50, 75, 99.9):
            assert percentile(x, q) == float(np.percentile(x, q)), (n, q)
