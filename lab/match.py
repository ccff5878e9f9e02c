"""The one atom matcher of the laboratory: mutual nearest neighbours within a radius.

Used by the model's accuracy (:mod:`lab.infer.evaluate`), the chemistry's (:mod:`lab.chem.evaluate`,
:mod:`lab.chem.heldout`) and the real-frame checks. ``stemwatch evaluate`` (:mod:`lab.evaluate`)
matches truth and detections one to one by minimum cost instead, because CLEAR-MOT scoring must
prefer the previous frame's correspondence (an identity question, not a detection question).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def match_mutual(found: np.ndarray, true: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i_found, i_true) of mutual nearest neighbours closer than ``radius`` (same units
    as the positions); each index at most once, pairs in increasing ``i_found``."""
    if len(found) == 0 or len(true) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    d_ft, i_ft = cKDTree(true).query(found, distance_upper_bound=radius)
    d_tf, i_tf = cKDTree(found).query(true, distance_upper_bound=radius)
    f = np.flatnonzero(np.isfinite(d_ft))
    t = i_ft[f]
    ok = i_tf[t] == f
    return f[ok].astype(np.int64), t[ok].astype(np.int64)
