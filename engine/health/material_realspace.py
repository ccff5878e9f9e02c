"""The real-space sublattice test of the material verdict (engine.health.material), for fine sampling.

Where the atom columns are resolved (a lattice constant of at least RS_MIN_A_PX frame px), a
hexagon the Fourier cues reject, or the scale of a candidate spot when none passes, is tested on
the column maxima themselves (:func:`site_contrast`): sites with honeycomb neighbours, the two
sublattices' median intensities over the hexagon centres; a few Si, a hole or a contamination patch
cannot tip a median.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from engine.health.material_spectrum import Spectrum

#: Real-space sublattice test (columns resolved: fine sampling), for a hexagon the Fourier test rejects
RS_MIN_A_PX = 36.0         # lattice constant in frame px from which it runs (graphene <= 0.068 A/px, MoS2 <= 0.088)
RS_RHO = 0.90              # median column intensities of the two sublattices at least this equal
RS_Z = 10.0                # the dimmer sublattice's median over the hexagon centres, in standard errors
RS_MIN_SITES = 6           # honeycomb sites per sublattice at least


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


def _extrema(sm: np.ndarray, extremum_filter, size: int, border: int) -> np.ndarray:
    """(K, 2) row, column of the local extrema of ``sm`` (``ndimage.maximum_filter`` or
    ``minimum_filter`` over ``size`` px) at least ``border`` px from the edge."""
    pk = sm == extremum_filter(sm, size=size)
    pk[:border] = False
    pk[-border:] = False
    pk[:, :border] = False
    pk[:, -border:] = False
    return np.argwhere(pk)


def _neighbour_pairs(yx: np.ndarray, r_min: float, r_max: float):
    """(pairs, d): index pairs of the points ``yx`` between ``r_min`` (exclusive) and ``r_max`` apart, and
    their (row, column) differences; None with fewer than 2 RS_MIN_SITES points or no such pair."""
    from scipy.spatial import cKDTree

    if len(yx) < 2 * RS_MIN_SITES:
        return None
    pairs = cKDTree(yx.astype(float)).query_pairs(r_max, output_type="ndarray")
    if not len(pairs):
        return None
    d = (yx[pairs[:, 1]] - yx[pairs[:, 0]]).astype(float)
    far = np.hypot(d[:, 0], d[:, 1]) > r_min
    pairs, d = pairs[far], d[far]
    if not len(pairs):
        return None
    return pairs, d


#: the neighbours a real-space test pairs up (0.7-1.3 of the spacing tried) must lie at that spacing: their median
#: distance within this fraction of it. Graphene beside MoS2 at 0.049-0.086 A/px, tested at MoS2's scale (a = 3.2 A),
#: paired graphene's hexagon centres at 0.76-0.81 of it and was 'graphene with a = 3.2 A'
RS_SCALE_TOL = 0.12


def _at_scale(dist: np.ndarray, spacing: float) -> bool:
    """Whether the paired neighbours' median distance ``dist`` is ``spacing`` within RS_SCALE_TOL."""
    return bool(len(dist)) and abs(float(np.median(dist)) / spacing - 1.0) <= RS_SCALE_TOL


def _sublattice_contrast(va: np.ndarray, vb: np.ndarray, bg: float, k: int):
    """(rho = dimmer / brighter, k, z): the two sublattices' median intensities ``va``, ``vb`` above the
    hexagon centres' ``bg``, and the dimmer one's in standard errors of k sites (from the pooled MAD);
    None when neither rises above ``bg``."""
    ma, mb = float(np.median(va)), float(np.median(vb))
    lo, hi = sorted((ma - bg, mb - bg))
    if hi <= 0:
        return None
    mad = 1.4826 * float(np.median(np.abs(np.concatenate([va - ma, vb - mb])))) + 1e-12
    return lo / hi, k, lo / (mad / np.sqrt(k))


