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

from engine.track.store import TrackStore


def near_edge(xy_A: np.ndarray, shape_A: np.ndarray | None, margin_A: float) -> np.ndarray:
    """(N,) bool: positions (frame A) closer than ``margin_A`` to the field's edge (negative: that
    far outside it). ``shape_A`` (width, height) A, None: nothing is near."""
    if shape_A is None:
        return np.zeros(len(xy_A), bool)
    return np.any((xy_A < margin_A) | (xy_A > shape_A - margin_A), axis=1)


def edge_distance(xy_A: np.ndarray, shape_A: np.ndarray | None) -> np.ndarray:
    """(N,) distance (A) of positions (frame A) inside the field to its nearest edge (negative
    outside); ``shape_A`` None: inf."""
    if shape_A is None:
        return np.full(len(xy_A), np.inf)
    xy_A = np.asarray(xy_A, float).reshape(-1, 2)
    return np.minimum(xy_A, shape_A - xy_A).min(axis=1)


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
