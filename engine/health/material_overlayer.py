"""Contamination lying on graphene: the part of the field where the hollows of the lattice are filled
(issue 21, criterion 2).

Amorphous hydrocarbon on a graphene sheet does not make the network unsure (the lattice is still under
it, and its atoms are confident), so :func:`engine.health.material_atoms.unsure_region` leaves it in;
the network reads lattice C under a contamination atom as Si. On 15 simulated ``graphene_contamination``
frames (lab.material_eval's kind, seed 81, C-atom SNR >= 2) 111 of 371 reported Si were false, all within
3 A of a contamination atom (docs/material.md).

The cue is the floor of the image: the hexagons' hollows, which are the darkest parts of clean graphene,
are filled by the randomly placed atoms of an overlayer. :func:`engine.chem.maps.contrast_maps`' ``bg``
(the minimum within 3 A: the hollows' level) rises under an overlayer; but it also rises beside a cluster
of real Si when the probe has a wide tail (a tail of 60 % of the intensity and 7 A FWHM lifts the floor
around five Si as much as a thin overlayer does). The tail is smooth, an overlayer is not: it fills
the hollows unevenly, so the hollow centres (of the graph's hexagons) stand above the local minimum, or
the hexagons are gone. A region is where both hold:

* the floor (``bg`` at the atoms, over the median atom's, in units of the median C atom's contrast),
  averaged over :data:`SIGMA_A`, is above :data:`MIN_FLOOR`, and
* the hexagons' hollows there (``sm - bg`` at their centres, same units, less the field's median) are
  above :data:`MIN_FILL` on average, or there are (almost) no hexagons (:data:`MIN_RING_DENSITY`);

in regions of at least :data:`MIN_AREA_A2`, grown by :data:`GROW_A` (the false Si lie up to 3 A beyond
the contamination atoms). The pipeline leaves them out as it does an unsure region.

The fast path (every frame without a high floor under a heavy atom): the floor at the heavy atoms
against the floor and contrast of at most :data:`REF_ATOMS` C atoms (a few tens of microseconds). A
region only matters where it holds a reported Si, so a frame whose heavy atoms all sit on a low floor
gets none. Plain numpy / scipy.ndimage.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from engine.chem.atoms import sample_bilinear
from engine.chem.quantile import median

#: the floor of a heavy atom must exceed this fraction of MIN_FLOOR to judge the frame (the fast path)
GATE = 0.6
#: the floor and contrast references are medians over at most this many C atoms (evenly strided)
REF_ATOMS = 256
#: fewer C atoms than this: not judged
MIN_C_ATOMS = 20
#: grid cell (A) and smoothing (A, Gaussian sigma) of the floor and hollow averages
CELL_A = 1.0
SIGMA_A = 1.5
#: averaged floor above the median atom's (units of the median C atom's contrast)
MIN_FLOOR = 0.5
#: averaged hollow fill above the field's median (same units) ...
MIN_FILL = 0.4
#: ... unless there are fewer hexagon centres than this per A^2 (graphene: 0.19)
MIN_RING_DENSITY = 0.05
#: cells with fewer atoms than this per A^2 (graphene 0.38) are not judged (a hole)
MIN_ATOM_DENSITY = 0.1
#: a region from this area (A^2: about 6 atoms of graphene)
MIN_AREA_A2 = 16.0
#: the region is grown by this much (A)
GROW_A = 3.0


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
    sp = np.asarray(atoms.species)
    heavy = np.flatnonzero(sp != 0)
    c_idx = np.flatnonzero(sp == 0)
    if not len(heavy) or len(c_idx) < MIN_C_ATOMS:
        return None
    sm, bg, _pxd, f = maps[:4]
    xy = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2)
    sub = c_idx[:: max(1, len(c_idx) // REF_ATOMS)]
    pts = np.concatenate([sub, heavy])
    s_sm, s_bg = sample_bilinear((sm, bg), (xy[pts, 1] + 0.5) / f - 0.5, (xy[pts, 0] + 0.5) / f - 0.5)
    k = len(sub)
    c_level = median(s_sm[:k] - s_bg[:k])
    if not c_level > 0:
        return None
    ref = median(s_bg[:k])
    if not ((s_bg[k:] - ref) > GATE * MIN_FLOOR * c_level).any():
        return None                                              # the fast path
    return _region(xy, sm, bg, f, rings, c_level, ref, float(atoms.pixel_size_A), shape)


def _region(xy, sm, bg, f, rings, c_level, ref, px, shape):
    H, W = (int(v) for v in shape)
    if not (px > 0 and H > 0 and W > 0):
        return None
    (a_bg,) = sample_bilinear((bg,), (xy[:, 1] + 0.5) / f - 0.5, (xy[:, 0] + 0.5) / f - 0.5)
    floor = (a_bg - ref) / c_level
    g = CELL_A / px                                              # frame px per cell
    gh, gw = int(np.ceil(H / g)), int(np.ceil(W / g))
    n_cells = gh * gw

    def cells(p):
        return (np.clip((p[:, 1] / g).astype(np.int64), 0, gh - 1) * gw
                + np.clip((p[:, 0] / g).astype(np.int64), 0, gw - 1))

    s = SIGMA_A / CELL_A
    fl, den = _grid_mean(cells(xy), floor, n_cells, (gh, gw), s)
    high = (fl > MIN_FLOOR) & (den >= MIN_ATOM_DENSITY * CELL_A ** 2)
    if not high.any():
        return None
    hexes = [r for r in rings if len(r) == 6]
    filled = np.ones((gh, gw), bool)
    if hexes:
        idx = np.concatenate(hexes)
        centre = np.add.reduceat(xy[idx], np.arange(0, len(idx), 6), axis=0) / 6.0
        h_sm, h_bg = sample_bilinear((sm, bg), (centre[:, 1] + 0.5) / f - 0.5, (centre[:, 0] + 0.5) / f - 0.5)
        fill = (h_sm - h_bg) / c_level
        fill -= median(fill)
        hl, hden = _grid_mean(cells(centre), fill, n_cells, (gh, gw), s)
        filled = (hden < MIN_RING_DENSITY * CELL_A ** 2) | (hl > MIN_FILL)
    region = high & filled
    if not region.any():
        return None
    lab, n = ndimage.label(region)
    area = np.bincount(lab.ravel(), minlength=n + 1) * CELL_A ** 2
    big = area >= MIN_AREA_A2
    big[0] = False
    if not big.any():
        return None
    region = big[lab]
    grow = int(round(GROW_A / CELL_A))
    if grow > 0:
        region = ndimage.binary_dilation(region, iterations=grow)
    rows = np.minimum((np.arange(H) / g).astype(np.int64), gh - 1)
    cols = np.minimum((np.arange(W) / g).astype(np.int64), gw - 1)
    return region[rows][:, cols]
