"""Fine sampling: graphene's lattice in a field of a few unit cells (engine.health.material).

A 512 px frame at 0.03-0.07 A/px is 15-36 A wide: graphene's first-order ({10-10}) spots lie 7-17
bins from the origin of its spectrum. The verdict's windowed FFT (a periodic Hann window) spreads
each spot over 2-3 bins and weights the field's edges down, and with clutter of the columns' own size
(a hole's or a contamination patch's edges) the spots of a faint lattice stay at the noise there.

This test reads the same spots without a window, at exact (non-integer) frequencies: the frame
(high-passed at ~ the lattice constant, bright outliers clipped) is transformed by direct DFT on a
half-bin grid over the first-order annulus of lattice constants FINE_A_PX (two small real matrix
products), each bin divided by its ring's level (log-mean x e^gamma, the median of pure noise power).
Hexagons of three spots at 0/60/120 degrees are scored on a polar grid (geometric mean of the three;
the best one wins), its spots are refined to a quarter bin, and the bispectrum F(k1) F(k2) F(-(k1 + k2))
at those exact frequencies gives the sublattice ratio as in ``material._rho`` (translation invariant,
and the phase is untouched by the choice of the hexagon, which maximises power only). Evaluating the
transform at the reciprocal lattice points is the same as folding the frame onto one unit cell
(motif averaging) and reading the motif's first Fourier components.

A hexagon whose phase says "one sublattice" (ratio < 0.3) may be graphene's {11-20} spots (sharp
probe): its first order at 1/sqrt(3) the radius, 30 degrees off, is then measured instead (the best hexagon
within VIA_LOBE_BINS of that prediction at the {11-20} radius: where the grid puts a faint hexagon is good to
about its spots' main lobe).

Graphene when the hexagon stands out (score >= FINE_SCORE: on 320 amorphous and vacuum development
frames at 0.03-0.08 A/px the best noise hexagon scored 2.7 in the median, at most 5.0) with equal
sublattices (ratio >= FINE_RHO, >= FINE_RHO_WEAK for a hexagon below FINE_SCORE_SURE; simulated hBN
measured <= 0.63, MoS2 and WS2 <= 0.14).

Two looser uses, decided in ``material.classify_material`` by what the windowed spectrum saw: a frame it
calls vacuum (nothing else above the noise) needs only FINE_SCORE_VACUUM with a ratio >= FINE_RHO_VACUUM;
a frame it calls amorphous or not graphene is also searched half by half (:func:`fine_hexagon_parts`,
FINE_PART_SCORE, FINE_PART_RHO): graphene over half the field beside a contamination patch or a hole.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from engine.health.material_spectrum import sublattice_ratio

FINE_A_PX = (25.0, 100.0)    # lattice constants searched, frame px (graphene at 0.025-0.098 A/px; from 30 px until
                             # 2026-12-03: graphene at 0.087-0.090 A/px whose windowed spectrum shows only {11-20} was lost)
FINE_A_EDGE = 0.95           # a hexagon found at the finest a searched may refine to this much finer (its spots move up
                             # to a bin: ~5 % there); graphene with a hole at 0.084 A/px (a = 29.3 px, 11.7, ratio 1.00)
                             # was lost on it
FINE_SCORE = 6.0             # hexagon score (geometric mean of the 3 spots' power over their ring's level)
FINE_SCORE_SURE = 10.0
FINE_RHO = 0.75              # sublattice ratio at least this (hBN <= 0.63 on the development frames)
FINE_RHO_WEAK = 0.72         # ... below FINE_SCORE_SURE (graphene at 6-10 measured 0.73-0.79 on 8 development frames)
FINE_ALT_FRACTION = 0.1     # ... and this fraction of that hexagon's (a strong WS2 lattice of 59 px, 220, gave 4.4 at
                             # 30 degrees off: noise; graphene's first order measured 0.2-0.9 of its {11-20})
FINE_ALT_SCORE = 4.0         # the first order found through a {11-20} hexagon (score >= FINE_SCORE) at least this
VIA_LOBE_BINS = 1.0          # ... searched within this many bins (the {11-20} spots' main lobe without a window: where
                             # the grid puts a faint hexagon's maximum) of where that hexagon predicts it (radius / sqrt 3,
                             # 30 degrees on); read at the one predicted point, graphene grains at 0.031 A/px (C-atom SNR
                             # 2.2, a sharp 0.76 A probe) scored 3.6 there and 5.0 three degrees on
FINE_SCORE_VACUUM = 4.5      # a frame the windowed spectrum calls vacuum: its noise is all a hexagon competes with
FINE_RHO_VACUUM = 0.80       # ... with clearly equal sublattices
FINE_PART_SCORE = 20.0       # one half of the field (the rest clutter: a contamination patch, a hole's edges)
FINE_PART_RHO = 0.85         # ... with clearly equal sublattices
FINE_MIN_BINNED_PX = 12.0    # the frame is binned further while the finest lattice keeps this many px per a
LEVEL_SMOOTH = 0.3           # the lattice-level part of the field (fine_hexagon_level): smoothing, x the widest a searched
LEVEL_MAD = 3.0              # ... within this many robust std of the smoothed frame's median
LEVEL_WHOLE = 0.97           # ... searched only when it leaves out more than 3 % of the field
LEVEL_MIN = 0.3              # ... and keeps at least this fraction
_STEP = 0.5                  # DFT grid step (bins)
FINE_LOCAL = 5.0             # bins a side of the surroundings each DFT bin is compared with
_GAMMA = 0.5772156649


def _binned_fine(img: np.ndarray, b: int) -> tuple[np.ndarray, int]:
    """``img`` (binned by ``b``) binned 2 x 2 further while the finest lattice searched keeps
    2 FINE_MIN_BINNED_PX px per a; returns (frame, its binning)."""
    x = np.asarray(img, np.float32)
    while FINE_A_PX[0] / b >= 2 * FINE_MIN_BINNED_PX and min(x.shape) >= 128:
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h:2, :w:2] + x[1:h:2, :w:2] + x[:h:2, 1:w:2] + x[1:h:2, 1:w:2]
        b *= 2
    return x, b


def _prepared(img: np.ndarray, b: int) -> tuple[np.ndarray, int]:
    return _clipped_highpass(*_binned_fine(img, b))


def _clipped_highpass(x: np.ndarray, b: int) -> tuple[np.ndarray, int]:
    """A frame from :func:`_binned_fine` (not modified) with bright outliers clipped and high-passed at
    ~ the finest lattice searched."""
    sub = x[::4]
    x = np.minimum(x, np.float32(float(sub.mean()) + 4.0 * float(sub.std())))
    x = x - ndimage.gaussian_filter(x, 0.5 * FINE_A_PX[0] / b, mode="reflect")
    return x, b


def _dft(x: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """The transform of ``x`` at the grid ky (rows) x kx (columns), in cycles per field (any reals)."""
    h, w = x.shape
    ay = (2 * np.pi / h) * np.outer(ky, np.arange(h))
    ax = (2 * np.pi / w) * np.outer(np.arange(w), kx)
    cy, sy = np.cos(ay).astype(np.float32), np.sin(ay).astype(np.float32)
    t = (cy @ x) - 1j * (sy @ x)                       # (ky, w)
    return t @ (np.cos(ax) - 1j * np.sin(ax))


def _ft(x: np.ndarray, f: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """The transform of ``x[rows]`` at the frequencies ``f`` ((K, 2) rows, columns; cycles per px; the
    phase refers to x's own origin)."""
    h, w = x.shape
    ex = np.exp(-2j * np.pi * np.outer(f[:, 1], np.arange(w)))
    ey = np.exp(-2j * np.pi * np.outer(f[:, 0], np.arange(h)))[:, rows]
    return (ey * (x[rows] @ ex.T).T).sum(axis=1)


def _rho(F: np.ndarray) -> float:
    return sublattice_ratio(complex(F[0] * F[1] * F[2]))


def _measure(x: np.ndarray, r: float, t0: float, sc: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Refine the spots at radius r, angles t0 and t0 + 120 degrees (a quarter bin, +-1 bin; bins of
    the shorter side, ``sc`` = (rows, columns) per such bin), and return (k1, k2, sublattice ratio of the
    whole frame, the smaller of its two halves' (top, bottom))."""
    off = np.arange(-1.0, 1.0001, 0.25)
    ks = []
    for d in (0.0, 2 * np.pi / 3):
        c = np.array([r * np.sin(t0 + d), r * np.cos(t0 + d)])
        P = np.abs(_dft(x, (c[0] + off) * sc[0], (c[1] + off) * sc[1])) ** 2
        i, j = np.unravel_index(int(np.argmax(P)), P.shape)
        ks.append(c + np.array([off[i], off[j]]))
    k1, k2 = ks
    f = np.stack([k1, k2, -(k1 + k2)]) * sc / np.array(x.shape, float)
    h2 = x.shape[0] // 2
    return k1, k2, _rho(_ft(x, f)), min(_rho(_ft(x, f, slice(None, h2))), _rho(_ft(x, f, slice(h2, None))))


def fine_accept(m: dict | None, score_min: float = FINE_SCORE, rho_min: float | None = None) -> dict | None:
    """A lattice dict (no spots: no mask; ``a_px`` in frame px, ``rho``, ``strength`` the hexagon score,
    ``fine``: True, and ``part`` when ``m`` has one) for the measurement ``m`` of :func:`fine_hexagon` (or of
    :func:`fine_hexagon_parts`) when it is graphene: a hexagon of lattice constant FINE_A_PX scoring at least
    ``score_min`` with equal sublattices (ratio >= FINE_RHO, >= FINE_RHO_WEAK below FINE_SCORE_SURE;
    ``rho_min``: at least this whatever the score), or its first order found through a one-sublattice
    {11-20} hexagon; else None."""
    if m is None:
        return None
    if m["via_11_20"]:
        # (the {11-20} hexagon stands out on its own: its first order needs less)
        ok = (m["score_11_20"] >= score_min and m["score"] >= max(FINE_ALT_SCORE, FINE_ALT_FRACTION * m["score_11_20"])
              and m["rho"] >= FINE_RHO)
    else:
        ok = m["score"] >= score_min and m["rho"] >= (FINE_RHO if m["score"] >= FINE_SCORE_SURE else FINE_RHO_WEAK)
    if rho_min is not None and m["rho"] < rho_min:
        ok = False
    if not ok or not (FINE_A_PX[0] * FINE_A_EDGE <= m["a_px"] <= FINE_A_PX[1]):
        return None
    out = {"spots": None, "a_px": m["a_px"], "rho": m["rho"], "width": float("nan"), "strength": m["score"],
           "fine": True}
    if "part" in m:
        out["part"] = m["part"]
    return out


def fine_hexagon(img: np.ndarray, b: int = 1) -> dict | None:
    """The strongest hexagon of lattice constant FINE_A_PX (frame px) in the (binned by ``b``) frame ``img``,
    measured without a window at exact frequencies: its ``score``, ``rho``, ``a_px`` (frame px),
    ``via_11_20`` (its first order was found 30 degrees off a one-sublattice hexagon of score
    ``score_11_20``), or None for a frame too small to search (:func:`fine_accept` judges it)."""
    x, b = _prepared(img, b)
    g = _grid(x, b)
    return None if g is None else _finish(x, b, g)


def level_weights(x: np.ndarray, b: int) -> np.ndarray | None:
    """Weights (0-1, the shape of ``x``, a frame binned by ``b``) of the part of the field at the lattice's
    own level: the frame smoothed over LEVEL_SMOOTH x the widest lattice searched (columns merge, so neither
    sublattice of a crystal stands out) within LEVEL_MAD robust standard deviations of its median, the
    boundary softened. None where that is (almost) the whole field (>= LEVEL_WHOLE: the plain search is the
    same) or too little of it (< LEVEL_MIN)."""
    s = ndimage.gaussian_filter(np.asarray(x, np.float32), LEVEL_SMOOTH * FINE_A_PX[1] / b)
    med = float(np.median(s))
    mad = 1.4826 * float(np.median(np.abs(s - med)))
    if not mad > 0:
        return None
    w = ndimage.gaussian_filter((np.abs(s - med) <= LEVEL_MAD * mad).astype(np.float32), 0.25 * FINE_A_PX[0] / b)
    return w if LEVEL_MIN <= float(w.mean()) < LEVEL_WHOLE else None


def fine_hexagon_level(img: np.ndarray, b: int = 1) -> dict | None:
    """:func:`fine_hexagon` over the part of the field at the lattice's own level (:func:`level_weights`):
    a hole, a bright contamination patch or a cluster of bright adatoms in a field of a few unit cells is
    left out, so neither its noise nor its edges' clutter compete with graphene's spots (graphene with a hole
    or many Si at 0.031-0.036 A/px, C-atom SNR 4.8-8.7, scored below FINE_SCORE over the whole field). The
    weighted frame is searched like the whole one; None where the weights leave out nothing (or nearly all)."""
    xb, bb = _binned_fine(img, b)
    w = level_weights(xb, bb)
    if w is None:
        return None
    x, bx = _clipped_highpass(xb, bb)
    xw = (x - np.float32(np.average(x, weights=w))) * w
    g = _grid(xw, bx)
    return None if g is None else _finish(xw, bx, g)


def fine_hexagon_parts(img: np.ndarray, b: int = 1) -> dict | None:
    """:func:`fine_hexagon` on each half of the frame (left, right, top, bottom):
    the best half's measurement with ``part`` naming it, or None. A graphene field half covered by a
    contamination patch or a hole: the clutter's power at the columns' own frequencies raises the
    whole-field transform's level around graphene's spots, while the clean half shows them clearly."""
    h, w = img.shape
    best = None
    # (each half prepared on its own: its own clipping level, so a bright patch in the other half does not set it;
    # only the half with the best hexagon on the search grid is refined and measured)
    for name, part in (("left", img[:, :w // 2]), ("right", img[:, w // 2:]), ("top", img[:h // 2]),
                       ("bottom", img[h // 2:])):
        x, bx = _prepared(part, b)
        g = _grid(x, bx)
        if g is not None and (best is None or g[0] > best[3][0]):
            best = (name, x, bx, g)
    if best is None:
        return None
    name, x, bx, g = best
    return {**_finish(x, bx, g), "part": name}


def _grid(x: np.ndarray, b: int):
    """The polar search of :func:`fine_hexagon`: (best score, radius, angle, n, (sy, sx), score function), or None."""
    h, w = x.shape
    n = min(h, w)
    # first-order radius (bins of the shorter side) of a lattice constant a: n / (a sqrt(3) / 2)
    rlo = n / (FINE_A_PX[1] / b * np.sqrt(3.0) / 2)
    rhi = n / (FINE_A_PX[0] / b * np.sqrt(3.0) / 2)
    m = int(np.ceil((1.15 * rhi + 1) / _STEP))
    ky = np.arange(-m, m + 1) * _STEP
    kx = np.arange(0, m + 1) * _STEP
    sy, sx = h / n, w / n                                      # bins of each axis per bin of the shorter
    P = np.abs(_dft(x, ky * sy, kx * sx)) ** 2
    # each bin over the level of its surroundings (log-mean over FINE_LOCAL bins a side, x e^gamma: the
    # median of pure noise power): the detector lag and scan-line artefacts make the noise anisotropic,
    # and clutter near the origin is uneven (a ring level let vacuum frames reach 6.8, this 6.1)
    L = np.log(P + 1e-30)
    k = int(round(FINE_LOCAL / _STEP)) | 1
    Lp = np.concatenate([L[::-1, k:0:-1], L], axis=1)          # mirrored across kx = 0: P(-k) = P(k)
    lv = ndimage.uniform_filter(Lp, k, mode="nearest")[:, k:]
    # the columns next to the ky axis (kx < 2 bins) against their own column only: row-to-row gain noise
    # and scan-line artefacts put power all along kx = 0 (and, through the unwindowed edges, half a bin
    # beside it), which lifted one spot of noise hexagons there (a vacuum frame with 3 % line gain noise:
    # 7.2, the ratio 0.91)
    ax = kx < 2.0
    lv[:, ax] = ndimage.uniform_filter1d(L[:, ax], 2 * k + 1, axis=0, mode="nearest")
    Q = P / np.exp(lv + _GAMMA)
    rs = np.arange(max(rlo, 2.5), rhi + 1e-9, 0.25)
    if not len(rs):
        return None
    th = np.arange(60) * (np.pi / 180.0)
    RR, TT = np.meshgrid(rs, th, indexing="ij")

    def score(R, T):
        lq = 0.0
        for d in (0.0, np.pi / 3, 2 * np.pi / 3):
            yy, xx = R * np.sin(T + d), R * np.cos(T + d)
            sg = np.where(xx < 0, -1.0, 1.0)                  # P(-k) = P(k): the half plane kx >= 0
            v = ndimage.map_coordinates(Q, [(yy * sg) / _STEP + m, (xx * sg) / _STEP], order=1, mode="nearest")
            lq = lq + np.log(np.maximum(v, 1e-6))
        return np.exp(lq / 3.0)

    sc = score(RR, TT)
    i, j = np.unravel_index(int(np.argmax(sc)), sc.shape)
    return float(sc[i, j]), float(rs[i]), float(th[j]), n, (sy, sx), score


def _finish(x: np.ndarray, b: int, g) -> dict:
    """The best hexagon of :func:`_grid` refined and measured (sublattice ratio, a, the {11-20} lookup)."""
    best, r, t0, n, (sy, sx), score = g
    k1, k2, rho, rho_half = _measure(x, r, t0, np.array([sy, sx]))
    via, s11 = False, float("nan")
    if rho < 0.3 and r / np.sqrt(3.0) >= 2.5:
        # one sublattice: perhaps graphene's {11-20} spots (a sharp probe); its first order is at
        # 1/sqrt(3) the radius, 30 degrees off. That is a prediction from where the grid found the {11-20}
        # hexagon, good to about its spots' main lobe (VIA_LOBE_BINS): the first order is searched over that
        # uncertainty (as finely as the grid searches a hexagon), not read at one point
        r2, t2 = r / np.sqrt(3.0), t0 + np.pi / 6
        dr = np.arange(-VIA_LOBE_BINS, VIA_LOBE_BINS + 1e-9, 0.125) / np.sqrt(3.0)
        dt = np.arange(-VIA_LOBE_BINS / r, VIA_LOBE_BINS / r + 1e-9, np.radians(0.5))
        R2, T2 = np.meshgrid(r2 + dr, t2 + dt, indexing="ij")
        s = score(R2, T2)
        i, j = np.unravel_index(int(np.argmax(s)), s.shape)
        r2, t2, s2 = float(R2[i, j]), float(T2[i, j]), float(s[i, j])
        k1b, k2b, rho2, rh2 = _measure(x, r2, t2, np.array([sy, sx]))
        via, s11, best, k1, k2, rho, rho_half = True, best, s2, k1b, k2b, rho2, rh2
    radii = np.hypot(*np.stack([k1, k2, k1 + k2]).T)
    a_px = n / (float(radii.mean()) * np.sqrt(3.0) / 2) * b
    return {"score": best, "rho": rho, "a_px": float(a_px), "via_11_20": via, "score_11_20": s11, "rho_half": rho_half,
            "spread": float((radii.max() - radii.min()) / radii.mean())}
