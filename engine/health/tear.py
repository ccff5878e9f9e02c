"""Scan tears and line jumps: a band of rows (or every row below one) shifted sideways by a few pixels.

A one-frame acquisition glitch of the scan (the beam jumps along x for a run of lines): the atoms in
the band are displaced by 0.1-0.5 A with no change in the sample. Two cheap tests, both needed:

* :func:`row_shift_candidates` (raw pixels, in :meth:`engine.health.HealthMonitor.before`): the x shift
  that best maps the mean of the ``m`` rows above each row boundary onto the mean of the ``m`` rows
  below it (least squares over integer lags -4..4, refined by a parabola; rows smoothed along x first).
  Graphene's rows change little over ~0.3 A, so a boundary with a sideways step of >= 1.6 px (and
  >= 0.15 A) is a candidate. Alone this test also fires on noisy low-dose frames, where the lattice's
  own row-to-row change projected onto x reaches 1.5-2 px.
* :func:`bond_step_profile` (the atoms found, in :meth:`engine.health.HealthMonitor.after`): for every
  row boundary, the mean x offset of the lower end of each bond that crosses it, against the frame's
  median bond of the same orientation (strain and in-frame drift shear every bond alike and cancel).
  A tear shifts exactly the bonds that cross its edge. A candidate is a tear when this profile shows
  at least half its step (>= 0.8 px and >= 0.08 A), with the same sign, on at least 2 row boundaries
  within 4 rows of it (a one-row spike is one odd bond, not a shifted band).

A single shifted row (the scan's ordinary line jitter) moves no atom centroid and gives no candidate:
``m`` rows are averaged on each side. Vectorised: block means by a cumulative sum, nine lags, bincounts.
"""

from __future__ import annotations

import numpy as np

#: lags searched (px, plus one spare step): a tear of up to 3 px has its best match inside the range;
#: a boundary whose best match is at the range's end (noise) is no candidate
MAX_LAG_PX = 4
#: the rows compared on each side of a boundary span about this much (A)
BLOCK_A = 0.3
#: columns compared at most (the central ones)
MAX_COLUMNS = 512
#: the atom test must show at least this fraction of the pixel test's thresholds
BOND_FRACTION = 0.5
#: ... within this many rows of the candidate
CONFIRM_ROWS = 4
#: ... on at least this many row boundaries (a tear's edge is crossed by bonds over ~a bond's height;
#: one row's spike of the profile is a single misplaced atom, e.g. a merged pair on FP32 maps)
CONFIRM_MIN_ROWS = 2


