"""The windowed spectrum of one frame, for the material verdict (engine.health.material).

:class:`Spectrum` takes the (binned) frame, clips bright outliers at mean + CLIP_STD std, removes a
plane, applies a periodic Hann window and takes one real FFT. It keeps the power normalised by its
ring's (trimmed) log-mean level (``Q``), the full-plane power for the spot searches, the diffuse
cue (log power excess at atomic frequencies near the ky axis) and the spot searches themselves:
:meth:`Spectrum.spots` (local contrast of the strongest bin near predicted bins) and
:meth:`Spectrum.strongest` (the best candidate first-order spots, scored with their 60- and
120-degree partners). Plain numpy; no state beyond the one frame.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft as sfft

NEAR_BINS = 20             # spots closer than this to the origin are judged on local contrast alone
N_TRY = 4                  # best candidate spots tried in turn
MIN_A_PX = 6.0             # a lattice needs a >= 6 px (graphene up to 0.41 A/px, MoS2 0.53); finer: noise
R_MAX = 2.0 / MIN_A_PX + 0.01   # spots searched up to here (cycles/px): the second order of such a lattice
CLIP_STD = 4.0             # pixels above mean + CLIP_STD std are clipped before the FFT
TOP_K = 24                 # strongest bins (by ring-normalised power) tried as the first spot
CAND_LOG = 2.0             # ... among those with log(power / ring level) above this
LOW_K, LOW_R = 12, 40      # and the LOW_K strongest bins (raw power) within LOW_R bins of the origin


def sublattice_ratio(bispectrum: complex) -> float:
    """The sublattice ratio of a honeycomb from the bispectrum F(k1) F(k2) F(k3) of its first-order
    spots (k1 + k2 + k3 = 0): (f_A w + f_B w*)^3 with w = e^(2 pi i / 3) has phase pi for equal
    sublattices and 0 for one; rho = (1 - t) / (1 + t), t = |tan((pi - phase) / 3)| / sqrt(3)."""
    delta = np.angle(np.exp(1j * (np.pi - np.angle(bispectrum)))) / 3.0          # in (-pi/3, pi/3]
    t = abs(np.tan(delta)) / np.sqrt(3.0)
    return float((1 - t) / (1 + t))


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


def full_bins(F: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
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


class Spectrum:
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
        r = np.asarray(r, np.int64)
        rmax = int(r.max())
        oy, ox, cheb = box_offsets(rmax + 4)
        kr = np.rint(kvecs).astype(np.int64)
        cy = kr[:, :1] + oy
        cx = kr[:, 1:] + ox
        flat = (cy % self.h) * self.w + cx % self.w
        p = self.Pf.take(flat)
        valid = self.Bf.take(flat)
        valid &= np.abs(cx) < self.wh
        if r.ndim == 0:                                  # one half-width: every bin of the box (r + 4 around) is within r + 4
            inner = cheb <= rmax
            ring = valid & ~inner
        else:
            inner = cheb[None, :] <= r[:, None]
            ring = valid & (cheb[None, :] <= r[:, None] + 4) & ~inner
        pin = np.where(inner & valid, p, -1.0)
        j = np.argmax(pin, axis=1)
        rows = np.arange(K)
        peak = pin[rows, j]
        n_ring = ring.sum(axis=1)
        kth = np.minimum(n_ring // 2, p.shape[1] - 1)
        srt = np.sort(np.where(ring, p, np.inf), axis=1)   # (only the order statistics are read: a partition at up
        # to ~20 different kth per call was ~9x slower than this sort, and gives the same values)
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
        out = np.empty((K, 2))
        out[:, 0] = by
        out[:, 1] = bx
        return out, contrast

    def centroid(self, k) -> np.ndarray:
        """Power-weighted centre of the 3x3 bins around a signed bin."""
        return self.centroids(np.asarray(k, float)[None, :])[0]

    def centroids(self, ks: np.ndarray, with_sum: bool = False):
        """:meth:`centroid` of many (K, 2) signed bins (and the 3x3 power sums)."""
        pts = np.asarray(ks, float)[:, None, :] + O3[None, :, :]
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

    def a_px(self, kvec) -> float:
        """Lattice constant in the frame's own pixels of a hexagonal lattice whose first-order ({10-10})
        spot is at the bin vector ``kvec``: a = 2 d1 / sqrt(3), d1 = 1 / |k| (in binned pixels)."""
        return self.bin * 2.0 / np.sqrt(3.0) / max(float(np.hypot(*(np.asarray(kvec, float) * self.scale))), 1e-12)

    def rot(self, kvec, deg):
        """Rotate a bin vector by ``deg`` in physical frequency (non-square frames)."""
        f = kvec * self.scale
        t = np.deg2rad(deg)
        return np.array([f[0] * np.cos(t) + f[1] * np.sin(t), -f[0] * np.sin(t) + f[1] * np.cos(t)]) / self.scale

    def strongest(self, exclude=(), lattice=None, n_try: int = N_TRY, rings=(), ring_rel: float = 0.1,
                  top_k: int = TOP_K):
        """The strongest spot: of the ``TOP_K`` band bins of largest Q, the one of largest local
        contrast (:meth:`spots`), leaving out +-r bins around the (signed) bins in ``exclude``.
        Returns up to ``n_try`` (signed (ky, kx) bin, hexagon score: geometric mean of the three
        local contrasts), best first. ``lattice`` : (k1, k2) of a lattice already found; candidates
        on its reflections m k1 + n k2 are left out. ``rings`` : radii (bins of the longer side) whose rings
        (+- ``ring_rel``) are left out as a whole (a strained crystal's smeared reflections); ``top_k``: bins of
        largest Q scored (TOP_K)."""
        Q = self.Q
        if len(rings):
            # each bin against the nearest ring radius below and above it (sorted): three full-plane passes
            R = np.unique(np.asarray(rings, float))
            j = np.searchsorted(R, self.rh)
            lo = R[np.maximum(j - 1, 0)]
            hi = R[np.minimum(j, len(R) - 1)]
            on = (np.abs(self.rh - lo) <= ring_rel * lo) | (np.abs(self.rh - hi) <= ring_rel * hi)
            Q = np.where(on, np.float32(-np.inf), Q)
        if len(exclude):
            Q = Q.copy() if Q is self.Q else Q
            ex = np.asarray(exclude, float).reshape(-1, 2)
            ex = np.vstack([ex, -ex])
            r = np.maximum(3, np.rint(0.06 * np.hypot(ex[:, 0], ex[:, 1]))).astype(np.int64)
            oy, ox, cheb = box_offsets(int(r.max()))
            cy = np.rint(ex[:, 0]).astype(np.int64)[:, None] + oy[None, :]
            cx = np.rint(ex[:, 1]).astype(np.int64)[:, None] + ox[None, :]
            keep = (cheb[None, :] <= r[:, None]) & (cx >= 0) & (cx < Q.shape[1])
            Q[cy[keep] % self.h, cx[keep]] = -np.inf
        flat = Q.ravel()
        cand = np.flatnonzero(flat > np.float32(CAND_LOG))
        if len(cand) == 0:
            cand = np.array([int(np.argmax(flat))], dtype=np.int64)
        if len(cand) > top_k:
            cand = cand[np.argpartition(flat[cand], len(cand) - top_k)[-top_k:]]
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
            ks = ks[~on_lattice(ks, *lattice)]
            if not len(ks):
                return []
        # score: geometric mean of the local contrasts of the candidate and its partners at 60 and
        # 120 degrees (a hexagonal lattice beats an isolated strong bin)
        n = len(ks)
        allk = np.vstack([ks, self.rot_many(ks, 60.0), self.rot_many(ks, 120.0)])
        _, c = self.spots(allk, 2)
        c = np.maximum(c.reshape(3, n), 1e-3)
        score = np.exp(np.log(c).mean(axis=0))
        order = np.argsort(score)[::-1][:n_try]
        return [(ks[j], float(score[j])) for j in order]

    def rot_many(self, ks: np.ndarray, deg: float) -> np.ndarray:
        f = ks * self.scale
        t = np.deg2rad(deg)
        out = np.stack([f[:, 0] * np.cos(t) + f[:, 1] * np.sin(t), -f[:, 0] * np.sin(t) + f[:, 1] * np.cos(t)], axis=1)
        return out / self.scale


def on_lattice(ks: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """Which of the (K, 2) signed bins lie on a reflection m k1 + n k2 (integers m, n) of the lattice
    spanned by k1, k2 (within max(2 bins, 4 %)): a higher order of that lattice, not another one."""
    B = np.stack([k1, k2], axis=1)
    if abs(np.linalg.det(B)) < 1e-9:
        return np.zeros(len(ks), bool)
    mn = np.linalg.solve(B, np.asarray(ks, float).T)
    near = (B @ np.rint(mn)).T
    d = np.hypot(*(np.asarray(ks, float) - near).T)
    return d <= np.maximum(2.0, 0.04 * np.hypot(*np.asarray(ks, float).T))


O3 = np.array([[dy, dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], float)


@functools.lru_cache(maxsize=16)
def box_offsets(R: int):
    """Raveled (oy, ox) offsets of a (2R+1)^2 box and their Chebyshev radius (read-only)."""
    oy, ox = np.mgrid[-R:R + 1, -R:R + 1]
    out = (oy.ravel(), ox.ravel(), np.maximum(np.abs(oy), np.abs(ox)).ravel())
    for a_ in out:
        a_.setflags(write=False)
    return out
