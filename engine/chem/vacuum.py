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
* where the lattice is: each hexagon centre's contrast (``M`` there - the frame at the centre, the
  unit's ingredient below) mapped over :data:`LATTICE_A` (2.5 A); a point is lattice where that local
  contrast is at least :data:`LATTICE_MIN` (0.4) ``D`` and hexagon centres surround it (density at least
  :data:`LATTICE_FULL` of the frame's 75th percentile; :data:`LATTICE_EDGE` within 2 LATTICE_A of the
  frame's edge). A lattice the network continues into a hole has centres as dark as its "atoms" and
  most of a hole has none, so the hole, its half-empty rim and a hole cut by the frame's edge are
  left out, however shallow the hole (1.3-2.6 ``D`` at low dose) or large;
* lattice level ``L(x)``: ``M`` smoothed over :data:`LEVEL_A` (4 A) by normalised convolution over the
  lattice only, then :data:`LEVEL_PASSES` passes that also leave out what dips or rises by 0.3 units (a
  dark patch; a bright spot), every pass without the lattice within :data:`HEAVY_LIT_A` (5 A) of a Si
  or heavy atom, whose probe tail lights it. A background ramp or a broad brighter or darker patch is
  followed; a hole is bridged from the lattice around it. With less than :data:`LATTICE_MIN_FRACTION`
  of the grid lattice, the first pass takes everything but what lies :data:`FIRST_CUT` (1.5) units
  below the frame's median instead;
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
With ``dark_sigma`` > 0 it also removes an atom near vacuum (dip above :data:`DARK_MIN_DIP`, 0.15 units)
at which the frame, smoothed by a Gaussian of :data:`PROBE_SIGMA_A` (about the probe), lies below the
lattice level by ``dark_sigma`` noise sigma and by :data:`DARK_ATOMS` x the rise of the frame's typical C
atom over the level, unless its own contrast clears ``own_sigma``: a lattice atom rises above the level,
a point in a hole lies below it by the hole's depth. That is the ring the network continues just inside
a hole's rim, whose 2 A surroundings dip only half as much as the hole itself (on a held-out 1e4 frame,
1.3 A inside the rim, by 0.16 units: hence 0.15, not 0.2; held-out lattice F1 within 0.001, Si unchanged).
With :data:`FIT_SIGMA` > 0 it also removes an atom near vacuum that lies below the lattice level and does
not show by itself when a joint fit with its neighbours (:func:`fitted_amplitudes`: a plane plus one
Gaussian per atom, on the frame's 0.2 A copy) gives it less than :data:`FIT_FRACTION` of a typical C
atom's amplitude by :data:`FIT_SIGMA` standard errors (:func:`no_atom_of_its_own`): the ring a network
continues inside the rim of a shallow hole lies less than a typical atom's rise below the level, which a
lattice atom in a darker patch can too, but with the rim atoms' tails modelled it fits to about nothing
(held-out 1e4 frame of SNR 4.9: 0.15-0.32 of a typical atom; docs/model.md, "The joint fit").
The hexagon centres come from the atoms themselves (for an atom i with neighbours j, k:
``x_j + x_k - x_i``). Without enough hexagons (< 20) or without a positive ``D`` nothing is removed.
"""

from __future__ import annotations

import functools

import numpy as np
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
#: where the lattice is: its own contrast (hexagon centres' surroundings over the centres) is mapped
#: over this (A, Gaussian sigma) ...
LATTICE_A = 2.5
#: ... and a point is lattice when that contrast is at least this x the frame's unit D ...
LATTICE_MIN = 0.4
#: ... and hexagon centres surround it: their local density at least this x the frame's 75th percentile
#: (the rim of a hole, where the mean is half vacuum, and the frame's edge are left out)
LATTICE_FULL = 0.5
#: ... (within 2 LATTICE_A of the frame's edge: this x)
LATTICE_EDGE = 0.2
#: with less lattice than this fraction of the level's grid, the level falls back to the frame's median cut
LATTICE_MIN_FRACTION = 0.2
#: an atom whose surroundings dip by more than this x D must not be darker than the lattice level
#: (0.2 before: the ring a network continues 1.3 A inside a rim can dip by only 0.16, docs/model.md)
DARK_MIN_DIP = 0.15
#: ... by as much as the frame's typical C atom rises above it (and by ``own_dark_sigma`` noise sigma)
DARK_ATOMS = 1.0
#: the matched filter for an atom's own value: a Gaussian of this sigma (A), about the probe's
PROBE_SIGMA_A = 0.4
#: the typical atom's rise over the level is the median over at most this many C atoms
DARK_SAMPLE = 100
#: passes of the level (each lets it climb further out of a wide hole)
LEVEL_PASSES = 2
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
    """(K, 2) hexagon centres (A) of atoms with exactly three neighbours at a C-C bond length.

    For atom i with neighbours j, k, l (in the KD-tree's pair order) the centres x_j + x_k - x_i,
    x_k + x_l - x_i, x_l + x_j - x_i make three blocks (first centres of all such atoms, then the
    second, the third); every ``len // most``-th row of them is returned, and only those rows are
    computed."""
    xy = np.asarray(xy_A, np.float64).reshape(-1, 2)
    n = len(xy)
    if n < 4:
        return np.zeros((0, 2))
    pairs = cKDTree(xy).query_pairs(BOND_RANGE_A[1], output_type="ndarray")
    if not len(pairs):
        return np.zeros((0, 2))
    x, y = xy[:, 0].copy(), xy[:, 1].copy()              # contiguous columns: cheaper gathers
    p0, p1 = pairs[:, 0], pairs[:, 1]
    d = np.hypot(x[p0] - x[p1], y[p0] - y[p1])
    ok = d >= BOND_RANGE_A[0]
    p0, p1 = p0[ok], p1[ok]
    a = np.concatenate([p0, p1])
    b = np.concatenate([p1, p0])
    # stable order by atom (numpy radix-sorts 16-bit keys: same order as a stable sort of the int64s)
    order = np.argsort(a.astype(np.uint16) if n <= 65536 else a, kind="stable")
    b = b[order]
    count = np.bincount(a, minlength=n)
    three = np.flatnonzero(count == 3)
    if not len(three):
        return np.zeros((0, 2))
    start = (np.cumsum(count) - 3)[three]                 # first of each such atom's three neighbours
    m = len(three)
    rows = np.arange(0, 3 * m, max(1, (3 * m) // most))   # the rows kept: block (which pair), atom
    blk, at = np.divmod(rows, m)
    j = b[start[at] + blk]
    k = b[start[at] + np.where(blk == 2, 0, blk + 1)]
    i = three[at]
    return np.stack([(x[j] + x[k]) - x[i], (y[j] + y[k]) - y[i]], 1)


@functools.lru_cache(maxsize=16)
def _density_norm(h: int, w: int, s_u: float) -> tuple[np.ndarray, np.ndarray]:
    """Per level-grid geometry (read-only, computed once): the part of the Gaussian window of ``s_u``
    inside the grid at each point (float32, at least 1e-3), and the share of the 75th-percentile density
    a point needs (:data:`LATTICE_EDGE` within 2 ``s_u`` of the grid's edge, :data:`LATTICE_FULL` inside)."""
    from engine.chem.filters import gaussian_matrix

    ey = gaussian_matrix(h, s_u, mode="constant").sum(1).astype(np.float32)     # the filter of ones
    ex = gaussian_matrix(w, s_u, mode="constant").sum(1).astype(np.float32)
    inside = np.maximum(np.outer(ey, ex), 1e-3)
    band = np.minimum.outer(np.minimum(np.arange(h), h - 1 - np.arange(h)),
                            np.minimum(np.arange(w), w - 1 - np.arange(w))) < 2.0 * s_u
    share = np.where(band, LATTICE_EDGE, LATTICE_FULL)
    inside.setflags(write=False)
    share.setflags(write=False)
    return inside, share


def vacuum_dip(atoms: Atoms, image: np.ndarray, maps: tuple, min_dip: float, judge_all: bool = False):
    """``(dip, threshold, own, dark)``: (N,) dip of each atom's surroundings in units of ``D``, the
    threshold in the same units, (N,) each atom's own contrast over its surroundings in noise sigma (inf
    where neither the dip is above the threshold nor the atom darker than the level by :data:`DARK_ATOMS`),
    and (2, N) how far the frame at each atom (matched to the probe: a Gaussian of :data:`PROBE_SIGMA_A`)
    rises above the lattice level, in noise sigma and in units of the frame's typical C atom's rise (inf
    where the dip is below :data:`DARK_MIN_DIP`); None when the frame gives no unit (see the module
    docstring). ``maps``: :func:`engine.chem.atoms.contrast_maps`. ``judge_all``: ``own`` and ``dark`` of
    every atom (for measurements: :mod:`lab.infer.holes`; the check itself needs them only where inf is not
    written above)."""
    from engine.chem.atoms import gaussian_at, sample_bilinear
    from engine.chem.filters import gaussian_filter
    from engine.chem.maps import coarse as coarse_of, noise_of
    from engine.chem.quantile import median, percentile

    sm, _bg, pxd, f = maps
    px = float(atoms.pixel_size_A)
    xy_A = np.asarray(atoms.xy_px, np.float64) * px
    centres = hexagon_centres(xy_A.compress(np.asarray(atoms.species) == 0, axis=0))
    if len(centres) < MIN_HEXAGONS:
        return None
    img = np.asarray(image)
    sigma_px = noise_of(maps, image)                      # (shared with the SNR estimate)
    if not np.isfinite(sigma_px):
        return None
    to_rc = lambda p_A, g: ((p_A[:, 1] / px + 0.5) / g - 0.5, (p_A[:, 0] / px + 0.5) / g - 0.5)  # noqa: E731
    # the unit: hexagon centres' surroundings over the centres themselves, measured at the narrowest window
    window = WINDOW_A[0]
    k = max(1, int(window / (3 * pxd)))                   # the window is wide: smooth on a coarser grid
    coarse = coarse_of(maps, k)                           # (shared with the overlayer check)
    g = f * k                                             # frame pixels per coarse pixel
    for attempt in range(2):
        M = gaussian_filter(coarse.astype(np.float32), np.sqrt(max(window ** 2 - pxd ** 2, 0.0)) / (pxd * k),
                            "nearest")
        if attempt == 0:
            at_c = sample_bilinear((M,), *to_rc(centres, g))[0]
            s_c = sample_bilinear((sm,), *to_rc(centres, f))[0]
            unit = median(at_c - s_c)
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
    if len(heavy):                                    # the level's grid points within HEAVY_LIT_A of one
        gy = ((k2 * np.arange(h) + 0.5) * g - 0.5) * px                     # grid rows, columns in A
        gx = ((k2 * np.arange(w_) + 0.5) * g - 0.5) * px
        for part in np.array_split(heavy, max(1, len(heavy) // 64)):        # (h, w, <= 127) at a time
            dy2 = (xy_A[part, 1][:, None] - gy[None]) ** 2                  # (heavy atom, grid row)
            dx2 = (xy_A[part, 0][:, None] - gx[None]) ** 2
            # any over the heavy atoms as the first axis: numpy reduces a short last axis ~10x slower
            lit |= np.logical_or.reduce((dy2[:, :, None] + dx2[:, None, :]) <= HEAVY_LIT_A ** 2, axis=0)
    # where the lattice is: its own contrast over the hexagon centres, mapped locally (a lattice the network
    # continues into a hole has centres as dark as its "atoms": no contrast; most of a hole has no centres).
    # The level is taken from there only, so a hole (also a large one, or one cut by the frame's edge) and
    # the half-empty surroundings of its rim never pull it down, however deep or shallow the hole is.
    cr, cc_ = (v / k2 for v in to_rc(centres, g))
    ci = np.clip(np.rint(cr).astype(np.int64), 0, h - 1) * w_ + np.clip(np.rint(cc_).astype(np.int64), 0, w_ - 1)
    s_u = LATTICE_A / (pxd * k * k2)
    num, den = gaussian_filter(np.stack([np.bincount(ci, at_c - s_c, h * w_), np.bincount(ci, None, h * w_)])
                               .reshape(2, h, w_).astype(np.float32), s_u, "constant")
    # the frame's edge is no rim: the density over the part of the window inside the frame, and within
    # 2 LATTICE_A of the edge (where atoms lack the neighbours outside that make hexagons) any centres will do
    inside, share = _density_norm(h, w_, float(s_u))
    dens = den / inside
    full = share * percentile(dens, 75)
    lattice = (dens >= full) & (num >= LATTICE_MIN * unit * den)
    free = (~lit & lattice).astype(np.float32)
    if free.mean() < LATTICE_MIN_FRACTION:              # too little lattice: what lies far below the median
        free = (~lit & (Mc >= median(Mc[~lit] if (~lit).any() else Mc) - FIRST_CUT * unit)).astype(np.float32)
        lattice = np.ones_like(lit)
    L, den = gaussian_filter(np.stack([Mc * free, free]), s_l, "nearest")            # first pass: the lattice
    L = np.where(den > 1e-3, L / np.maximum(den, 1e-3), median(Mc)).astype(np.float32)
    for _ in range(LEVEL_PASSES):
        w = ((Mc - L <= exclude_bright) & (L - Mc <= exclude) & ~lit & lattice).astype(np.float32)  # no dips, bright spots
        if w.mean() < 0.2:
            break
        num, den = gaussian_filter(np.stack([Mc * w, w]), s_l, "nearest")
        L = np.where(den > 1e-3, num / np.maximum(den, 1e-3), L).astype(np.float32)
    r, c = to_rc(xy_A, g)
    (at_m,) = sample_bilinear((M,), r, c)
    (at_l,) = sample_bilinear((L,), r / k2, c / k2)
    dip = (at_l - at_m) / unit
    # darker than the lattice: the frame at the atom (matched to the probe) against the lattice level there.
    # A lattice atom rises above the level; a place in vacuum lies below it by the hole's depth (> 1 D)
    dark = np.full((2, len(dip)), np.inf)
    near = np.arange(len(dip)) if judge_all else np.flatnonzero(dip > DARK_MIN_DIP)
    if len(near):
        c_idx = np.flatnonzero(np.asarray(atoms.species) == 0)
        c_idx = c_idx[:: max(1, len(c_idx) // DARK_SAMPLE)]
        idx = np.concatenate([near, c_idx])
        # on the frame's 0.2 A copy (already smoothed by ~pxd): the rest of the probe-sized Gaussian
        mf = gaussian_at(sm, np.sqrt(max(PROBE_SIGMA_A ** 2 - pxd ** 2, 0.0)) / pxd,
                         (atoms.xy_px[idx] + 0.5) / f - 0.5, truncate=3.0)
        rise = mf - at_l[idx]
        typical = median(rise[len(near):])
        sigma_mf = sigma_px * px / (2.0 * np.sqrt(np.pi) * PROBE_SIGMA_A)     # noise of the matched filter
        if typical > 0:
            dark[0, near] = rise[:len(near)] / sigma_mf
            dark[1, near] = rise[:len(near)] / typical
    own = np.full(len(dip), np.inf)
    cand = np.arange(len(dip)) if judge_all else np.flatnonzero((dip > threshold) | (dark[1] < -DARK_ATOMS))
    if len(cand):
        med, n = disc_median(img, atoms.xy_px[cand], OWN_DISC_A / px)
        own[cand] = (med - at_m[cand]) / (1.2533 * sigma_px / np.sqrt(n))     # noise of a median of n pixels
    return dip, float(threshold), own, dark


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
    n = np.maximum(ok.sum(1), 1)
    srt = np.sort(np.where(ok, vals, np.inf), axis=1)   # the pixels outside sort last (nanmedian: 10x slower)
    rows = np.arange(len(srt))
    return 0.5 * (srt[rows, (n - 1) // 2] + srt[rows, n // 2]), n


def drop_in_vacuum(atoms: Atoms, image: np.ndarray, maps: tuple, min_dip: float, own_sigma: float,
                   dark_sigma: float = 0.0) -> Atoms:
    """``atoms`` without those the raw frame shows in vacuum (:func:`vacuum_dip` above its threshold)
    that do not show as atoms themselves (own contrast below ``own_sigma`` noise sigma), and, with
    ``dark_sigma`` > 0, without those near vacuum (dip above :data:`DARK_MIN_DIP`) at which the frame lies
    below the lattice level by ``dark_sigma`` noise sigma and by :data:`DARK_ATOMS` x a typical atom's rise,
    unless they show by themselves (own contrast >= ``own_sigma``: a true rim atom at high dose, whose
    surroundings lost the probe tails of the missing lattice)."""
    if min_dip <= 0 or len(atoms) < MIN_HEXAGONS:
        return atoms
    res = vacuum_dip(atoms, image, maps, min_dip)
    if res is None:
        return atoms
    dip, threshold, own, dark = res
    keep = (dip <= threshold) | (own >= own_sigma * np.maximum(1.0, dip / threshold))
    if dark_sigma > 0:
        keep &= ~((dark[0] < -dark_sigma) & (dark[1] < -DARK_ATOMS) & (own < own_sigma))
    if FIT_SIGMA > 0:
        keep &= ~no_atom_of_its_own(atoms, image, maps, dip, keep & (dark[1] < FIT_MAX_RISE))
    if keep.all():
        return atoms
    from engine.chem.atoms import subset

    return subset(atoms, keep)


#: the joint fit of :func:`fitted_amplitudes`: a square of this half-width (A) around the atom ...
FIT_RADIUS_A = 1.6
#: ... modelled as a plane plus a Gaussian of :data:`PROBE_SIGMA_A` (widened by the 0.2 A copy's smoothing)
#: at every atom within FIT_RADIUS_A + FIT_REACH_A of it
FIT_REACH_A = 1.0


def fitted_amplitudes(maps: tuple, xy_px: np.ndarray, pixel_size_A: float, idx: np.ndarray,
                      sigma_px: float, probe_sigma_A: float = PROBE_SIGMA_A) -> tuple[np.ndarray, np.ndarray]:
    """``(amp, se)``: (len(idx),) each atom ``idx``'s own amplitude in a least-squares fit of the frame's
    0.2 A copy (``maps``: :func:`engine.chem.atoms.contrast_maps`) in a square of half-width
    :data:`FIT_RADIUS_A` around it by a plane plus one Gaussian per atom of ``xy_px`` within reach (the
    atom and its neighbours, amplitudes free), and its standard error from the frame's pixel noise
    ``sigma_px`` (as if the copy were the plain block mean: its 1-pixel smoothing leaves a fit of such
    smooth functions nearly as informative). The neighbours' probe tails are modelled, not taken as the
    atom's own signal: a lattice atom at a hole's rim keeps a typical amplitude though half its
    surroundings are vacuum; a "continued" atom inside the rim fits to about nothing (the frame there is
    the rim atoms' tails over vacuum). All fits at once (batched normal equations)."""
    sm, _bg, pxd, f = maps
    sm = np.asarray(sm)
    h, w = sm.shape
    idx = np.asarray(idx, np.int64)
    n = len(idx)
    amp, se = np.full(n, np.nan), np.full(n, np.nan)
    if not n:
        return amp, se
    xy = (np.asarray(xy_px, np.float64).reshape(-1, 2) + 0.5) / f - 0.5          # on the 0.2 A grid
    k = max(2, int(np.ceil(FIT_RADIUS_A / pxd)))
    off = np.arange(-k, k + 1, dtype=np.float64)
    c = np.rint(xy[idx]).astype(np.int64)                                       # (n, 2) patch centres (x, y)
    xs = c[:, 0:1] + off[None].astype(np.int64)                                # (n, m) columns, rows
    ys = c[:, 1:2] + off[None].astype(np.int64)
    vx, vy = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    valid = (vy[:, :, None] & vx[:, None, :]).reshape(n, -1).astype(np.float32)  # (n, Q)
    vals = sm[np.clip(ys, 0, h - 1)[:, :, None], np.clip(xs, 0, w - 1)[:, None, :]].reshape(n, -1).astype(np.float32)
    vals *= valid
    # the neighbours of each atom (itself first), padded to the most any has
    tree = cKDTree(xy)
    reach = (FIT_RADIUS_A + FIT_REACH_A) / pxd
    lists = tree.query_ball_point(xy[idx], reach)
    kmax = max(len(v) for v in lists)
    nb = np.zeros((n, kmax), np.int64)
    use = np.zeros((n, kmax), bool)
    for r, (i, v) in enumerate(zip(idx, lists)):
        v = [i] + [j for j in v if j != i]
        nb[r, :len(v)] = v
        use[r, :len(v)] = True
    s2 = 2.0 * (probe_sigma_A ** 2 + pxd ** 2) / pxd ** 2                     # (the copy's smoothing: ~1 px)
    gx = np.exp(-(xs[:, None, :] - xy[nb, 0][:, :, None]) ** 2 / s2).astype(np.float32)  # (n, K, m): separable
    gy = np.exp(-(ys[:, None, :] - xy[nb, 1][:, :, None]) ** 2 / s2).astype(np.float32) * use[:, :, None]
    m = len(off)
    A = np.empty((n, kmax + 3, m * m), np.float32)                            # (n, K+3, Q): Gaussians, plane
    np.multiply(gy[:, :, :, None], gx[:, :, None, :], out=A[:, :kmax].reshape(n, kmax, m, m))
    A[:, kmax] = 1.0
    A[:, kmax + 1] = np.tile(off * pxd, m)
    A[:, kmax + 2] = np.repeat(off * pxd, m)
    A *= valid[:, None, :]
    AtA = (A @ A.transpose(0, 2, 1)).astype(np.float64)
    ridge = 1e-9 * np.trace(AtA, axis1=1, axis2=2)[:, None] + 1e-12
    kk = AtA.shape[1]
    AtA = AtA + ridge[:, :, None] * np.eye(kk)[None]
    pad = ~np.concatenate([use, np.ones((n, 3), bool)], 1)                    # padded columns: identity rows
    AtA[pad] = 0.0
    rr, cc = np.nonzero(pad)
    AtA[rr, cc, cc] = 1.0
    rhs = np.stack([(A @ vals[:, :, None])[:, :, 0].astype(np.float64), np.broadcast_to(np.eye(kk)[0], (n, kk))], 2)
    rhs[pad] = 0.0
    try:
        sol = np.linalg.solve(AtA, rhs)
    except np.linalg.LinAlgError:
        return amp, se
    ok = valid.sum(1) >= 12
    amp[ok] = sol[ok, 0, 0]
    sigma_b = float(sigma_px) / f                                               # noise of an f x f block mean
    se[ok] = sigma_b * np.sqrt(np.maximum(sol[ok, 0, 1], 0.0))
    return amp, se

#: an atom near vacuum (dip above :data:`DARK_MIN_DIP`) whose fitted amplitude is below this fraction of a
#: typical C atom's ...
FIT_FRACTION = 0.5
#: ... and below the typical one by this many standard errors, is no atom (0: off)
FIT_SIGMA = 3.0
#: only atoms that lie below the lattice level (rise under this many typical C atoms) are fitted (the
#: continued ring lies below the level: -1.0 to -0.2 on the development frames; a rim atom rises)
FIT_MAX_RISE = 0.0
#: the typical amplitude: the median over at most this many C atoms away from vacuum
FIT_SAMPLE = 16


def no_atom_of_its_own(atoms: Atoms, image: np.ndarray, maps: tuple, dip: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(N,) bool: the atoms still kept (``keep``) near vacuum (``dip`` above :data:`DARK_MIN_DIP`) that the
    raw frame shows to hold no atom of their own: in a joint fit with their neighbours
    (:func:`fitted_amplitudes`), an amplitude below :data:`FIT_FRACTION` of the median of up to
    :data:`FIT_SAMPLE` C atoms away from vacuum, by :data:`FIT_SIGMA` standard errors. This is the ring
    a network continues inside a hole's rim at C-atom SNR >= ~4: the frame there is the rim atoms' probe
    tails over vacuum, which the lattice-level tests (a point below the level, its surroundings dipped)
    cannot tell from a lattice atom in a darker patch, and the fit can."""
    from engine.chem.maps import noise_of

    sp = np.asarray(atoms.species)
    out = np.zeros(len(dip), bool)
    cand = np.flatnonzero(keep & (dip > DARK_MIN_DIP) & (sp == 0))
    if not len(cand):
        return out
    ref = np.flatnonzero((dip <= DARK_MIN_DIP) & (sp == 0))
    if len(ref) < FIT_SAMPLE // 2:
        return out
    ref = ref[:: max(1, len(ref) // FIT_SAMPLE)][:FIT_SAMPLE]
    sigma_px = noise_of(maps, image)
    if not np.isfinite(sigma_px) or sigma_px <= 0:
        return out
    amp, se = fitted_amplitudes(maps, atoms.xy_px, atoms.pixel_size_A, np.r_[cand, ref], sigma_px)
    typical = np.nanmedian(amp[len(cand):]) if np.isfinite(amp[len(cand):]).any() else np.nan
    if not typical > 0:
        return out
    a, e = amp[:len(cand)], se[:len(cand)]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[cand] = (a < FIT_FRACTION * typical) & ((typical - a) > FIT_SIGMA * e)
    return out
