"""Is this frame graphene? A material verdict from physical cues that rescaling cannot fake.

:func:`classify_material` looks at one frame (raw detector counts, any pixel size) and returns a
:class:`MaterialVerdict`: ``graphene``, ``not_graphene`` (a crystal that is not graphene: MoS2,
WS2, hBN, ...), ``amorphous`` (amorphous carbon or contamination over the field, no lattice) or
``vacuum`` (no sample). One windowed FFT of the frame gives every cue:

1. **Bragg spots.** The power spectrum divided by its own angular (log-)mean at each radius; a
   crystal has sharp spots far above that diffuse level. The strongest spot and its partners at
   +-60 / 120 degrees make a hexagonal lattice; their radius gives the {10-10} spacing d1 and the
   lattice constant a = 2 d1 / sqrt(3) (in px; in A when the pixel size is declared).
2. **Sublattice contrast from the bispectrum.** For three first-order reflections g1 + g2 + g3 = 0
   of a honeycomb with columns f_A, f_B on the two sublattices, the triple product
   F(g1) F(g2) F(g3) = (f_A w + f_B w*)^3 (w = exp(2 pi i / 3)) does not depend on where the lattice
   sits. Its phase is pi for equal sublattices (graphene) and goes to 0 for one sublattice
   (a triangular lattice); the dimmer/brighter column ratio follows exactly:
   rho = (1 - t) / (1 + t), t = |tan((pi - phase) / 3)| / sqrt(3). Graphene: rho = 1; hBN (Z 5 vs
   7): ~0.5; MoS2 (S2 vs Mo): ~0.4; WS2: ~0.15. Sums over 3x3 bins around each spot with
   k3 = -(k1 + k2) exactly, so the window's leakage phases cancel.
3. **Column width / lattice constant.** The second-order ({11-20}) over first-order amplitude,
   corrected for the structure factor of the measured contrast, gives the columns' Gaussian width
   in units of the spacing. The probe is fixed in A, so a lattice of another constant has columns of
   another relative width (reported, and a loose bound).
4. **Diffuse structure** (no spots): the angular log-mean power near the ky axis (|kx| small: the
   detector lag along x does not colour it there) against its level near Nyquist: amorphous matter
   gives a broad excess at atomic frequencies, vacuum only white noise.
5. **The declared pixel size**, when present, gives a in A: reported, and it decides borderline
   sublattice contrasts (a far from 2.46 A tips them to ``not_graphene``). It never overrules a clear
   image: a graphene frame with a wrong declared size is still graphene (issue 13 re-measures it).
6. **Resolved columns in real space** (fine sampling, a >= 36 px): a hexagon the Fourier cues reject, or
   the scale of a candidate spot when none passes, is tested on the column maxima themselves: sites
   with honeycomb neighbours, the two sublattices' median intensities over the hexagon centres
   (:func:`_site_contrast`; a few Si, a hole or a contamination patch cannot tip a median).

Frames of at least 384 px a side are binned 2 x 2 first (one 256^2 FFT for a 512^2 frame; the bins
keep their frequencies in cycles per field, and graphene's {11-20} spots stay below the binned
Nyquist frequency up to 0.31 A/px); spot powers are corrected for the binning's transfer.

A graphene verdict also gives the region where the graphene lattice is (``mask``), only for a
field part of which clearly shows no lattice: the first-order spots of the lattice (and strong spots
of other grains on the same ring) demodulated on a coarse grid, their power over the noise expected
in each cell (3 x 3 cells averaged); cells at the noise level and far below the field's graphene
level, in groups, covering >= 6 % of the field, fall outside (the region is then grown by two
cells to keep its edge atoms). A whole graphene field gets ``mask`` None and fraction 1.

Cost: one 256^2 real FFT (512^2 frames) plus a few dozen small vectorised numpy calls
(``python -m lab.material_bench --against REF`` measures it against an older revision).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

VERDICTS = ("graphene", "not_graphene", "amorphous", "vacuum")
GRAPHENE_A = 2.46

#: Decision thresholds (dimensionless; measured on held-out simulated frames, docs/simulator.md §6).
NEAR_BINS = 20             # spots closer than this to the origin are judged on local contrast alone
N_TRY = 4                  # best candidate spots tried in turn
PEAK_MIN = 6.0             # hexagon score: geometric mean of the local contrasts of 3 spots at 0/60/120 deg
PEAK_SURE = 16.0           # (noise frames reach 8-13); between PEAK_MIN and PEAK_SURE the second-order
SECOND_MIN = 6.0           # spots must confirm the lattice (geometric mean of their contrasts)
SPOT_FAINT = 4.0           # the faintest of the three
SPOT_MIN = 15.0            # a spot's power over the median of its surroundings (noise: exceeds 15 in a
                           # 25-bin search window with p ~ 1e-3; a hexagon needs two more)
AGREE_MIN = 3              # candidates that must find the same hexagon when its second order does not show
RADII_TOL = 0.12           # the three first-order spots' radii agree within this fraction
MIN_A_PX = 6.0             # a lattice needs a >= 6 px (graphene up to 0.41 A/px, MoS2 0.53); finer: noise
R_MAX = 2.0 / MIN_A_PX + 0.01   # spots searched up to here (cycles/px): the second order of such a lattice
CLIP_STD = 4.0             # pixels above mean + CLIP_STD std are clipped before the FFT
TOP_K = 24                 # strongest bins (by ring-normalised power) tried as the first spot
CAND_LOG = 2.0             # ... among those with log(power / ring level) above this
LOW_K, LOW_R = 12, 40      # and the LOW_K strongest bins (raw power) within LOW_R bins of the origin
STEP_RATIO = 3e-3          # a lower-order spot is at least this fraction of the higher one (power)
RHO_GRAPHENE = 0.70        # sublattice ratio above this: equal sublattices (simulated hBN <= 0.61, MoS2 <= 0.5)
RHO_WEAK, STRENGTH_WEAK = 0.85, 10.0   # a lattice with spots this faint needs rho >= RHO_WEAK
RHO_BORDER = 0.90          # between RHO_GRAPHENE and this, a declared a like MoS2/WS2 (TMD_A) decides
A_TOLERANCE = 0.15         # relative difference to 2.46 A counted as "far" (calibration errors are smaller)
TMD_A = (3.0, 3.35)        # a (A) at the declared pixel size that looks like MoS2 / WS2 / WSe2
WIDTH_RANGE = (0.12, 0.90)  # column FWHM / a accepted for graphene (probe 0.7-1.3 A, blur, jitter, distortions)
DIFFUSE_MIN = 0.6          # log power excess at atomic frequencies for amorphous matter
#: Real-space sublattice test (columns resolved: fine sampling), for a hexagon the Fourier test rejects
RS_MIN_A_PX = 36.0         # lattice constant in frame px from which it runs (graphene <= 0.068 A/px, MoS2 <= 0.088)
RS_RHO = 0.90              # median column intensities of the two sublattices at least this equal
RS_Z = 10.0                # the dimmer sublattice's median over the hexagon centres, in standard errors
RS_MIN_SITES = 6           # honeycomb sites per sublattice at least


@dataclass
class MaterialVerdict:
    """What the frame shows. Plain data; ``to_dict`` drops the mask.

    verdict : one of :data:`VERDICTS`; reason : one human line.
    lattice_constant_px / lattice_constant_A : a of the strongest lattice (A only when the pixel size
        is known; NaN otherwise / without a lattice).
    symmetry : "hexagonal", "not hexagonal" or "none".
    sublattice_ratio : dimmer / brighter column intensity of the two sublattices (1 = equal; NaN).
    column_width_ratio : column FWHM / a (NaN).
    peak_strength : weakest of the three first-order spots over the diffuse level.
    diffuse_excess : log power excess at atomic frequencies over the noise floor (amorphous cue).
    graphene_fraction : fraction of the field inside ``mask`` (1 without a mask, 0 when not graphene).
    mask : (H, W) bool where the graphene lattice is, or None (whole frame / not computed).
    """

    verdict: str
    reason: str
    lattice_constant_px: float = float("nan")
    lattice_constant_A: float = float("nan")
    symmetry: str = "none"
    sublattice_ratio: float = float("nan")
    column_width_ratio: float = float("nan")
    peak_strength: float = 0.0
    diffuse_excess: float = 0.0
    graphene_fraction: float = 0.0
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def is_graphene(self) -> bool:
        return self.verdict == "graphene"

    def to_dict(self) -> dict:
        def num(v):
            return None if not np.isfinite(v) else round(float(v), 4)

        return {"verdict": self.verdict, "reason": self.reason,
                "lattice_constant_px": num(self.lattice_constant_px), "lattice_constant_A": num(self.lattice_constant_A),
                "symmetry": self.symmetry, "sublattice_ratio": num(self.sublattice_ratio),
                "column_width_ratio": num(self.column_width_ratio), "peak_strength": num(self.peak_strength),
                "diffuse_excess": num(self.diffuse_excess), "graphene_fraction": num(self.graphene_fraction)}


@functools.lru_cache(maxsize=8)
def _geometry(h: int, w: int, b: int = 1):
    """Per-shape constants: 2-D periodic Hann window, the radial bin of every rfft2 bin (bins outside
    the search band go to a last "dump" bin), band counts, and the ky-axis wedge of the diffuse cue."""
    wy = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(h) / h)).astype(np.float32)
    wx = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(w) / w)).astype(np.float32)
    win = wy[:, None] * wx[None, :]
    ky = sfft.fftfreq(h)[:, None]
    kx = sfft.rfftfreq(w)[None, :]
    n = max(h, w)
    r = np.sqrt(ky ** 2 + kx ** 2)
    rbin = np.minimum((r * n).astype(np.intp), n // 2 + 1)
    band = (rbin >= 6) & (r <= R_MAX * b)
    band[:, 0] = False                 # kx = 0: per-row gain fluctuations
    band[0, :] = False                 # ky = 0
    nb = n // 2 + 2                    # radial bins; index nb is the dump bin
    rdump = np.where(band, rbin, nb).ravel()
    counts = np.bincount(rdump, minlength=nb + 1).astype(np.float64)
    counts[nb] = 0
    # the ky-axis wedge for the diffuse cue: kx from 1 bin to 0.03 cycles/px, |ky| >= 4 bins
    # (0.03 cycles per frame pixel: as many bins as without binning, so the profile is as smooth)
    wedge = (kx >= 1.0 / w) & (kx <= max(0.03 * b, 2.5 / w)) & (np.abs(ky) >= 4.0 / h)
    wcols = np.flatnonzero(wedge[0] if wedge.shape[0] == 1 else wedge.any(axis=0))
    kyrow = np.minimum((np.abs(ky[:, 0]) * h).astype(np.intp), h // 2)
    out = (wy, wx, win, band, rdump, counts, wcols, kyrow, _full_plane(band, w), _full_plane(rdump.reshape(band.shape), w))
    for a_ in out:
        a_.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _radius_bins(h: int, w: int) -> np.ndarray:
    """|k| in bins (cycles per field, physical frequency scaled to the longer side) on the rfft2 half plane."""
    n = max(h, w)
    r = np.hypot(sfft.fftfreq(h)[:, None], sfft.rfftfreq(w)[None, :]) * n
    r.setflags(write=False)
    return r


def _full_plane(a: np.ndarray, w: int) -> np.ndarray:
    """The full (h, w) plane of a symmetric quantity given on the rfft2 half plane (h, w // 2 + 1):
    a(-ky, -kx) = a(ky, kx)."""
    h, wh = a.shape
    m = w - wh
    out = np.empty((h, w), a.dtype)
    out[:, :wh] = a
    out[0, wh:] = a[0, m:0:-1]
    out[1:, wh:] = a[:0:-1, m:0:-1]
    return out


def _full(F: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """F at integer frequency bins (ky, kx) of the full plane, from an rfft2 half plane."""
    h = F.shape[0]
    ky = np.asarray(ky, np.int64)
    kx = np.asarray(kx, np.int64)
    neg = kx < 0
    ky = np.where(neg, -ky, ky) % h
    kx = np.minimum(np.abs(kx), F.shape[1] - 1)
    v = F[ky, kx]
    return np.where(neg, np.conj(v), v)


def _smooth(v: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or len(v) < k:
        return v
    return np.convolve(v, np.ones(k) / k, mode="same")


class _Spectrum:
    """The windowed frame's spectrum and the normalised power Q = log(power / diffuse level)."""

    def __init__(self, img: np.ndarray, b: int = 1):
        h, w = img.shape
        self.h, self.w = h, w
        self.bin = b                                     # the frame was binned b x b (pixels here are b px)
        self.wy, self.wx, win, self.band, rdump, counts, wcols, kyrow, self.Bf, self.Rf = _geometry(h, w, b)
        # clip bright outliers (Si and heavier adatoms, hot pixels, thick contamination) at mean + 4 std
        # of a row subsample: a few dopants must not tip the sublattice balance of a small field,
        # while a whole brighter sublattice (N in hBN, Mo in MoS2) lies far below the clip
        sub = img[::4]
        clip = float(sub.mean()) + CLIP_STD * float(sub.std())
        img = np.minimum(img, np.float32(clip))
        # remove the mean and a plane (a ramp would leak through the window into low frequencies)
        cm = img.mean(axis=0, dtype=np.float64)
        rm = img.mean(axis=1, dtype=np.float64)
        xc = np.arange(w) - (w - 1) / 2
        yc = np.arange(h) - (h - 1) / 2
        bx = float(cm @ xc) / float(xc @ xc)
        by = float(rm @ yc) / float(yc @ yc)
        x = img - (by * yc + cm.mean()).astype(np.float32)[:, None]
        x -= (bx * xc).astype(np.float32)[None, :]
        x *= win
        self.F = F = sfft.rfft2(x, workers=1)
        P = F.real * F.real
        P += F.imag * F.imag
        P += np.float32(1e-30)
        L = np.log(P).ravel()                            # log power, float32
        nb = len(counts) - 1
        good = counts > 0
        lmean = np.where(good, np.bincount(rdump, weights=L, minlength=nb + 1) / np.maximum(counts, 1), 0.0)
        # trimmed: at small radii the spots fill a good part of a ring and would raise its level
        low = L < (lmean[rdump] + 1.0).astype(np.float32)
        c2 = np.bincount(rdump, weights=low, minlength=nb + 1)
        l2 = np.bincount(rdump, weights=np.where(low, L, np.float32(0)), minlength=nb + 1)
        c2[nb] = 0
        good = c2 > 0
        lm = np.where(good, l2 / np.maximum(c2, 1), 0.0)
        lm = _smooth(lm, 3) / np.maximum(_smooth(good.astype(float), 3), 1e-9)
        self.lmean = lm
        lm = lm.astype(np.float32)
        lm[nb] = np.inf                                  # outside the band: Q = -inf
        self.Q = (L - lm[rdump]).reshape(F.shape)
        # the full plane (h, w) of the power, exp(Q) and the band, indexed by signed bins modulo the
        # shape: the spot searches read these (power is symmetric: P(-k) = P(k))
        self.wh = F.shape[1]
        self.Pf = _full_plane(P.astype(np.float64), w)
        self.ring = np.exp(lm.astype(np.float64))          # diffuse level per radial bin (0 outside the band)
        # diffuse cue: log power profile along |ky| near the ky axis, excess over the Nyquist level
        Lw = L.reshape(F.shape)[:, wcols]
        prof = np.bincount(np.repeat(kyrow, len(wcols)), weights=Lw.ravel(), minlength=h // 2 + 1)
        cnt = np.bincount(kyrow, minlength=h // 2 + 1) * len(wcols)
        prof = (prof / np.maximum(cnt, 1))[4:]
        prof = _smooth(prof, 7)
        f = np.arange(4, h // 2 + 1) / h
        hi, lo = f >= 0.40, (f < 0.38) & (f >= 6.0 / h)
        self.diffuse = float(prof[lo].max() - np.median(prof[hi])) if hi.any() and lo.any() else 0.0
        self.scale = np.array([1.0 / h, 1.0 / w])
        self.rh = _radius_bins(h, w)

    def q(self, ky, kx) -> np.ndarray:
        """exp(Q) at signed integer bins (0 outside the band)."""
        ky = np.asarray(ky, np.int64)
        kx = np.asarray(kx, np.int64)
        iy, ix = ky % self.h, kx % self.w
        return np.where(np.abs(kx) < self.wh, self.Pf[iy, ix] / self.ring[self.Rf[iy, ix]], 0.0)

    def spot(self, kvec):
        """Strongest bin within max(2 bins, 4 %) of a predicted signed (ky, kx) bin, and its power over
        the median power of the 4-bin-wide frame around the search window (local contrast; robust
        to rings crowded with spots and to low-frequency clutter): (bin, contrast)."""
        b, c = self.spots_auto(np.asarray(kvec, float)[None, :])
        return b[0], float(c[0])

    def spots_auto(self, kvecs: np.ndarray):
        """:meth:`spot` for many (K, 2) predicted bins at once (each its own search half-width)."""
        kvecs = np.asarray(kvecs, float).reshape(-1, 2)
        r = np.maximum(1, np.rint(0.025 * np.hypot(kvecs[:, 0], kvecs[:, 1]))).astype(np.int64)
        return self.spots(kvecs, r)

    def spots(self, kvecs: np.ndarray, r):
        """:meth:`spot` for many (K, 2) predicted bins at once with search half-width ``r`` (one for
        all or one per row)."""
        kvecs = np.asarray(kvecs, float).reshape(-1, 2)
        K = len(kvecs)
        r = np.broadcast_to(np.asarray(r, np.int64), (K,))
        oy, ox, cheb = _offsets(int(r.max()) + 4)
        cy = np.rint(kvecs[:, 0]).astype(np.int64)[:, None] + oy[None, :]
        cx = np.rint(kvecs[:, 1]).astype(np.int64)[:, None] + ox[None, :]
        flat = (cy % self.h) * self.w + cx % self.w
        p = self.Pf.take(flat)
        valid = self.Bf.take(flat)
        valid &= np.abs(cx) < self.wh
        inner = cheb[None, :] <= r[:, None]
        ring = valid & (cheb[None, :] <= r[:, None] + 4) & ~inner
        pin = np.where(inner & valid, p, -1.0)
        j = np.argmax(pin, axis=1)
        rows = np.arange(K)
        peak = pin[rows, j]
        n_ring = ring.sum(axis=1)
        kth = np.minimum(n_ring // 2, p.shape[1] - 1)
        srt = np.partition(np.where(ring, p, np.inf), np.unique(kth), axis=1)   # (the order statistics only)
        med = srt[rows, kth]
        ok = (peak > 0) & (n_ring >= 8)
        local = np.where(ok, peak / (np.where(ok, med, 1.0) + 1e-30), 0.0)
        # and over the ring's level at its radius (exp Q): a ring of diffuse scattering (amorphous
        # matter) stands out of a square box of bins, not out of its own ring
        # (near the origin the rings are short and full of the spots' own leakage: local only)
        by, bx = cy[rows, j], cx[rows, j]
        fj = flat[rows, j]
        qr = np.where(np.abs(bx) < self.wh, self.Pf.take(fj) / self.ring[self.Rf.take(fj)], 0.0)
        near = np.hypot(kvecs[:, 0], kvecs[:, 1]) < NEAR_BINS
        contrast = np.where(near, local, np.sqrt(local * qr))
        return np.stack([by, bx], axis=1).astype(float), contrast

    def centroid(self, k) -> np.ndarray:
        """Power-weighted centre of the 3x3 bins around a signed bin."""
        return self.centroids(np.asarray(k, float)[None, :])[0]

    def centroids(self, ks: np.ndarray, with_sum: bool = False):
        """:meth:`centroid` of many (K, 2) signed bins (and the 3x3 power sums)."""
        pts = np.asarray(ks, float)[:, None, :] + _O3[None, :, :]
        iy = pts[..., 0].astype(np.int64) % self.h
        ix = pts[..., 1].astype(np.int64) % self.w
        p = self.Pf[iy, ix]
        tot = p.sum(1)
        c = (pts * p[..., None]).sum(1) / np.maximum(tot, 1e-30)[:, None]
        return (c, tot) if with_sum else c

    def box_gain(self, ks) -> np.ndarray:
        """Power transfer of the b x b binning at (K, 2) signed bins (1 without binning)."""
        ks = np.asarray(ks, float).reshape(-1, 2)
        if self.bin == 1:
            return np.ones(len(ks))
        b = self.bin
        f = ks * self.scale / b                               # cycles per frame pixel
        g = np.prod(np.sinc(b * f) / np.sinc(f), axis=1)
        return np.maximum(g * g, 1e-6)

    def rot(self, kvec, deg):
        """Rotate a bin vector by ``deg`` in physical frequency (non-square frames)."""
        f = kvec * self.scale
        t = np.deg2rad(deg)
        return np.array([f[0] * np.cos(t) + f[1] * np.sin(t), -f[0] * np.sin(t) + f[1] * np.cos(t)]) / self.scale

    def strongest(self, exclude=(), lattice=None):
        """The strongest spot: of the ``TOP_K`` band bins of largest Q, the one of largest local
        contrast (:meth:`spots`), leaving out +-r bins around the (signed) bins in ``exclude``.
        Returns up to ``N_TRY`` (signed (ky, kx) bin, hexagon score: geometric mean of the three
        local contrasts), best first. ``lattice`` : (k1, k2) of a lattice already found; candidates
        on its reflections m k1 + n k2 are left out."""
        Q = self.Q
        if len(exclude):
            Q = Q.copy()
            ex = np.asarray(exclude, float).reshape(-1, 2)
            ex = np.vstack([ex, -ex])
            r = np.maximum(3, np.rint(0.06 * np.hypot(ex[:, 0], ex[:, 1]))).astype(np.int64)
            oy, ox, cheb = _offsets(int(r.max()))
            cy = np.rint(ex[:, 0]).astype(np.int64)[:, None] + oy[None, :]
            cx = np.rint(ex[:, 1]).astype(np.int64)[:, None] + ox[None, :]
            keep = (cheb[None, :] <= r[:, None]) & (cx >= 0) & (cx < Q.shape[1])
            Q[cy[keep] % self.h, cx[keep]] = -np.inf
        flat = Q.ravel()
        cand = np.flatnonzero(flat > np.float32(CAND_LOG))
        if len(cand) == 0:
            cand = np.array([int(np.argmax(flat))], dtype=np.int64)
        if len(cand) > TOP_K:
            cand = cand[np.argpartition(flat[cand], len(cand) - TOP_K)[-TOP_K:]]
        # plus the LOW_K strongest bins by raw power at small radii (<= LOW_R bins): few cycles per
        # field (fine sampling) put the spots where the rings are too short to normalise against
        n_lo = min(LOW_R, self.h // 2 - 1, Q.shape[1] - 1)
        sub = np.vstack([self.F[:n_lo + 1, :n_lo + 1], self.F[-n_lo:, :n_lo + 1]])
        rows = np.r_[0:n_lo + 1, self.h - n_lo:self.h]
        pw = np.abs(sub)
        pw = np.where(np.isfinite(Q[rows, :n_lo + 1]), pw, 0.0).ravel()
        lo = np.argpartition(pw, len(pw) - LOW_K)[-LOW_K:]
        lo = rows[lo // (n_lo + 1)] * Q.shape[1] + lo % (n_lo + 1)
        cand = np.unique(np.concatenate([cand, lo]))
        cand = cand[np.isfinite(flat[cand])]
        if len(cand) == 0:
            return []
        ky, kx = np.divmod(cand, self.F.shape[1])
        ks = np.stack([(ky + self.h // 2) % self.h - self.h // 2, kx], axis=1).astype(float)
        if lattice is not None:
            ks = ks[~_on_lattice(ks, *lattice)]
            if not len(ks):
                return []
        # score: geometric mean of the local contrasts of the candidate and its partners at 60 and
        # 120 degrees (a hexagonal lattice beats an isolated strong bin)
        n = len(ks)
        allk = np.vstack([ks, self.rot_many(ks, 60.0), self.rot_many(ks, 120.0)])
        _, c = self.spots(allk, 2)
        c = np.maximum(c.reshape(3, n), 1e-3)
        score = np.exp(np.log(c).mean(axis=0))
        order = np.argsort(score)[::-1][:N_TRY]
        return [(ks[j], float(score[j])) for j in order]

    def rot_many(self, ks: np.ndarray, deg: float) -> np.ndarray:
        f = ks * self.scale
        t = np.deg2rad(deg)
        out = np.stack([f[:, 0] * np.cos(t) + f[:, 1] * np.sin(t), -f[:, 0] * np.sin(t) + f[:, 1] * np.cos(t)], axis=1)
        return out / self.scale


def _near_spots(a, b, S, rel: float = 0.12) -> bool:
    """Whether any first-order spot of lattice ``a`` lies within ``rel`` of |k| of a first-order spot
    (either sign) of lattice ``b``: a strained or bent part of the same crystal, not another one."""
    A = np.asarray(a, float) * S.scale
    B = np.asarray(b, float) * S.scale
    B = np.vstack([B, -B])
    d = np.hypot(*(A[:, None, :] - B[None, :, :]).transpose(2, 0, 1))
    return bool((d <= rel * np.hypot(*A.T)[:, None]).any())


def _on_lattice(ks: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """Which of the (K, 2) signed bins lie on a reflection m k1 + n k2 (integers m, n) of the lattice
    spanned by k1, k2 (within max(2 bins, 4 %)): a higher order of that lattice, not another one."""
    B = np.stack([k1, k2], axis=1)
    if abs(np.linalg.det(B)) < 1e-9:
        return np.zeros(len(ks), bool)
    mn = np.linalg.solve(B, np.asarray(ks, float).T)
    near = (B @ np.rint(mn)).T
    d = np.hypot(*(np.asarray(ks, float) - near).T)
    return d <= np.maximum(2.0, 0.04 * np.hypot(*np.asarray(ks, float).T))


#: Lower-order reflections of a hexagonal lattice relative to a spot k: (|g| factor, rotation in degrees):
#: {11-20} -> {10-10} (1/sqrt 3, +-30), {20-20} -> {10-10} (1/2, 0), {21-30} -> {10-10} (1/sqrt 7, +-19.1), 1/3.
_LOWER = ((1 / np.sqrt(3.0), 30.0), (1 / np.sqrt(3.0), -30.0), (0.5, 0.0), (1 / np.sqrt(7.0), 19.1066),
          (1 / np.sqrt(7.0), -19.1066), (1 / 3.0, 0.0))
_O3 = np.array([[dy, dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], float)


@functools.lru_cache(maxsize=16)
def _offsets(R: int):
    """Raveled (oy, ox) offsets of a (2R+1)^2 box and their Chebyshev radius (read-only)."""
    oy, ox = np.mgrid[-R:R + 1, -R:R + 1]
    out = (oy.ravel(), ox.ravel(), np.maximum(np.abs(oy), np.abs(ox)).ravel())
    for a_ in out:
        a_.setflags(write=False)
    return out
_O5 = np.array([[dy, dx] for dy in range(-2, 3) for dx in range(-2, 3)], float)


def _rho(F: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> float:
    """Sublattice ratio from the bispectrum of the first-order spots k1, k2, k3 = -(k1 + k2), summed
    over 3x3 x 3x3 bins with k3 = -(k1 + k2) exactly (the window's leakage phases cancel)."""
    o = _O3
    a1 = k1[None, :] + o
    a2 = k2[None, :] + o
    s12 = (a1[:, None, :] + a2[None, :, :]).reshape(-1, 2)
    f1 = _full(F, a1[:, 0], a1[:, 1])
    f2 = _full(F, a2[:, 0], a2[:, 1])
    f3 = _full(F, -s12[:, 0], -s12[:, 1]).reshape(len(o), len(o))
    B = complex((f1[:, None] * f2[None, :] * f3).sum())
    delta = np.angle(np.exp(1j * (np.pi - np.angle(B)))) / 3.0          # in (-pi/3, pi/3]
    t = abs(np.tan(delta)) / np.sqrt(3.0)
    return float((1 - t) / (1 + t))


def _lattice(S: _Spectrum, k1, q1, unconfirmed: list | None = None):
    """Analyse the lattice whose strongest spot is ``k1``: None if not a hexagonal lattice, else a dict
    with the three first-order spots, a (px), sublattice ratio, column width ratio, spot strength.
    ``unconfirmed``: a list; a hexagon that passes every test but the second-order confirmation is
    analysed all the same and appended there (None is still returned for it)."""
    k1 = np.asarray(k1, float)
    kc = S.centroid(k1)                              # sub-bin position: rotations predict better
    pred = S.rot(kc, 120.0)
    bb, cc = S.spots(np.stack([k1, pred]), np.array([1, max(1, int(round(0.025 * np.hypot(*pred))))]))
    q1, k2, q2 = float(cc[0]), bb[1], float(cc[1])    # its contrast (3x3 window); the 120-degree spot
    # the third spot of the hexagon is exactly k1 + k2 (at 60 degrees): a 3x3 window suffices there,
    # so noise rarely fakes it
    q60 = S.spots((k1 + k2)[None, :], 1)[1][0]
    score = float(np.cbrt(max(q1, 1e-3) * max(q2, 1e-3) * max(q60, 1e-3)))
    if score < PEAK_MIN or min(q1, q2, q60) < SPOT_FAINT:
        return None
    stepped = weak = False
    for _ in range(3):                               # step down to the first order ({10-10}) spots
        # every lower order at once; the first (in _LOWER's order) whose 60-degree partner also
        # stands out wins
        kc = S.centroid(k1)
        preds = np.stack([S.rot(kc, ang) * f for f, ang in _LOWER])
        b, qb = S.spots_auto(preds)
        floor = max(SPOT_MIN, STEP_RATIO * q1)         # a real lower order, not window leakage
        cand = np.flatnonzero((qb >= floor) & (np.hypot(*(b * S.scale).T) * max(S.h, S.w) >= 6))
        if not len(cand):
            break
        _, q60b = S.spots_auto(S.rot_many(S.centroids(b[cand]), 60.0))
        good = cand[q60b >= floor]
        if not len(good):
            break
        k1, q1, stepped = b[good[0]], float(qb[good[0]]), True
    if not stepped:
        # a lattice shows its second order ({11-20}) exactly at k1 - k2, 2 k1 + k2 and k1 + 2 k2
        # (3x3 windows); where that lies beyond the band, the first-order hexagon must be strong
        k2nd = np.array([k1 - k2, 2 * k1 + k2, k1 + 2 * k2], float)
        inside = np.abs(k2nd * S.scale).max(axis=1) < min(R_MAX * S.bin, 0.49)
        if inside.sum() < 2:
            if score < 2 * PEAK_SURE:
                return None
        else:
            _, c2 = S.spots(k2nd[inside], 1)
            if np.exp(np.log(np.maximum(c2, 1e-3)).mean()) < (SECOND_MIN if score < PEAK_SURE else SECOND_MIN / 2):
                if unconfirmed is None:
                    return None
                weak = True
    kc = S.centroid(k1)
    bb, cc = S.spots_auto(np.stack([S.rot(kc, 120.0), S.rot(kc, 60.0)]))
    k2, q2, k60, q60 = bb[0], float(cc[0]), bb[1], float(cc[1])
    rho = _rho(S.F, k1, k2)
    if not stepped and rho < 0.1:
        # phase ~0: the {11-20} triple of a honeycomb (its structure factor is real and positive)
        # looks like this; faint first-order spots 30 degrees off at 1/sqrt(3) then decide
        for ang in (30.0, -30.0):
            b, qb = S.spot(S.rot(k1, ang) / np.sqrt(3.0))
            b2, qb2 = S.spot(S.rot(b, 120.0))
            if min(qb, qb2) >= SPOT_FAINT and np.hypot(*(b * S.scale)) * max(S.h, S.w) >= 6:
                k1, q1, k2, q2 = b, qb, b2, qb2
                k60, q60 = S.spot(S.rot(k1, 60.0))
                rho = _rho(S.F, k1, k2)
                break
    k3 = -(k1 + k2)
    cen, psum = S.centroids(np.stack([k1, k2, k3]), with_sum=True)
    radii = list(np.hypot(*(cen * S.scale).T))
    amps1 = psum / S.box_gain(np.stack([k1, k2, k3]))
    rmean = float(np.mean(radii))
    if (max(radii) - min(radii)) > RADII_TOL * rmean:     # not one lattice (strain and drift stay below)
        return None
    d1_px = 1.0 / rmean
    a_px = d1_px * 2.0 / np.sqrt(3.0)
    if a_px * S.bin < MIN_A_PX:
        return None
    q3 = S.spot(k3)[1]
    # column width from the second-order ({11-20}) spots
    k2nd = np.stack([k1 - k2, k2 - k3, k3 - k1])
    k2nd = k2nd[(np.abs(k2nd) + 1 <= 0.5 / S.scale).all(axis=1)]       # inside the Nyquist box
    amps2 = S.centroids(k2nd, with_sum=True)[1] / S.box_gain(k2nd) if len(k2nd) else []
    width = float("nan")
    if len(amps2):
        n = max(S.h, S.w)
        nb = len(S.lmean)
        d1 = np.exp(S.lmean[min(int(rmean * n), nb - 1)]) * 9
        d2 = np.exp(S.lmean[min(int(np.sqrt(3.0) * rmean * n), nb - 1)]) * 9
        A1 = max(np.mean(amps1) - d1, 1e-30)
        A2 = max(np.mean(amps2) - d2, 1e-30)
        ratio = np.sqrt(A2 / A1) / ((1 + rho) / np.sqrt(1 + rho * rho - rho))
        sigma_px = np.sqrt(-np.log(min(ratio, 0.999))) / (2 * np.pi) * d1_px
        width = float(2.3548 * sigma_px / a_px)
    strength = float(min(q1, q2, max(q3, q60)))
    if strength < SPOT_FAINT:                        # e.g. a step down onto a stray bin
        return None
    # a_px in the frame's own pixels (the spectrum's pixels are S.bin of them)
    out = {"spots": (k1, k2, k3), "a_px": a_px * S.bin, "rho": rho, "width": width, "strength": strength}
    if weak:
        unconfirmed.append(out)
        return None
    return out


def _agreed(weak: list, S: "_Spectrum") -> dict | None:
    """A hexagon whose second order does not show, found from AGREE_MIN of the candidate spots tried
    (each its own start, each passing the first-order tests): every spot of the lattice stands out
    on its own, which a chance alignment of noise bins rarely does. Fine sampling needs this: a
    field of a few unit cells (a 512 px frame at 0.03 A/px is 15 A wide) puts the first order a few
    bins from the origin, and columns as wide as the probe (0.7-1.3 A) leave the {11-20} spots
    (1.23 A) at the noise. Returns the first (best-scored) of the largest agreeing group, or None."""
    if len(weak) < AGREE_MIN:
        return None
    best = []
    for a in weak:
        grp = [b for b in weak if _near_spots(b["spots"], a["spots"], S)]
        if len(grp) > len(best):
            best = grp
    return best[0] if len(best) >= AGREE_MIN else None


def _blocks(img: np.ndarray, f: int, cache: dict | None = None) -> np.ndarray:
    """``img`` block-averaged f x f (cropped to whole blocks); ``cache`` keeps one per f."""
    if f <= 1:
        return img
    if cache is not None and f in cache:
        return cache[f]
    from engine.chem.filters import block_mean

    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    out = block_mean(img[:h, :w], f)
    if cache is not None:
        cache[f] = out
    return out


def _site_contrast(img: np.ndarray, a_px: float, cache: dict | None = None):
    """Sublattice contrast measured in real space, for fields where the atom columns are resolved.

    img : the (binned) frame; a_px : lattice constant in its pixels. The frame is block-averaged to
    ~8 px per C-C distance (cc = a / sqrt 3), smoothed (sigma 0.2 cc), and its local maxima are the
    column candidates. A honeycomb site has >= 2 neighbours at 0.7-1.3 cc along the bond directions of
    its own sublattice (bond angle mod 120 degrees: theta0 for one sublattice, theta0 + 60 for the
    other; theta0 from the 6-fold mean of all neighbour directions) and none along the other's. The two
    sublattices' column intensities are their medians above the median at the hexagon centres, so a
    few Si (on one sublattice by chance), a hole or a contamination patch cannot tip them (the
    bispectrum of a 15-35 A field can). Returns (rho = dimmer / brighter, sites of the smaller
    sublattice, z = the dimmer sublattice's contrast in standard errors from the sites' MAD) or None."""
    from scipy.spatial import cKDTree

    cc = a_px / np.sqrt(3.0)
    f = max(1, int(cc // 8))
    img = _blocks(img, f, cache)
    cc /= f
    sm = ndimage.gaussian_filter(np.asarray(img, np.float32), 0.2 * cc)
    pk = sm == ndimage.maximum_filter(sm, size=max(3, int(0.7 * cc) | 1))
    m = int(np.ceil(cc))
    pk[:m] = False
    pk[-m:] = False
    pk[:, :m] = False
    pk[:, -m:] = False
    yx = np.argwhere(pk)
    if len(yx) < 2 * RS_MIN_SITES:
        return None
    pairs = cKDTree(yx.astype(float)).query_pairs(1.3 * cc, output_type="ndarray")
    if not len(pairs):
        return None
    d = (yx[pairs[:, 1]] - yx[pairs[:, 0]]).astype(float)
    far = np.hypot(d[:, 0], d[:, 1]) > 0.7 * cc
    pairs, d = pairs[far], d[far]
    th = np.arctan2(d[:, 0], d[:, 1])
    th0 = np.angle(np.exp(6j * th).mean()) / 6.0
    c3 = np.cos(3.0 * (th - th0))               # +1: bond i -> j along th0 + n 120 (i on one sublattice)
    fw, bw = c3 > 0.87, c3 < -0.87
    n = len(yx)
    plus = np.bincount(pairs[:, 0], fw, n) + np.bincount(pairs[:, 1], bw, n)
    minus = np.bincount(pairs[:, 0], bw, n) + np.bincount(pairs[:, 1], fw, n)
    A = (plus >= 2) & (minus == 0)
    B = (minus >= 2) & (plus == 0)
    na, nb = int(A.sum()), int(B.sum())
    if min(na, nb) < RS_MIN_SITES:
        return None
    inten = sm[yx[:, 0], yx[:, 1]]
    # hexagon centres: at cc from a site, between its bonds
    ang = th0 + np.arange(3) * (2 * np.pi / 3)
    cen = np.concatenate([(yx[sel][:, None, :] + cc * np.stack([np.sin(ang + off), np.cos(ang + off)], -1)[None]
                           ).reshape(-1, 2) for sel, off in ((A, np.pi / 3), (B, 0.0))])
    cy = np.clip(np.rint(cen[:, 0]).astype(np.intp), 0, sm.shape[0] - 1)
    cx = np.clip(np.rint(cen[:, 1]).astype(np.intp), 0, sm.shape[1] - 1)
    bg = float(np.median(sm[cy, cx]))
    ma, mb = float(np.median(inten[A])), float(np.median(inten[B]))
    lo, hi = sorted((ma - bg, mb - bg))
    if hi <= 0:
        return None
    mad = 1.4826 * float(np.median(np.abs(np.concatenate([inten[A] - ma, inten[B] - mb])))) + 1e-12
    return lo / hi, min(na, nb), lo / (mad / np.sqrt(min(na, nb)))


def _real_space_rescue(img: np.ndarray, b: int, lat: dict) -> dict | None:
    """A hexagon the Fourier cues reject, at fine sampling (a >= RS_MIN_A_PX frame px): graphene when
    its columns, found in real space, sit on a honeycomb whose two sublattices are equally bright
    (:func:`_site_contrast`; at a and at sqrt(3) a, for a lattice found through its {11-20} spots).
    Returns the lattice with the real-space contrast, or None."""
    if lat["a_px"] < RS_MIN_A_PX:
        return None
    cache: dict = {}
    for f in (1.0, np.sqrt(3.0)):
        r = _site_contrast(img, f * lat["a_px"] / b, cache)
        if r is not None and r[0] >= RS_RHO and r[2] >= RS_Z:
            return {**lat, "a_px": f * lat["a_px"], "rho": r[0], "width": float("nan"), "real_space": r[1]}
    return None


def _real_space_candidates(img: np.ndarray, b: int, S: "_Spectrum", cands) -> dict | None:
    """No hexagon passed the Fourier tests: at fine sampling (a faint first order a few bins out, or
    clutter of the same size as the columns), try the real-space test at the scale of each candidate
    spot tried (as a {10-10} spot, and as a {11-20} one), with twice the significance asked of a
    hexagon the Fourier cues found (RS_Z). Returns a lattice without spots (no mask), or None."""
    cache: dict = {}
    for k, q in cands:
        a_px = S.bin * 2.0 / np.sqrt(3.0) / float(np.hypot(*(np.asarray(k, float) * S.scale)))
        if a_px < RS_MIN_A_PX:
            continue
        for f in (1.0, np.sqrt(3.0)):
            r = _site_contrast(img, f * a_px / b, cache)
            if r is not None and r[0] >= RS_RHO and r[2] >= 2 * RS_Z:
                return {"spots": None, "a_px": f * a_px, "rho": r[0], "width": float("nan"), "strength": float(q),
                        "real_space": r[1]}
    return None


def _graphene_like(lat: dict, px: float | None) -> tuple[bool, str]:
    """(is graphene, why not) for an analysed lattice."""
    rho, width = lat["rho"], lat["width"]
    tmd = px is not None and TMD_A[0] <= lat["a_px"] * px <= TMD_A[1]
    if rho < RHO_GRAPHENE:
        return False, f"2 sublattices of unequal contrast ({rho:.2f})"
    if rho < RHO_WEAK and lat["strength"] < STRENGTH_WEAK:
        # faint spots measure the contrast less well: equal sublattices must show more clearly
        return False, f"faint spots and 2 sublattices of not clearly equal contrast ({rho:.2f})"
    if rho < RHO_BORDER and tmd:
        return False, f"2 sublattices of slightly unequal contrast ({rho:.2f}) and a as MoS2/WS2"
    if np.isfinite(width) and not (WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]):
        return False, (f"atom columns {width:.2f} of a wide (graphene {WIDTH_RANGE[0]}-{WIDTH_RANGE[1]})")
    return True, ""


def classify_material(image, pixel_size_A: float | None = None, want_mask: bool = True) -> MaterialVerdict:
    """The material verdict of one frame.

    image : (H, W) array of detector counts (any dtype; at least 64 x 64 px).
    pixel_size_A : declared A per pixel, or None. It only converts a to A and decides borderline
        contrasts (module docstring); the verdict comes from the image.
    want_mask : also return the graphene region (a coarse mask) for graphene frames.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 64:
        raise ValueError(f"classify_material needs a 2-D frame of at least 64 x 64 px, got shape {img.shape}")
    px = float(pixel_size_A) if pixel_size_A is not None and np.isfinite(pixel_size_A) and pixel_size_A > 0 else None
    finite = np.isfinite(img)
    if not finite.all():
        if not finite.any():
            return MaterialVerdict("vacuum", "no finite pixels: nothing to see")
        img = np.where(finite, img, np.float32(np.median(img[finite])))
    if float(img.max()) == float(img.min()):
        return MaterialVerdict("vacuum", "constant frame: no sample (or beam blanked)")
    shape = img.shape
    img, b = _binned(img)
    S = _Spectrum(img, b)
    cands = S.strongest()
    res = {"diffuse_excess": S.diffuse}
    lat = None
    k1, q1 = cands[0] if cands else (np.zeros(2), 0.0)
    weak: list = []
    for k, q in cands:
        if q < PEAK_MIN:
            break
        lat = _lattice(S, k, q, weak)
        if lat is not None:
            k1, q1 = k, q
            break
    if lat is None:
        lat = _agreed(weak, S)
    rescued_from = ""
    if lat is None:
        lat = _real_space_candidates(img, b, S, cands)
        rescued_from = "no lattice the Fourier cues accept" if lat is not None else ""
    if lat is None:
        if q1 >= 10 * PEAK_MIN:
            a_px = S.bin / np.hypot(*(k1 * S.scale))
            return MaterialVerdict("not_graphene", f"a crystal lattice that is not hexagonal (period "
                                   f"{_fmt_len(a_px, px)}): not graphene", lattice_constant_px=a_px,
                                   lattice_constant_A=a_px * px if px else np.nan, symmetry="not hexagonal",
                                   peak_strength=q1, **res)
        return _no_lattice(res, S.diffuse, q1)
    ok, why = (True, "") if rescued_from else _graphene_like(lat, px)
    other = (f"; resolved columns on a honeycomb, {lat['real_space']} or more sites per sublattice, equally "
             f"bright in real space ({rescued_from})") if rescued_from else ""
    if not ok:
        rescued = _real_space_rescue(img, b, lat)
        if rescued is not None:
            other = (f"; resolved columns on a honeycomb, {rescued['real_space']} or more sites per sublattice, "
                     f"equally bright in real space (the Fourier cues said {why})")
            lat, ok = rescued, True
    if not ok:
        # a second lattice (part of the field graphene, the rest another crystal)?
        # (every reflection m k1 + n k2 of the first lattice is left out: its higher orders are no
        # second lattice)
        k1_, k2_ = (np.asarray(v, float) for v in lat["spots"][:2])
        m, n = (g.ravel() for g in np.mgrid[-2:3, -2:3])
        pts = m[:, None] * k1_[None, :] + n[:, None] * k2_[None, :]
        pts = pts[((m != 0) | (n != 0)) & (np.abs(pts * S.scale).max(axis=1) < 0.5)]
        more = S.strongest(exclude=pts, lattice=(k1_, k2_))
        lat2 = None
        for k, q in more:
            if q < PEAK_MIN:
                break
            lat2 = _lattice(S, k, q)
            if lat2 is not None and (_on_lattice(np.asarray(lat2["spots"][:2], float), k1_, k2_).any()
                                     or _near_spots(lat2["spots"], lat["spots"], S)):
                lat2 = None         # the first lattice's reflections, or its own spots smeared by strain
            if lat2 is not None:
                break
        # a second lattice must stand out clearly: faint noise hexagons (strength 4-10) are common in
        # the many bins left once a strong lattice is excluded (an hBN frame read as graphene by one)
        if lat2 is not None and lat2["strength"] >= STRENGTH_WEAK and _graphene_like(lat2, px)[0]:
            other = (f"; another hexagonal lattice a = {_fmt_len(lat['a_px'], px)} with {why} covers part of "
                     "the field")
            lat, ok = lat2, True
    a_px = lat["a_px"]
    fields = dict(lattice_constant_px=a_px, lattice_constant_A=a_px * px if px else float("nan"),
                  symmetry="hexagonal", sublattice_ratio=lat["rho"], column_width_ratio=lat["width"],
                  peak_strength=lat["strength"], **res)
    desc = f"hexagonal lattice a = {_fmt_len(a_px, px)}"
    if not ok:
        return MaterialVerdict("not_graphene", f"{desc} with {why}: not graphene", **fields)
    far = px is not None and abs(a_px * px / GRAPHENE_A - 1) > A_TOLERANCE
    note = (f"; at the declared pixel size a = {a_px * px:.2f} A, not 2.46 A: the pixel size looks wrong"
            if far else "")
    mask, frac = (None, 1.0)
    if want_mask and lat["spots"] is not None:
        mask, frac = _graphene_mask(S, lat["spots"], shape)
    return MaterialVerdict("graphene", f"{desc} with 2 sublattices of equal contrast ({lat['rho']:.2f}): "
                           f"graphene{other}{note}", graphene_fraction=frac, mask=mask, **fields)


#: Frames with both sides at least this are binned 2 x 2 before the FFT (a quarter of the work; the
#: bins keep their frequencies in cycles per field, and graphene's second order stays below the binned
#: Nyquist frequency up to 0.31 A/px); binned frames larger than MAX_SIDE_PX are cropped at the centre.
BIN_FROM_PX = 384
MAX_SIDE_PX = 512


def _binned(img: np.ndarray) -> tuple[np.ndarray, int]:
    h, w = img.shape
    if min(h, w) < BIN_FROM_PX:
        return img, 1
    h2, w2 = min(h // 2, MAX_SIDE_PX), min(w // 2, MAX_SIDE_PX)
    y0, x0 = (h - 2 * h2) // 2, (w - 2 * w2) // 2
    a = img[y0:y0 + 2 * h2, x0:x0 + 2 * w2]
    out = a[0::2, 0::2] + a[1::2, 0::2]
    out += a[0::2, 1::2]
    out += a[1::2, 1::2]
    return out, 2


def _fmt_len(a_px: float, px: float | None) -> str:
    return f"{a_px * px:.2f} A" if px else f"{a_px:.1f} px"


def _no_lattice(res: dict, diffuse: float, q1: float) -> MaterialVerdict:
    res = {**res, "peak_strength": q1}
    if diffuse >= DIFFUSE_MIN:
        return MaterialVerdict("amorphous", f"no lattice, diffuse structure at atomic spacings (excess {diffuse:.1f}): "
                               "amorphous carbon or contamination", **res)
    return MaterialVerdict("vacuum", f"no lattice and no atomic structure above the noise (excess {diffuse:.1f}): vacuum",
                           **res)


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


def _graphene_mask(S: "_Spectrum", spots, shape):
    """Where the graphene lattice is, or None for the whole field (module docstring): the first-order
    spots of the lattice found and of other graphene grains (strong spots on the same ring)
    demodulated on a coarse grid, their summed power over the noise expected there."""
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
    o = np.fft.ifftshift(np.arange(-m, m))           # window offsets in ifft order (no shift needed)
    cy = np.rint(ks[:, 0]).astype(np.int64)[:, None, None] + o[None, :, None]
    cx = np.rint(ks[:, 1]).astype(np.int64)[:, None, None] + o[None, None, :]
    sub = _full(S.F, cy, cx)
    env = sfft.ifft2(sub, axes=(1, 2), workers=1)
    env2 = (env.real * env.real + env.imag * env.imag).sum(0)
    # noise expected per cell: each window's diffuse level (ring level of the trimmed log-mean, whose
    # exp is ~0.56 of the mean power of noise), spread over n^2 cells, shaped by the window
    iy, ix = cy % h, cx % w
    lev = S.ring[S.Rf[iy, ix]]
    lev = np.where(np.isfinite(lev), lev, 0.0).sum() / 0.56 / float(n) ** 4
    win, idx = _mask_geometry(n, h, w)
    w2 = win * win                                   # signal and noise power both go with the window^2
    score = env2 / np.maximum(lev * w2 / np.mean(w2), 1e-300)
    score = score[idx[0], idx[1]]
    # cells of a few unit cells' worth of spots are noisy: judge each with its 3 x 3 neighbours
    score = ndimage.uniform_filter(score, 3, mode="nearest")
    flat = score.ravel()
    top = float(np.partition(flat, (3 * len(flat)) // 4)[(3 * len(flat)) // 4])     # 75th percentile
    if top < MASK_SURE:
        return None, 1.0                             # too faint to map: the whole field
    empty = (score < MASK_NOISE) & (score < MASK_REL * top)   # at the noise level, far below the graphene
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
    # keep the region's edge atoms (and undo the spread of the 3 x 3 judgement into the graphene)
    coarse = ndimage.binary_dilation(~empty, iterations=2)
    frac = float(coarse.mean())
    if frac > 1.0 - MASK_MIN_OUT:
        return None, 1.0                             # a corner or a rim: not worth dropping atoms for
    H, W = shape
    ry = np.minimum((np.arange(H) * n) // H, n - 1)
    rx = np.minimum((np.arange(W) * n) // W, n - 1)
    return coarse[ry][:, rx], frac


def _grain_spots(S: "_Spectrum", spots, r1: float, most: int = 6) -> list:
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
