"""Pixel size from the graphene lattice itself.

The Fourier transform of an atomically resolved graphene frame shows two hexagons of spots: the
{10-10} ring at 2.13 A (a = 2.46 A times sqrt(3)/2) and, rotated by 30 degrees, the {11-20} ring at
1.23 A (a/2), a factor sqrt(3) further out. Their radius in cycles per pixel gives the sampling:
``pixel_size_A = 2.13 A x f1 = 1.23 A x f2``. This module finds the pair of rings whose spots stand
out most from their ring's median power (any lattice orientation, any number of grains; holes,
contamination and gradients only add smooth, isotropic power that the ring median absorbs), refines
each spot's position to a fraction of a frequency bin, and returns the estimate with its
uncertainty (the scatter of the spots' radii, never below a tenth of a bin).

Cost: one real FFT of at most ``max_side_px``^2 pixels (a larger frame is cropped at its centre,
which keeps the lattice's frequency, not binned, which could alias it), ~2-4 ms for 512^2 on one
core; the pipeline estimates once per series and re-checks every few frames
(:class:`engine.health.monitor.HealthMonitor`).

>>> est = estimate_pixel_size(image)                 # doctest: +SKIP
>>> est.pixel_size_A, est.uncertainty_A, est.strength  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

D10_A = 2.46 * np.sqrt(3.0) / 2.0     # 2.130 A, graphene {10-10}
D11_A = 2.46 / 2.0                    # 1.230 A, graphene {11-20}
SQRT3 = float(np.sqrt(3.0))
#: The estimator's range (A/px).
MIN_PIXEL_A = 0.02
MAX_PIXEL_A = 0.5
#: Lattice strength: the six-fold order of the 2.13 A ring (angular autocorrelation of its power at 60/120
#: minus 30/90 degrees: ~0 for isotropic power, ~1 for clear spots), plus that of the 1.23 A ring, plus
#: their correlation at a 30 degree turn; below this the frame shows no graphene.
MIN_STRENGTH = 1.5
#: ... and the {10-10} ring's own six-fold order at least this (the {11-20} ring may be wiped out by a
#: wide probe).
MIN_SINGLE = 1.1
MIN_PART = 0.25
#: Smallest ring radius (frequency bins) whose six-fold order can be judged.
MIN_RING_BINS = 8.0
ANGLE_STEP_DEG = 2.0
#: In a pair, the inner (2.13 A) ring's six-fold order must be at least this fraction of the outer one's.
PAIR_BALANCE = 0.5
#: A ring sqrt(3) inside a candidate disqualifies it (as the 1.23 A ring) when its six-fold order is at
#: least this fraction of the candidate's (a weak spurious inner ring, e.g. from dopants, does not).
INNER_BALANCE = 0.8


@dataclass(frozen=True)
class ScaleEstimate:
    """pixel_size_A : the estimate (nan when none); uncertainty_A : its 1-sigma uncertainty;
    strength : how clearly the two rings stand out (log10 power ratio, summed over both rings;
    >= :data:`MIN_STRENGTH` is a lattice); n_spots : spots used; ok : a usable estimate;
    distorted : the spots of one ring lie at radii scattered by more than :data:`MAX_RING_SCATTER`
    (a lattice sheared by drift during the scan, or strained): the value is less sure than its
    uncertainty says, and :class:`engine.health.monitor.HealthMonitor` does not let it overrule a
    declared pixel size."""

    pixel_size_A: float
    uncertainty_A: float
    strength: float
    n_spots: int
    ok: bool
    distorted: bool = False

    @property
    def relative_uncertainty(self) -> float:
        return self.uncertainty_A / self.pixel_size_A if self.ok else float("nan")


NONE = ScaleEstimate(float("nan"), float("nan"), 0.0, 0, False)

#: relative scatter of one ring's spot radii above which a lattice counts as distorted. Clean
#: simulated frames scatter by 1.6-1.9 %; frames scanned while the drift (2 A/frame) reversed, whose
#: estimate was 13-20 % off, by 6-9 % (held-out alarm movie seed 975007)
MAX_RING_SCATTER = 0.04


def _prepare(image: np.ndarray, max_side_px: int) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        a = a.reshape(a.shape[0], a.shape[1], -1)[..., 0]
    h, w = a.shape
    n = min(h, w, max_side_px)
    n -= n % 2
    y0, x0 = (h - n) // 2, (w - n) // 2
    a = np.asarray(a[y0:y0 + n, x0:x0 + n], np.float32)
    if not np.isfinite(a).all():
        a = np.where(np.isfinite(a), a, np.nanmedian(a) if np.isfinite(a).any() else 0.0).astype(np.float32)
    a = a - a.mean(dtype=np.float64)
    win = np.hanning(n).astype(np.float32)
    return a * win[:, None] * win[None, :]


@lru_cache(maxsize=8)
def _geometry(n: int):
    """Frequency-plane geometry of an n x n rfft2 (cached per size; read-only arrays)."""
    from scipy import fft as sfft

    fy = sfft.fftfreq(n)                     # cycles/px, rows
    fx = sfft.rfftfreq(n)                    # cycles/px, cols (half plane)
    r_bins = np.hypot(fy[:, None], fx[None, :]) * n
    for a in (fy, fx, r_bins):
        a.flags.writeable = False
    return fy, fx, r_bins


def _refine_ring(power: np.ndarray, fy: np.ndarray, fx: np.ndarray, r_bins: np.ndarray, r0: float,
                 n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-bin radii (in bins) and log-prominences of the strongest local maxima near radius r0."""
    band = np.abs(r_bins - r0) <= max(1.5, 0.06 * r0)
    if not band.any():
        return np.zeros(0), np.zeros(0)
    iy, ix = np.nonzero(band)
    vals = power[iy, ix]
    order = np.argsort(vals)[::-1]
    picked: list[tuple[int, int]] = []
    for k in order[:60]:
        y, x = int(iy[k]), int(ix[k])
        if all((y - py) ** 2 + (x - px) ** 2 > 9 for py, px in picked):
            picked.append((y, x))
        if len(picked) >= 3:      # the half-plane holds 3 of a hexagon's 6 spots (per grain)
            break
    H, W = power.shape
    radii, prom = [], []
    lp = np.log(power + 1e-30)
    for y, x in picked:
        if not (1 <= y < H - 1 and 1 <= x < W - 1):
            continue
        win = lp[y - 1:y + 2, x - 1:x + 2]
        # parabolic vertex along each axis (on log power: exact for a Gaussian spot)
        dy = 0.5 * (win[0, 1] - win[2, 1]) / (win[0, 1] - 2 * win[1, 1] + win[2, 1] - 1e-12)
        dx = 0.5 * (win[1, 0] - win[1, 2]) / (win[1, 0] - 2 * win[1, 1] + win[1, 2] - 1e-12)
        dy, dx = float(np.clip(dy, -0.5, 0.5)), float(np.clip(dx, -0.5, 0.5))
        yy = fy[y] * n + dy
        xx = fx[x] * n + dx
        radii.append(np.hypot(yy, xx))
        prom.append(float(power[y, x]))
    return np.asarray(radii), np.asarray(prom)


