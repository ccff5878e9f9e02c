"""Atoms from the network's probability maps: sub-pixel positions, species, confidence.

Steps (all vectorised over atoms; sizes in model-grid pixels unless stated):

1. ``P(atom) = 1 - P(background)`` (so one atom per site *across* classes: a site where C and Si
   share the probability is still one atom), smoothed by a 5x5 binomial (sigma = 1 px).
2. Peaks (:func:`_peaks`): pixels equal to the maximum of a square window of half-size
   ``min_atom_separation_A / 2`` whose ``P(atom)`` exceeds ``prob_threshold``; one pixel per
   plateau (a saturated blob); then of any two closer than ``min_atom_separation_A`` (about
   0.6 x C-C) the higher stays (touching blobs give one atom per maximum; two maxima a bond
   apart stay two).
3. Position: probability-weighted centroid of ``max(P - P_peak / 2, 0)`` in a disc of
   ``site_radius_A`` around the peak, then once more with the disc re-centred (no binary
   threshold, hence no pixelisation bias; the half-maximum floor keeps neighbours out).
4. Class probabilities: the same weights applied to the three channels; species = the larger of
   C / Si; confidence = ``P(atom)`` at the peak x ``P(species | atom)``.
5. No atom closer than ``heavy_separation_A`` (1.2 A) to a Si / heavy atom: a bright blob can
   show a second maximum on its flank (seen on simulated 4-fold Si), and no real neighbour is
   that close (Si-C >= 1.6 A projected).
6. Map to input-frame pixels with :meth:`Probabilities.to_frame_px`; flag atoms within
   ``border_A`` of the frame edge (kept, not dropped).
7. Optional, on the raw frame (frame pixels): a vectorised 2D Gaussian refinement
   (:func:`refine_gaussian`); atoms with no contrast on the frame are dropped (a network can
   "fill in" a vacancy; :func:`intensity_ratio`, ``min_intensity_ratio``); species "other" for atoms
   much brighter than Si (:func:`assign_other`; HAADF intensity ~ Z^gamma, gamma 1.4-2.0); a "Si"
   far dimmer than the frame's other Si becomes C (:func:`demote_dim_si`).
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial import cKDTree

from engine.chem.linalg import matmul
from engine.chem.quantile import median, percentile
from engine.chem.filters import binomial5, block_mean, gaussian_smooth, pad2d, shift_max
from engine.chem.maps import WORK_PIXEL_A, contrast_maps, coarse as _coarse  # noqa: F401  (contrast_maps: re-exported)
from engine.chem.refine import refine_gaussian
from engine.types import OTHER, SI, Atoms, Probabilities

SQRT2 = float(np.sqrt(2.0))


def _resolve_conflicts(n: int, i: np.ndarray, j: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Keep-mask over ``n`` candidates: of each conflicting pair (i, j) the lower value goes.

    Ties are broken by index. Iterated so that a chain a > b > c with a, c far apart keeps a and c.
    """
    keep = np.ones(n, bool)
    if len(i) == 0:
        return keep
    rank = np.empty(n, np.int64)
    rank[np.lexsort((-np.arange(n), value))] = np.arange(n)   # higher value -> higher rank
    for _ in range(64):
        active = keep[i] & keep[j]
        if not active.any():
            break
        ia, ja = i[active], j[active]
        i_wins = rank[ia] > rank[ja]
        winner = np.where(i_wins, ia, ja)
        loser = np.where(i_wins, ja, ia)
        is_loser = np.zeros(n, bool)
        is_loser[loser] = True
        sure = ~is_loser[winner]            # the winner is not itself beaten by someone else
        keep[loser[sure]] = False
    return keep


