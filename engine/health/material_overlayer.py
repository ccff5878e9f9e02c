"""Contamination lying on graphene: the part of the field where the hollows of the lattice are filled
(issue 21, criterion 2).

Amorphous hydrocarbon on a graphene sheet does not make the network unsure (the lattice is still under
it, and its atoms are confident), so :func:`engine.health.material_atoms.unsure_region` leaves it in;
the network reads lattice C under a contamination atom as Si. On 15 simulated ``graphene_contamination``
frames (lab.material_eval's kind, seed 81, C-atom SNR >= 2) 111 of 371 reported Si were false, all within
3 A of a contamination atom (docs/material.md, ``python -m lab.contamination_eval``).

The cue is the floor of the image: the hexagons' hollows, the darkest parts of clean graphene, are
filled by the randomly placed atoms of an overlayer. :func:`engine.chem.maps.contrast_maps`' ``bg`` (the
minimum within 3 A: the hollows' level) rises under an overlayer; but it also rises beside a cluster of
real Si when the probe has a wide tail (a tail of 60 % of the intensity and 7 A FWHM lifts the floor
around a few Si as much as a thin overlayer does). The tail is smooth, an overlayer is not: it fills
the hollows unevenly, so the hollow centres (of the graph's hexagons) stand above the local minimum. A
region is where both hold, on a grid of :data:`CELL_A` averaged over a Gaussian of :data:`SIGMA_A`:

* the floor (``bg`` at the atoms, over the median C atom's, in units of the median C atom's contrast
  ``sm - bg``) is above :data:`MIN_FLOOR`, and
* the hollows (``sm - bg`` at the centres of the graph's 6-rings with no atom within
  :data:`MIN_HOLLOW_A` of the centre, same units, less the field's median) are above :data:`MIN_FILL`,
  except in parts whose filled hollows are mostly beside a bright Si (:data:`LIT_MAX_SHARE`): its tail
  lit them;

in regions of at least :data:`MIN_AREA_A2`, grown by :data:`GROW_A` (the false Si lie up to 3 A beyond
the contamination atoms). The pipeline leaves them out as it does an unsure region.

The fast path (every frame without a high floor under a heavy atom, ~20 us on an 8,500-atom frame): the
floor at the heavy atoms (nearest map pixel) against the floor and contrast of ~:data:`REF_ATOMS`
evenly strided C atoms. A region only matters where it holds a reported Si, so a frame whose heavy atoms
all sit below :data:`GATE_FLOOR` gets none; past it the region is looked for within :data:`LOCAL_A` of
those heavy atoms. Plain numpy / scipy.

What the region leaves in is judged per reported Si by :func:`overlayer_si` (a bond too short for a Si and
a column dimmer than a Si, absolutely or against the frame's own Si, or wider than the probe; bonds
averaging a C's; or, whatever the bonds, a column far dimmer than the frame's Si or as wide as its C columns),
and then by :func:`si_near_contamination` (within :data:`SI_NEAR_A` of the contamination found, a column a little
dimmer than the frame's Si or as wide as its C columns): left out by the pipeline, a disc each
(``engine.pipeline.OVERLAYER_SI_DISCS``).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from engine.chem.atoms import sample_bilinear
from engine.chem.quantile import median
from engine.health.material_atoms import large_regions
from engine.types import OTHER, SI

#: the fast path: a frame is judged only where heavy atoms sit on a floor this much above the median C
#: atom's (units of the median C atom's contrast; development frames with a region had >= 0.94 there,
#: clean ones mostly < 0.6, up to 2.2 beside Si clusters under a wide probe tail)
GATE_FLOOR = 0.75
#: ... under at least this many heavy atoms
MIN_CANDIDATES = 3
#: ... or, with SEED_ANY_ATOM, under any atoms (C too): contamination on the lattice whose high floor lies under C
#: atoms only then gets its region (the third frame of MaterialMovie seed 148). OFF: tried 2026-12-05 (second
#: session). Development (8153 / movies 147-152 / 5213 and 8156 / 153-158 / 5214): movies false Si 7 -> 4 static,
#: 11 -> 8 drifting and 7 -> 6, 9 -> 2; clean, wide-tail and dopant frames identical (no region on any). Held out
#: (8161 / 165-170 / 5216, keep rule written first): false Si 93 -> 80 static, 69 -> 61 drifting, true Si and clean
#: sets identical, but transformations 5 -> 6 drifting (movie 167's `vacancy_created` moved from the static movie
#: to the drifting one): off, as decided before the run (docs/material.md)
SEED_ANY_ATOM = False
#: the floor and contrast references are medians over about this many atoms (evenly strided; C only)
REF_ATOMS = 128
#: fewer C atoms than this among them: not judged
MIN_C_ATOMS = 20
#: the region is looked for within this distance (A) of the heavy atoms past the fast path
LOCAL_A = 25.0
#: grid cell (A) and smoothing (A, Gaussian sigma) of the floor and hollow averages
CELL_A = 1.0
SIGMA_A = 1.5
#: averaged floor above the median C atom's (units of the median C atom's contrast)
MIN_FLOOR = 0.7
#: averaged hollow fill above the field's median (same units): where there are no hexagons it is 0
MIN_FILL = 0.6
#: a hexagon with an atom closer than this (A) to its centre has no hollow
MIN_HOLLOW_A = 0.8
#: a part of the region whose filled hollows are mostly (a share > LIT_MAX_SHARE) those of hexagons with a
#: Si corner (within HOLLOW_HEAVY_A of the centre; corners are at 1.42 A) as bright as a Si (net contrast
#: >= HOLLOW_BRIGHT x the median C atom's) is dropped: the probe's tail lit them. Clean graphene with
#: 3 Si/nm^2 of ~7 C contrasts under a 60 %/2.7 A tail: the hollows of hexagons with one Si corner filled
#: by 0.45 C contrasts at the median, 1.03 at the 90th percentile, 0-5 filled hollows per frame without a
#: heavy corner against 100-150 with one, and regions that left out up to 27 of 154 true Si. On the
#: contaminated development frames (seed 81) 0-30 % of the filled hollows had a heavy corner
HOLLOW_HEAVY_A = 1.9
HOLLOW_BRIGHT = 3.0
LIT_MAX_SHARE = 0.75
#: ... where the bright Si are dense: at least this many per nm^2 of the region's window (the bright-Si
#: frames: 3 Si/nm^2; the v2 network's blob of MaterialMovie seed 31, 1-4 filled hollows beside its
#: bright false Si in a field of ~0.3 Si/nm^2, keeps its region)
LIT_MIN_SI_PER_NM2 = 1.0
#: cells with fewer atoms than this per A^2 (graphene 0.38) are not judged (a hole)
MIN_ATOM_DENSITY = 0.1
#: no region within this distance (A) of an adatom: a heavy "other" atom ...
HEAVY_CLEAR_A = 6.0
#: ... at least this many times as bright as the median Si (development adatoms: >= 2.75; an overlayer's
#: blob read as "other": <= 2.1) ...
ADATOM_RATIO = 2.5
#: ... taken as this many C atoms on frames with fewer than 3 Si
ADATOM_SI_LEVEL = 4.0
#: a region from this area (A^2: about 6 atoms of graphene)
MIN_AREA_A2 = 16.0
#: the region is grown by this much (A): the false Si lie up to 3 A beyond the contamination atoms
GROW_A = 4.0

#: Thin contamination under a sharp probe (the bundled movies' imaging: 0.95 A probe, a 15 %/3 A tail)
#: barely raises the floor (the minimum within 3 A still finds an empty hollow) but fills the hollows.
#: OFF by default: on the held-out seeds 8104 / 8105 (docs/material.md) it gave a region on a clean frame
#: (6 of 172 true Si lost) and lost 7 of 196 true Si near contamination, where the thick path alone lost
#: none. Tried again on 2026-12-04 (docs/material.md, "Session of 2026-12-04") with the tracker taking a
#: region's boundary for the field's edge and the bright-Si check: on held-out movies 81-86 it cut the
#: false transformations 8 -> 3 (static) and 8 -> 2 (drifting) and the false Si near contamination 171 ->
#: 58 and 153 -> 34, but on 30 held-out clean frames with 1-4 Si/nm^2 (seed 5202) it put a region on 3
#: more of them and lost 7 more true Si: off, as decided before that run. Gated the same day to frames
#: with < 0.75 Si per nm^2 (docs/material.md, "the thin path gated by Si density"): no loss on clean
#: frames, but on held-out movies 93-98 no fewer false Si (static) and one more transformation
#: (drifting): off, and the gate not kept.
THIN_PATH = False
#: The second gate: heavy atoms on a floor above this (same units as GATE_FLOOR) ...
THIN_GATE_FLOOR = 0.15
#: ... whose own hexagons' hollows (the 6-rings they belong to, empty or not) are filled this much above
#: the field's median hollow (units of the median C atom's contrast) ...
THIN_GATE_FILL = 0.4
#: ... past it, the region also takes the cells whose averaged hollow fill exceeds this, on a floor
#: above THIN_MIN_FLOOR (not below the field's: a hole's edge, where the minimum is vacuum, lifts the
#: hollows' contrast but lowers the floor)
THIN_MIN_FILL = 0.6
THIN_MIN_FLOOR = 0.1
#: ... and the cells connected to those (hysteresis) whose averaged hollow fill exceeds this: the patch's
#: thinner parts (on the bundled movies' imaging false Si sat on hollows filled by 0.12-0.6 (quartiles
#: 0.12 / 0.6), true Si on clean graphene by <= 0.04, <= 0.56 under a 60 %/7 A tail)
THIN_EXTEND_FILL = 0.25
#: the thin part of a region is grown by this much (A) only (GROW_A: 4 A reached true Si 3.4 A from
#: the patch's outermost atom)
THIN_GROW_A = 2.0


def _grid_mean(cell: np.ndarray, values, n_cells: int, shape, s: float):
    num = ndimage.gaussian_filter(np.bincount(cell, values, n_cells).reshape(shape), s, mode="constant")
    den = ndimage.gaussian_filter(np.bincount(cell, None, n_cells).reshape(shape).astype(np.float64), s,
                                  mode="constant")
    return num / np.maximum(den, 1e-12), den


def overlayer_region(atoms, maps, rings, shape) -> np.ndarray | None:
    """``(H, W)`` bool: the part of the field covered by contamination lying on the lattice, or None.

    ``atoms``: an :class:`engine.types.Atoms` (px, with ``species`` and ``pixel_size_A``); ``maps``: the
    frame's :func:`engine.chem.maps.contrast_maps`; ``rings``: the graph's rings (atom index arrays,
    :attr:`engine.types.Chemistry.rings`); ``shape``: the frame's (H, W)."""
    sp = atoms.species
    heavy = (sp != 0).nonzero()[0]
    n = len(sp)
    if not (len(heavy) or SEED_ANY_ATOM) or n < MIN_C_ATOMS:
        return None
    ref = np.arange(0, n, max(1, n // REF_ATOMS))
    ref = ref[sp[ref] == 0]
    if len(ref) < MIN_C_ATOMS:
        return None
    sm, bg, _pxd, f = maps[:4]
    xy = atoms.xy_px
    seeds = np.arange(n) if SEED_ANY_ATOM else heavy
    s_sm, s_bg = _nearest(sm, bg, xy[np.concatenate([ref, seeds])], f)
    k = len(ref)
    c_level = median(s_sm[:k] - s_bg[:k])
    if not c_level > 0:
        return None
    level = median(s_bg[:k])
    floor = s_bg[k:] - level
    cand = seeds[floor > GATE_FLOOR * c_level]
    if THIN_PATH:
        floor = floor[heavy] if SEED_ANY_ATOM else floor
        thin = heavy[(floor > THIN_GATE_FLOOR * c_level) & (floor <= GATE_FLOOR * c_level)]
    else:
        thin = heavy[:0]
    if len(cand) + len(thin) < MIN_CANDIDATES:
        return None                                              # the fast path
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    px = float(atoms.pixel_size_A)
    if len(thin):
        thin = thin[_own_hollow_fill(xy, thin, n, sm, bg, f, rings, c_level, px) > THIN_GATE_FILL]
    if len(cand) + len(thin) < MIN_CANDIDATES:
        return None
    return _region(xy, np.concatenate([cand, thin]), sm, bg, f, rings, c_level, level, px, shape,
                   _adatoms(xy, sp, sm, bg, f, c_level), thin=len(thin) > 0, si=sp == SI)


def _own_hollow_fill(xy, idx, n, sm, bg, f, rings, c_level, px) -> np.ndarray:
    """Per atom of ``idx``: the mean fill of the hollows of the 6-rings it belongs to (``sm - bg`` at
    their centres, units of ``c_level``, less the median over ~:data:`REF_ATOMS` evenly strided
    hexagons of the field); -inf for an atom in no 6-ring."""
    out = np.full(len(idx), -np.inf)
    if not (hasattr(rings, "atoms") and hasattr(rings, "offsets") and hasattr(rings, "centre_A")):
        return out
    sizes = np.asarray(rings.sizes)
    hexes = np.flatnonzero(sizes == 6)
    if len(hexes) < MIN_C_ATOMS:
        return out
    flag = np.zeros(n, bool)
    flag[idx] = True
    members = np.asarray(rings.atoms)
    hit = np.flatnonzero(flag[members])
    ring = np.searchsorted(np.asarray(rings.offsets), hit, side="right") - 1
    six = sizes[ring] == 6
    hit, ring = hit[six], ring[six]
    if not len(ring):
        return out
    field = hexes[:: max(1, len(hexes) // REF_ATOMS)]
    centre = np.asarray(rings.centre_A, np.float64)[np.concatenate([field, ring])] / px
    h_sm, h_bg = sample_bilinear((sm, bg), (centre[:, 1] + 0.5) / f - 0.5, (centre[:, 0] + 0.5) / f - 0.5)
    fill = (h_sm - h_bg) / c_level
    k = len(field)
    fill = fill[k:] - median(fill[:k])
    pos = np.full(n, -1, np.int64)
    pos[idx] = np.arange(len(idx))
    who = pos[members[hit]]
    num = np.bincount(who, fill, len(idx))
    cnt = np.bincount(who, None, len(idx))
    np.divide(num, cnt, out=out, where=cnt > 0)
    return out


def _adatoms(xy, sp, sm, bg, f, c_level):
    """(k, 2) positions of the heavy "other" atoms bright enough to be adatoms: contrast at least
    :data:`ADATOM_RATIO` x the median Si's (:data:`ADATOM_SI_LEVEL` x the C atom's with fewer than 3 Si).
    An overlayer's blob read as "other" is about twice a Si; a Cu-like adatom three to twenty times."""
    other = (sp == OTHER).nonzero()[0]
    if not len(other):
        return xy[other]
    si = (sp == SI).nonzero()[0]
    o_sm, o_bg = _nearest(sm, bg, xy[other], f)
    if len(si) >= 3:
        s_sm, s_bg = _nearest(sm, bg, xy[si], f)
        si_level = median(s_sm - s_bg)
    else:
        si_level = ADATOM_SI_LEVEL * c_level
    return xy[other[(o_sm - o_bg) >= ADATOM_RATIO * si_level]]


def _nearest(sm, bg, p, f):
    """``sm`` and ``bg`` at the map pixel nearest to each of the frame positions ``p`` ((n, 2) x, y):
    the maps are smooth at this scale, and this costs a quarter of a bilinear sample."""
    H, W = sm.shape
    q = ((p + 0.5) * (1.0 / f)).astype(np.intp)               # floor((x + 0.5) / f): x >= -0.5 in the frame
    np.minimum(q, (W - 1, H - 1), out=q)
    np.maximum(q, 0, out=q)
    i = q[:, 1] * W + q[:, 0]
    return sm.ravel().take(i), bg.ravel().take(i)


def _hexagon_centres(xy, rings, px):
    """(n, 2) frame-px centres (corner means) of the 6-rings: from a :class:`engine.chem.graph.RingList`'s
    own centres, or from a plain list of atom index arrays."""
    if hasattr(rings, "sizes") and hasattr(rings, "centre_A"):
        return np.asarray(rings.centre_A, np.float64)[np.asarray(rings.sizes) == 6] / px
    hexes = [r for r in rings if len(r) == 6]
    if not hexes:
        return np.zeros((0, 2))
    idx = np.concatenate(hexes)
    return np.add.reduceat(xy[idx], np.arange(0, len(idx), 6), axis=0) / 6.0


def _grown(cells: np.ndarray, grow_A: float) -> np.ndarray:
    k = int(round(grow_A / CELL_A))
    return ndimage.binary_dilation(cells, iterations=k) if k > 0 and cells.any() else cells


def _lit_by_si(region, loc, si, a_bg, sm, f, c_level, px, centre, fill, cells) -> np.ndarray:
    """The parts of ``region`` (its connected pieces) lit by bright Si, not filled by contamination: where
    the window holds at least :data:`LIT_MIN_SI_PER_NM2` Si as bright as a Si (:data:`HOLLOW_BRIGHT`), the
    pieces more than :data:`LIT_MAX_SHARE` of whose filled hollows (hexagon centres ``centre`` with
    ``fill`` > :data:`MIN_FILL`) have such a Si corner (within :data:`HOLLOW_HEAVY_A`). ``loc`` / ``si`` /
    ``a_bg``: the window's atoms, which are Si, their ``bg``."""
    out = np.zeros_like(region)
    filled = fill > MIN_FILL
    if not si.any() or not filled.any():
        return out
    (s_sm,) = sample_bilinear((sm,), (loc[si, 1] + 0.5) / f - 0.5, (loc[si, 0] + 0.5) / f - 0.5)
    bright = loc[si][s_sm - a_bg[si] >= HOLLOW_BRIGHT * c_level]
    if not len(bright):
        return out
    if len(bright) < LIT_MIN_SI_PER_NM2 * region.size * CELL_A ** 2 / 100.0:
        return out                      # (Si too sparse to light the hollows: a blob read as Si is no Si)
    lit = cKDTree(bright).query(centre[filled], distance_upper_bound=HOLLOW_HEAVY_A / px)[0] < np.inf
    lab, n_lab = ndimage.label(region)
    piece = lab.ravel()[cells(centre[filled])]
    n_lit = np.bincount(piece, lit, n_lab + 1)
    n_all = np.bincount(piece, None, n_lab + 1)
    drop = (n_all > 0) & (n_lit > LIT_MAX_SHARE * n_all)
    drop[0] = False
    return drop[lab]


def _region(xy, cand, sm, bg, f, rings, c_level, level, px, shape, other=None, thin=False, si=None):
    H, W = (int(v) for v in shape)
    if not (px > 0 and H > 0 and W > 0):
        return None
    g = CELL_A / px                                              # frame px per cell
    # the window: the candidates' bounding box and LOCAL_A around it, in whole cells
    c0, r0 = (np.maximum(np.floor((xy[cand].min(0) - LOCAL_A / px) / g), 0)).astype(np.int64)
    c1, r1 = (np.minimum(np.ceil((xy[cand].max(0) + LOCAL_A / px) / g), [np.ceil(W / g), np.ceil(H / g)])).astype(np.int64)
    gh, gw = int(r1 - r0), int(c1 - c0)
    if gh <= 0 or gw <= 0:
        return None
    lo = np.array([c0 * g, r0 * g])
    inwin = ((xy[:, 0] >= lo[0]) & (xy[:, 0] < c1 * g) & (xy[:, 1] >= lo[1]) & (xy[:, 1] < r1 * g))
    loc = xy[inwin]
    (a_bg,) = sample_bilinear((bg,), (loc[:, 1] + 0.5) / f - 0.5, (loc[:, 0] + 0.5) / f - 0.5)
    floor = (a_bg - level) / c_level
    n_cells = gh * gw

    def cells(p):
        q = (p - lo) / g
        return (np.clip(q[:, 1].astype(np.int64), 0, gh - 1) * gw + np.clip(q[:, 0].astype(np.int64), 0, gw - 1))

    s = SIGMA_A / CELL_A
    fl, den = _grid_mean(cells(loc), floor, n_cells, (gh, gw), s)
    dense = den >= MIN_ATOM_DENSITY * CELL_A ** 2
    high = (fl > MIN_FLOOR) & dense
    low = (fl > THIN_MIN_FLOOR) & dense if thin else None
    if not (high.any() or (thin and low.any())):
        return None
    hexc = _hexagon_centres(xy, rings, px)
    win = ((hexc[:, 0] >= lo[0]) & (hexc[:, 0] < c1 * g) & (hexc[:, 1] >= lo[1]) & (hexc[:, 1] < r1 * g))
    if not win.any():
        return None
    # the hollows' fill against the field's (hexagons evenly strided over the whole field)
    field = hexc[:: max(1, len(hexc) // REF_ATOMS)]
    centre = np.concatenate([field, hexc[win]])
    h_sm, h_bg = sample_bilinear((sm, bg), (centre[:, 1] + 0.5) / f - 0.5, (centre[:, 0] + 0.5) / f - 0.5)
    fill = (h_sm - h_bg) / c_level
    k = len(field)
    fill = fill[k:] - (median(fill[:k]) if k >= MIN_C_ATOMS else median(fill))
    centre = centre[k:]
    # a 6-ring with an atom at its centre (drawn around an adatom or a heavy atom) has no hollow
    empty = cKDTree(loc).query(centre, distance_upper_bound=MIN_HOLLOW_A / px)[0] == np.inf
    if not empty.any():
        return None
    hl, _ = _grid_mean(cells(centre[empty]), fill[empty], n_cells, (gh, gw), s)
    region = high & (hl > MIN_FILL)
    extra = None
    if thin:
        seed = low & (hl > THIN_MIN_FILL)
        if seed.any():
            lab, n_lab = ndimage.label(low & (hl > THIN_EXTEND_FILL))
            keep = np.zeros(n_lab + 1, bool)
            keep[np.unique(lab[seed])] = True
            keep[0] = False
            extra = keep[lab] & ~region
    if si is not None and (region.any() or (extra is not None and extra.any())):
        lit = _lit_by_si(region if extra is None else region | extra, loc, np.asarray(si, bool)[inwin], a_bg,
                         sm, f, c_level, px, centre[empty], fill[empty], cells)
        region &= ~lit
        if extra is not None:
            extra &= ~lit
    if HEAVY_CLEAR_A > 0 and other is not None and len(other):
        # an adatom lifts the floor and the hollows around it through the tail, and is reported as itself
        # (as engine.chem.defects.overlayer_regions does)
        k = int(round(HEAVY_CLEAR_A / CELL_A))
        for ci, ri in ((other - lo) / g).astype(np.int64):
            region[max(ri - k, 0):max(ri + k + 1, 0), max(ci - k, 0):max(ci + k + 1, 0)] = False
            if extra is not None:
                extra[max(ri - k, 0):max(ri + k + 1, 0), max(ci - k, 0):max(ci + k + 1, 0)] = False
    if extra is not None and extra.any():
        # the thin part: pieces of MIN_AREA_A2 (with the thick cells they touch), grown by THIN_GROW_A only
        both = large_regions(region | extra, CELL_A, MIN_AREA_A2, 0.0)
        if both is None:
            return None
        thick = large_regions(region, CELL_A, MIN_AREA_A2, 0.0)
        thin_cells = both if thick is None else both & ~thick
        region = _grown(thin_cells, THIN_GROW_A)
        if thick is not None:
            region |= _grown(thick, GROW_A)
    else:
        region = large_regions(region, CELL_A, MIN_AREA_A2, GROW_A)
    if region is None:
        return None
    out = np.zeros((H, W), bool)
    rows = np.arange(int(r0 * g), min(H, int(np.ceil(r1 * g))))
    cols = np.arange(int(c0 * g), min(W, int(np.ceil(c1 * g))))
    ri = np.clip((rows / g).astype(np.int64) - r0, 0, gh - 1)
    ci = np.clip((cols / g).astype(np.int64) - c0, 0, gw - 1)
    out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = region[ri][:, ci]
    return out


#: Per atom (:func:`overlayer_si`): a reported Si is the lattice C under (or beside) a contamination atom
#: when the frame's C-atom SNR is at least this (below it the column shapes are in the noise: on the
#: development frames the true Si that looked like contamination were all at SNR < 12) ...
SI_MIN_SNR = 12.0
#: ... it has a bond shorter than this (A): a Si-C bond is 1.6-1.8 A projected, C-C 1.42; the false Si sit
#: between a lattice C and the contamination atom over it (median 0.4 A from the lattice site) ...
SI_MAX_BOND_A = 1.5
#: ... and its column is dimmer than a Si can be (net contrast ``sm - bg`` below this many median C atoms;
#: Si is (14/6)^gamma = 3.3-5.4 x C for gamma 1.4-2.0) ...
SI_MAX_NET = 3.0
#: ... or dimmer than this fraction of the frame's own Si (the median net contrast of its reported Si, where
#: it has at least SI_REL_MIN_SI; 0: off). A lattice C with a contamination atom stacked on it reads 3.0-3.5
#: C contrasts where the frame's Si read 4.2 (0.60-0.85 of them; its true Si 0.93-1.3: held-out-then-seen
#: movies 94 and 95, 2026-12-04); the imaging's gamma sets the absolute level, not the ratio, and many
#: false Si pull the median down (fewer read as C, never more). With the pipeline leaving such Si out
#: (pipeline.OVERLAYER_SI_DISCS), on fresh held-out movies 105-110: transformations 7 -> 4 static, 5 -> 3
#: drifting, false Si near contamination 67 -> 52 and 86 -> 73, every true Si kept (docs/material.md)
SI_REL_NET = 0.87
SI_REL_MIN_SI = 5
#: ... or, whatever its bonds, far dimmer than the frame's own Si: below SI_REL_NET x their median net contrast
#: *and* more than SI_Z_NET robust spreads below it (the spread: 1.4826 x the median absolute deviation of the
#: Si's ratios to their median, at least SI_Z_MIN_SPREAD), not within SI_Z_EDGE_A of the part of the frame left
#: out (vacuum, the regions, the frame's edge: the floor there is measured against what is not lattice).
#: Si are one element in one kind of column; a column that far below them is a lighter one, a lattice C with a
#: contamination atom stacked on it (bonds of 1.53-1.79 A: the short-bond condition lets it through). Chosen
#: on development data (2026-12-04, third session; seen movies 87-110, frames of seeds 81-86 and 8123-8128,
#: clean dopant frames 5201, 5203, 5204): with the cluster condition below, 30 of the 103 false Si left at
#: SNR >= 12, none of 12,286 true Si (without the edge condition: one true Si at a hole's edge). Held out
#: (fresh seeds, run once each way, rule written beforehand): contaminated movies 117-122 false Si near
#: contamination 34 -> 23 static, 44 -> 35 drifting, transformations 2 / 4 unchanged, true Si identical; clean
#: frames identical; contaminated frames 8138 false Si 13 -> 12, one true Si lost (2.4 A from the frame's
#: edge) of 207; with SI_Z_EDGE_A 3 A, movies 123-128 167 -> 163, clean frames identical (docs/material.md). 0: off.
SI_Z_NET = 5.0
SI_Z_MIN_SPREAD = 0.015
#: (3 A: the floor ``bg`` is the minimum within 3 A, found over a truncated window nearer the edge; at 1 A, a
#: true Si 2.4 A from the frame's edge read 0.80 of its frame's Si on held-out frame 8138/6; on the development
#: features 3 A gives up 8 of the 30 false Si taken, no true Si either way)
SI_Z_EDGE_A = 3.0
#: ... and with no Si that reads as one (>= SI_REL_NET of the median) within SI_Z_CLUSTER_A: the Si of a cluster
#: are not all alike (held-out clean frame, seed 8136 frame 7, SNR 52: a Si 1.9 A from a normal one read 0.79)
SI_Z_CLUSTER_A = 2.5
#: ... or wider than the probe: its contrast falls by less than this fraction at SI_RING_A from the centre
#: (a Si column: 0.65-0.98, a contamination blob over the lattice 0.2-0.8)
SI_MIN_FALL = 0.6
SI_RING_A = 1.1
#: ... read on the ring's points at least this far (A) from every other reported Si: a bright neighbour's light
#: is not the candidate's width (a Si of a dimer or a cluster has its neighbour 1.7 A away, and the 1.1 A ring
#: passes 0.6 A from that column). With fewer than SI_RING_MIN_POINTS points left, no width verdict. Chosen on
#: development candidates (2026-12-04, fourth session; clean dopant frames 5201/5203/5204/5209, clean and
#: wide-tail frames, contaminated frames 81/84/8123/8126, movies 35-45 and 93-109): the Si the width test alone
#: took, true 23 -> 0 (all of a dense dopant frame's clusters), false 10 -> 10; 1.0-1.5 A the same. 0: every point
SI_RING_CLEAR_A = 1.2
SI_RING_MIN_POINTS = 3
#: ... or, whatever its bonds, at least as wide as the frame's C columns: the RMS radius of its column (the frame
#: block-averaged to the maps' grid, less the floor ``bg``, within SI_WIDE_DISC_A) over the median C column's above
#: SI_WIDE. A single heavier atom under the same probe stands out of the same neighbours' tails: the frame's true Si
#: read 0.81-1.00 of its C (0.1-99.9 %; median 0.90); a lattice C with a contamination atom stacked beside its
#: centre reads as wide as a C or wider (median 1.01). Not (until 2026-12-05) for a column brighter than
#: SI_WIDE_MAX_REL x the frame's Si (a Si with a contamination atom on it is still a Si); nor one with another Si
#: within SI_WIDE_CLUSTER_A (a cluster's neighbour widens it), nor within SI_Z_EDGE_A of the part left out. Chosen on
#: development data (2026-12-04, fourth session; seen movies 87-140, contaminated frames 81/84/8123/8126/8135/8138/
#: 8141, clean dopant frames 5201/5203/5204/5207/5209, clean and wide-tail frames): at SNR >= 12, 141 of the 463
#: false Si left by the rules before it, 1 of 19,179 true Si (a lone Si with a contamination atom 0.5 A from it). 0: off
SI_WIDE = 1.0
SI_WIDE_DISC_A = 0.9
#: The brightness cap, since 2026-12-05 none: a column as wide as the frame's C and brighter than its Si is a Si or a C
#: with contamination piled on it, not clean graphene either way, so it is left out like the others (criterion 2: the
#: field is analysed only where it is graphene). Development (movies 93-109 and 141-146, frames 8150, dopants 5209):
#: false Si near contamination 27 -> 17 static, 30 -> 19 drifting, transformations 12 -> 12 / 10 -> 9, true Si on
#: clean graphene identical; held out (8156 / 153-158 / 5214, rule written first): 8 -> 7 / 17 -> 15, everything else
#: identical; the real frames identical (docs/material.md). 1.1: the cap as before.
SI_WIDE_MAX_REL = float("inf")
SI_WIDE_CLUSTER_A = 2.0
#: ... nor (since 2026-12-05's second session) within SI_WIDE_EDGE_A of the frame's edge: 0, any Si whose
#: SI_WIDE_DISC_A disc lies in the frame (the width is read on that disc, less a floor ``bg`` that the edge
#: truncates the window of). Chosen on development data (the reported Si of seen movies 93-158 and frames
#: 8150/8153/8156, dopants 5209/5213/5214, SNR >= 12): the true Si 1-3 A from the edge on clean graphene read
#: 0.81-0.99 of the frame's C width (about 1,400 Si), the false Si there 0.97-1.05 (25 of
#: the 78 false Si left on the movies lay within 3 A of the edge). Held out (8158 / 159-164 / 5215, rule written
#: first): false Si near contamination 43 -> 33 static, 32 -> 27 drifting, everything else identical; real frames
#: identical (docs/material.md). 3: as before.
SI_WIDE_EDGE_A = 0.0
#: ... and (since 2026-12-05's fourth session) where the column's disc leaves the map on one side (a half-visible
#: column at the frame's edge, ``Atoms.border``, where no radius can be read): its RMS width along the edge, on the
#: part of the disc in the frame, over the median C column's along the same axis (:func:`_edge_width`), above the
#: same SI_WIDE. A single heavier atom's column is symmetric about its centre along the edge, however much of it the
#: edge cuts. Measured before it was written (seen movies 153-164 static and drifting, SNR >= 12; clean dopant frames
#: 5213-5216; then movies 147-152, 165-170, 183-188): the false Si within 1 A of the edge read 0.91-1.11 of the C
#: width (29 of 53 above 1.0), the true Si there 0.80-0.97 on the movies (377) and 0.80-0.98 on the dopant frames
#: (101); no new threshold. Development movies 159-164: false Si 23 -> 16 static, 17 -> 12 drifting; 153-158: 7 -> 7,
#: 8 -> 4; held out (8168 / 189-194 / 5219, rule written first): every line identical; the real frames and the
#: alarm set identical (docs/material.md). False: off
SI_WIDE_ALONG_EDGE = True
#: ... or, whatever its column, a bond shorter than this (A): shorter than graphene's own C-C bond (1.42 A), where a
#: Si-C bond is 1.6-1.9 A projected (the real frames' Si: 1.64-1.86, lab.chem.evaluate realdata). A C with a
#: contamination atom stacked beside its centre is read there, pulled towards a neighbour. Development (2026-12-05,
#: third session; a feature dump over the seen movies 159-170, contaminated frames 8158/8161, wide-tail frames
#: 8155-8163, dopant frames 5213-5216, SNR >= 12): 18 false Si (movies 162 and 166, as bright as the frame's Si or
#: brighter, which no column test takes), no true Si; the nearest true Si 1.41 A (two in clutter). 0: off
SI_MIN_BOND_A = 1.35
#: A reported Si bonded like a C whatever its column: at least SI_C_BONDS bonds averaging below
#: SI_C_MEAN_BOND_A (true Si on the development frames: >= 1.55 A at SNR >= 8), on a frame of SNR >= SI_C_MIN_SNR
SI_C_MEAN_BOND_A = 1.48
SI_C_BONDS = 2
SI_C_MIN_SNR = 8.0
_RING_ANGLES = np.linspace(0.0, 2.0 * np.pi, 12, endpoint=False)


def _far_dimmer(xy, si, net, maps, analysed) -> np.ndarray:
    """Indices of the Si far dimmer than the frame's own (:data:`SI_Z_NET`), away from the part left out; empty
    when the rule is off. ``si``: the frame's Si (at least :data:`SI_REL_MIN_SI`), ``net``: their net contrasts
    (:func:`overlayer_si` samples them once for both its ratio rules); reads, for the few candidates, the
    mask around them."""
    mid = median(net)
    if not (SI_Z_NET > 0 and mid > 0):
        return si[:0]
    pxd, f = maps[2], maps[3]
    p = xy[si]
    rel = net / mid
    spread = max(1.4826 * median(np.abs(rel - 1.0)), SI_Z_MIN_SPREAD)
    cand = np.flatnonzero((rel < SI_REL_NET) & (rel < 1.0 - SI_Z_NET * spread))
    if not len(cand):
        return si[:0]
    # not in a cluster beside a Si that reads as one
    px = pxd / f                                                 # (A per frame px)
    normal = p[rel >= SI_REL_NET]
    if len(normal):
        d = cKDTree(normal).query(p[cand], distance_upper_bound=SI_Z_CLUSTER_A / px)[0]
        cand = cand[~np.isfinite(d)]
        if not len(cand):
            return si[:0]
    return si[cand[_away_from_left_out(p[cand], px, maps, analysed)]]


def _away_from_left_out(p, px, maps, analysed, frame_edge_A=None) -> np.ndarray:
    """bool per point ``p`` (frame px): no pixel within :data:`SI_Z_EDGE_A` of it is left out (``analysed`` False;
    None: the whole frame analysed), and none within ``frame_edge_A`` (None: :data:`SI_Z_EDGE_A` too) is outside
    the frame; ``px``: A per frame px."""
    sm, f = maps[0], maps[3]
    shape = np.shape(analysed) if analysed is not None else (sm.shape[0] * f, sm.shape[1] * f)
    row, col, inside = _pixels_around(p, SI_Z_EDGE_A / px, shape)
    if frame_edge_A is None or frame_edge_A >= SI_Z_EDGE_A:
        ok = inside.all(1)
    else:
        _, _, near = _pixels_around(p, frame_edge_A / px, shape)
        ok = near.all(1)
    if analysed is not None and ok.any():
        m = np.asarray(analysed, bool)
        r, c = np.clip(row[ok], 0, shape[0] - 1), np.clip(col[ok], 0, shape[1] - 1)
        ok[ok] = np.where(inside[ok], m[r, c], True).all(1)           # (pixels outside the frame: not left out)
    return ok


@functools.lru_cache(maxsize=32)
def _grid_disc(r, step=1):
    """(dy, dx): the integer offsets within ``r`` px of the origin, on a grid of ``step`` px (read-only: kept for
    the next call with the same radius, a frame's pixel size giving the same few)."""
    k = int(np.ceil(r / step)) * step
    dy, dx = np.mgrid[-k:k + 1:step, -k:k + 1:step]
    disc = (dy ** 2 + dx ** 2) <= r * r
    dy, dx = dy[disc], dx[disc]
    dy.flags.writeable = dx.flags.writeable = False
    return dy, dx


def _pixels_around(p, r, shape, step=1):
    """(row, col, inside), each (len(p), n): the frame pixels within ``r`` px of each point ``p`` ((x, y) frame px,
    rounded), on a grid of ``step`` px, and whether each lies in a frame of ``shape``."""
    dy, dx = _grid_disc(r, step)
    row = np.rint(p[:, 1]).astype(np.int64)[:, None] + dy[None]
    col = np.rint(p[:, 0]).astype(np.int64)[:, None] + dx[None]
    return row, col, (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])


def _column_variances(a, floor, rows, cols, r, partial=False):
    """(var_rows, var_cols): the variance (px² of ``a``) along each axis of the column at each map position
    (``rows``, ``cols``, float), about its own centroid: ``a - floor`` (per point, clipped at 0) over the disc of
    radius ``r`` px around the nearest pixel. NaN where the disc leaves the map (``partial``: read on the part of it
    inside the map instead, NaN only where the nearest pixel is outside) or holds nothing above the floor."""
    k = int(np.ceil(r))
    dy, dx = _grid_disc(r)
    r0, c0 = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    lo = 0 if partial else k
    sel = np.flatnonzero((r0 >= lo) & (r0 < a.shape[0] - lo) & (c0 >= lo) & (c0 < a.shape[1] - lo))
    out = np.full((2, len(r0)), np.nan)
    if not len(sel):
        return out[0], out[1]
    a = np.ascontiguousarray(a)
    if partial:
        row, col, inside = _pixels_around(np.stack([cols[sel], rows[sel]], 1), r, a.shape)
        v = a[np.clip(row, 0, a.shape[0] - 1), np.clip(col, 0, a.shape[1] - 1)]
        w = np.where(inside, np.maximum(v - floor[sel, None], 0.0), 0.0)
    else:
        flat = (r0[sel] * a.shape[1] + c0[sel])[:, None] + (dy * a.shape[1] + dx)[None]
        w = np.maximum(a.ravel().take(flat) - floor[sel, None], 0.0)
    # the weights' sum and first and second moments at once: (n, disc) @ (disc, 5)
    m = w @ np.stack([np.ones(len(dy)), dy, dx, dy * dy, dx * dx], 1).astype(w.dtype)
    ok = m[:, 0] > 0
    m = m[ok] / m[ok, :1]
    out[0, sel[ok]] = np.maximum(m[:, 3] - m[:, 1] ** 2, 0.0)
    out[1, sel[ok]] = np.maximum(m[:, 4] - m[:, 2] ** 2, 0.0)
    return out[0], out[1]


def _rms_radius(a, floor, rows, cols, r):
    """RMS radius (px of ``a``) of the column at each map position (``rows``, ``cols``, float): ``a - floor`` (per
    point, clipped at 0) over the disc of radius ``r`` px around the nearest pixel, about its own centroid; NaN
    where the disc leaves the map or holds nothing above the floor."""
    var_r, var_c = _column_variances(a, floor, rows, cols, r)
    return np.sqrt(var_r + var_c)


def _cut_axis(a_shape, rows, cols, r) -> np.ndarray:
    """Per map position, the axis (0: rows, 1: cols) along which the disc of ``r`` px around the nearest pixel
    stays in the map where it leaves the map across the other (the edge's direction); -1 where it stays in the
    map, leaves it on both axes (a corner), or the pixel itself is outside."""
    k = int(np.ceil(r))
    r0, c0 = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    cut_r, cut_c = (r0 < k) | (r0 >= a_shape[0] - k), (c0 < k) | (c0 >= a_shape[1] - k)
    out = (r0 >= 0) & (r0 < a_shape[0]) & (c0 >= 0) & (c0 < a_shape[1])
    return np.where(out & cut_r & ~cut_c, 1, np.where(out & cut_c & ~cut_r, 0, -1))


def _edge_width(a, floor, rows, cols, r):
    """(width, axis): for a column whose disc of ``r`` px leaves the map on one side (:func:`_cut_axis`), its RMS
    width (px of ``a``) along the edge, ``axis`` (0: rows, 1: cols), read on the part of the disc inside the map
    about its own centroid on that axis; NaN (axis -1) where the disc stays in the map, leaves it at a corner, or
    holds nothing above the floor."""
    axis = _cut_axis(np.shape(a), rows, cols, r)
    out = np.full(len(axis), np.nan)
    cut = np.flatnonzero(axis >= 0)
    if len(cut):
        var_r, var_c = _column_variances(a, floor[cut], rows[cut], cols[cut], r, partial=True)
        out[cut] = np.sqrt(np.where(axis[cut] == 0, var_r, var_c))
    return out, np.where(np.isfinite(out), axis, -1)


def _width_over_c(xy, c, idx, maps) -> np.ndarray:
    """The RMS radius of each column ``idx`` (indices into ``xy``) over the median of ~:data:`REF_ATOMS` evenly
    strided C columns ``c`` of the frame (:func:`_rms_radius` on the maps' block-averaged frame ``maps.block``, less
    the floor ``bg``, within :data:`SI_WIDE_DISC_A`); where the disc leaves the map on one side, with
    :data:`SI_WIDE_ALONG_EDGE`, its width along the edge over the C columns' along the same axis
    (:func:`_edge_width`); NaN where unknown (all NaN when no C column is)."""
    bg, pxd, f = maps[1], maps[2], maps[3]
    ref = c[::max(1, len(c) // REF_ATOMS)]
    p = xy[np.concatenate([ref, idx])]
    rows, cols = (p[:, 1] + 0.5) / f - 0.5, (p[:, 0] + 0.5) / f - 0.5
    (floor,) = sample_bilinear((bg,), rows, cols)
    a, r, k = np.asarray(maps.block), SI_WIDE_DISC_A / pxd, len(ref)
    var_r, var_c = _column_variances(a, floor, rows, cols, r)
    size = np.sqrt(var_r + var_c)
    c_size = np.nanmedian(size[:k]) if np.isfinite(size[:k]).any() else np.nan
    if not c_size > 0:
        return np.full(len(idx), np.nan)
    out = size[k:] / c_size
    if SI_WIDE_ALONG_EDGE and np.isnan(out).any():
        unknown = np.flatnonzero(np.isnan(out))
        along, axis = _edge_width(a, floor[k:][unknown], rows[k:][unknown], cols[k:][unknown], r)
        known = np.isfinite(var_r[:k])                         # (the C columns' widths along each axis)
        c_along = np.array([median(np.sqrt(var_r[:k][known])), median(np.sqrt(var_c[:k][known]))])
        hit = axis >= 0
        out[unknown[hit]] = along[hit] / c_along[axis[hit]]
    return out


def _wider_than_c(xy, si, rel, c, maps, analysed, si_tree) -> np.ndarray:
    """Indices of the Si at least :data:`SI_WIDE` x as wide as the frame's C columns (see there); ``rel``: each Si's
    net contrast over the frame's median Si's, ``c``: the frame's C atoms, ``si_tree()``: the KD-tree of ``xy[si]``
    (built once, when first asked for); empty when the rule is off or the maps keep no block-averaged frame."""
    if not SI_WIDE > 0 or getattr(maps, "block", None) is None or len(c) < MIN_C_ATOMS:
        return si[:0]
    px = maps[2] / maps[3]                                       # (A per frame px)
    cand = np.flatnonzero(rel < SI_WIDE_MAX_REL)
    if not len(cand):
        return si[:0]
    with np.errstate(invalid="ignore"):
        cand = cand[_width_over_c(xy, c, si[cand], maps) > SI_WIDE]
    if len(cand) and len(si) > 1:                # not with another Si within SI_WIDE_CLUSTER_A
        d = si_tree().query(xy[si[cand]], k=2, distance_upper_bound=SI_WIDE_CLUSTER_A / px)[0][:, 1]
        cand = cand[~np.isfinite(d)]
    if not len(cand):
        return si[:0]
    return si[cand[_away_from_left_out(xy[si[cand]], px, maps, analysed, SI_WIDE_EDGE_A)]]


def overlayer_si(atoms, maps, bonds, bond_length_A, snr: float, analysed=None) -> np.ndarray:
    """Indices of the reported Si (species SI) that are contamination over the lattice, not Si: on a
    frame of C-atom SNR >= :data:`SI_MIN_SNR`, a Si with a bond shorter than :data:`SI_MAX_BOND_A` whose
    column is dimmer than a Si (net contrast < :data:`SI_MAX_NET` x the median C atom's, or, when
    :data:`SI_REL_NET` is set, < that fraction of the frame's median Si) or wider than the
    probe (contrast falling by less than :data:`SI_MIN_FALL` at :data:`SI_RING_A`), or, whatever its column, one
    shorter than :data:`SI_MIN_BOND_A` (shorter than graphene's C-C bond); and, whatever its bonds, a
    Si far dimmer than the frame's own (:data:`SI_Z_NET`) or as wide as the frame's C columns (:data:`SI_WIDE`), away
    from the part left out (``analysed``: the frame-shaped mask of the part analysed, True inside; None: the whole
    frame). The pipeline leaves
    them out (``engine.pipeline.OVERLAYER_SI_DISCS``) or reads them as C (the lattice C under the
    contamination atom: the graph keeps its site).

    ``atoms``: :class:`engine.types.Atoms`; ``maps``: the frame's :func:`engine.chem.maps.contrast_maps`;
    ``bonds`` / ``bond_length_A``: the graph's (:class:`engine.types.Chemistry`). Plain numpy, no loop over
    atoms; an empty array on the fast path (SNR too low, no Si, no short bond)."""
    sp = np.asarray(atoms.species)
    none = np.zeros(0, np.int64)
    if not (snr >= min(SI_MIN_SNR, SI_C_MIN_SNR)) or not (sp == SI).any():
        return none
    xy = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2)
    # the frame's own Si, sampled once for the ratio rules (SI_REL_NET with a short bond; SI_Z_NET and SI_WIDE's
    # brightness cap without)
    si = np.flatnonzero(sp == SI)
    # the KD-tree of the Si, for the two rules that ask which Si lie near a candidate: built once, and only if asked
    si_tree = functools.cache(lambda: cKDTree(xy[si]))
    si_net = None
    as_wide_as_c = none
    if snr >= SI_MIN_SNR:
        sm, bg, pxd, f = maps[:4]
        s_sm, s_bg = sample_bilinear((sm, bg), (xy[si, 1] + 0.5) / f - 0.5, (xy[si, 0] + 0.5) / f - 0.5)
        net_si = s_sm - s_bg
        mid = median(net_si)
        if mid > 0:
            as_wide_as_c = _wider_than_c(xy, si, net_si / mid, np.flatnonzero(sp == 0), maps, analysed, si_tree)
        if SI_REL_NET > 0 and len(si) >= SI_REL_MIN_SI:
            si_net = net_si
    by_column = np.union1d(_far_dimmer(xy, si, si_net, maps, analysed) if si_net is not None else none, as_wide_as_c)
    b = np.asarray(bonds, np.int64).reshape(-1, 2)
    length = np.asarray(bond_length_A, np.float64).reshape(-1)
    si_bond = (sp[b[:, 0]] == SI) | (sp[b[:, 1]] == SI)
    if not si_bond.any():
        return by_column
    b, length = b[si_bond], length[si_bond]
    n = len(sp)
    # bonded like a C: the mean of the Si's bonds
    ends, twice = b.ravel(), np.repeat(length, 2)
    cnt = np.bincount(ends, None, n)
    mean = np.bincount(ends, twice, n) / np.maximum(cnt, 1)
    like_c = np.flatnonzero((sp == SI) & (cnt >= SI_C_BONDS) & (mean < SI_C_MEAN_BOND_A)) if snr >= SI_C_MIN_SNR \
        else none
    judged = np.union1d(like_c, by_column)
    if not snr >= SI_MIN_SNR:
        return judged
    short = b[length < SI_MAX_BOND_A].ravel()
    cand = np.unique(short[sp[short] == SI])
    if SI_MIN_BOND_A > 0 and len(cand):                 # a bond no Si can have: whatever its column
        too_short = b[length < SI_MIN_BOND_A].ravel()
        judged = np.union1d(judged, too_short[sp[too_short] == SI])
    c = np.flatnonzero(sp == 0)
    if not len(cand) or len(c) < MIN_C_ATOMS:
        return judged
    sm, bg, pxd, f = maps[:4]
    p = xy[np.concatenate([c, cand])]
    rows, cols = (p[:, 1] + 0.5) / f - 0.5, (p[:, 0] + 0.5) / f - 0.5
    a_sm, a_bg = sample_bilinear((sm, bg), rows, cols)
    net = a_sm - a_bg
    k = len(c)
    c_level = median(net[:k])
    if not c_level > 0:
        return judged
    dim = SI_MAX_NET * c_level
    if si_net is not None:
        dim = max(dim, SI_REL_NET * median(si_net))
    net, a_sm, rows, cols = net[k:], a_sm[k:], rows[k:], cols[k:]
    r = SI_RING_A / pxd
    (ring,) = sample_bilinear((sm,), (rows[:, None] + r * np.sin(_RING_ANGLES)[None]).ravel(),
                              (cols[:, None] + r * np.cos(_RING_ANGLES)[None]).ravel())
    ring = ring.reshape(len(cand), -1)
    clear = _clear_of_other_si(xy, si, cand, pxd / f, si_tree)
    n_clear = clear.sum(1)
    fall = (a_sm - (ring * clear).sum(1) / np.maximum(n_clear, 1)) / np.maximum(net, 1e-12)
    wider_than_probe = (n_clear >= SI_RING_MIN_POINTS) & (fall < SI_MIN_FALL)
    return np.union1d(judged, cand[(net < dim) | wider_than_probe])


#: Beside contamination found (:func:`si_near_contamination`): a reported Si within SI_NEAR_A of the part of the
#: field the contamination rules left out, or of a Si they judged (its disc), is judged contamination on weaker
#: evidence than the rules above ask of a Si anywhere: a column dimmer than SI_NEAR_REL x the frame's median Si
#: (on a frame with at least SI_REL_MIN_SI Si), or at least SI_WIDE x as wide as the frame's C columns. Where the
#: frame holds contamination, the columns beside it are its likeliest place. Chosen on development data
#: (2026-12-05; movies 35-45, 93-109 and 141-146 static and drifting, contaminated frames 81/84/8123/8126/8138/
#: 8141/8150, clean dopant frames 5207/5209/5212): of the Si within 4 A, 89 of 91 false Si and none of 9 true Si
#: more than 3 A from any contamination atom (those read 0.99-1.13 of the frame's Si and 0.93-1.00 of its C
#: width); at 3 A it took fewer false Si (47 / 41 left of 58 on the development movies, against 27 / 30). 0: off
SI_NEAR_A = 4.0
SI_NEAR_REL = 0.95
_NEAR_STEP_A = 0.5            # (the grid on which the part left out is looked for: finer than the smallest disc)


def si_near_contamination(atoms, maps, judged, left_out, snr: float, disc_A: float) -> np.ndarray:
    """Indices of the reported Si (species SI, not in ``judged``) beside the contamination that the frame's rules
    found: within :data:`SI_NEAR_A` of the part ``left_out`` (frame-shaped bool, True where the contamination
    rules left the field out; None: nothing) or of the disc of ``disc_A`` around a Si in ``judged`` (indices
    into ``atoms``: :func:`overlayer_si`'s), whose column reads dimmer than :data:`SI_NEAR_REL` x the frame's
    median Si or as wide as its C columns (:data:`SI_WIDE`); on a frame of SNR >= :data:`SI_MIN_SNR`. The part
    left out for not being graphene (vacuum, another material) is not contamination: pass only what the
    contamination rules left out. One pass: the Si judged here do not open the search around themselves."""
    sp = np.asarray(atoms.species)
    none = np.zeros(0, np.int64)
    if not (SI_NEAR_A > 0 and snr >= SI_MIN_SNR):
        return none
    judged = np.asarray(judged, np.int64)
    has_left_out = left_out is not None and np.asarray(left_out, bool).any()
    if not (len(judged) or has_left_out):
        return none
    si = np.flatnonzero(sp == SI)
    c = np.flatnonzero(sp == 0)
    rest = np.setdiff1d(si, judged)
    if not len(rest) or len(c) < MIN_C_ATOMS:
        return none
    xy = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2)
    sm, bg, pxd, f = maps[:4]
    px = pxd / f                                                  # (A per frame px)
    near = _near_mask(xy[rest], px, left_out, SI_NEAR_A) if has_left_out else np.zeros(len(rest), bool)
    if len(judged):
        d = cKDTree(xy[judged]).query(xy[rest], distance_upper_bound=(SI_NEAR_A + disc_A) / px)[0]
        near |= np.isfinite(d)
    cand = rest[near]
    if not len(cand):
        return none
    dim = np.zeros(len(cand), bool)
    if len(si) >= SI_REL_MIN_SI:
        s_sm, s_bg = sample_bilinear((sm, bg), (xy[si, 1] + 0.5) / f - 0.5, (xy[si, 0] + 0.5) / f - 0.5)
        net = s_sm - s_bg
        mid = median(net)
        if mid > 0:
            dim = net[np.searchsorted(si, cand)] < SI_NEAR_REL * mid
    wide = np.zeros(len(cand), bool)
    if SI_WIDE > 0 and getattr(maps, "block", None) is not None:
        with np.errstate(invalid="ignore"):
            wide = _width_over_c(xy, c, cand, maps) > SI_WIDE
    return cand[dim | wide]


def _near_mask(p, px, mask, radius_A) -> np.ndarray:
    """bool per point ``p`` (frame px): ``mask`` (frame-shaped bool) is True somewhere within ``radius_A`` of it,
    looked for on a grid of :data:`_NEAR_STEP_A` (points outside the frame are not read); ``px``: A per frame px."""
    m = np.asarray(mask, bool)
    row, col, inside = _pixels_around(p, radius_A / px, m.shape, max(1, int(_NEAR_STEP_A / px)))
    hit = np.zeros(row.shape, bool)
    hit[inside] = m[row[inside], col[inside]]
    return hit.any(1)


def _clear_of_other_si(xy, si, cand, px, si_tree) -> np.ndarray:
    """(len(cand), len(_RING_ANGLES)) bool: the width test's ring points of each candidate (``cand``, indices
    into ``xy``, all in ``si``) at least :data:`SI_RING_CLEAR_A` from every other Si; ``px``: A per frame px;
    ``si_tree()``: the KD-tree of ``xy[si]``."""
    n = len(_RING_ANGLES)
    if not SI_RING_CLEAR_A > 0 or len(si) < 2:
        return np.ones((len(cand), n), bool)
    step = SI_RING_A / px * np.stack([np.cos(_RING_ANGLES), np.sin(_RING_ANGLES)], -1)
    pts = (xy[cand][:, None, :] + step[None]).reshape(-1, 2)
    d, i = si_tree().query(pts, k=2)
    own = np.repeat(np.searchsorted(si, cand), n)
    other = np.where(i[:, 0] == own, d[:, 1], d[:, 0])
    return (other * px >= SI_RING_CLEAR_A).reshape(len(cand), n)