def row_shift_profile(img: np.ndarray, pixel_size_A: float) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, shift_px)``: for each row boundary ``r`` (between rows r-1 and r) the x shift (px) of
    the ``m`` rows below relative to the ``m`` rows above (``m`` rows span ~``BLOCK_A``). ``img`` (H, W)
    finite; at most its central ``MAX_COLUMNS`` columns are used. Frames sampled finer than 0.15 A/px
    are compared at half the columns (pairs summed, then smoothed [1, 2, 1]: ~0.15 A at 0.1 A/px);
    coarser ones at full width, smoothed [1, 2, 1]."""
    ps = float(pixel_size_A)
    H, W = np.shape(img)
    c0 = max(0, (W - MAX_COLUMNS) // 2)                      # a tear spans the whole width: the central
    a = np.asarray(np.asarray(img)[:, c0:c0 + MAX_COLUMNS], np.float32)   # columns bound the cost
    W = a.shape[1]
    dec = 2 if ps <= 0.15 else 1
    L = MAX_LAG_PX // dec + 1                                # lags in (decimated) columns, one spare
    m = max(1, int(round(BLOCK_A / ps)))
    if H < 2 * m + 2 or W < 16 * MAX_LAG_PX:
        return np.zeros(0, np.int64), np.zeros(0)
    if dec == 2:
        n = W // 2
        a = a[:, 0:2 * n:2] + a[:, 1:2 * n:2]
    a = a[:, :-2] + 2.0 * a[:, 1:-1] + a[:, 2:]             # smooth along x: keeps the lattice, drops noise
    a -= a.mean(axis=1, keepdims=True)                       # line gain and dose changes drop out
    Wd = a.shape[1]
    S = a[:H - m + 1].copy()                                 # S[j]: sum of rows j .. j+m-1
    for i in range(1, m):
        S += a[i:H - m + 1 + i]
    r = np.arange(m, H - m + 1)
    above, below = S[:len(r)], S[m:m + len(r)]               # rows r-m .. r-1 and r .. r+m-1
    core = below[:, L:Wd - L]
    E = np.empty((2 * L + 1, len(r)), np.float32)
    for i, s in enumerate(range(-L, L + 1)):                 # sum over x of (below(x) - above(x - s))^2
        d = core - above[:, L - s:Wd - L - s]
        E[i] = np.einsum("ij,ij->i", d, d)
    k0 = np.argmin(E, axis=0)
    k = np.clip(k0, 1, 2 * L - 1)
    j = np.arange(len(r))
    em, e0, ep = E[k - 1, j], E[k, j], E[k + 1, j]
    den = em - 2.0 * e0 + ep
    frac = np.where(den > 0, 0.5 * (em - ep) / np.where(den > 0, den, 1.0), 0.0)
    u = dec * ((k - L) + np.clip(frac, -0.5, 0.5))
    u[(k0 == 0) | (k0 == 2 * L)] = 0.0                       # no minimum inside the range: noise, no step
    return r, u


def row_shift_candidates(img: np.ndarray, pixel_size_A: float, min_shift_px: float = 1.6,
                         min_shift_A: float = 0.15, max_candidates: int = 8) -> tuple:
    """Row boundaries where the rows below are shifted sideways by at least ``max(min_shift_px,
    min_shift_A / pixel_size_A)`` against the rows above: ``((row, shift_px), ...)``, largest first
    (local maxima, at most ``max_candidates``). () when the pixel size is unknown."""
    ps = float(pixel_size_A)
    if not (np.isfinite(ps) and ps > 0):
        return ()
    r, u = row_shift_profile(img, ps)
    thr = max(float(min_shift_px), float(min_shift_A) / ps)
    if not len(u) or thr >= MAX_LAG_PX:
        return ()
    big = np.flatnonzero(np.abs(u) >= thr)
    out: list = []
    for i in big[np.argsort(-np.abs(u[big]))]:
        if all(abs(int(r[i]) - row) > CONFIRM_ROWS for row, _ in out):
            out.append((int(r[i]), float(u[i])))
            if len(out) >= max_candidates:
                break
    return tuple(out)


def bond_step_profile(xy_px: np.ndarray, bonds: np.ndarray, n_rows: int, pixel_size_A: float,
                      min_bonds: int = 6, max_off_A: float = 0.5) -> np.ndarray:
    """For each row boundary r (0..n_rows-1): the mean x offset (px) of the lower atom of every bond
    crossing it, relative to the upper atom and the frame's median bond of that orientation (bonds off
    it by more than ``max_off_A``, defects' and misfits', left out), minus the profile's median; nan
    where fewer than ``min_bonds`` bonds cross. All nan when there are too few bonds."""
    out = np.full(int(n_rows), np.nan)
    xy = np.asarray(xy_px, np.float64)
    b = np.asarray(bonds, np.int64).reshape(-1, 2)
    if len(b) < 30 or n_rows < 1:
        return out
    v = xy[b[:, 1]] - xy[b[:, 0]]
    th = np.arctan2(v[:, 1], v[:, 0])
    th0 = float(np.angle(np.exp(6j * th).sum())) / 6.0             # the lattice's bond directions mod 60 deg
    g = np.rint((th - th0) / (np.pi / 3)).astype(np.int64) % 3
    ang = th0 + g * (np.pi / 3)
    v[(v[:, 0] * np.cos(ang) + v[:, 1] * np.sin(ang)) < 0] *= -1   # one sense per orientation
    order = np.argsort(g, kind="stable")
    bounds = np.searchsorted(g[order], [0, 1, 2, 3])
    med = np.zeros((3, 2))
    for k in range(3):
        sel = order[bounds[k]:bounds[k + 1]]
        if len(sel):
            med[k] = np.median(v[sel], axis=0)
    dv = v - med[g]
    step = dv[:, 0] * np.sign(v[:, 1])                               # lower end minus upper end, along x
    y = xy[b, 1]
    lo = np.clip(np.ceil(y.min(1) + 0.5).astype(np.int64), 0, n_rows)
    hi = np.clip(np.ceil(y.max(1) + 0.5).astype(np.int64), 0, n_rows)
    keep = (hi > lo) & (np.abs(dv).max(axis=1) < max_off_A / float(pixel_size_A))
    S = np.cumsum(np.bincount(lo[keep], step[keep], n_rows + 1) - np.bincount(hi[keep], step[keep], n_rows + 1))
    N = np.cumsum(np.bincount(lo[keep], None, n_rows + 1) - np.bincount(hi[keep], None, n_rows + 1))
    S, N = S[:n_rows], N[:n_rows]
    ok = N >= min_bonds
    if ok.sum() < 10:
        return out
    out[ok] = S[ok] / N[ok]
    return out - np.nanmedian(out)


def confirm_tear(candidates, xy_px, bonds, n_rows: int, pixel_size_A: float, min_shift_px: float = 1.6,
                 min_shift_A: float = 0.15):
    """The first candidate ``(row, shift_px)`` that the atoms confirm (see the module docstring), or None."""
    if not candidates:
        return None
    ps = float(pixel_size_A)
    prof = bond_step_profile(xy_px, bonds, n_rows, ps)
    if not np.isfinite(prof).any():
        return None
    thr = BOND_FRACTION * max(float(min_shift_px), float(min_shift_A) / ps)
    for row, shift in candidates:
        w = prof[max(0, row - CONFIRM_ROWS):row + CONFIRM_ROWS + 1]
        w = w[np.isfinite(w)]
        if np.count_nonzero(w * np.sign(shift) >= thr) >= CONFIRM_MIN_ROWS:
            return int(row), float(shift)
    return None
