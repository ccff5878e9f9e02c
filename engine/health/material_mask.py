"""Where the graphene lattice is in a frame the material verdict calls graphene (engine.health.material).

:func:`graphene_mask` demodulates the first-order spots of the lattice found (and strong spots of
other grains on the same ring) on a coarse grid, divides their summed power by the noise expected in
each cell (the ring's diffuse level over the window bins, shaped by the Hann window) and averages
over 3 x 3 cells. Cells at the noise level and far below the field's graphene level, in groups,
covering >= 6 % of the field, fall outside; the region is then grown by two cells (edge atoms). A
whole graphene field gets None and fraction 1.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from engine.health.material_spectrum import Spectrum, full_bins


#: Mask: a coarse cell lies outside the graphene region when its lattice signal is below
#: MASK_REL of the field's graphene level (its 75th percentile) or below MASK_NOISE times the noise;
#: the frame gets a mask only when such cells (in groups of at least MASK_MIN_CELLS) cover at least
#: MASK_MIN_EMPTY of it (else: all graphene, no mask).
MASK_REL = 0.15
MASK_NOISE = 1.5
MASK_SURE = 8.0           # a field whose graphene level (75th percentile) is below this gets no mask
MASK_MIN_CELLS = 3
MASK_MIN_EMPTY = 0.06
MASK_MIN_OUT = 0.1         # ... and the grown region must still leave out this much of the field
MASK_MIN_GRID = 8          # the grid has 2 x (a third of the first-order spots' radius in bins, <= 8) cells a side
OTHER_NOTCH_BINS = 3.0     # another crystal's reflections: bins within max(this, OTHER_NOTCH_REL |g|) left out
OTHER_NOTCH_REL = 0.1
OTHER_SURE = 8.0           # another crystal's part: cells where its first-order spots stand this far over the noise ...
OTHER_REL = 0.1            # ... and at least this fraction of its 95th percentile cell (and over graphene's own)
GRAIN_Q = 12.0             # a spot on graphene's first-order ring this far above the ring level is another grain's


@functools.lru_cache(maxsize=16)
def _mask_geometry(n: int, h: int, w: int):
    """Coarse n x n grid: the Hann window at the cells' centres, and for every cell the index of the
    nearest cell where the window leaves enough signal (edge cells take that cell's value)."""
    gy = (np.arange(n) + 0.5) / n
    win = np.outer(0.5 - 0.5 * np.cos(2 * np.pi * gy), 0.5 - 0.5 * np.cos(2 * np.pi * gy))
    valid = win >= 0.12
    if valid.all() or not valid.any():
        idx = np.indices((n, n))
    else:
        idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    for a_ in (win, idx):
        a_.setflags(write=False)
    return win, idx


def _demodulated(S: Spectrum, ks: np.ndarray, m: int, notch=None) -> np.ndarray:
    """The spots ``ks`` ((K, 2) signed bins) demodulated on a 2m x 2m grid (windows of 2m bins a side around
    each): their summed power over the noise expected in each cell (the windows' diffuse level, shaped by
    the Hann window), averaged over 3 x 3 cells. ``notch``: (K, 2) signed bins of reflections whose
    surroundings (max(OTHER_NOTCH_BINS, OTHER_NOTCH_REL |g|)) are left out of the windows."""
    h, w = S.h, S.w
    n = 2 * m
    o = np.fft.ifftshift(np.arange(-m, m))           # window offsets in ifft order (no shift needed)
    cy = np.rint(ks[:, 0]).astype(np.int64)[:, None, None] + o[None, :, None]
    cx = np.rint(ks[:, 1]).astype(np.int64)[:, None, None] + o[None, None, :]
    sub = full_bins(S.F, cy, cx)
    keep = np.ones(sub.shape, bool)
    if notch is not None and len(notch):
        g = np.asarray(notch, float).reshape(-1, 2)
        g = np.vstack([g, -g])
        rad = np.maximum(OTHER_NOTCH_BINS, OTHER_NOTCH_REL * np.hypot(g[:, 0], g[:, 1]))
        # only the reflections that reach a window can leave anything out: a lower bound of each one's distance
        # to each window's box of bins, with half a bin to spare, skips the others (the same bins are left out)
        y0, y1 = cy.min(axis=(1, 2)), cy.max(axis=(1, 2))
        x0, x1 = cx.min(axis=(1, 2)), cx.max(axis=(1, 2))
        ddy = np.maximum(0.0, np.maximum(y0[None, :] - g[:, :1], g[:, :1] - y1[None, :]))
        ddx = np.maximum(0.0, np.maximum(x0[None, :] - g[:, 1:], g[:, 1:] - x1[None, :]))
        reach = (np.hypot(ddy, ddx) <= rad[:, None] + 0.5).any(axis=1)
        for gy, gx, r in zip(g[reach, 0], g[reach, 1], rad[reach]):
            keep &= np.hypot(cy - gy, cx - gx) > r
        sub = np.where(keep, sub, 0)
    env = sfft.ifft2(sub, axes=(1, 2), workers=1)
    env2 = (env.real * env.real + env.imag * env.imag).sum(0)
    # noise expected per cell: each window's diffuse level (ring level of the trimmed log-mean, whose
    # exp is ~0.56 of the mean power of noise), spread over n^2 cells, shaped by the window
    iy, ix = cy % h, cx % w
    lev = S.ring[S.Rf[iy, ix]]
    lev = np.where(np.isfinite(lev) & keep, lev, 0.0).sum() / 0.56 / float(n) ** 4
    win, idx = _mask_geometry(n, h, w)
    w2 = win * win                                   # signal and noise power both go with the window^2
    score = env2 / np.maximum(lev * w2 / np.mean(w2), 1e-300)
    score = score[idx[0], idx[1]]
    # cells of a few unit cells' worth of spots are noisy: judge each with its 3 x 3 neighbours
    return ndimage.uniform_filter(score, 3, mode="nearest")


def graphene_mask(S: Spectrum, spots, shape, other=None):
    """Where the graphene lattice is, or None for the whole field (module docstring): the first-order
    spots of the lattice found and of other graphene grains (strong spots on the same ring)
    demodulated on a coarse grid, their summed power over the noise expected there.

    ``other``: (K, 2) signed bins of the reflections of another crystal in the field (a MoS2 flake beside
    the graphene), its three first-order spots first. Its spots, thousands of times the noise and smeared
    by strain, reach into graphene's windows (they are left out of them), and its heavier, brighter part
    of the field raises graphene's windows there all the same (a MoS2 flake at 0.15 A/px scored 20-74
    against graphene's own 2-5): the other crystal's part is mapped by its own first-order spots and lies
    outside the graphene region wherever its lattice is clearly there (>= OTHER_SURE over the noise, >=
    OTHER_REL of its strongest cells) and stronger than graphene's."""
    h, w = S.h, S.w
    spots = [np.asarray(k, float) for k in spots]
    r1 = float(np.mean([np.hypot(*(k * S.scale)) for k in spots])) * max(h, w)
    # other grains: local maxima of exp(Q) on the same ring, >= GRAIN_Q, away from the known spots
    kmin = min(np.hypot(*(k * S.scale)) for k in spots) * max(h, w)
    m = int(max(2, min(8, kmin // 2)))
    n = 2 * m
    if n < MASK_MIN_GRID:
        return None, 1.0                             # spots too close to the origin to map the field
    extra = _grain_spots(S, spots, r1)
    ks = np.array(spots + extra, float)
    score = _demodulated(S, ks, m, other)
    crystal = np.zeros(score.shape, bool)
    if other is not None and len(other) >= 3:
        so = _demodulated(S, np.asarray(other, float)[:3], m)
        top_o = float(np.percentile(so, 95))
        crystal = (so >= OTHER_SURE) & (so >= OTHER_REL * top_o) & (so > score)
    flat = score[~crystal] if crystal.any() else score.ravel()
    top = float(np.partition(flat, (3 * len(flat)) // 4)[(3 * len(flat)) // 4]) if len(flat) else 0.0   # 75th pct
    if top < MASK_SURE and not crystal.any():
        return None, 1.0                             # too faint to map: the whole field
    empty = ((score < MASK_NOISE) & (score < MASK_REL * top)) | crystal   # at the noise level, far below the graphene
    if empty.mean() < MASK_MIN_EMPTY:
        return None, 1.0
    lab, nlab = ndimage.label(empty)
    if nlab:
        sizes = np.bincount(lab.ravel(), minlength=nlab + 1)
        small = sizes < MASK_MIN_CELLS
        small[0] = False
        empty &= ~small[lab]
    if empty.mean() < MASK_MIN_EMPTY:
        return None, 1.0
    # keep the region's edge atoms (and undo the spread of the 3 x 3 judgement into the graphene); not into
    # the other crystal beyond its rim cells
    coarse = ndimage.binary_dilation(~empty, iterations=2)
    if crystal.any():
        coarse &= ~crystal
    frac = float(coarse.mean())
    if frac > 1.0 - MASK_MIN_OUT:
        return None, 1.0                             # a corner or a rim: not worth dropping atoms for
    H, W = shape
    if H % n == 0 and W % n == 0:                    # (the same cells, without two gathers over the frame)
        return np.repeat(np.repeat(coarse, H // n, axis=0), W // n, axis=1), frac
    ry = np.minimum((np.arange(H) * n) // H, n - 1)
    rx = np.minimum((np.arange(W) * n) // W, n - 1)
    return coarse[ry][:, rx], frac


def _grain_spots(S: Spectrum, spots, r1: float, most: int = 6) -> list:
    """Strong spots of other graphene grains: bins of the half plane on the first-order ring
    (|k| within 5 % of r1) with exp(Q) >= GRAIN_Q, local maxima, away from the lattice's own spots."""
    R = int(np.ceil(r1 * 1.05 + 2)) * max(S.h, S.w) // min(S.h, S.w) + 1
    rows = np.r_[0:min(R + 1, S.h // 2), S.h - min(R, S.h // 2 - 1):S.h]
    cols = slice(0, min(R + 1, S.Q.shape[1]))
    band = np.abs(S.rh[rows, cols] - r1) <= max(1.5, 0.05 * r1)
    by, ix = np.nonzero(band)
    iy = rows[by]
    q = S.Q[iy, ix]
    keep = q >= np.float32(np.log(GRAIN_Q))
    if not keep.any():
        return []
    iy, ix, q = iy[keep], ix[keep], q[keep]
    o = np.argsort(q)[::-1][:40]
    ks = np.stack([(iy[o] + S.h // 2) % S.h - S.h // 2, ix[o]], axis=1).astype(float)
    own = np.array([np.asarray(k, float) for k in spots])
    own = np.vstack([own, -own])
    sep = max(3.0, 0.08 * r1)
    n = max(S.h, S.w)

    def dist(a, b):
        return np.hypot(*((a[:, None, :] - b[None, :, :]) * S.scale).transpose(2, 0, 1)) * n

    ks = ks[(dist(ks, own) > sep).all(axis=1)]
    if not len(ks):
        return []
    close = (dist(ks, ks) <= sep) | (dist(ks, -ks) <= sep)
    out, free = [], np.ones(len(ks), bool)
    for i in range(len(ks)):                          # strongest first; each takes its neighbours
        if free[i]:
            out.append(ks[i])
            free &= ~close[i]
            if len(out) >= most:
                break
    return out