def site_contrast(img: np.ndarray, a_px: float, cache: dict | None = None):
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
    cc = a_px / np.sqrt(3.0)
    f = max(1, int(cc // 8))
    img = _blocks(img, f, cache)
    cc /= f
    sm = ndimage.gaussian_filter(np.asarray(img, np.float32), 0.2 * cc)
    yx = _extrema(sm, ndimage.maximum_filter, max(3, int(0.7 * cc) | 1), int(np.ceil(cc)))
    pp = _neighbour_pairs(yx, 0.7 * cc, 1.3 * cc)
    if pp is None:
        return None
    pairs, d = pp
    th = np.arctan2(d[:, 0], d[:, 1])
    th0 = np.angle(np.exp(6j * th).mean()) / 6.0
    c3 = np.cos(3.0 * (th - th0))               # +1: bond i -> j along th0 + n 120 (i on one sublattice)
    fw, bw = c3 > 0.87, c3 < -0.87
    if not _at_scale(np.hypot(d[:, 0], d[:, 1])[fw | bw], cc):
        return None
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
    return _sublattice_contrast(inten[A], inten[B], float(np.median(sm[cy, cx])), min(na, nb))


def real_space_rescue(img: np.ndarray, b: int, lat: dict) -> dict | None:
    """A hexagon the Fourier cues reject, at fine sampling (a >= RS_MIN_A_PX frame px): graphene when
    its columns, found in real space, sit on a honeycomb whose two sublattices are equally bright
    (:func:`site_contrast`, or :func:`centre_contrast` where the columns merge into rings; at a and at
    sqrt(3) a, for a lattice found through its {11-20} spots). (Trying sqrt(3) a also for lattices of
    21-36 px called a vacuum and an hBN frame graphene on seed 2041: a triangular lattice holds a
    honeycomb of cc = a whose two sublattices are the same atoms.)
    Returns the lattice with the real-space contrast, or None."""
    if lat["a_px"] < RS_MIN_A_PX:
        return None
    cache: dict = {}
    for f in (1.0, np.sqrt(3.0)):
        for test in (site_contrast, centre_contrast):
            r = test(img, f * lat["a_px"] / b, cache)
            if r is not None and r[0] >= RS_RHO and r[2] >= RS_Z:
                return {**lat, "a_px": f * lat["a_px"], "rho": r[0], "width": float("nan"), "real_space": r[1]}
    return None


#: A Fourier graphene verdict at fine sampling is overruled when the columns, found in real space at its
#: scale, sit on a honeycomb of clearly unequal sublattices (hBN's B/N, MoS2's Mo/S2 read through a second
#: Fourier lattice, or a noise hexagon's sites): at least RS_Z standard errors, ratio below RS_VETO_RHO
RS_VETO_RHO = 0.70
#: ... over at least this many sites per sublattice: a few Si on one sublattice tip the medians of fewer (graphene with
#: 1-4 Si/nm^2 at 0.035 A/px, C-atom SNR 7.3, a Fourier hexagon of 16.8 with equal sublattices, measured 0.46 over 8
#: sites; the hBN frame the veto was made for: 0.63 over 122)
RS_VETO_MIN_SITES = 12


def real_space_veto(img: np.ndarray, b: int, lat: dict) -> tuple | None:
    """For a lattice the Fourier cues call graphene at fine sampling (a >= RS_MIN_A_PX frame px): the
    real-space sublattice contrast (:func:`site_contrast`) when it significantly contradicts them
    (z >= RS_Z and rho < RS_VETO_RHO over at least RS_VETO_MIN_SITES sites per sublattice), as (rho, sites,
    z); else None (no contradiction, or the columns are not resolved well enough, or too few, to tell)."""
    if lat["a_px"] < RS_MIN_A_PX or lat.get("real_space"):
        return None
    r = site_contrast(img, lat["a_px"] / b)
    if r is not None and r[2] >= RS_Z and r[0] < RS_VETO_RHO and r[1] >= RS_VETO_MIN_SITES:
        return r
    return None


def real_space_candidates(img: np.ndarray, b: int, S: Spectrum, cands) -> dict | None:
    """No hexagon passed the Fourier tests: at fine sampling (a faint first order a few bins out, or
    clutter of the same size as the columns), try the real-space test at the scale of each candidate
    spot tried (as a {10-10} spot, and as a {11-20} one), with twice the significance asked of a
    hexagon the Fourier cues found (RS_Z). Returns a lattice without spots (no mask), or None."""
    cache: dict = {}
    for k, q in cands:
        a_px = S.a_px(k)
        if a_px < RS_MIN_A_PX:
            continue
        for f in (1.0, np.sqrt(3.0)):
            r = site_contrast(img, f * a_px / b, cache)
            if r is not None and r[0] >= RS_RHO and r[2] >= 2 * RS_Z:
                return {"spots": None, "a_px": f * a_px, "rho": r[0], "width": float("nan"), "strength": float(q),
                        "real_space": r[1]}
    return None


#: Scale-free search: lattice constants tried (frame px), geometric steps within which the test
#: still finds the honeycomb (it measured the same contrast at 0.9-1.1 of the true a)
RS_SCAN_A_PX = (RS_MIN_A_PX, 90.0)   # graphene at 0.027-0.068 A/px
RS_SCAN_STEPS = 8
RS_SCAN_FILL = 0.1       # sites per sublattice at least this fraction of a whole field's (amorphous carbon at
                         # 0.17 A/px showed an equal 'honeycomb' of 6 sites per sublattice where 180 would fit)


def real_space_scan(img: np.ndarray, b: int, strength: float = 0.0) -> dict | None:
    """No graphene scale from the Fourier cues (a hexagon they reject at fine sampling: a hole's, a
    contamination patch's or adatoms' rings fill graphene's first-order ring): the real-space test at every
    lattice constant of RS_SCAN_A_PX in RS_SCAN_STEPS geometric steps, with twice the significance
    asked of a hexagon the Fourier cues found and at least RS_SCAN_FILL of a whole field's sites. Returns the most significant passing scale as a
    lattice without spots (no mask), or None."""
    cache: dict = {}
    best = None
    for a_px in np.geomspace(*RS_SCAN_A_PX, RS_SCAN_STEPS):
        r = site_contrast(img, a_px / b, cache)
        whole = img.size / ((a_px / b) ** 2 * np.sqrt(3.0) / 2.0)         # unit cells (sites per sublattice) in the field
        if (r is not None and r[0] >= RS_RHO and r[2] >= 2 * RS_Z and r[1] >= RS_SCAN_FILL * whole
                and (best is None or r[2] > best[1][2])):
            best = (a_px, r)
    if best is None:
        return None
    a_px, r = best
    return {"spots": None, "a_px": float(a_px), "rho": r[0], "width": float("nan"), "strength": float(strength),
            "real_space": r[1]}


def centre_contrast(img: np.ndarray, a_px: float, cache: dict | None = None):
    """:func:`site_contrast` where the columns merge into rings (a probe nearly as wide as the C-C
    distance, low dose): the hexagon centres (local minima, spaced a) anchor the lattice instead of
    the columns. A centre with >= 2 neighbouring centres at 0.8-1.2 a along the lattice directions (+- 10 degrees)
    (theta_c + n 60 degrees, theta_c from the 6-fold mean of all centre-centre directions) is inside
    the lattice; the honeycomb sites around it lie at cc in the directions theta_c + 30 + n 60
    degrees, alternately on sublattice A and B. Their intensities (smoothed frame) are pooled per
    sublattice: medians above the centres' median, as in :func:`site_contrast`. Returns (rho, centres
    used, z) or None."""
    cc = a_px / np.sqrt(3.0)
    f = max(1, int(cc // 8))
    img = _blocks(img, f, cache)
    cc /= f
    a = cc * np.sqrt(3.0)
    sm = ndimage.gaussian_filter(np.asarray(img, np.float32), 0.25 * cc)
    yx = _extrema(sm, ndimage.minimum_filter, max(3, int(1.2 * cc) | 1), int(np.ceil(1.2 * cc)) + 1)
    pp = _neighbour_pairs(yx, 0.8 * a, 1.2 * a)
    if pp is None:
        return None
    pairs, d = pp
    th = np.arctan2(d[:, 0], d[:, 1])
    thc = np.angle(np.exp(6j * th).mean()) / 6.0
    on = np.cos(6.0 * (th - thc)) > 0.5                  # along a lattice direction (+- 10 degrees: scan distortions)
    if not _at_scale(np.hypot(d[:, 0], d[:, 1])[on], a):
        return None
    n = len(yx)
    deg = np.bincount(pairs[on, 0], minlength=n) + np.bincount(pairs[on, 1], minlength=n)
    good = deg >= 2
    if good.sum() < RS_MIN_SITES:
        return None
    c = yx[good].astype(float)
    ang = thc + np.deg2rad(30.0) + np.arange(6) * (np.pi / 3)
    pts = c[:, None, :] + cc * np.stack([np.sin(ang), np.cos(ang)], -1)[None]
    iy = np.clip(np.rint(pts[..., 0]).astype(np.intp), 0, sm.shape[0] - 1)
    ix = np.clip(np.rint(pts[..., 1]).astype(np.intp), 0, sm.shape[1] - 1)
    v = sm[iy, ix]                                       # (centres, 6): A, B, A, B, A, B
    va, vb = v[:, 0::2].ravel(), v[:, 1::2].ravel()
    return _sublattice_contrast(va, vb, float(np.median(sm[c[:, 0].astype(np.intp), c[:, 1].astype(np.intp)])),
                                len(c))
