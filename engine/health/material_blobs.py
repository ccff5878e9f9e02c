"""Bright isolated objects (heavy adatoms, Si clusters) masked out for the material verdict.

At fine sampling (a 512 px frame at 0.03-0.07 A/px is 15-36 A wide) one heavy adatom is a disc
tens of px across and hundreds of times brighter than a carbon column; even clipped at mean + 4 std
(the std is its own) its transform fills graphene's first-order ring, and the lattice is lost.
:func:`without_blobs` finds such objects by a robust level (mean + BLOB_STD std, iterated on the
clipped values until it settles, so the objects do not set their own threshold), keeps only
connected regions with a core far above it (BLOB_CORE), and only when they are few (a crystal's
brighter sublattice, e.g. Mo in MoS2, gives hundreds of regions on a lattice: no masking; beside
more regions than that, the few whose peak is BLOB_FAR times further above the median than the core,
when there are few: heavy adatoms beside a dozen hot pixels), and replaces them, grown by their own
size, with the frame's median.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BLOB_STD = 4.0            # the robust level: mean + this many std of the (iteratively clipped) frame
BLOB_ITER = 8             # iterations of the clipped mean + std
BLOB_CORE = 3.0           # a region counts when its peak exceeds median + this x (level - median)
BLOB_MAX = 4              # at most this many regions (more: a lattice or noise, not isolated adatoms; a vacuum
                          # frame at 0.29 A/px with 12 hot-pixel "objects" masked showed a noise hexagon)
BLOB_MAX_AREA = 0.25      # and they cover at most this fraction of the field (grown)
BLOB_FAR = 4.0            # ... or, beside more regions than that, this x further above the median than the core
BLOB_SMOOTH_PX = 1.5      # smoothing (px of the binned frame) before thresholding


def without_blobs(img: np.ndarray):
    """(frame with the bright isolated objects replaced by its median, number of objects), or None
    when there are none, or too many or too large to be isolated objects."""
    sm = ndimage.gaussian_filter(np.asarray(img, np.float32), BLOB_SMOOTH_PX)
    sub = sm[::2, ::2]
    med = float(np.median(sub))
    level = float(sub.mean()) + BLOB_STD * float(sub.std())
    for _ in range(BLOB_ITER):
        c = np.minimum(sub, np.float32(level))
        new = float(c.mean()) + BLOB_STD * float(c.std())
        if new >= level * 0.999:
            break
        level = new
    if level <= med:
        return None
    core = med + BLOB_CORE * (level - med)
    if float(sm.max()) <= core:
        return None
    lab, n = ndimage.label(sm > level)
    if n == 0:
        return None
    peaks = ndimage.maximum(sm, lab, index=np.arange(1, n + 1))
    keep = np.flatnonzero(peaks > core) + 1
    if len(keep) > BLOB_MAX:
        # many small regions just above the core (hot pixels, bright noise) beside a few objects far
        # brighter than all of them (heavy adatoms): the few
        keep = np.flatnonzero(peaks > med + BLOB_FAR * (core - med)) + 1
    if len(keep) == 0 or len(keep) > BLOB_MAX:
        return None
    mask = np.isin(lab, keep)
    # grow each object by about its own radius (the probe tail around a heavy atom)
    r = max(2, int(np.sqrt(mask.sum() / len(keep) / np.pi)))
    mask = ndimage.maximum_filter(mask, size=2 * r + 1)
    if mask.mean() > BLOB_MAX_AREA:
        return None
    out = np.array(img, np.float32, copy=True)
    out[mask] = np.float32(np.median(img[~mask]))
    return out, len(keep)