def _peaks(smooth: np.ndarray, pa: np.ndarray, threshold: float, min_sep_px: float) -> np.ndarray:
    """(M, 2) int64 (row, col) of one peak per atom site on ``smooth``.

    1. Local maxima of a square window of half-size ``min_sep / 2`` where ``pa >= threshold`` (a
       wider window would let a bright neighbour's flank, a bond away, hide a faint atom: measured
       on the real grain-boundary frames).
    2. Ties (a flat, saturated blob): of equal-valued maxima that touch, only the last in raster
       order stays.
    3. Maxima closer than ``min_sep`` (possible only between the square's half-size and
       ``min_sep``): the lower goes (:func:`_resolve_conflicts`). Checked by looking up the few
       offsets concerned in a mask image: no KD-tree.
    """
    h, w = smooth.shape
    half = max(1, int(0.5 * min_sep_px))
    mx = shift_max(shift_max(smooth, 2 * half + 1, 0), 2 * half + 1, 1)
    mask = (smooth >= mx) & (pa >= threshold)
    cand = np.flatnonzero(mask)
    if cand.size == 0:
        return np.zeros((0, 2), np.int64)
    # neighbours looked up on maps padded by a margin (no bounds tests): flat index on the padded map
    k = max(1, int(np.ceil(min_sep_px)))
    wp = w + 2 * k
    row, col = np.divmod(cand, w)
    cp = (row + k) * wp + (col + k)
    mpad = pad2d(mask, ((k, k), (k, k)), False).ravel()
    spad = pad2d(smooth, ((k, k), (k, k)), 0).ravel()
    val = spad[cp]
    drop = np.zeros(len(cand), bool)
    for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):       # neighbours later in raster order
        nb = cp + (dr * wp + dc)
        drop |= mpad[nb] & (spad[nb] == val)
    cand, val, cp = cand[~drop], val[~drop], cp[~drop]
    # pairs closer than min_sep that the square window allowed
    dr, dc = _conflict_offsets(float(min_sep_px), half)
    if len(dr):
        present = np.zeros(len(mpad), bool)
        present[cp] = True
        hit = present[cp[:, None] + (dr * wp + dc)[None]]
        if hit.any():
            ii, jj = np.divmod(np.flatnonzero(hit), hit.shape[1])    # = np.nonzero (2D: ~10x slower)
            other = np.searchsorted(cp, cp[ii] + dr[jj] * wp + dc[jj])   # cp is sorted (raster order)
            keep = _resolve_conflicts(len(cand), ii, other, val.astype(np.float64))
            cand = cand[keep]
    return np.stack(np.divmod(cand, w), 1)