def estimate_pixel_size(image: np.ndarray, max_side_px: int = 512, lo_A: float = MIN_PIXEL_A,
                        hi_A: float = MAX_PIXEL_A) -> ScaleEstimate:
    """The frame's pixel size (A/px) from its graphene lattice, or :data:`NONE`-like (``ok`` False)
    when no lattice stands out. ``image`` : 2-D array (any dtype; non-finite pixels are ignored)."""
    from scipy import fft as sfft

    a = _prepare(image, max_side_px)
    n = a.shape[0]
    if n < 32 or not np.any(a):
        return NONE
    F = sfft.rfft2(a, workers=1)
    power = (F.real ** 2 + F.imag ** 2).astype(np.float64)
    fy, fx, r_bins = _geometry(n)
    nbins = n // 2
    # polar resampling of the half plane: radius step 0.5 bin, 2 degrees in angle over [-90, 90)
    rr = np.arange(0, nbins, 0.5)
    tt = np.deg2rad(np.arange(-90.0, 90.0, ANGLE_STEP_DEG))
    yy = (rr[:, None] * np.sin(tt)[None, :]) % n          # row index (negative frequencies wrap)
    xx = rr[:, None] * np.cos(tt)[None, :]
    from scipy.ndimage import map_coordinates

    pol = map_coordinates(power, [yy.ravel(), xx.ravel()], order=1, mode="grid-wrap").reshape(yy.shape)
    for j in (0, len(tt) // 2):             # the axes carry scan artefacts (row jitter, line gain):
        pol[:, j] = 0.5 * (pol[:, j - 1] + pol[:, j + 1])   # replaced by their neighbours
    lag = lambda deg: int(round(deg / ANGLE_STEP_DEG))  # noqa: E731
    q = pol - pol.mean(axis=1, keepdims=True)
    q = q / np.maximum(pol.std(axis=1, keepdims=True), 1e-300)
    # ring with its neighbours (a spot lies between sampled radii)
    q3 = q + np.roll(q, 1, axis=0) + np.roll(q, -1, axis=0)

    def autocorr(a, d):
        return np.mean(a * np.roll(a, lag(d), axis=1), axis=1) / np.maximum(np.mean(a * a, axis=1), 1e-300)

    # six-fold order of each ring, whatever the number of grains and their orientations: power repeats
    # every 60 degrees and not at 30 / 90
    hexness = 0.5 * (autocorr(q3, 60) + autocorr(q3, 120)) - 0.5 * (autocorr(q3, 30) + autocorr(q3, 90))
    r1_lo = max(MIN_RING_BINS, lo_A / D10_A * n)
    r1_hi = min(hi_A / D10_A * n, (nbins - 3) / SQRT3)
    if r1_hi <= r1_lo:
        return NONE
    i1 = np.arange(int(np.ceil(2 * r1_lo)), int(np.floor(2 * r1_hi)) + 1)
    if not len(i1):
        return NONE
    i2 = np.rint(i1 * SQRT3).astype(int)
    h1, h2 = hexness[i1], hexness[i2]
    # the {11-20} hexagon is the {10-10} one turned by 30 degrees (per grain)
    cross = (np.mean(q3[i1] * np.roll(q3[i2], -lag(30), axis=1), axis=1)
             - np.mean(q3[i1] * q3[i2], axis=1)) / np.sqrt(np.maximum(np.mean(q3[i1] ** 2, axis=1)
                                                                      * np.mean(q3[i2] ** 2, axis=1), 1e-300))
    # a pair needs both rings clearly six-fold (a weak spurious ring inside a strong 2.13 A ring must not
    # pass as the 2.13 A ring of a lattice sqrt(3) coarser)
    pair = (h2 >= MIN_PART) & (cross >= MIN_PART) & (h1 >= PAIR_BALANCE * h2)
    score = np.where(pair, h1 + h2 + cross, h1)
    score[h1 < MIN_PART] = 0.0
    # a six-fold ring sqrt(3) further in means the candidate is the 1.23 A ring (its 2.13 A partner may be
    # too small to judge): never read it as the 2.13 A one
    i0 = np.rint(i1 / SQRT3).astype(int)
    inner = hexness[np.maximum(i0, 0)]
    score[(i0 >= 4) & (inner >= MIN_PART) & (inner >= INNER_BALANCE * h1)] = 0.0
    # a ring's inner flank scores like the ring: take the innermost clear maximum of the score
    k = int(np.argmax(score))
    strength = float(score[k])
    single = not pair[k]
    if not np.isfinite(strength) or strength < (MIN_SINGLE if single else MIN_STRENGTH):
        return ScaleEstimate(float("nan"), float("nan"), strength, 0, False)
    cand = i1 * 0.5
    ra, pa = _refine_ring(power, fy, fx, r_bins, float(cand[k]), n)
    rb, pb = (np.zeros(0), np.zeros(0)) if single else _refine_ring(power, fy, fx, r_bins, float(cand[k]) * SQRT3, n)
    ests, errs = [], []
    distorted = any(len(r) >= 3 and float(np.std(r)) > MAX_RING_SCATTER * float(np.mean(r)) for r in (ra, rb))
    for radii, d_A in ((ra, D10_A), (rb, D11_A)):
        if len(radii):
            p = d_A * radii / n
            spread = float(np.std(p)) / np.sqrt(max(1, len(p) - 1)) if len(p) > 1 else 0.0
            floor = d_A * 0.1 / n
            ests.append(float(np.mean(p)))
            errs.append(max(spread, floor, 0.25 * float(np.std(p)) if len(p) > 1 else floor))
    if not ests:
        return ScaleEstimate(float("nan"), float("nan"), strength, 0, False)
    w = 1.0 / np.square(errs)
    p = float(np.sum(w * ests) / np.sum(w))
    err = float(1.0 / np.sqrt(np.sum(w)))
    if len(ests) == 2:       # two rings that disagree: the spread is the uncertainty
        err = max(err, abs(ests[0] - ests[1]) / 2.0)
    ok = lo_A * 0.95 <= p <= hi_A * 1.05
    return ScaleEstimate(p, err, strength, int(len(ra) + len(rb)), bool(ok), bool(distorted))
