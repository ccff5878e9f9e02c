"""Sparse minimum-cost assignment of tracks to detections with birth and death alternatives.

Never a dense T x D matrix: candidate pairs come from a KD-tree gate, and the problem is solved by
``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp) on the Jaqaman-style block
matrix::

              detections (D)        death (T)
    tracks    [ c_ij (gated)      | diag(death) ]
    births    [ diag(birth)       | (c_ij > 0)^T eps ]

A track either takes a gated detection or dies (for this frame); a detection is either taken or
starts a track. Isolated pairs (a track and a detection that are each other's only candidate) are
decided directly; only the conflicting rest goes to the solver. The lower-right block holds, for every gated pair (i, j), an edge (birth j, death i)
of negligible cost so that the block of a matched pair can be completed. A full matching always
exists (all tracks die, all detections are born), so the solver never fails. A pair is matched
only if it is cheaper than ``death + birth``.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

_EPS = 1e-6   # zero-cost edges would be dropped by the sparse format


def match(n_tracks: int, n_dets: int, ti: np.ndarray, dj: np.ndarray, cost: np.ndarray,
          death_cost: float | np.ndarray, birth_cost: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve the gated assignment. Returns (track_index, det_index) of the matched pairs.

    ti, dj, cost : (E,) candidate edges (track row, detection row, cost >= 0); duplicates not allowed.
    death_cost : scalar or (n_tracks,) cost of leaving a track unmatched.
    birth_cost : scalar or (n_dets,) cost of leaving a detection unmatched.
    """
    T, D = int(n_tracks), int(n_dets)
    if T == 0 or D == 0 or len(ti) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ti = np.asarray(ti, np.int64)
    dj = np.asarray(dj, np.int64)
    cost = np.asarray(cost, np.float64)
    death = np.broadcast_to(np.asarray(death_cost, np.float64), (T,))
    birth = np.broadcast_to(np.asarray(birth_cost, np.float64), (D,))
    # An edge whose track and detection have no other candidate is a problem of its own: take it
    # iff it is cheaper than a death plus a birth. Most atoms are such pairs; only the rest (the
    # conflicting components) go to the solver.
    deg_t = np.bincount(ti, minlength=T)
    deg_d = np.bincount(dj, minlength=D)
    lone = (deg_t[ti] == 1) & (deg_d[dj] == 1)
    take = lone & (cost < death[ti] + birth[dj])
    out_t, out_d = ti[take], dj[take]
    rest = ~lone
    if not rest.any():
        return out_t, out_d
    ti, dj, cost = ti[rest], dj[rest], cost[rest]
    ut, ti = np.unique(ti, return_inverse=True)
    ud, dj = np.unique(dj, return_inverse=True)
    death, birth = death[ut], birth[ud]
    T, D = len(ut), len(ud)
    E = len(ti)
    ar_t, ar_d = np.arange(T), np.arange(D)
    rows = np.concatenate([ti, ar_t, T + ar_d, T + dj])
    cols = np.concatenate([dj, D + ar_t, ar_d, D + ti])
    vals = np.concatenate([cost + _EPS, death + _EPS, birth + _EPS, np.full(E, _EPS)])
    m = csr_matrix((vals, (rows, cols)), shape=(T + D, D + T))
    r, c = min_weight_full_bipartite_matching(m)
    # rows 0..T-1 are tracks; a column < D is a detection
    sel = (r < T) & (c < D)
    return (np.concatenate([out_t, ut[r[sel]]]).astype(np.int64),
            np.concatenate([out_d, ud[c[sel]]]).astype(np.int64))
