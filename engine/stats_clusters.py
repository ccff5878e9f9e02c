"""Histories of dopant groups: dimers and clusters followed as one object over the frames.

A *group* in one frame is a set of tracked Si bonded to each other (heavy-heavy bonds): its key is the
smallest member track id (:attr:`engine.stats.DopantObservations.cluster`). A group in one frame and a
group in a later frame are the same *cluster* when a dopant is a member of both at consecutive known
observations no more than ``max_gap_frames`` apart; clusters therefore survive a member joining,
leaving or being re-tracked, and two clusters that merge become one. Frames that are not usable are
unknown for every cluster (no observation), never a state.

Plain data in and out::

    DopantObservations + FrameInfo --cluster_histories--> [ {id, kind, first_frame, last_frame,
        frames_known, members, history: [{from_frame, to_frame, size, formula}, ...], changes, x/y} ]
"""

from __future__ import annotations

import numpy as np

from engine.stats import runs

__all__ = ["cluster_histories"]


def cluster_histories(obs, frames, max_gap_frames: int = 4) -> list[dict]:
    """One dict per cluster (a dimer counts as a cluster of two) seen in the usable frames.

    obs : :class:`engine.stats.DopantObservations`; frames : :class:`engine.stats.FrameInfo`.
    Each dict: ``id`` (1, 2, ... in order of first appearance), ``kind`` (``dimer`` when it never had
    more than two members, else ``cluster``), ``first_frame``, ``last_frame``, ``frames_known``,
    ``frames_unknown`` (between first and last: out of view, unusable or not grouped), ``members``
    (every track id that was ever a member), ``history`` (runs of equal size and formula:
    ``from_frame``, ``to_frame``, ``size``, ``formula``), ``changes`` (number of run boundaries
    between consecutive known frames: members joining or leaving, the formula changing), and the
    mean position at the first and last frame (``x_first_px`` ...).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    seq = np.asarray(frames.seq, np.int64)
    usable = set(seq[np.asarray(frames.usable, bool)].tolist())
    key = np.asarray(obs.cluster, np.int64)
    m = (key >= 0) & np.isin(obs.frame, list(usable))
    if not m.any():
        return []
    fr, tr, key = np.asarray(obs.frame)[m], np.asarray(obs.track)[m], key[m]
    x, y, formula = np.asarray(obs.x_px)[m], np.asarray(obs.y_px)[m], np.asarray(obs.formula, object)[m]
    # nodes: (frame, key) groups
    nodes, node = np.unique(np.stack([fr, key], 1), axis=0, return_inverse=True)
    node = node.reshape(-1)
    # edges: a dopant's consecutive grouped observations close enough in frames
    order = np.lexsort((fr, tr))
    t_o, f_o, n_o = tr[order], fr[order], node[order]
    link = (t_o[1:] == t_o[:-1]) & (f_o[1:] - f_o[:-1] <= max_gap_frames)
    n = len(nodes)
    g = coo_matrix((np.ones(int(link.sum())), (n_o[:-1][link], n_o[1:][link])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    # number clusters by first appearance
    first_frame = np.full(comp.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_frame, comp, nodes[:, 0])
    rank = np.empty_like(first_frame)
    rank[np.lexsort((np.arange(len(first_frame)), first_frame))] = np.arange(len(first_frame))
    obs_cluster = rank[comp[node]]
    out = []
    for c in range(len(first_frame)):              # one Python step per cluster, not per observation
        sel = np.flatnonzero(obs_cluster == c)
        f_c = fr[sel]
        frames_c = np.unique(f_c)
        size = np.bincount(np.searchsorted(frames_c, f_c), minlength=len(frames_c))
        # the group's formula in a frame: the defect formula its lowest-track member carries
        lead = sel[np.lexsort((tr[sel], f_c))]
        firsts = np.unique(fr[lead], return_index=True)[1]
        form = [str(v) for v in formula[lead[firsts]].tolist()]
        _, code = np.unique(np.array([f"{n}|{f}" for n, f in zip(size.tolist(), form)]), return_inverse=True)
        starts, lengths = runs(code.reshape(-1), np.zeros(len(code), bool))
        hist = [{"from_frame": int(frames_c[a]), "to_frame": int(frames_c[a + n - 1]), "size": int(size[a]),
                 "formula": form[a]} for a, n in zip(starts.tolist(), lengths.tolist())]
        in_first, in_last = f_c == frames_c[0], f_c == frames_c[-1]
        n_between = int(np.count_nonzero((seq >= frames_c[0]) & (seq <= frames_c[-1])))
        out.append({"id": c + 1, "kind": "dimer" if size.max() <= 2 else "cluster",
                    "first_frame": int(frames_c[0]), "last_frame": int(frames_c[-1]),
                    "frames_known": int(len(frames_c)), "frames_unknown": n_between - int(len(frames_c)),
                    "members": sorted(set(tr[sel].tolist())), "history": hist, "changes": len(hist) - 1,
                    "x_first_px": float(x[sel][in_first].mean()), "y_first_px": float(y[sel][in_first].mean()),
                    "x_last_px": float(x[sel][in_last].mean()), "y_last_px": float(y[sel][in_last].mean())})
    return out
