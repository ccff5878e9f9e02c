"""The atom finder's peak picking (engine.chem.atoms._peaks, rewritten for speed in issue 20) against
a plain implementation of its three documented rules on random maps with plateaus and close maxima."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from engine.chem.atoms import _peaks, _resolve_conflicts


def plain_peaks(smooth, pa, threshold, min_sep_px):
    h, w = smooth.shape
    half = max(1, int(0.5 * min_sep_px))
    mx = ndimage.maximum_filter(smooth, size=2 * half + 1, mode="nearest")
    mask = (smooth >= mx) & (pa >= threshold)
    cand = [(r, c) for r, c in zip(*np.nonzero(mask))]          # raster order
    keep = []
    for r, c in cand:                                           # rule 2: last of a touching plateau
        later = [(r, c + 1), (r + 1, c - 1), (r + 1, c), (r + 1, c + 1)]
        if not any(0 <= rr < h and 0 <= cc < w and mask[rr, cc] and smooth[rr, cc] == smooth[r, c]
                   for rr, cc in later):
            keep.append((r, c))
    rc = np.array(keep, np.int64).reshape(-1, 2)
    i, j = [], []                                               # rule 3: closer than min_sep, outside the square
    for a in range(len(rc)):
        for b in range(a + 1, len(rc)):
            dr, dc = rc[b] - rc[a]
            if dr * dr + dc * dc < min_sep_px ** 2 and max(abs(dr), abs(dc)) > half:
                i.append(a)
                j.append(b)
    val = smooth[rc[:, 0], rc[:, 1]].astype(np.float64)
    return rc[_resolve_conflicts(len(rc), np.array(i, np.int64), np.array(j, np.int64), val)]


@pytest.mark.parametrize("seed", range(6))
def test_peaks_follow_the_three_rules(seed):
    rng = np.random.default_rng(seed)
    h, w = 40, 53
    s = ndimage.gaussian_filter(rng.random((h, w)), 1.2).astype(np.float32)
    s = np.round(s * rng.choice([20, 200, 5000])) / 5000           # coarse levels: plateaus and ties
    s = s.astype(np.float32)
    pa = rng.random((h, w)).astype(np.float32) * 0.4 + 0.4
    for min_sep in (2.5, 4.25, 6.0):
        got = _peaks(s, pa, 0.5, min_sep)
        want = plain_peaks(s, pa, 0.5, min_sep)
        np.testing.assert_array_equal(got, want)
