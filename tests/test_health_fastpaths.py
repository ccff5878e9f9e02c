"""The health monitor's per-frame statistics take shortcuts on 8/16-bit frames (issue 20): the
same numbers as the straightforward numpy expressions they replace."""

from __future__ import annotations

import numpy as np
import pytest

from engine.chem.noise import noise_sigma
from engine.health.monitor import _block4_mean, _noise_sigma


def _noise_sigma_plain(img):
    a = np.asarray(img[::8, :], np.float64)
    d = np.diff(a, axis=1).ravel()
    if not len(d):
        return 0.0
    return float(np.median(np.abs(d - np.median(d)))) * 1.4826 / np.sqrt(2.0)


def _immerkaer_plain(a):
    a = np.asarray(a, np.float64)
    lap = (a[:-2, :-2] - 2 * a[:-2, 1:-1] + a[:-2, 2:] - 2 * a[1:-1, :-2] + 4 * a[1:-1, 1:-1] - 2 * a[1:-1, 2:]
           + a[2:, :-2] - 2 * a[2:, 1:-1] + a[2:, 2:])
    return float(np.sqrt(np.pi / 2.0) * np.mean(np.abs(lap)) / 6.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_noise_estimates_and_block_means_equal_the_plain_expressions(dtype):
    rng = np.random.default_rng(4)
    for _ in range(40):
        H, W = (int(v) for v in rng.integers(3, 140, 2))
        top = {np.uint8: 255, np.int16: 3000}.get(dtype, 60000)
        img = rng.integers(0, int(rng.choice([3, top])), (H, W)).astype(dtype)
        if dtype == np.int16:
            img -= 1000
        assert _noise_sigma(img) == _noise_sigma_plain(img)
        assert noise_sigma(img) == pytest.approx(_immerkaer_plain(img), rel=1e-12, abs=1e-12)
        H4, W4 = H // 4 * 4, W // 4 * 4
        if H4 and W4:
            a = img[:H4, :W4]
            np.testing.assert_array_equal(_block4_mean(a), a.reshape(H4 // 4, 4, W4 // 4, 4).mean(axis=(1, 3),
                                                                                                 dtype=np.float64))
