"""The material verdict per series: a full check now and then, a cheap guard on every frame.

:func:`engine.health.material.classify_material` costs 4-16 ms of CPU per 512^2 frame (docs/material.md).
The material in view rarely changes between two frames of a series, so :class:`MaterialCadence` (one
per pipeline, reset with the series) runs the full check only

* on the first frame of a series (a new ``series`` or ``run``), after a frame-shape change, on a
  ``fov_jump`` (the frame's own health verdict, or one found after the previous frame's atoms:
  :meth:`MaterialCadence.invalidate`), when the declared or the lattice-estimated pixel size changes;
* every ``recheck_every_n_frames`` frames (``Config.chemistry.material_recheck_every_n_frames``);
* on every frame of a series whose lattice spots are too faint for the guard to watch
  (:data:`SPOT_USABLE`; fine sampling at low dose);
* on the frame after a full check whose verdict is new (the series' first) or changed: a verdict is
  carried over only once two full checks in a row agree, so one misjudged frame (a low-dose graphene
  frame called ``not_graphene``, or worse a MoS2 frame called ``graphene``) is not repeated for up to
  N frames but stays one frame, as with a full check on every frame;
* whenever the **guard** fires;
* while the series' verdict carries a graphene mask that the pipeline applies (a partly graphene field,
  e.g. graphene beside a MoS2 flake), whenever the field's drift since the full check cannot be followed
  (:func:`measure_drift`: no clear phase-correlation peak near the drift predicted, a jump or another
  field), or has moved the mask by more than :data:`DRIFT_MAX_FRACTION` of the field. In between, the
  full check's mask is carried moved with the drift (:func:`shift_mask`), and the guard looks at the
  moved graphene region only.

The guard (:func:`fingerprint`, :func:`guard`) is a binned spectrum of the frame (block means to
~128 px a side, one 128^2 real FFT: 0.5-1 ms of CPU on a loaded 2-core machine): against the spectrum of the frame the verdict came
from it checks

1. **the lattice's own spots** (when the verdict found a lattice): the first-order spots k1, k2 and
   k3 = -(k1 + k2) must still stand out (their contrast over the ring's median power may not fall
   below :data:`SPOT_DROP` x the reference's, nor below :data:`SPOT_FLOOR`): another material, amorphous
   carbon or vacuum in view removes them;
2. **the sublattice phase**: the bispectrum phase of those three spots (pi for graphene's equal
   sublattices, ~0 for one: :mod:`engine.health.material` step 3) may not move by more than 3 x its
   noise, within :data:`PHASE_TOL_DEG` (hBN has graphene's lattice constant within 2 %, but not its
   phase);
3. **no new lattice**: no bin away from the reference's own strong bins may stand out of its ring
   by more than :data:`FOREIGN_FLOOR` and :data:`FOREIGN_GAIN` x the reference's strongest such bin (a
   lattice coming into a vacuum or amorphous field, or a second material into a graphene one).

Drift moves a lattice in real space, which changes the phases of its spots but not their power, nor
the bispectrum phase (translation invariant); dose changes scale all rings alike. A frame on which the
guard does not fire gets the series' verdict, marked as carried over: a :class:`CadencedVerdict`
(a :class:`~engine.health.material.MaterialVerdict` with two fields more, ``carried_from_frame``
and ``check``) whose reason ends with "(carried over from frame k)".

>>> cad = MaterialCadence(recheck_every_n_frames=20)        # doctest: +SKIP
>>> v = cad.verdict(frame, health, full=frame_material)      # doctest: +SKIP
>>> v.carried_from_frame, v.check                            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import fft as sfft

from engine.chem.filters import block_mean
from engine.chem.quantile import median
from engine.health.material import MaterialVerdict
from engine.health.material_spectrum import full_bins

#: Binned side (px) the guard's spectrum aims at: frames are block-averaged by side // TARGET_SIDE_PX.
TARGET_SIDE_PX = 128
#: ... but the reference lattice's first-order spots stay below this fraction of the binned Nyquist radius.
MAX_SPOT_NYQUIST = 0.7
#: Spot contrast (power over the ring median, geometric mean of the three spots) below this fraction of
#: the reference's fires the guard ...
SPOT_DROP = 0.1
#: ... and so does a spot contrast below this (noise: the largest of 9 bins of exponential power over
#: the ring median is ~4).
SPOT_FLOOR = 6.0
#: A lattice whose spots stand out less than this in the guard's spectrum cannot be watched cheaply
#: (a 15-25 A field at 0.03-0.05 A/px and 1e4 e/A^2: the spots and their phase are near the noise):
#: its series gets the full check on every frame, as before the cadence.
SPOT_USABLE = 40.0
#: Bispectrum phase change (degrees) that fires the guard (graphene ~180, hBN <= 112, MoS2 / WS2 <= 90:
#: sublattice ratios 0.61 / 0.50 in engine.health.material's rho): 3 x its noise (sqrt(3 / (2 c)) rad
#: for three spots of contrast c, in the frame and in the reference), within these bounds.
PHASE_TOL_DEG = (40.0, 60.0)
#: A new peak fires the guard when its power over its ring's mean exceeds this ...
FOREIGN_FLOOR = 40.0
#: ... and this many times the strongest one outside the reference's own strong bins.
FOREIGN_GAIN = 3.0
#: Bins whose power over the ring mean exceeds this in the reference are its own (with 2 bins around).
OWN_LEVEL = 8.0
#: Binned pixels above mean + CLIP_STD std are clipped before the FFT (a heavy dopant drifting in from the
#: window's edge adds its broad spectrum to every ring; graphene's lattice alone stays within ~2 std).
CLIP_STD = 3.0
#: Rings closer to the origin than this (bins) are ignored (gradients, the window's leakage).
MIN_RING_BINS = 3
#: Drift of a masked field (a graphene mask carried between full checks, moved with the field): the
#: phase-correlation peak is searched within this many binned px of the shift predicted from the
#: series' drift so far (a second, weaker peak of the MoS2 flake's texture lies ~20 binned px off) ...
DRIFT_SEARCH_BINS = 5
#: ... and must stand this far over the correlation surface's std (unrelated frames: <= ~4.5 anywhere,
#: ~3 within the search window), else the field is not followed: full check.
DRIFT_MIN_PEAK = 6.0
#: A mask moved by more than this fraction of the frame's side (either axis) since the full check is
#: extrapolated over too much of the field (the strip that came into view takes the edge's value): full check.
DRIFT_MAX_FRACTION = 0.25
#: A carried mask that keeps less than this fraction of the field (the graphene drifted out): full check.
DRIFT_MIN_KEPT = 0.05


@dataclass(frozen=MaterialVerdict.__dataclass_params__.frozen)      # (a frozen parent needs a frozen child)
class CadencedVerdict(MaterialVerdict):
    """A :class:`~engine.health.material.MaterialVerdict` with how it was obtained (fields after the
    verdict's own, so its field order is unchanged).

    carried_from_frame : -1 when the full check ran on this frame, else the ``seq`` of the frame whose
    full check this verdict carries over (the guard saw no change since). check : why the full check
    ran on this frame (e.g. "first frame of the series", "every 20 frames", "guard: ..."), or, for a
    carried-over verdict, the guard's figures."""

    carried_from_frame: int = -1
    check: str = ""

    @property
    def carried_over(self) -> bool:
        return self.carried_from_frame >= 0

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["carried_from_frame"] = None if self.carried_from_frame < 0 else int(self.carried_from_frame)
        d["check"] = self.check
        return d


_VERDICT_FIELDS = tuple(f.name for f in dataclasses.fields(MaterialVerdict))


def _as_cadenced(v: MaterialVerdict, carried_from_frame: int, check: str, reason: str | None = None,
                 **fields) -> CadencedVerdict:
    kw = {name: getattr(v, name) for name in _VERDICT_FIELDS}
    if reason is not None:
        kw["reason"] = reason
    kw.update(fields)                                # (a carried mask moved with the drift, its fraction)
    return CadencedVerdict(**kw, carried_from_frame=int(carried_from_frame), check=check)


# ---------------------------------------------------------------------------------------------- spectrum
def _binning(shape, spot_radius_cpp: float | None) -> int:
    """Block size for a frame of ``shape``: towards TARGET_SIDE_PX a side, but keeping a lattice whose
    first-order spots lie at ``spot_radius_cpp`` (cycles per frame px) below MAX_SPOT_NYQUIST of the
    binned Nyquist frequency (0.5 / b cycles per frame px)."""
    b = max(1, min(shape) // TARGET_SIDE_PX)
    if spot_radius_cpp is not None and np.isfinite(spot_radius_cpp) and spot_radius_cpp > 0:
        b = max(1, min(b, int(MAX_SPOT_NYQUIST * 0.5 / spot_radius_cpp)))
    return int(b)


@lru_cache(maxsize=8)
def _geometry(h: int, w: int):
    """Hann window, ring index (radius in bins of the binned grid, rounded) and ring sizes of an
    h x w rfft2 half plane; read-only."""
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    r = np.hypot(fy * min(h, w), fx * min(h, w))             # bins of the shorter side
    ring = np.rint(r).astype(np.int64)
    count = np.bincount(ring.ravel()).astype(np.float64)
    out = (win, ring, count, np.hypot(fy, fx))
    for a in out:
        a.flags.writeable = False
    return out


@dataclass
class Spectrum:
    """The guard's binned spectrum of one frame: ``F`` the rfft2 of the windowed binned frame, ``P`` its
    power, ``ring_mean`` the level of each ring (log-mean power x e^gamma: the mean for noise, robust to
    a few spots), ``b`` the binning."""

    F: np.ndarray
    P: np.ndarray | None
    ring_mean: np.ndarray | None
    b: int
    shape: tuple                                     # the binned frame's (h, w)


def spectrum(image, b: int, region: np.ndarray | None = None) -> Spectrum | None:
    """The binned, windowed spectrum of ``image`` (None when the frame has no usable pixels).
    ``region``: frame-shaped bool, the part of the field to look at (a graphene mask); the binned
    pixels outside it take the mean of those inside."""
    x = binned(image, b)
    return None if x is None else binned_spectrum(x, b, region)


def binned(image, b: int) -> np.ndarray | None:
    """``image`` block-averaged by ``b`` (whole blocks only; non-finite pixels replaced by the median),
    float32; None when the frame has no usable pixels."""
    a = np.asarray(image)
    if a.ndim != 2 or min(a.shape) < 16 * b:
        return None
    a = a[:(a.shape[0] // b) * b, :(a.shape[1] // b) * b]                         # whole blocks only
    x = block_mean(a, b)                             # (8/16-bit counts: summed from the integers, exactly)
    if a.dtype.kind in "ui":
        return x                                     # (integers are finite)
    if not np.isfinite(x).all():
        if not np.isfinite(x).any():
            return None
        x = np.where(np.isfinite(x), x, np.float32(np.nanmedian(x)))
    return x


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """``(x.mean(dtype=np.float64), x.std(dtype=np.float64))`` bit for bit (numpy's own steps: the float64
    sum, its mean, the squared deviations' float64 sum), with the sum taken once."""
    n = x.size
    m = np.add.reduce(x, axis=None, dtype=np.float64) / n
    d = np.subtract(x, m, dtype=np.float64)
    np.multiply(d, d, out=d)
    return float(m), float(np.sqrt(np.add.reduce(d, axis=None, dtype=np.float64) / n))


def binned_spectrum(x: np.ndarray, b: int, region: np.ndarray | None = None, levels: bool = True) -> Spectrum | None:
    """The guard's spectrum of the binned frame ``x`` (from :func:`binned`; overwritten). ``region``:
    as in :func:`spectrum` (frame-shaped, sampled at the blocks' centres). ``levels`` False: ``F`` only
    (``P`` and ``ring_mean`` None: all :func:`measure_drift` needs)."""
    h, w = x.shape
    if region is not None:
        r = np.asarray(region, bool)[b // 2::b, b // 2::b][:h, :w]
        if r.shape != x.shape:
            return None
        k = np.count_nonzero(r)
        if k == 0:
            return None
        if k < r.size:
            inside = x[r]
            # (x[r].mean(dtype=np.float64): the same float64 sum over the same gathered values, divided alike)
            x[~r] = np.float32(np.add.reduce(inside, axis=None, dtype=np.float64) / k)
    win, ring, count, _ = _geometry(h, w)
    m, sd = _mean_std(x)
    if CLIP_STD:
        np.minimum(x, np.float32(m + CLIP_STD * sd), out=x)
        m = float(x.mean(dtype=np.float64))
    x -= np.float32(m)
    x *= win
    F = sfft.rfft2(x, workers=1)
    if not levels:
        return Spectrum(F, None, None, b, (h, w))
    P = F.real ** 2 + F.imag ** 2
    # each ring's level: its log-mean power (a few strong spots barely move it, even on the short rings
    # near the origin where 6 spots are a tenth of the ring), scaled to the mean for exponential noise
    lp = np.log(np.maximum(P, 1e-30))
    rm = np.exp(np.bincount(ring.ravel(), weights=lp.ravel(), minlength=len(count)) / np.maximum(count, 1)
                + np.euler_gamma)
    return Spectrum(F, P, rm, b, (h, w))


_OFF = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


# ---------------------------------------------------------------------------------------------- reference
@dataclass
class Fingerprint:
    """What the guard compares later frames with (from the frame of the last full check).

    shape : frame shape; b : binning; spots : (3, 2) signed (ky, kx) bins of k1, k2, k3 = -(k1 + k2)
    (None: no usable lattice spots); spot_ring : bin indices (flat) of the spots' ring; contrast :
    the spots' contrast; phase : their bispectrum phase (rad); own : bins that are the reference's own
    strong bins (excluded from the foreign-peak test); foreign : the reference's strongest bin
    outside them (power over its ring's mean). For a verdict whose mask is in use (the guard's figures then
    come from the graphene region alone): drift_bins, the bins that :func:`measure_drift` correlates
    (:func:`_drift_bins`), and F, the conjugate phases of the whole field's binned spectrum there (unit
    magnitude; 0 elsewhere), and drift_count, how many such bins; else None (0). watch: the flat indices of
    the bins the foreign-peak test reads (not ``own``, and not set to 0 by :func:`_norm`) and their rings
    (:func:`_foreign`)."""

    shape: tuple
    b: int
    spots: np.ndarray | None = None
    spot_ring: np.ndarray | None = None
    contrast: float = float("nan")
    phase: float = float("nan")
    own: np.ndarray | None = field(default=None, repr=False)
    foreign: float = 0.0
    gather: tuple | None = field(default=None, repr=False)    # _gather(spots, binned shape)
    F: np.ndarray | None = field(default=None, repr=False)
    drift_bins: np.ndarray | None = field(default=None, repr=False)
    drift_count: int = 0                                     # bins in drift_bins
    watch: np.ndarray | None = field(default=None, repr=False)       # (flat bins, their rings): see _foreign


#: offsets (d1 + d2) of the k3 bins in the bispectrum sum, as indices into the 5 x 5 grid around k3
_SUM = (2 - (_OFF[:, None, :] + _OFF[None, :, :])) @ np.array([5, 1])
_GRID = np.array([(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)])
#: the 27 of the 43 coefficients whose largest power per spot is its peak (k3: the 3 x 3 centre of its 5 x 5 grid)
_PEAKS = np.r_[0:18, 18 + np.array([6, 7, 8, 11, 12, 13, 16, 17, 18])]


def _gather(spots: np.ndarray, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Flat rfft2 indices and conjugation flags of the 43 coefficients :func:`_spot_contrast` reads:
    3 x 3 bins around k1 and k2, 5 x 5 around k3 (bispectrum: k3 - (d1 + d2))."""
    h, w = shape
    ks = np.concatenate([spots[0] + _OFF, spots[1] + _OFF, spots[2] + _GRID])
    neg = ks[:, 1] < 0
    ky = np.where(neg, -ks[:, 0], ks[:, 0]) % h
    kx = np.abs(ks[:, 1])
    return ky * (w // 2 + 1) + kx, neg


def _spot_contrast(S: Spectrum, idx: np.ndarray, neg: np.ndarray, ring_idx: np.ndarray) -> tuple[float, float]:
    """(geometric-mean contrast of the three spots over their ring's median power, bispectrum phase in
    rad) from the coefficients at ``idx`` (:func:`_gather`)."""
    c = S.F.ravel()[idx]                             # (a copy)
    np.negative(c.imag, out=c.imag, where=neg)       # the conjugate where the bin is read from -k
    p = c.real ** 2 + c.imag ** 2
    peaks = p[_PEAKS].reshape(3, 9).max(axis=1)      # 3 x 3 bins of k1, of k2, and the centre of k3's 5 x 5
    level = max(median(S.P.ravel()[ring_idx]), 1e-30)
    contrast = float(np.exp(np.mean(np.log(np.maximum(peaks, 1e-30) / level))))
    # bispectrum over 3 x 3 offsets d1, d2 of k1 and k2 with k3 - (d1 + d2) exactly (the window's leakage cancels)
    B = (c[0:9, None] * c[None, 9:18] * c[18:43][_SUM]).sum()
    return contrast, float(np.angle(B))


def _foreign(S: Spectrum, fp: Fingerprint) -> float:
    """The strongest bin of ``S`` outside the reference's own strong bins (power over its ring's level,
    as :func:`_norm`; 0 where it sets 0). From ``fp.watch`` (the bins that :func:`_norm` does not set to 0,
    outside ``fp.own``): the same divisions on those bins only, the bins set to 0 adding a 0."""
    if fp.watch is not None and fp.own is not None and fp.own.shape == S.P.shape:
        idx, ring = fp.watch
        if idx.size:
            v = S.P.ravel()[idx] / np.maximum(S.ring_mean, 1e-30)[ring]
            return float(v.max())                    # (>= 0: the 0s of the bins left out never exceed it)
        return 0.0
    q = _norm(S)
    rest = q[~fp.own] if fp.own is not None and fp.own.shape == q.shape else q
    return float(rest.max()) if rest.size else 0.0


def _watched(shape: tuple, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, rings) of the bins of an rfft2 half plane of the binned ``shape`` that :func:`_norm`
    keeps (not next to the origin, inside the inscribed circle, off the axes) and that are not ``own``."""
    h, w = shape
    ring = _geometry(h, w)[1]
    keep = (ring >= MIN_RING_BINS) & (ring < min(h, w) // 2) & ~own
    keep[:, 0] = False
    keep[0, :] = False
    idx = np.flatnonzero(keep)
    return idx, ring.ravel()[idx]


def _norm(S: Spectrum) -> np.ndarray:
    """Power over its ring's level; 0 on the rings nearest the origin, beyond the inscribed circle
    (the corners: short partial rings) and on the two axes (scan-line artefacts: row jitter, fly-back
    shifts, line gain)."""
    h, w = S.shape
    ring = _geometry(h, w)[1]
    q = S.P / np.maximum(S.ring_mean, 1e-30)[ring]
    q[(ring < MIN_RING_BINS) | (ring >= min(h, w) // 2)] = 0.0
    q[:, 0] = 0.0
    q[0, :] = 0.0
    return q


def fingerprint(image, verdict: MaterialVerdict, region: np.ndarray | None = None) -> Fingerprint | None:
    """The guard's reference from the frame of a full check and its verdict. ``region``: the verdict's
    graphene mask when one is in use: the guard's tests then look at that part of the field only (a
    bright MoS2 flake over a third of the field raised the rings so that graphene's spots stood out
    only 13-26 there, too little to watch), and :func:`measure_drift` keeps the whole field's
    spectrum (the flake's edge and texture are what show the drift best)."""
    a = np.asarray(image)
    if a.ndim != 2:
        return None
    a_px = float(getattr(verdict, "lattice_constant_px", float("nan")))
    f1 = 2.0 / (np.sqrt(3.0) * a_px) if np.isfinite(a_px) and a_px > 0 else None      # cycles per frame px
    b = _binning(a.shape, f1)
    x = binned(a, b)
    if x is None:
        return None
    whole = binned_spectrum(x.copy() if region is not None else x, b)
    S = whole if region is None else binned_spectrum(x, b, region)
    if S is None:
        return None
    fp = Fingerprint(shape=tuple(a.shape), b=b)
    q = _norm(S)
    h, w = S.shape
    # the lattice's first-order spots: the strongest bin on their ring, its partner 120 degrees on
    if f1 is not None and f1 * b < 0.5:
        fr = _geometry(h, w)[3] / b                                  # cycles per frame px
        tol = max(1.5 / (b * min(h, w)), 0.06 * f1)
        band = np.abs(fr - f1) <= tol
        if band.sum() >= 6:
            iy, ix = np.nonzero(band)
            k = int(np.argmax(q[iy, ix]))
            ky1 = int(iy[k]) if iy[k] <= h // 2 else int(iy[k]) - h
            kx1 = int(ix[k])
            # k2: k1 turned by 120 degrees (in physical frequency: the bins of a non-square grid differ)
            sy, sx = 1.0 / h, 1.0 / w
            vy, vx = ky1 * sy, kx1 * sx
            c, s = np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)
            ry, rx = (s * vx + c * vy) / sy, (c * vx - s * vy) / sx
            cand = np.array([(int(round(ry)) + dy, int(round(rx)) + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
            pc = full_bins(S.F, cand[:, 0], cand[:, 1])
            k2 = cand[int(np.argmax(pc.real ** 2 + pc.imag ** 2))]
            spots = np.array([[ky1, kx1], [k2[0], k2[1]], [-(ky1 + k2[0]), -(kx1 + k2[1])]], np.int64)
            ring_idx = np.flatnonzero(band.ravel())
            idx, neg = _gather(spots, S.shape)
            contrast, phase = _spot_contrast(S, idx, neg, ring_idx)
            if contrast >= SPOT_USABLE:
                fp.spots, fp.spot_ring, fp.contrast, fp.phase = spots, ring_idx, contrast, phase
                fp.gather = (idx, neg)
    own = _grown(q > OWN_LEVEL)
    fp.own = own
    rest = q[~own]
    fp.foreign = float(rest.max()) if rest.size else 0.0
    fp.watch = _watched(S.shape, own)
    if region is not None:
        ref = drift_reference(whole, fp.shape)
        fp.F, fp.drift_bins, fp.drift_count = ref.F, ref.drift_bins, ref.drift_count
    return fp


def drift_reference(S: Spectrum, shape: tuple) -> Fingerprint:
    """A reference for :func:`measure_drift` from the spectrum ``S`` (with its levels) of the whole field
    of a frame of ``shape``: the frame's phases over :func:`_drift_bins` (unit magnitude, 0 elsewhere):
    a later frame's own phases times these are the whitened cross-power spectrum."""
    keep = _drift_bins(S)
    F = np.where(keep, np.conj(S.F) / np.maximum(np.abs(S.F), np.float32(1e-30)), 0).astype(np.complex64)
    return Fingerprint(shape=tuple(shape), b=S.b, F=F, drift_bins=keep, drift_count=int(np.count_nonzero(keep)))


def binning_for(shape, lattice_px: float = float("nan")) -> int:
    """The guard's block size for a frame of ``shape`` whose lattice constant is ``lattice_px`` frame px
    (NaN: not known): towards :data:`TARGET_SIDE_PX` a side, the lattice's first-order spots below
    :data:`MAX_SPOT_NYQUIST` of the binned Nyquist frequency."""
    ok = np.isfinite(lattice_px) and lattice_px > 0
    return _binning(shape, 2.0 / (np.sqrt(3.0) * lattice_px) if ok else None)


_DIAMOND = tuple((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if 0 < abs(dy) + abs(dx) <= 2)


def _grown(strong: np.ndarray) -> np.ndarray:
    """``strong`` (half-plane bool) grown by 2 bins (a diamond; rows wrap: they continue at negative
    frequencies)."""
    if not strong.any():
        return strong
    h, w = strong.shape
    pad = np.zeros((h + 4, w + 4), bool)             # rows wrapped by 2, columns padded with False
    pad[2:h + 2, 2:w + 2] = strong
    pad[:2, 2:w + 2] = strong[h - 2:]
    pad[h + 2:, 2:w + 2] = strong[:2]
    grown = strong.copy()
    for dy, dx in _DIAMOND:
        grown |= pad[2 + dy:2 + dy + h, 2 + dx:2 + dx + w]
    return grown


def _drift_bins(S: Spectrum) -> np.ndarray:
    """The bins :func:`measure_drift` correlates: not the frame's strong bins (its lattices: no aliasing
    at their periods), grown by 2 bins; not the axes nor the rings next to the origin (scan artefacts and
    gradients, fixed in the frame)."""
    q = _norm(S)
    grown = _grown(q > OWN_LEVEL)
    keep = ~grown & (q > 0)                          # (_norm: 0 on the axes, next to the origin, in the corners)
    return keep


def guard(image, fp: Fingerprint) -> tuple[bool, str]:
    """(fires, why): whether ``image`` may show something else than the frame of ``fp``."""
    S, why = _frame_spectrum(image, fp)
    return (True, why) if S is None else _guard(S, fp)


def _frame_spectrum(image, fp: Fingerprint) -> tuple[Spectrum | None, str]:
    """The guard's spectrum of ``image`` at the binning of ``fp`` (None and why when it cannot be compared)."""
    a = np.asarray(image)
    if a.ndim != 2 or tuple(a.shape) != fp.shape:
        return None, "frame shape differs from the checked frame"
    S = spectrum(a, fp.b)
    return (None, "no usable pixels") if S is None else (S, "")


def _guard(S: Spectrum, fp: Fingerprint) -> tuple[bool, str]:
    why = []
    if fp.spots is not None:
        contrast, phase = _spot_contrast(S, *fp.gather, fp.spot_ring)
        if contrast < max(SPOT_FLOOR, SPOT_DROP * fp.contrast):
            return True, f"guard: the lattice spots fell to contrast {contrast:.1f} (checked frame {fp.contrast:.1f})"
        dphi = abs(float(np.angle(np.exp(1j * (phase - fp.phase)))))
        # (math.sqrt, math.degrees: the same IEEE square root and product by 180 / pi as numpy's)
        noise = math.degrees(math.sqrt(1.5 / max(contrast, 1e-9) + 1.5 / fp.contrast))
        deg = math.degrees(dphi)
        if deg > min(max(3.0 * noise, PHASE_TOL_DEG[0]), PHASE_TOL_DEG[1]):
            return True, (f"guard: the sublattice phase moved by {deg:.0f} deg "
                          f"(spot contrast {contrast:.1f})")
        why.append(f"spots {contrast:.0f} (was {fp.contrast:.0f}), phase {deg:.0f} deg")
    foreign = _foreign(S, fp)
    if foreign > max(FOREIGN_FLOOR, FOREIGN_GAIN * fp.foreign):
        return True, f"guard: a new spectral peak {foreign:.0f} x its ring (checked frame {fp.foreign:.0f})"
    why.append(f"new peaks {foreign:.0f} (was {fp.foreign:.0f})")
    return False, "guard ok: " + ", ".join(why)


# ---------------------------------------------------------------------------------------------- drift
def measure_drift(S: Spectrum, fp: Fingerprint, prior=(0.0, 0.0)) -> tuple[float, float, float]:
    """(dy, dx, peak): how far the field of the frame of ``S`` has moved since the frame of ``fp`` (frame
    px: the content of the reference at (y, x) is now at (y + dy, x + dx)), by phase correlation of the
    two binned spectra over ``fp.drift_bins``; the peak is searched within :data:`DRIFT_SEARCH_BINS`
    binned px of ``prior`` (the shift predicted, frame px) and refined by a parabola through its
    neighbours. ``peak``: its height over the correlation surface's std (0: no reference)."""
    if fp.F is None or fp.drift_bins is None or S.F.shape != fp.F.shape:
        return 0.0, 0.0, 0.0
    X = S.F * fp.F                                   # (fp.F: the reference's conjugate phases, 0 off drift_bins)
    # / |F|: numpy divides a complex64 by a real one as Smith's method does, (re, im) x (1 / |F|) in float32;
    # the same products without the complex division's other steps (about half the time)
    scl = np.float32(1) / np.maximum(np.abs(S.F), np.float32(1e-30))
    X.real *= scl
    X.imag *= scl
    h, w = S.shape
    c = sfft.irfft2(X, s=(h, w), workers=1)
    # the surface's std from Parseval: K unit bins, each with its mirror (no kx = 0 or Nyquist column among
    # them), and no DC: sum c^2 = 2K / (h w), mean 0
    sd = float(np.sqrt(2.0 * (fp.drift_count or np.count_nonzero(fp.drift_bins)))) / (h * w)
    if not sd > 0:
        return 0.0, 0.0, 0.0
    b = fp.b
    py, px = float(prior[0]) / b, float(prior[1]) / b
    r = DRIFT_SEARCH_BINS
    y0, x0 = math.floor(py) - r, math.floor(px) - r
    oy = np.arange(y0, math.ceil(py) + r + 1)
    ox = np.arange(x0, math.ceil(px) + r + 1)
    if 0 <= y0 and oy[-1] < h and 0 <= x0 and ox[-1] < w:
        win = c[y0:y0 + len(oy), x0:x0 + len(ox)]
    else:
        win = c[np.ix_(oy % h, ox % w)]
    near = ((oy - py) ** 2)[:, None] + ((ox - px) ** 2)[None, :] <= (r + 0.5) ** 2
    k = int(np.argmax(np.where(near, win, -np.inf)))
    iy, ix = int(oy[k // len(ox)]), int(ox[k % len(ox)])

    def vertex(lo, mid, hi):                     # parabola through three samples: offset of its top
        d = lo - 2.0 * mid + hi
        return 0.5 * (lo - hi) / d if d < 0 else 0.0

    m = float(c[iy % h, ix % w])
    dy = iy + vertex(float(c[(iy - 1) % h, ix % w]), m, float(c[(iy + 1) % h, ix % w]))
    dx = ix + vertex(float(c[iy % h, (ix - 1) % w]), m, float(c[iy % h, (ix + 1) % w]))
    return dy * b, dx * b, m / sd


def shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` (2-D) moved with the field by whole px (dy, dx); what came into view is 0."""
    H, W = a.shape
    out = np.zeros_like(a)
    if abs(dy) >= H or abs(dx) >= W:
        return out
    out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        a[max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    return out


def shift_mask(mask: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``mask`` (frame-shaped bool) moved with the field by (dy, dx) frame px (rounded); the strips that
    came into view take the value at the edge they came in from (the nearest cell known)."""
    m = np.asarray(mask, bool)
    H, W = m.shape
    dy, dx = min(max(int(round(dy)), -(H - 1)), H - 1), min(max(int(round(dx)), -(W - 1)), W - 1)
    out = shifted(m, dy, dx)
    if dy > 0:
        out[:dy] = out[dy]
    elif dy < 0:
        out[H + dy:] = out[H + dy - 1]
    if dx > 0:
        out[:, :dx] = out[:, dx:dx + 1]
    elif dx < 0:
        out[:, W + dx:] = out[:, W + dx - 1:W + dx]
    return out


# ---------------------------------------------------------------------------------------------- cadence
@dataclass
class CadenceState:
    """The per-series state of :class:`MaterialCadence` (plain data)."""

    series: object = None
    run: int = 0
    shape: tuple | None = None
    declared_A: float = float("nan")
    estimated_A: float = float("nan")
    verdict: MaterialVerdict | None = None           # of the last full check
    checked_frame: int = -1                          # its seq
    since: int = 0                                   # frames since that check (not counting it)
    fp: Fingerprint | None = None
    invalid: str = ""                                # a reason to check the next frame in full
    confirmed: bool = False                          # the last two full checks gave the same verdict
    full_checks: int = 0                             # in this series
    guard_fired: int = 0
    carried: int = 0
    shift: tuple = (0.0, 0.0)                        # (dy, dx) frame px the field moved since the last full check
    velocity: tuple = (0.0, 0.0)                     # the series' drift (frame px per frame) last measured (a
                                                     # masked series: the drift predicted for the next frame)
    drift_lost: int = 0                              # full checks because a masked field could not be followed


#: A lattice pixel-size estimate that moves by more than this fraction (or appears / disappears) is a
#: change (the series' estimate is a running consensus: it moves by a few 1e-4 while it settles).
ESTIMATE_TOL = 0.01


def _keys(frame, health) -> tuple[tuple, float, float]:
    """What a full check's verdict depends on besides the pixels: the frame's shape, its declared pixel
    size and the lattice estimate of it (NaN where none)."""
    declared = float(frame.pixel_size_A) if frame.pixel_size_A else float("nan")
    est = float(getattr(health, "estimated_pixel_size_A", float("nan"))) if health is not None else float("nan")
    return tuple(int(v) for v in np.shape(frame.data)[:2]), declared, est


def _same(a: float, b: float, rel: float = 1e-6) -> bool:
    return (not np.isfinite(a) and not np.isfinite(b)) or (np.isfinite(a) and np.isfinite(b) and
                                                          abs(a - b) <= rel * max(abs(a), abs(b)))


class MaterialCadence:
    """When to run the full material check, per series (see the module docstring). One per pipeline,
    called in frame order from one thread. ``recheck_every_n_frames``: a full check at least this
    often (1: every frame, the guard unused). ``mask_below``: a verdict whose mask covers less than
    this fraction of the field is applied as a mask (:data:`engine.pipeline.MASK_BELOW`); while one
    is in force every frame is checked in full."""

    def __init__(self, recheck_every_n_frames: int = 20, mask_below: float = 1.0):
        n = int(recheck_every_n_frames)
        if n < 1:
            raise ValueError(f"recheck_every_n_frames must be >= 1, got {recheck_every_n_frames!r}")
        self.n = n
        self.mask_below = float(mask_below)
        self.s = CadenceState()

    def _masked(self, v: MaterialVerdict) -> bool:
        return v.mask is not None and v.graphene_fraction < self.mask_below

    def reset(self) -> None:
        self.s = CadenceState()

    def invalidate(self, why: str) -> None:
        """Check the next frame in full (e.g. a ``fov_jump`` found from this frame's atoms)."""
        self.s.invalid = why

    def _due(self, frame, health) -> str:
        """Why the full check must run on this frame ("" when the guard may decide)."""
        s = self.s
        if s.verdict is None:
            return "first frame of the series"
        if s.invalid:
            return s.invalid
        if not s.confirmed:
            return f"confirming the verdict of frame {s.checked_frame} (a new or changed verdict)"
        shape, declared, est = _keys(frame, health)
        if shape != s.shape:
            return "frame shape changed"
        if health is not None and "fov_jump" in getattr(health, "verdicts", ()):
            return "fov_jump"
        if not _same(declared, s.declared_A):
            return "declared pixel size changed"
        if not _same(est, s.estimated_A, ESTIMATE_TOL):
            return "pixel-size estimate changed"
        if s.since + 1 >= self.n:
            return f"every {self.n} frames"
        if s.fp is None:
            return "no guard reference (the lattice's spots are too faint to watch, or none could be measured)"
        return ""

    def verdict(self, frame, health, full) -> CadencedVerdict:
        """The frame's material verdict: ``full(frame)`` (a :class:`MaterialVerdict`) when due or when
        the guard fires, else the series' verdict carried over (with its graphene mask, when one is in
        use, moved with the drift measured since the full check: :meth:`_follow`)."""
        s = self.s
        run = int(getattr(frame, "run", 0))
        if frame.series != s.series or run != s.run:
            self.s = s = CadenceState(series=frame.series, run=run)
        why = self._due(frame, health)
        if not why:
            v = s.verdict
            fired, note, moved = self._follow(frame) if self._masked(v) else (*guard(frame.data, s.fp), {})
            if not fired:
                s.since += 1
                s.carried += 1
                reason = f"{v.reason} (carried over from frame {s.checked_frame}"
                if moved:
                    dy, dx = s.shift
                    reason += f"; its mask moved with the drift by ({dx:+.0f}, {dy:+.0f}) px"
                return _as_cadenced(v, s.checked_frame, note, reason=reason + ")", **moved)
            if note.startswith("drift:"):
                s.drift_lost += 1
            else:
                s.guard_fired += 1
            why = note
        v = full(frame)
        s.confirmed = s.verdict is not None and s.verdict.verdict == v.verdict
        s.verdict, s.checked_frame, s.since, s.invalid = v, int(frame.seq), 0, ""
        s.shift = (0.0, 0.0)
        s.full_checks += 1
        s.shape, s.declared_A, s.estimated_A = _keys(frame, health)
        # (a verdict not yet confirmed gets the full check on the next frame whatever the guard says: no reference)
        s.fp = fingerprint(frame.data, v, v.mask if self._masked(v) else None) if self.n > 1 and s.confirmed else None
        if s.fp is not None and s.fp.spots is None and v.verdict in ("graphene", "not_graphene"):
            s.fp = None                      # a lattice whose spots are too faint to watch: every frame in full
        return _as_cadenced(v, -1, why)

    def _follow(self, frame) -> tuple[bool, str, dict | None]:
        """The guard on a frame of a series whose graphene mask is in use, with the mask moved with the
        field: (fires, why, ``{"mask", "graphene_fraction"}`` of the moved mask). The drift since the
        full check is measured on the whole field's binned spectrum (:func:`measure_drift`, predicted
        from the series' velocity); the guard's tests then look at the moved graphene region only. Fires
        ("drift: ...") when no clear correlation peak lies near the drift predicted (another field, or a
        jump), when the mask has moved by more than :data:`DRIFT_MAX_FRACTION` of the field, or when it
        keeps less than :data:`DRIFT_MIN_KEPT` of it; else as :func:`guard`."""
        s, fp = self.s, self.s.fp
        a = np.asarray(frame.data)
        if a.ndim != 2 or tuple(a.shape) != fp.shape:
            return True, "frame shape differs from the checked frame", None
        x = binned(a, fp.b)
        S = None if x is None else binned_spectrum(x.copy(), fp.b, levels=False)
        if S is None:
            return True, "no usable pixels", None
        k = s.since + 1
        dy, dx, peak = measure_drift(S, fp, (s.velocity[0] * k, s.velocity[1] * k))
        H, W = fp.shape
        if peak < DRIFT_MIN_PEAK:
            s.velocity = (0.0, 0.0)          # (the drift may have changed: the next search starts from none)
            return True, f"drift: the field could not be followed (phase-correlation peak {peak:.1f})", None
        if abs(dy) > DRIFT_MAX_FRACTION * H or abs(dx) > DRIFT_MAX_FRACTION * W:
            return True, f"drift: the mask moved by ({dx:+.0f}, {dy:+.0f}) px since frame {s.checked_frame}", None
        mask = shift_mask(s.verdict.mask, dy, dx)
        frac = np.count_nonzero(mask) / mask.size
        if frac < DRIFT_MIN_KEPT:
            return True, f"drift: the moved mask keeps {100 * frac:.0f} % of the field", None
        Sg = binned_spectrum(x, fp.b, mask)
        if Sg is None:
            return True, "no usable pixels in the graphene region", None
        fired, note = _guard(Sg, fp)
        if fired:
            return True, note, None
        s.shift, s.velocity = (dy, dx), (dy / k, dx / k)
        return False, f"{note}, drift ({dx:+.1f}, {dy:+.1f}) px (peak {peak:.1f})", \
            {"mask": mask, "graphene_fraction": frac}
