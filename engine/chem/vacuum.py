"""No atoms in vacuum: the raw frame's own evidence that a place holds no lattice (a hole).

A network trained to find atoms "completes" a lattice from context: at low dose it continues the
lattice into a hole, where the per-atom contrast check (:func:`engine.chem.atoms.drop_faint`) cannot
help because single atoms are near the noise. A hole is nevertheless plain on the raw frame when
averaged over a few angstrom: graphene adds its mean scattered signal everywhere, vacuum does not.

:func:`vacuum_dip` measures, per atom, how far the frame's local mean (a Gaussian window of
``window_A``, 2-4 A: wide enough to average out the lattice and the noise, narrow enough for a
hole's rim) lies below the lattice level there, in units of the lattice's own mean excess over its
hexagon centres:

* ``M``: the frame smoothed by the window (on a coarse grid; the frame's lattice averages out);
* lattice level ``L(x)``: ``M`` smoothed over :data:`LEVEL_A` (4 A) by normalised convolution, in
  :data:`LEVEL_PASSES` passes that leave out what dips or rises by 0.3 units (a hole; a bright spot),
  the first one what lies :data:`FIRST_CUT` (1.5) units below the frame's median (so a hole, also one
  cut by the frame's edge, does not pull the level into itself), and every pass the lattice within
  :data:`HEAVY_LIT_A` (5 A) of a Si or heavy atom, whose probe tail lights it. A background ramp or a
  broad brighter or darker patch is followed; a hole is bridged from the lattice around it;
* unit ``D``: the median over hexagon centres of (``M`` there - the frame at the centre itself):
  what the lattice adds over its emptiest points. Vacuum lies below the hexagon centres' level (they
  still hold the probe tails of six atoms), so a hole dips by more than ``D``; a missing atom (a
  vacancy) by about a tenth of it and a divacancy by a fifth at a 2 A window;
* noise: the frame's pixel noise (:func:`engine.chem.noise.noise_sigma`, measured on the frame)
  through the window, ``sigma_M = sigma_px * px / (2 sqrt(pi) window)``; the window widens (up to
  4 A) until ``min_dip * D`` is ``NOISE_K`` sigma of it, so noise alone does not make a dip.

:func:`drop_in_vacuum` removes the atoms whose dip exceeds ``max(min_dip * D, NOISE_K * sigma_M)``
unless the atom shows on the frame by itself: its own contrast (the median of the raw pixels within
:data:`OWN_DISC_A` of it, blind to a hot pixel, over ``M``) above ``own_sigma x max(1, dip / threshold)``
noise sigma (a deeper dip asks for more). A rim atom of a real hole stands out over its half-empty
surroundings and stays; so does a bright lattice atom that a wide probe tail or a background dip
darkens. On frames with 70-75 % of the current in the tail the dip alone cannot always tell those from
a hole (docs/chemistry.md, limits).
The hexagon centres come from the atoms themselves (for an atom i with neighbours j, k:
``x_j + x_k - x_i``). Without enough hexagons (< 20) or without a positive ``D`` nothing is removed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from engine.types import Atoms

#: the window's narrowest and widest Gaussian sigma (A)
WINDOW_A = (2.0, 4.0)
#: the lattice level follows the frame's own slow variations (ramps, broad patches) over this (A, sigma)
LEVEL_A = 4.0
#: ... leaving out the points farther than this x D (or 3 noise sigma) from it
LEVEL_EXCLUDE = 0.3
#: ... and the points brighter than it by this x D (or 3 noise sigma): a Si cluster's probe tail
LEVEL_EXCLUDE_BRIGHT = 0.3
#: the lattice within this of a Si / heavy atom (A) is lit by its probe tail: left out of the level
HEAVY_LIT_A = 5.0
#: the level's first pass leaves out what lies this x D below the frame's median level
FIRST_CUT = 1.5
#: passes of the level (each lets it climb further out of a wide hole)
LEVEL_PASSES = 3
#: the level's grid is this many times coarser than the windowed mean's
LEVEL_GRID = 2
#: the dip threshold is at least this many noise sigma of the windowed mean
NOISE_K = 5.0
#: fewer hexagon centres than this: no unit, no gate
MIN_HEXAGONS = 20
#: radius of the disc whose median is an atom's own level (A): about the probe's half width
OWN_DISC_A = 0.35
#: C-C neighbours for the hexagon centres (A): 1.42 A with strain and noise
BOND_RANGE_A = (1.1, 1.75)


def hexagon_centres(xy_A: np.ndarray, most: int = 600) -> np.ndarray:
    """(K, 2) hexagon centres (A) of atoms with exactly three neighbours at a C-C bond length."""
    xy = np.asarray(xy_A, np.float64).reshape(-1, 2)
    if len(xy) < 4:
        return np.zeros((0, 2))
    pairs = cKDTree(xy).query_pairs(BOND_RANGE_A[1], output_type="ndarray")
    if not len(pairs):
        return np.zeros((0, 2))
    d = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T)
    pairs = pairs[d >= BOND_RANGE_A[0]]
    a = np.concatenate([pairs[:, 0], pairs[:, 1]])
    b = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    count = np.bincount(a, minlength=len(xy))
    three = np.flatnonzero(count == 3)
    if not len(three):
        return np.zeros((0, 2))
    start = np.concatenate([[0], np.cumsum(count)])[three]
    nb = b[start[:, None] + np.arange(3)[None]]                           # (n, 3)
    xi = xy[three][:, None]
    c = np.concatenate([xy[nb[:, 0]] + xy[nb[:, 1]], xy[nb[:, 1]] + xy[nb[:, 2]], xy[nb[:, 2]] + xy[nb[:, 0]]]) \
        - np.concatenate([xi[:, 0]] * 3)
    return c[:: max(1, len(c) // most)]


def vacuum_dip(atoms: Atoms, image: np.ndarray, maps: tuple, min_dip: float):
    """``(dip, threshold, own)``: (N,) dip of each atom's surroundings in units of ``D``, the threshold
    in the same units, and (N,) each atom's own contrast over its surroundings in noise sigma; None
    when the frame gives no unit (see the module docstring). ``maps``: :func:`engine.chem.atoms.contrast_maps`."""
    from engine.chem.atoms import sample_bilinear
    from engine.chem.filters import block_mean
    from engine.chem.noise import noise_sigma

    sm, _bg, pxd, f = maps
    px = float(atoms.pixel_size_A)
    xy_A = np.asarray(atoms.xy_px, np.float64) * px
    centres = hexagon_centres(xy_A[np.asarray(atoms.species) == 0])
    if len(centres) < MIN_HEXAGONS:
        return None
    img = np.asarray(image)
    H, W = img.shape
    crop = img[max(0, H // 2 - 128):H // 2 + 128, max(0, W // 2 - 128):W // 2 + 128]
    sigma_px = noise_sigma(crop)
    if not np.isfinite(sigma_px):
        return None
    to_rc = lambda p_A, g: ((p_A[:, 1] / px + 0.5) / g - 0.5, (p_A[:, 0] / px + 0.5) / g - 0.5)  # noqa: E731
    # the unit: hexagon centres' surroundings over the centres themselves, measured at the narrowest window
    window = WINDOW_A[0]
    k = max(1, int(window / (3 * pxd)))                   # the window is wide: smooth on a coarser grid
    coarse = block_mean(sm, k) if k > 1 else sm
    g = f * k                                             # frame pixels per coarse pixel
    for attempt in range(2):
        M = ndimage.gaussian_filter(coarse.astype(np.float32), np.sqrt(max(window ** 2 - pxd ** 2, 0.0)) / (pxd * k),
                                    mode="nearest")
        if attempt == 0:
            at_c = sample_bilinear((M,), *to_rc(centres, g))[0]
            s_c = sample_bilinear((sm,), *to_rc(centres, f))[0]
            unit = float(np.median(at_c - s_c))
            if not unit > 0:
                return None
            sigma_m = sigma_px * px / (2.0 * np.sqrt(np.pi) * window)
            need = NOISE_K * sigma_px * px / (2.0 * np.sqrt(np.pi) * min_dip * unit)
            if need <= window:
                break
            window = min(WINDOW_A[1], need)
            sigma_m = sigma_px * px / (2.0 * np.sqrt(np.pi) * window)
    threshold = max(min_dip, NOISE_K * sigma_m / unit)
    # the lattice level: M smoothed over LEVEL_A where it is not dipped (normalised convolution), so a
    # background ramp or a broad bright/dark patch is lattice, and a hole is filled from its surroundings.
    # It varies over LEVEL_A (4 A), so it is computed on every LEVEL_GRID-th sample of M (about 1.2 A
    # apart at the narrowest window): the same level at about an eighth of the filtering
    k2 = LEVEL_GRID if min(M.shape) >= 8 * LEVEL_GRID else 1
    Mc = M[::k2, ::k2]                                  # M is smooth over >= 2 A: every k2-th sample keeps it
    s_l = LEVEL_A / (pxd * k * k2)
    exclude = max(LEVEL_EXCLUDE * unit, 3.0 * sigma_m)
    exclude_bright = max(LEVEL_EXCLUDE_BRIGHT * unit, 3.0 * sigma_m)
    h, w_ = Mc.shape
    heavy = np.flatnonzero(np.asarray(atoms.species) != 0)
    lit = np.zeros(Mc.shape, bool)                    # around Si / heavy atoms: their probe tails light the lattice
    if len(heavy):
        yy, xx = np.mgrid[0:h, 0:w_]
        grid_A = np.c_[(k2 * xx.ravel() + 0.5) * g - 0.5, (k2 * yy.ravel() + 0.5) * g - 0.5] * px
        d, _ = cKDTree(xy_A[heavy]).query(grid_A, distance_upper_bound=HEAVY_LIT_A)
        lit = np.isfinite(d).reshape(h, w_)
    # first pass: all but the lit and what lies far below the frame's typical level (a hole, also one
    # cut by the frame's edge, would otherwise pull the level down into itself)
    free = (~lit & (Mc >= float(np.median(Mc[~lit] if (~lit).any() else Mc)) - FIRST_CUT * unit)).astype(np.float32)
    L = ndimage.gaussian_filter(Mc * free, s_l, mode="nearest")                    # first pass: all but the lit
    den = ndimage.gaussian_filter(free, s_l, mode="nearest")
    L = np.where(den > 1e-3, L / np.maximum(den, 1e-3), float(np.median(Mc))).astype(np.float32)
    for _ in range(LEVEL_PASSES):
        w = ((Mc - L <= exclude_bright) & (L - Mc <= exclude) & ~lit).astype(np.float32)   # no dips, bright spots
        if w.mean() < 0.2:
            break
        num = ndimage.gaussian_filter(Mc * w, s_l, mode="nearest")
        den = ndimage.gaussian_filter(w, s_l, mode="nearest")
        L = np.where(den > 1e-3, num / np.maximum(den, 1e-3), L).astype(np.float32)
    (at_m,) = sample_bilinear((M,), *to_rc(xy_A, g))
    (at_l,) = sample_bilinear((L,), *(v / k2 for v in to_rc(xy_A, g)))
    dip = (at_l - at_m) / unit
    own = np.full(len(dip), np.inf)
    cand = np.flatnonzero(dip > threshold)
    if len(cand):
        med, n = disc_median(img, atoms.xy_px[cand], OWN_DISC_A / px)
        own[cand] = (med - at_m[cand]) / (1.2533 * sigma_px / np.sqrt(n))     # noise of a median of n pixels
    return dip, float(threshold), own


def disc_median(image: np.ndarray, xy_px: np.ndarray, radius_px: float) -> np.ndarray:
    """``(median, n)``: (N,) median of the frame's pixels within ``radius_px`` (at least 1.5 px) of each
    point, and (N,) how many pixels: the atom's own level, blind to a hot pixel. Points near the edge
    use the pixels inside."""
    img = np.asarray(image)
    H, W = img.shape
    rad = max(1.5, float(radius_px))
    k = int(np.ceil(rad))
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    inside = dx ** 2 + dy ** 2 <= rad ** 2
    dy, dx = dy[inside], dx[inside]
    ci = np.rint(np.asarray(xy_px, np.float64)).astype(np.int64)
    rr = ci[:, 1:2] + dy[None]
    cc = ci[:, 0:1] + dx[None]
    ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
    vals = img[np.clip(rr, 0, H - 1), np.clip(cc, 0, W - 1)].astype(np.float64)
    return np.nanmedian(np.where(ok, vals, np.nan), axis=1), np.maximum(ok.sum(1), 1)


def drop_in_vacuum(atoms: Atoms, image: np.ndarray, maps: tuple, min_dip: float, own_sigma: float) -> Atoms:
    """``atoms`` without those the raw frame shows in vacuum (:func:`vacuum_dip` above its threshold)
    that do not show as atoms themselves (own contrast below ``own_sigma`` noise sigma)."""
    if min_dip <= 0 or len(atoms) < MIN_HEXAGONS:
        return atoms
    res = vacuum_dip(atoms, image, maps, min_dip)
    if res is None:
        return atoms
    dip, threshold, own = res
    keep = (dip <= threshold) | (own >= own_sigma * np.maximum(1.0, dip / threshold))
    if keep.all():
        return atoms
    return Atoms(atoms.xy_px[keep], atoms.species[keep], atoms.confidence[keep], atoms.class_prob[keep],
                 atoms.border[keep], atoms.pixel_size_A, atoms.frame_shape)
