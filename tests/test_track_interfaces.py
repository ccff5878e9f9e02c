"""Tracker -> events through plain data, and a pluggable motion model.

* EventLogic runs on a hand-built :class:`TrackSnapshot` (no Tracker at all): a Si track whose
  C-neighbour observations go 3 -> 4 raises ``si_3_to_4`` once k of n frames agree.
* The tracker reaches its motion model only through :class:`MotionModel`: a wrapper that records
  the calls gives the same identities as the default, and a model that knows the drift (a
  "stage readout") tracks a drifting lattice with its own drift.
"""

from __future__ import annotations

import numpy as np

from engine.track import Tracker
from engine.track.events import EventLogic
from engine.track.motion import DriftKalman, FieldShift
from engine.track.snapshot import TrackSnapshot
from engine.track.store import TrackStore
from engine.types import SI, Atoms, Chemistry
from stemwatch.config import EventConfig, TrackingConfig

from _track_lattice import id_switches, make_movie


def _empty_chem() -> Chemistry:
    atoms = Atoms(xy_px=np.zeros((0, 2)), species=np.zeros(0, np.int8), confidence=np.zeros(0, np.float32),
                  class_prob=np.zeros((0, 3), np.float32), border=np.zeros(0, bool), pixel_size_A=0.1)
    return Chemistry(atoms=atoms, bonds=np.zeros((0, 2), np.int64), bond_length_A=np.zeros(0),
                     coordination=np.zeros(0, np.int64))


def _snapshot(store: TrackStore, col: int, seq: int, H: int) -> TrackSnapshot:
    T = len(store)
    ring_seq = np.full(H, -1, np.int64)
    for c in range(col + 1):
        ring_seq[c] = c
    pred = store.pos.copy()
    return TrackSnapshot(store=store, seq=seq, t_acquired=float(seq), k=3, n=4, min_confidence=0.5, col=col,
                         window_cols=(col - np.arange(4)) % H, ring_seq=ring_seq, ring_t=ring_seq.astype(float),
                         pixel_size_A=0.1, formula_names={}, pred_frame_A=pred, anchor_frame_A=store.anchor.copy(),
                         at_border=np.zeros(T, bool), in_exclusion=np.zeros(T, bool), left_field=np.zeros(T, bool),
                         revived_rows=np.zeros(0, np.int64), defect_world_A=np.zeros((0, 2)))


def test_event_logic_runs_on_a_plain_snapshot():
    H = 8
    st = TrackStore(H)
    st.append(1, id=np.array([42]), pos=np.array([[10.0, 10.0]]), anchor=np.array([[10.0, 10.0]]),
              last_px=np.array([[100.0, 100.0]]), conf=np.array([0.9], np.float32), last_sp=np.array([SI]),
              confirmed=True, initial=True, hits=10)      # seen since the first frame
    logic = EventLogic(TrackingConfig())
    coords = [3, 3, 3, 3, 4, 4, 4, 4]
    events = []
    for col, c in enumerate(coords):
        for name, v in (("cls", 1), ("sp", SI), ("coord", c), ("present", 1), ("away", 0), ("dimer", 0),
                        ("formula", -1), ("ncoord", c)):
            st.ring(name)[0, col] = v
        events += [(col, e) for e in logic.step(_snapshot(st, col, col, H), _empty_chem(), np.zeros(0, np.int64), None)]
    assert [(col, e.kind, e.atom_id, e.first_frame) for col, e in events] == [(6, "si_3_to_4", 42, 4)]
    assert events[0][1].before == "3-fold" and events[0][1].after == "4-fold"


class Recording:
    """A MotionModel that forwards to the default one and counts the calls it gets."""

    def __init__(self, inner):
        self.inner, self.calls = inner, {}
        self.gate_cost, self.measurement_var = inner.gate_cost, inner.measurement_var

    def __getattr__(self, name):
        fn = getattr(self.inner, name)

        def counted(*a, **kw):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*a, **kw)
        return counted


class StageReadout(DriftKalman):
    """Knows the field's drift per frame (as a stage readout would) instead of estimating it."""

    def __init__(self, cfg, drift_A):
        self.known = drift_A
        self.i = 0
        super().__init__(cfg)

    def observe_field(self, xy_A, sp, gap, tree, field_mid_y_A, first_frame):
        d = np.zeros(2) if first_frame else np.asarray(self.known[self.i], float)
        self.i += 1
        self.offset_A = self.offset_A + d
        return FieldShift(shift_A=d, searched=False)


def _run(movie, motion=None):
    tr = Tracker(TrackingConfig(), EventConfig(), motion=motion)
    ids, drifts = [], []
    for i, (chem, _gid, shape) in enumerate(movie.frames):
        u = tr.update(chem, i, 1000.0 + 0.25 * i, frame_shape=shape)
        ids.append(u.track_ids)
        drifts.append(u.drift_A)
    return ids, np.array(drifts)


def test_the_tracker_goes_through_the_motion_model_protocol():
    mv = make_movie(n_frames=12, drift_A=(0.3, -0.15), seed=4)
    base, _ = _run(mv)
    rec = Recording(DriftKalman(TrackingConfig()))
    ids, _ = _run(mv, motion=rec)
    assert all(np.array_equal(a, b) for a, b in zip(base, ids))
    assert rec.calls["observe_field"] == 12 and rec.calls["correct"] >= 11 and rec.calls["predict"] == 12
    assert rec.calls["to_frame"] > 0 and rec.calls["to_world"] > 0 and rec.calls["innovation_var"] >= 11


def test_a_motion_model_with_known_drift_tracks_the_lattice():
    mv = make_movie(n_frames=12, drift_A=(0.5, 0.2), drift_walk_A=0.0, seed=6)
    ids, drift = _run(mv, motion=StageReadout(TrackingConfig(), mv.drift_A))
    assert np.allclose(drift[1:], mv.drift_A[1:])
    sw, total = id_switches(mv, ids)
    assert sw == 0 and total > 3000