@functools.lru_cache(maxsize=32)
def _disc(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets (drow, dcol) within ``radius`` (at least the 3x3 block); read-only arrays,
    computed once per radius."""
    k = int(np.ceil(radius))
    dr, dc = np.mgrid[-k:k + 1, -k:k + 1]
    inside = (dr**2 + dc**2 <= radius * radius + 1e-9) | ((np.abs(dr) <= 1) & (np.abs(dc) <= 1))
    return _frozen(dr[inside].astype(np.float32)), _frozen(dc[inside].astype(np.float32))


@functools.lru_cache(maxsize=32)
def _centroid_stencil(r: float, wp: int) -> tuple:
    """The centroid's gather, computed once per (radius, padded row length): the offsets of the disc
    of radius ``r + 1`` (:func:`_disc`), those within ``r - 1`` of the centre first, as flat indices
    into a map with rows of ``wp``; the (K, 3) basis (1, drow, dcol); that basis zeroed outside the
    disc of radius ``r`` (the first pass); the number of inner offsets; and the ring offsets' drow,
    dcol (float32). Read-only arrays."""
    dr, dc = _disc(r + 1.0)
    d2 = dr.astype(np.float64) ** 2 + dc.astype(np.float64) ** 2
    inner = d2 <= (r - 1.0 - 1e-3) ** 2 if r > 1.0 else np.zeros(len(dr), bool)
    order = np.r_[np.flatnonzero(inner), np.flatnonzero(~inner)]
    dr, dc, d2 = dr[order], dc[order], d2[order]
    basis = np.stack([np.ones_like(dr), dr, dc], 1)
    basis1 = basis * (dr**2 + dc**2 <= np.float32(r * r))[:, None]
    n_inner = int(inner.sum())
    flat = (dr.astype(np.int64) * wp + dc.astype(np.int64))
    return (_frozen(flat), _frozen(basis), _frozen(basis1), n_inner, _frozen(dr[n_inner:].copy()),
            _frozen(dc[n_inner:].copy()))


@functools.lru_cache(maxsize=32)
def _conflict_offsets(min_sep_px: float, half: int) -> tuple[np.ndarray, np.ndarray]:
    """(drow, dcol) of the pixels later in raster order than a peak, closer than ``min_sep_px``,
    outside the square window of half-size ``half`` (read-only; computed once per size)."""
    k = int(np.ceil(min_sep_px))
    dr, dc = np.mgrid[0:k + 1, -k:k + 1]
    dr, dc = dr.ravel(), dc.ravel()
    sel = ((dr > 0) | (dc > 0)) & (dr**2 + dc**2 < min_sep_px**2) & (np.maximum(np.abs(dr), np.abs(dc)) > half)
    return _frozen(dr[sel]), _frozen(dc[sel])


@functools.lru_cache(maxsize=32)
def _flat_offsets_cached(key: tuple, w: int) -> np.ndarray:
    dr, dc = np.array(key[0], np.int64), np.array(key[1], np.int64)
    return _frozen(dr * w + dc)


def _flat_offsets(dr: np.ndarray, dc: np.ndarray, w: int) -> np.ndarray:
    """Integer offsets (``dr``, ``dc``) as flat indices into a map with rows of ``w`` (cached)."""
    return _flat_offsets_cached((tuple(int(v) for v in dr), tuple(int(v) for v in dc)), int(w))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def find_atoms(probs: Probabilities, cfg, image: np.ndarray | None = None, maps: tuple | None = None) -> Atoms:
    """Atoms from ``probs`` (see the module docstring). ``cfg`` is a :class:`ChemistryConfig`.

    ``image``: the raw input frame (H, W) in frame pixels, optional; used for the Gaussian
    refinement when ``cfg.refine_gaussian`` and for species "other". ``maps``: its
    :func:`contrast_maps`, if already computed (:func:`engine.chem.analyze` shares them).
    """
    p = np.asarray(probs.p)
    if p.ndim != 3 or p.shape[0] != 3:
        raise ValueError(f"probabilities must have shape (3, h, w), got {p.shape}")
    px0 = float(probs.pixel_size_A)
    frame_px_A = float(probs.frame_pixel_size_A)
    if not (px0 > 0 and frame_px_A > 0):
        raise ValueError(f"pixel sizes must be positive (grid {px0} A, frame {frame_px_A} A)")
    h0, w0 = p.shape[1:]
    pa0 = 1.0 - p[0].astype(np.float32, copy=False)
    f = max(1, int(WORK_PIXEL_A / px0 + 1e-6))           # block-average very fine maps
    pa = block_mean(pa0, f) if f > 1 else pa0
    px = px0 * f
    h, w = pa.shape
    smooth = binomial5(pa)
    rc = _peaks(smooth, pa, (0.5 if f > 1 else 1.0) * cfg.prob_threshold, cfg.min_atom_separation_A / px)
    empty = Atoms.empty(frame_px_A)
    empty.frame_shape = tuple(probs.frame_shape)
    if len(rc) == 0:
        return empty

    # probability-weighted centroid: one gather of a disc 1 px wider than the centroid disc
    r = max(1.0, cfg.site_radius_A / px)
    k = int(np.ceil(r + 1.0))
    wp = w + 2 * k
    flat_off, basis, basis1, n_inner, ring_dr, ring_dc = _centroid_stencil(float(r), wp)
    pad = pad2d(pa, ((k, k), (k, k)), 0)                  # zeros outside the map
    flat = (rc[:, 0] + k) * wp + (rc[:, 1] + k)
    base = pad.ravel().take(flat[:, None] + flat_off[None])
    peak = pa[rc[:, 0], rc[:, 1]]
    base -= 0.5 * peak[:, None]
    np.maximum(base, 0.0, out=base)
    m = matmul(base, basis1)                                          # first pass: disc at the peak
    ok = m[:, 0] > 0
    off = np.where(ok[:, None], m[:, 1:] / np.where(ok, m[:, 0], 1)[:, None], 0.0)
    off /= np.maximum(np.hypot(off[:, 0], off[:, 1]), 1.0)[:, None]   # the disc stays in the gather
    # second pass, disc re-centred by ``off`` (|off| <= 1): the inner offsets (<= r - 1 from the
    # peak) are inside whatever ``off``, only the ring beyond them is tested per atom
    ring = base[:, n_inner:]
    ring *= (ring_dr[None] - off[:, :1]) ** 2 + (ring_dc[None] - off[:, 1:]) ** 2 <= np.float32(r * r)
    m = matmul(base, basis)
    ok = m[:, 0] > 0
    off = np.where(ok[:, None], m[:, 1:] / np.where(ok, m[:, 0], 1)[:, None], off)
    cen = (rc + off + 0.5) * f - 0.5                     # rows, cols on the probability grid

    # class probabilities and peak P(atom) on the full-resolution map, in a 0.3 A disc
    er, ec = _disc(max(1.0, 0.3 / px0))
    ci = np.rint(cen).astype(np.int64)
    np.clip(ci[:, 0], 0, h0 - 1, out=ci[:, 0])
    np.clip(ci[:, 1], 0, w0 - 1, out=ci[:, 1])
    idx = (ci[:, 0] * w0 + ci[:, 1])[:, None] + _flat_offsets(er, ec, w0)[None]
    e = int(np.abs(er).max())                            # the disc's half-size (er, ec alike)
    edge = np.flatnonzero((ci[:, 0] < e) | (ci[:, 0] >= h0 - e) | (ci[:, 1] < e) | (ci[:, 1] >= w0 - e))
    if len(edge):                                        # outside the map: the centre
        ce = ci[edge]
        rr, cc = ce[:, :1] + er[None].astype(np.int64), ce[:, 1:] + ec[None].astype(np.int64)
        inside = (rr >= 0) & (rr < h0) & (cc >= 0) & (cc < w0)
        idx[edge] = np.where(inside, rr * w0 + cc, (ce[:, 0] * w0 + ce[:, 1])[:, None])
    q = p.reshape(3, -1)
    ones = np.ones(idx.shape[1], p.dtype)
    pw0 = q[0].take(idx)                                 # (N, K) per class: one gather each
    class_prob = np.stack([matmul(pw0, ones), matmul(q[1].take(idx), ones), matmul(q[2].take(idx), ones)], 1)
    peak0 = 1.0 - _row_min(pw0)
    good = peak0 >= cfg.prob_threshold
    if not good.any():
        return empty
    # (rows of 2D arrays by take / compress: numpy's advanced indexing of rows costs ~10x more)
    cen, class_prob, peak0 = cen.compress(good, axis=0), class_prob.compress(good, axis=0), peak0[good]
    total = (class_prob[:, 0] + class_prob[:, 1]) + class_prob[:, 2]    # = .sum(1): the same order, ~10x faster
    class_prob = class_prob / np.maximum(total[:, None], 1e-12)
    species = (class_prob[:, 2] > class_prob[:, 1]).astype(np.int8)
    atom_p = class_prob[:, 1] + class_prob[:, 2]
    p_species = np.where(species == SI, class_prob[:, 2], class_prob[:, 1]) / np.where(atom_p > 0, atom_p, 1)
    confidence = np.clip(peak0 * p_species, 0.0, 1.0)

    xy_frame = probs.to_frame_px(cen[:, ::-1])
    atoms = Atoms(xy_frame, species, confidence.astype(np.float32), class_prob.astype(np.float32),
                  np.zeros(len(xy_frame), bool), frame_px_A, tuple(probs.frame_shape))
    if cfg.heavy_separation_A > 0 and (species != 0).any():
        atoms = _subset(atoms, _clear_around_heavy(atoms, cfg.heavy_separation_A / frame_px_A))
    if image is not None:
        image = np.asarray(image)
        if image.shape != tuple(probs.frame_shape):
            raise ValueError(f"image shape {image.shape} differs from the frame shape {probs.frame_shape}")
        if cfg.refine_gaussian:
            atoms.xy_px = refine_gaussian(image, atoms.xy_px, frame_px_A, cfg.refine_window_A)
        ratio = intensity_ratio(atoms, image, maps)
        if ratio is not None:
            if cfg.min_intensity_ratio > 0:
                atoms, ratio = drop_faint(atoms, ratio, cfg.min_intensity_ratio)
            assign_other(atoms, image, cfg, ratio)
            demote_dim_si(atoms, ratio, cfg.min_si_relative_intensity)
        if cfg.vacuum_min_dip > 0:                            # no lattice continued into a hole
            from engine.chem.vacuum import drop_in_vacuum

            atoms = drop_in_vacuum(atoms, image, maps or contrast_maps(image, frame_px_A), cfg.vacuum_min_dip,
                                   cfg.vacuum_own_sigma, cfg.vacuum_dark_sigma)
    atoms.border = border_mask(atoms.xy_px, probs.frame_shape, cfg.border_A / frame_px_A)
    return atoms


def _row_min(a: np.ndarray) -> np.ndarray:
    """``a.min(1)`` of an (N, K) array with few columns, column by column (numpy reduces along a short
    last axis ~10x slower than it combines whole columns; a minimum is exact in any order)."""
    out = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        np.minimum(out, a[:, k], out=out)
    return out


def border_mask(xy_px: np.ndarray, frame_shape: tuple[int, int], margin_px: float) -> np.ndarray:
    """True for positions within ``margin_px`` of the frame edge (pixel-centre convention)."""
    H, W = frame_shape
    x, y = xy_px[:, 0], xy_px[:, 1]
    return (x < margin_px - 0.5) | (y < margin_px - 0.5) | (x > W - 0.5 - margin_px) | (y > H - 0.5 - margin_px)


#: Si/C HAADF intensity ratio (14/6)^gamma for gamma 1.4 .. 2.0
SI_C_RATIO = ((14 / 6) ** 1.4, (14 / 6) ** 2.0)


def sample_bilinear(arrays, rows: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """Each 2D array of ``arrays`` (all one shape) at (``rows``, ``cols``), bilinear, coordinates
    clamped to the array: ``ndimage.map_coordinates(a, [rows, cols], order=1, mode="nearest")`` to
    float rounding, in float64, with the weights computed once for all arrays."""
    H, W = arrays[0].shape
    r = np.minimum(np.maximum(np.asarray(rows, np.float64), 0.0), H - 1.0)    # (np.clip, without its wrapper)
    c = np.minimum(np.maximum(np.asarray(cols, np.float64), 0.0), W - 1.0)
    r0 = np.minimum(r.astype(np.int64), max(H - 2, 0))
    c0 = np.minimum(c.astype(np.int64), max(W - 2, 0))
    fr, fc = r - r0, c - c0
    gr, gc = 1.0 - fr, 1.0 - fc
    i = r0 * W + c0
    dr = W if H > 1 else 0
    dc = 1 if W > 1 else 0
    corners = (i, i + dc, i + dr, i + (dr + dc))              # the four neighbours, shared by all arrays
    out = []
    for a in arrays:
        f = np.asarray(a).ravel()
        v00, v01, v10, v11 = (f.take(k) for k in corners)
        top = v00 * gc + v01 * fc
        bot = v10 * gc + v11 * fc
        out.append(top * gr + bot * fr)
    return out


def gaussian_at(image: np.ndarray, sigma_px: float, xy_px: np.ndarray, truncate: float = 4.0,
                chunk: int = 4096) -> np.ndarray:
    """(N,) the image smoothed by a Gaussian of ``sigma_px``, bilinearly interpolated at ``xy_px``
    ((N, 2) x = column, y = row): the values of
    ``ndimage.map_coordinates(ndimage.gaussian_filter(image, sigma_px, truncate=truncate), [y, x],
    order=1, mode="nearest")`` (to float rounding), computed from a window around each point only
    (edges reflected as by ``gaussian_filter``), so a few points cost far less than the whole frame."""
    img = np.asarray(image)
    if img.dtype != np.float32 and img.dtype != np.float64:
        img = img.astype(np.float32)
    xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
    H, W = img.shape
    r = int(truncate * float(sigma_px) + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-0.5 / (float(sigma_px) ** 2) * t.astype(np.float64) ** 2)
    g /= g.sum()
    out = np.empty(len(xy))
    span = np.arange(2 * r + 2)

    def taps(v, n):
        """First window index, and the weights of the smoothed, interpolated value over the window."""
        v = np.clip(v, 0.0, n - 1.0)
        i0 = np.minimum(np.floor(v).astype(np.int64), max(n - 2, 0))
        fr = (v - i0)[:, None]
        wts = np.zeros((len(v), 2 * r + 2))
        wts[:, :-1] += (1.0 - fr) * g
        wts[:, 1:] += fr * g
        return i0 - r, wts.astype(np.float32)

    def reflect(idx, n):                                 # gaussian_filter's "reflect" (d c b a | a b c d)
        idx = np.mod(idx, 2 * n)
        return np.where(idx >= n, 2 * n - 1 - idx, idx)

    k = 2 * r + 2
    windows = sliding_window_view(img, (k, k)) if H >= k and W >= k else None
    for s in range(0, len(xy), chunk):
        r0, rw = taps(xy[s:s + chunk, 1], H)
        c0, cw = taps(xy[s:s + chunk, 0], W)
        inner = (r0 >= 0) & (r0 + k <= H) & (c0 >= 0) & (c0 + k <= W)
        if windows is not None:                            # one gather; windows over the edge redone below
            patch = windows[np.clip(r0, 0, H - k), np.clip(c0, 0, W - k)]
        else:
            patch = np.empty((len(r0), k, k), img.dtype)
        if not inner.all():                                # windows over the edge: reflected indices
            e = ~inner
            ri = reflect(r0[e, None] + span[None], H)
            ci = reflect(c0[e, None] + span[None], W)
            patch[e] = img[ri[:, :, None], ci[:, None, :]]
        out[s:s + chunk] = np.einsum("ni,ni->n", (patch @ cw[:, :, None])[..., 0], rw)
    return out


def _net_contrast_and_level(atoms: Atoms, maps: tuple):
    """Each atom's net contrast on ``maps``, the median C atom's (None when < 5 C or not positive), and
    the atoms' (row, col) coordinates on the maps' grid."""
    sm, bg, _pxd, f = maps
    rc = [(atoms.xy_px[:, 1] + 0.5) / f - 0.5, (atoms.xy_px[:, 0] + 0.5) / f - 0.5]
    c_mask = atoms.species == 0
    if c_mask.sum() < 5:
        return None, None, rc
    at_sm, at_bg = sample_bilinear((sm, bg), rc[0], rc[1])
    net = (at_sm.astype(sm.dtype) - at_bg.astype(bg.dtype))
    c_level = median(net[c_mask])
    return net, (c_level if c_level > 0 else None), rc


def intensity_ratio(atoms: Atoms, image: np.ndarray, maps: tuple | None = None) -> np.ndarray | None:
    """(N,) raw-frame contrast of each atom over the local background, in units of the median C atom.

    Measured on :func:`contrast_maps` (``maps``, computed from ``image`` when not given). Returns None
    with fewer than 5 C atoms or no positive C contrast.
    """
    net, c_level, _rc = _net_contrast_and_level(atoms, maps or contrast_maps(image, atoms.pixel_size_A))
    return None if c_level is None else net / c_level


def local_excess(atoms: Atoms, image: np.ndarray, radius_A: float = 3.0, maps: tuple | None = None) -> np.ndarray | None:
    """(N,) how much brighter the raw frame is around each atom than around the frame's typical atom.

    The mean intensity in a Gaussian window of ``radius_A`` (sigma) around each atom, minus the median
    of that over all atoms, in units of the median C atom's contrast (:func:`intensity_ratio`). A
    lattice, with or without dopants, stays near 0 (a single Si ~0.2, a Si trimer ~0.5 on real
    frames); an overlayer of amorphous contamination lifts whole patches by several units. None as
    for :func:`intensity_ratio`. ``maps``: :func:`contrast_maps` of ``image``, if already computed.
    """
    maps = maps or contrast_maps(image, atoms.pixel_size_A)
    _net, c_level, rc = _net_contrast_and_level(atoms, maps)
    if c_level is None:
        return None
    _sm, _bg, pxd, _f = maps
    k = max(1, int(radius_A / (4 * pxd)))              # the window is wide: average on a coarser grid
    coarse = _coarse(maps, k)                          # (the vacuum check's, when the same k)
    rck = [(r + 0.5) / k - 0.5 for r in rc]
    smooth = gaussian_smooth(coarse, radius_A / (pxd * k))
    m = sample_bilinear((smooth,), rck[0], rck[1])[0].astype(smooth.dtype)
    return (m - median(m)) / c_level


def _subset(atoms: Atoms, keep: np.ndarray) -> Atoms:
    if keep.all():
        return atoms
    return subset(atoms, keep)


def subset(atoms: Atoms, keep: np.ndarray) -> Atoms:
    """The atoms where the bool mask ``keep`` is True (rows by ``compress``: numpy's boolean indexing
    of an (N, 2) array costs ~10x more)."""
    return Atoms(atoms.xy_px.compress(keep, axis=0), atoms.species[keep], atoms.confidence[keep],
                 atoms.class_prob.compress(keep, axis=0), atoms.border[keep], atoms.pixel_size_A, atoms.frame_shape)


def pairs_within(xy: np.ndarray, centres: np.ndarray, r: float, dense_limit: int = 200_000
                 ) -> tuple[np.ndarray, np.ndarray]:
    """All (c, j) with ``(xy[j] - centres[c])**2`` summed over x, y ``< r * r``, sorted by (c, j).

    Direct differences when ``len(centres) * len(xy) <= dense_limit`` (a few centres), else
    candidates from a KD-tree (O(N log N)) filtered by the same expression, so both give the same
    pairs."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    if len(centres) * len(xy) <= dense_limit:
        dx = xy[None, :, 0] - centres[:, 0][:, None]
        dy = xy[None, :, 1] - centres[:, 1][:, None]
        close = dx * dx + dy * dy < r * r
        c, j = np.divmod(np.flatnonzero(close), close.shape[1])     # = np.nonzero(close), row-major, ~10x faster
        return c, j
    lists = cKDTree(xy).query_ball_point(centres, r)
    cnt = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    c = np.repeat(np.arange(len(centres)), cnt)
    j = np.fromiter((k for x in lists for k in x), np.int64, int(cnt.sum()))
    dx = xy[j, 0] - centres[c, 0]
    dy = xy[j, 1] - centres[c, 1]
    ok = dx * dx + dy * dy < r * r
    c, j = c[ok], j[ok]
    order = np.lexsort((j, c))
    return c[order], j[order]


def _clear_around_heavy(atoms: Atoms, sep_px: float) -> np.ndarray:
    """Keep-mask: no atom closer than ``sep_px`` to a heavy atom (a bright blob can show a second
    maximum on its flank); between two heavy atoms the more confident stays."""
    keep = np.ones(len(atoms), bool)
    heavy = np.flatnonzero(atoms.species != 0)
    xy = atoms.xy_px
    hh, j = pairs_within(xy, xy[heavy], sep_px)
    h = heavy[hh]
    other = h != j
    h, j = h[other], j[other]
    if len(h) == 0:
        return keep
    light = atoms.species[j] == 0
    keep[j[light]] = False
    hh, jj = h[~light], j[~light]
    weaker = np.where(atoms.confidence[hh] >= atoms.confidence[jj], jj, hh)
    keep[weaker] = False
    keep[heavy[~np.isin(heavy, weaker)]] = True
    return keep


def drop_faint(atoms: Atoms, ratio: np.ndarray, min_ratio: float) -> tuple[Atoms, np.ndarray]:
    """Remove atoms whose raw contrast ``ratio`` is below ``min_ratio`` (network hallucinations)."""
    keep = ratio >= min_ratio
    return _subset(atoms, keep), ratio[keep]


def assign_other(atoms: Atoms, image: np.ndarray, cfg, ratio: np.ndarray | None = None) -> None:
    """Relabel as "other" the atoms whose raw intensity is far above that of Si (in place).

    ``ratio`` = :func:`intensity_ratio` (computed when not given). The Si level is the upper quartile
    of the ratios of the atoms the network calls Si whose ratio is Si-like (0.5 x (14/6)^1.4 to
    1.25 x (14/6)^2), else (14/6)^2. An atom is "other" when its ratio exceeds ``other_intensity_ratio`` x the Si level.
    """
    ratio = intensity_ratio(atoms, image) if ratio is None else ratio
    if ratio is None:
        return
    si_like = (atoms.species == SI) & (ratio <= 1.25 * SI_C_RATIO[1]) & (ratio >= 0.5 * SI_C_RATIO[0])
    # the upper quartile, not the median: the network also calls many atoms of amorphous
    # contamination "Si", and they are dimmer than the lattice's Si (2-5 x C against 5-8), so a
    # median over both sat below the real Si and turned them into "other"
    si_level = percentile(ratio[si_like], 75) if si_like.any() else SI_C_RATIO[1]
    heavy = ratio > cfg.other_intensity_ratio * si_level
    atoms.species = np.where(heavy, OTHER, atoms.species).astype(np.int8)


def demote_dim_si(atoms: Atoms, ratio: np.ndarray, min_relative: float) -> None:
    """Relabel as C the "Si" far dimmer than the frame's other Si (in place).

    With two or more Si, one whose raw contrast is below ``min_relative`` x the 75th percentile of
    the Si contrasts is a C the network mistook (e.g. a C between two Si, lit by their tails).
    Measured on held-out simulated frames: real Si >= 0.69 of the frame's median Si, C <= 0.35.
    """
    si = np.flatnonzero(atoms.species == SI)
    if min_relative <= 0 or len(si) < 2:
        return
    ref = percentile(ratio[si], 75)
    if ref > 0:
        dim = si[ratio[si] < min_relative * ref]
        atoms.species[dim] = 0
