"""Where the network's own atoms say that part of a graphene field is not graphene (issue 21, criterion 2).

The Fourier mask of :mod:`engine.health.material_mask` finds vacuum beside graphene, but not amorphous
carbon or contamination: their diffuse ring puts as much power into graphene's spot windows as a few
unit cells of graphene do (docs/material.md). Analysed as graphene, such a part of the field gives
invented atoms and Si: a static simulated field that is partly amorphous carbon (``MaterialMovie``
``graphene_patch``, 0.15 A/px) gave ~40 "Si" a frame and 26 events in 12 frames.

The network itself is the cue that rescaling cannot fake: on graphene it is sure of its atoms
(confidence = P(atom) at the peak x P(species | atom): median 1.00; the 0.5th percentile of the locally
averaged confidence 0.79-1.00 on simulated whole graphene frames from 1e3 to 1e6 e/A^2, with holes, grain
boundaries and many dopants, lower only under a contamination patch; 0.77-1.00 on the six real graphene
frames), while in amorphous carbon it is not (locally averaged median 0.62-0.80). :func:`unsure_region` averages the
confidence of the atoms over a Gaussian of :data:`SIGMA_A` on a grid of :data:`CELL_A` cells and marks
the cells below :data:`MAX_CONFIDENCE` (and below the field's own level by :data:`BELOW_FIELD`) that
form regions of at least :data:`MIN_AREA_A2`; the region is grown by :data:`GROW_A` (its edge atoms
are the least sure ones of the graphene beside it, and flicker in and out frame by frame).

Frames whose C-atom SNR is below 2 (``low_snr``: no events) are not judged: there the network is unsure
everywhere. Plain numpy / scipy.ndimage; the cost is one ``bincount`` on frames with fewer than
:data:`MIN_UNSURE_ATOMS` unsure atoms (every clean graphene frame).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: smoothing of the atoms' confidence (A): a few C-C bonds, so one unsure atom (a dopant's neighbour,
#: an edge atom) does not make a region
SIGMA_A = 3.0
#: grid cell (A)
CELL_A = 1.0
#: a cell whose averaged confidence is below this ...
MAX_CONFIDENCE = 0.8
#: ... and below the field's own level (its 90th percentile) by this much is unsure
BELOW_FIELD = 0.15
#: cells with fewer atoms than this (per A^2, averaged; graphene has 0.38) are not judged: a hole is
#: vacuum, for the vacuum check and the Fourier mask, not an unsure part of the field
MIN_DENSITY_PER_A2 = 0.03
#: unsure cells count as a region from this area (A^2: about 20 unit cells of graphene)
MIN_AREA_A2 = 100.0
#: the region is grown by this much (A) before atoms are left out
GROW_A = 1.5
#: fewer atoms below MAX_CONFIDENCE than this: no region (the fast path)
MIN_UNSURE_ATOMS = 12


def unsure_region(atoms, shape) -> np.ndarray | None:
    """``(H, W)`` bool: the part of the field where the network is unsure of its atoms (amorphous carbon,
    contamination), or None when there is none. ``atoms``: an :class:`engine.types.Atoms` (px, with
    ``confidence`` and ``pixel_size_A``); ``shape``: the frame's (H, W)."""
    conf = np.asarray(atoms.confidence, np.float64).reshape(-1)
    if int((conf < MAX_CONFIDENCE).sum()) < MIN_UNSURE_ATOMS:
        return None
    px = float(atoms.pixel_size_A)
    H, W = (int(v) for v in shape)
    if not (px > 0 and H > 0 and W > 0):
        return None
    xy = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2)
    f = CELL_A / px                                             # frame px per cell
    gh, gw = int(np.ceil(H / f)), int(np.ceil(W / f))
    cell = (np.clip((xy[:, 1] / f).astype(np.int64), 0, gh - 1) * gw
            + np.clip((xy[:, 0] / f).astype(np.int64), 0, gw - 1))
    s = SIGMA_A / CELL_A
    num = ndimage.gaussian_filter(np.bincount(cell, conf, gh * gw).reshape(gh, gw), s, mode="constant")
    den = ndimage.gaussian_filter(np.bincount(cell, None, gh * gw).reshape(gh, gw).astype(np.float64), s,
                                  mode="constant")
    some = den >= MIN_DENSITY_PER_A2 * CELL_A ** 2            # where atoms are
    level = np.where(some, num / np.maximum(den, 1e-12), 1.0)
    field = float(np.percentile(level[some], 90)) if some.any() else 1.0
    unsure = some & (level < MAX_CONFIDENCE) & (level < field - BELOW_FIELD)
    region = large_regions(unsure, CELL_A, MIN_AREA_A2, GROW_A)
    if region is None:
        return None
    rows = np.minimum((np.arange(H) / f).astype(np.int64), gh - 1)
    cols = np.minimum((np.arange(W) / f).astype(np.int64), gw - 1)
    return region[rows][:, cols]


def large_regions(cells: np.ndarray, cell_A: float, min_area_A2: float, grow_A: float) -> np.ndarray | None:
    """The connected parts of ``cells`` (a bool grid of ``cell_A`` cells) of at least ``min_area_A2``,
    grown by ``grow_A``; None when there is none."""
    if not cells.any():
        return None
    lab, n = ndimage.label(cells)
    big = np.bincount(lab.ravel(), minlength=n + 1) * cell_A ** 2 >= min_area_A2
    big[0] = False
    if not big.any():
        return None
    region = big[lab]
    grow = int(round(grow_A / cell_A))
    return ndimage.binary_dilation(region, iterations=grow) if grow > 0 else region
