"""What the tracker hands the event machines each frame: a plain-data snapshot.

:class:`engine.track.tracker.Tracker` builds one :class:`TrackSnapshot` per frame, after it wrote
the frame's raw observations; :class:`engine.track.events.EventLogic` reads only this (and the
frame's ``Chemistry``), never the tracker. ``store`` is the table of live tracks
(:class:`engine.track.store.TrackStore`, struct of arrays): its raw-observation rings are the
observation window per track, and the debounced states the event machines keep are columns of it,
updated in place by them (they must follow a track when rows are compacted or parked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from engine.track.store import TrackStore


#: cell of the left-out part's distance map (A, at least): the resolution of the masks it is made from (the
#: unsure and contamination regions' 1 A grid; the Fourier mask's cells are coarser). A finer grid costs
#: per masked frame: a 512^2 frame at 0.3 A/px took 28 ms on 0.5 A cells (one per pixel), 1.4 ms on 1.2 A
#: cells (`timeit`, this 2-core machine)
LEFT_OUT_CELL_A = 1.0


@dataclass(frozen=True)
class LeftOut:
    """The part of a frame left out of the analysis (a hole, amorphous carbon, contamination: the
    material verdict's mask) as the tracker sees it: for it that part is beyond the field's edge.
    ``distance_A`` (rows, cols) on a grid of ``cell_A``: signed distance (A) of each cell's centre to
    the boundary, positive in the analysed part, negative in the part left out."""

    distance_A: np.ndarray
    cell_A: float

    @classmethod
    def of(cls, analysed, pixel_size_A: float) -> "LeftOut | None":
        """From ``analysed`` (frame-shaped bool: the part analysed) at ``pixel_size_A``; None when it
        leaves nothing out (or is None)."""
        if analysed is None:
            return None
        m = np.asarray(analysed, bool)
        if m.ndim != 2 or m.all():
            return None
        # each cell read at its centre pixel: the smallest part the pipeline leaves out (a 1.5 A disc round a
        # heavy atom off the lattice, engine/health/off_lattice.py) holds a square wider than a cell
        # (< 1.41 A up to 0.41 A/px), so it covers a cell's centre
        step = max(1, int(np.ceil(LEFT_OUT_CELL_A / float(pixel_size_A))))
        g = m[step // 2::step, step // 2::step]
        if g.all():
            return None
        cell = step * float(pixel_size_A)
        inside = ndimage.distance_transform_edt(g, sampling=cell)
        outside = ndimage.distance_transform_edt(~g, sampling=cell)
        return cls(np.where(g, inside - 0.5 * cell, 0.5 * cell - outside), cell)

    def distance(self, xy_A: np.ndarray) -> np.ndarray:
        """(N,) signed distance (A) of positions (frame A, x y) to the part left out (negative: in it);
        positions beyond the frame take the nearest cell's."""
        xy_A = np.asarray(xy_A, float).reshape(-1, 2)
        h, w = self.distance_A.shape
        c = np.clip((xy_A[:, 0] / self.cell_A).astype(np.int64), 0, w - 1)
        r = np.clip((xy_A[:, 1] / self.cell_A).astype(np.int64), 0, h - 1)
        return self.distance_A[r, c]


def edge_distance(xy_A: np.ndarray, shape_A: np.ndarray | None, left_out: LeftOut | None = None) -> np.ndarray:
    """(N,) distance (A) of positions (frame A) inside the field to its nearest edge (negative
    outside); ``shape_A`` None: inf. ``left_out``: the part of the frame not analysed, an edge too."""
    xy_A = np.asarray(xy_A, float).reshape(-1, 2)
    d = np.full(len(xy_A), np.inf) if shape_A is None else np.minimum(xy_A, shape_A - xy_A).min(axis=1)
    if left_out is not None and len(xy_A):
        d = np.minimum(d, left_out.distance(xy_A))
    return d


def near_edge(xy_A: np.ndarray, shape_A: np.ndarray | None, margin_A: float,
              left_out: LeftOut | None = None) -> np.ndarray:
    """(N,) bool: positions (frame A) closer than ``margin_A`` to the field's edge (negative: that
    far outside it). ``shape_A`` (width, height) A, None: nothing is near. ``left_out``: the part of
    the frame not analysed (:class:`LeftOut`), whose boundary is an edge of the field too."""
    if shape_A is None and left_out is None:
        return np.zeros(len(xy_A), bool)
    return edge_distance(xy_A, shape_A, left_out) < margin_A


@dataclass
class TrackSnapshot:
    """One frame as the event machines see it (arrays are per live track row unless said).

    seq, t_acquired : the frame. k, n, min_confidence : debounce (k of n) and event threshold.
    col : this frame's ring column; window_cols : (n,) ring columns of the last n frames, newest
    first; ring_seq, ring_t : (H,) the seq and time of each ring column (-1 / nan: empty).
    pixel_size_A : input px -> A. formula_names : code -> heavy-atom formula (the ``formula`` ring).
    pred_frame_A : (T, 2) each track's position in this frame (A). anchor_frame_A : (T, 2) its
    site. at_border : (T,) bool, predicted within ``border_margin_A`` of the field edge.
    in_exclusion : (T,) bool, predicted within ``border_margin_A`` of the edge in this frame or in any
    frame since it was last seen (an atom that went unseen near the edge was cut by it, wherever
    the drift has taken it since). left_field : (T,) bool, predicted well outside.
    revived_rows : rows of parked tracks that came back into view this frame.
    defect_world_A : (D, 2) each defect's centre in world A (drift-corrected, for new motifs).
    """

    store: TrackStore
    seq: int
    t_acquired: float
    k: int
    n: int
    min_confidence: float
    col: int
    window_cols: np.ndarray
    ring_seq: np.ndarray
    ring_t: np.ndarray
    pixel_size_A: float
    formula_names: dict
    pred_frame_A: np.ndarray
    anchor_frame_A: np.ndarray
    at_border: np.ndarray
    in_exclusion: np.ndarray
    left_field: np.ndarray
    revived_rows: np.ndarray
    defect_world_A: np.ndarray
    world_A: np.ndarray | None = None          # (N, 2) this frame's atoms in world A (rotor orientation)
    rotor_min_deg: float = 45.0                # a rotor must turn by more than this (EventConfig)
    motif_classes_raised: set | None = None    # new_motif classes raised this session (the tracker's set,
                                               # kept across series; the new-motif rule adds to it)
    unsure_below: float = 0.0                  # a detection less sure than this is unsure (the tracker's
                                               # rejoin rule: rejoin_min_confidence and this frame's 1st
                                               # percentile); a C last seen unsure that ends is no vacancy
