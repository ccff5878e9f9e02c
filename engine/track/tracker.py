"""The incremental atom tracker: drift correction, vectorised Kalman filter, sparse gated assignment
with births and deaths, track memory and confirmation, per-track species/coordination histories and
debounced transformation events.

One call per frame: :meth:`Tracker.update` (``Chemistry`` of the frame, its ``seq`` and
``t_acquired``) -> :class:`TrackUpdate` (a track id per atom, the events confirmed in this frame,
the frame's drift).

Coordinates. Atoms arrive in input-frame pixels; the tracker works in angstrom. The accumulated drift
maps world to frame coordinates: ``frame_A = world_A + offset_A + shear * world_y`` (``shear``, per
axis, is the slow-scan distortion: the sample drifts while the frame is scanned row by row, so the
shift grows with the row). Tracks live in world coordinates, where atoms
are (nearly) still, so the Kalman filter is a constant-position model per atom (state: x, y;
isotropic covariance ``P`` in A^2; process noise ``process_noise_A`` per frame, measurement noise
``measurement_noise_A``). It is exact and fully vectorised: ``P <- P + q^2``;
``K = P / (P + r^2)``; ``x <- x + K (z - x)``; ``P <- (1 - K) P``.

Assignment. Costs are normalised innovations ``d^2 / (P + r^2)``; an edge exists within
``max_speed_A_per_frame`` of the prediction (KD-tree gate). Birth + death cost ``G`` equals the gate
at the steady-state innovation variance, so any gated pair beats a death plus a birth. A heavy
track (Si, other) may also *hop* to a same-species detection up to ``hop_radius_A`` away at cost
``hop_cost * G * (0.8 + 0.2 d / hop_radius_A)``; a species change costs ``species_mismatch_cost * G``. So a Si that dims for a
frame and reads as C keeps its track, while a Si that exchanges its site with a neighbouring C
follows the Si (and the Si of a rotating cluster, ~3.4 A, follow the rotation). Left-over C tracks
are matched to left-over C detections on a hopping heavy atom's old site in a second, small pass
(the C of a site exchange or of a rotor).

Events are decided by k-of-n state machines (:mod:`engine.track.debounce`) and described in
:mod:`engine.track.events`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from engine.chem.quantile import percentile
from engine.track import assign
from engine.track.debounce import UNKNOWN, WILD
from engine.track.events import EventLogic
from engine.track.motion import MAX_SEARCH_GAP_FRAMES, DriftKalman, MotionModel  # noqa: F401 (re-export)
from engine.track.snapshot import LeftOut, TrackSnapshot, edge_distance, near_edge
from engine.track.store import TrackStore
from engine.types import C, Chemistry
from stemwatch.config import EventConfig, TrackingConfig


_HEAVY_PART = re.compile(r"C\d+$")


@dataclass
class TrackUpdate:
    """The tracker's answer for one frame.

    track_ids : (N,) int64, a track id per atom of the frame's ``Chemistry.atoms``.
    confirmed : (N,) bool, the track has been seen ``confirm_frames`` times.
    events : events confirmed in this frame (:class:`engine.types.Event`).
    drift_px : (dx, dy) shift of this frame's content vs the previous analysed frame, input px.
    drift_A : the same in angstrom. drift_searched : the predicted drift was rejected and searched.
    n_tracks : live tracks after this frame.
    """

    track_ids: np.ndarray
    events: list
    drift_px: tuple[float, float]
    confirmed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    drift_A: tuple[float, float] = (0.0, 0.0)
    drift_searched: bool = False
    n_tracks: int = 0


def _features(chem: Chemistry, codes: dict) -> dict:
    """Per-atom raw observations used by the state machines (vectorised over bonds).

    codes : formula string -> small int, extended in place (one entry per distinct formula).
    """
    atoms = chem.atoms
    n = len(atoms)
    sp = np.asarray(atoms.species, np.int16)
    bonds = np.asarray(chem.bonds, np.int64).reshape(-1, 2)
    if bonds.size:
        a, b = bonds[:, 0], bonds[:, 1]
        n_c = (np.bincount(a[sp[b] == C], minlength=n) + np.bincount(b[sp[a] == C], minlength=n))
        n_heavy = (np.bincount(a[sp[b] != C], minlength=n) + np.bincount(b[sp[a] != C], minlength=n))
    else:
        n_c = np.zeros(n, np.int64)
        n_heavy = np.zeros(n, np.int64)
    coord = (np.asarray(chem.coordination, np.int64) if chem.coordination is not None
             and len(chem.coordination) == n else n_c + n_heavy)
    formula = np.full(n, UNKNOWN, np.int16)
    if chem.defects and chem.atom_defect is not None and len(chem.atom_defect) == n:
        # the heavy-atom part of the formula ("Si2" of "Si2C6"): changes of the C count are the
        # coordination events' business (and flicker with bond lengths near a cutoff)
        dcode = np.array([codes.setdefault(_HEAVY_PART.sub("", d.formula), len(codes)) for d in chem.defects]
                         + [UNKNOWN], np.int16)
        ad = np.asarray(chem.atom_defect, np.int64)
        formula = dcode[np.where(ad >= 0, ad, len(chem.defects))]
    return {"sp": sp, "n_c": n_c, "n_heavy": n_heavy, "coord": coord, "formula": formula}


class Tracker:
    """Incremental tracker; see the module docstring. Not thread-safe: one thread calls ``update``.

    tracking : :class:`stemwatch.config.TrackingConfig`; events : :class:`stemwatch.config.EventConfig`;
    motion : a :class:`engine.track.motion.MotionModel` (default: drift + Kalman, :class:`DriftKalman`).
    """

    def __init__(self, tracking: TrackingConfig | None = None, events: EventConfig | None = None,
                 motion: MotionModel | None = None):
        self.cfg = tracking or TrackingConfig()
        self.ecfg = events or EventConfig()
        k, n = self.ecfg.k_of_n
        if not (1 <= int(k) <= int(n)):
            raise ValueError(f"events.k_of_n must satisfy 1 <= k <= n, got {self.ecfg.k_of_n}")
        self.ring_len = max(int(self.cfg.history_frames), int(n), 2)
        self.motion: MotionModel = motion if motion is not None else DriftKalman(self.cfg)
        self._next_id = 0
        self.motif_classes_raised: set = set()    # new_motif classes raised this session (kept across series)
        self.reset()

    # ------------------------------------------------------------------------------ control
    def reset(self) -> None:
        """Forget every track (a new series). Track ids keep increasing (never reused)."""
        self.store = TrackStore(self.ring_len)
        self._frames = 0                      # analysed frames in this series
        self._col = -1                        # current ring column
        self.ring_seq = np.full(self.ring_len, -1, np.int64)
        self.ring_t = np.full(self.ring_len, np.nan)
        self.motion.reset()
        self._last_seq: int | None = None
        self._ps: float | None = None
        self._shape_A: np.ndarray | None = None
        self._left_out: LeftOut | None = None
        self._formula_codes: dict[str, int] = {}
        self.left_field = np.zeros(0, bool)
        self.revived_rows = np.zeros(0, np.int64)
        self.parked = TrackStore(self.ring_len, capacity=256)   # tracks that drifted out of view
        self.revived = 0
        self.events_logic = EventLogic(self.cfg)

    def set_event_config(self, events: EventConfig) -> None:
        """Change debounce (k of n, n <= history_frames) and confidence threshold while running."""
        k, n = events.k_of_n
        if not (1 <= int(k) <= int(n) <= self.ring_len):
            raise ValueError(f"k_of_n must satisfy 1 <= k <= n <= {self.ring_len}, got {events.k_of_n}")
        self.ecfg = events

    @property
    def n_tracks(self) -> int:
        return len(self.store)

    def _window_cols(self, n: int) -> np.ndarray:
        return (self._col - np.arange(n)) % self.ring_len

    # ------------------------------------------------------------------------------ main
    def update(self, chem: Chemistry, seq: int, t_acquired: float,
               frame_shape: tuple[int, int] | None = None, analysed: np.ndarray | None = None) -> TrackUpdate:
        """Track one frame. ``chem`` holds the frame's atoms (px) and bonds; ``seq`` its number;
        ``frame_shape`` (H, W) px tells where the field edges are (default: the atoms' extent);
        ``analysed`` (frame-shaped bool, None: all of it) the part of the frame analysed: the boundary of
        the part left out (a hole, amorphous carbon, contamination) is an edge of the field, so an atom
        that a growing region covers has left the field, not the sample, and one it uncovers entered it."""
        atoms = chem.atoms
        N = len(atoms)
        ps = self._set_geometry(float(atoms.pixel_size_A), atoms, frame_shape)
        self._left_out = LeftOut.of(analysed, ps)
        gap = 1 if self._last_seq is None else max(1, int(seq) - int(self._last_seq))
        xy_A = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2) * ps
        feats = _features(chem, self._formula_codes)
        sp = feats["sp"]
        conf = np.asarray(atoms.confidence, np.float32).reshape(-1)
        tree = cKDTree(xy_A) if N else None
        # ---- drift: frame = world + offset + shear * world_y (see the module docstring)
        yc = 0.5 * (self._shape_A[1] if self._shape_A is not None else 0.0)
        field_shift = self.motion.observe_field(xy_A, sp, gap, tree, yc, first_frame=not self._frames)
        shift = field_shift.shift_A
        world = self.to_world(xy_A)
        self._open_column(seq, t_acquired)
        st = self.store
        # ---- predict, gate + assign, correct
        self.motion.predict(st.P, gap)
        mt, md, hop = self._assign(st, tree, xy_A, sp) if len(st) and N else (np.zeros(0, np.int64),) * 2 + (
            np.zeros(0, bool),)
        unsure_below = min(float(self.cfg.rejoin_min_confidence), percentile(conf, 1.0)) if N else 0.0
        weak = self._weak_rejoins(st, mt, md, conf, unsure_below)
        self._correct(st, mt[~weak], md[~weak], hop[~weak], world, atoms, conf, feats, seq)
        self._count_misses(st, mt[~weak])
        st.weak_used[mt[weak]] = True
        # ---- births, raw observations, events, track ends
        det_track = self._births(st, mt, md, world, xy_A, atoms, conf, feats, seq, shift)
        matched_all = np.zeros(len(st), bool)
        matched_all[det_track] = True
        matched_all[mt[weak]] = False
        st.confirmed[:] |= st.hits >= self.cfg.confirm_frames
        self._write_rings(st, det_track, matched_all, feats, world)
        events = self.events_logic.step(self._snapshot(chem, seq, t_acquired, world, unsure_below), chem, det_track,
                                        tree)
        track_ids = st.id[det_track] if N else np.zeros(0, np.int64)
        confirmed = st.confirmed[det_track] if N else np.zeros(0, bool)
        self._remove_dead()
        self._last_seq = int(seq)
        return TrackUpdate(track_ids=track_ids.astype(np.int64), events=events,
                           drift_px=(float(shift[0] / ps), float(shift[1] / ps)), confirmed=confirmed,
                           drift_A=(float(shift[0]), float(shift[1])), drift_searched=field_shift.searched,
                           n_tracks=len(self.store))

    # ------------------------------------------------------------------------------ steps of update
    def _set_geometry(self, ps: float, atoms, frame_shape) -> float:
        """Pixel size (a change resets: a new geometry) and the field's extent in A."""
        if not ps > 0:
            raise ValueError(f"atoms.pixel_size_A must be > 0, got {ps}")
        if self._ps is not None and abs(ps - self._ps) > 1e-6 * self._ps:
            self.reset()
        self._ps = ps
        if frame_shape is not None:
            self._shape_A = np.array([frame_shape[1], frame_shape[0]], np.float64) * ps
        elif len(atoms):
            xy_A = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2) * ps
            self._shape_A = np.maximum(self._shape_A if self._shape_A is not None else 0.0, xy_A.max(0) + ps)
        return ps

    def _open_column(self, seq: int, t_acquired: float) -> None:
        """A new ring column for this frame; parked tracks back in view rejoin."""
        self._frames += 1
        self._col = (self._col + 1) % self.ring_len
        self.ring_seq[self._col] = seq
        self.ring_t[self._col] = t_acquired
        self.left_field = np.zeros(len(self.store), bool)
        self.revived_rows = np.zeros(0, np.int64)
        self._revive_parked()

    def _weak_rejoins(self, st, mt, md, conf, thr: float) -> np.ndarray:
        """Matches (bool per pair) that count as a miss: an unsure detection -- below
        ``rejoin_min_confidence`` and below 99 % of this frame's detections -- on a track missed in
        the frame before, once per run of misses. On a site emptied at low dose the network can
        report an atom for one frame; it would restart the missed-frame count and a vacancy would be
        reported frames late. The detection keeps the track's id; a second one in the run continues
        the track (an atom that is really there, seen unsure)."""
        if not len(mt):
            return np.zeros(0, bool)
        return (st.misses[mt] > 0) & ~st.weak_used[mt] & (conf[md] < thr)

    def _correct(self, st, mt, md, hop, world, atoms, conf, feats, seq) -> None:
        """Measurement update of the matched tracks and their last observations."""
        if not len(mt):
            return
        st.pos[mt], st.P[mt] = self.motion.correct(st.pos[mt], st.P[mt], world[md], hop)
        st.hits[mt] += 1
        st.misses[mt] = 0
        st.weak_used[mt] = False
        st.miss_edge_A[mt] = np.inf
        st.last_seq[mt] = seq
        st.last_px[mt] = atoms.xy_px[md]
        st.conf[mt] = conf[md]
        st.last_sp[mt] = feats["sp"][md]
        st.heavy_nb[mt] = np.minimum(feats["n_heavy"][md], 127)

    def _count_misses(self, st, mt) -> None:
        """A track predicted at (or beyond) the field edge is unobservable, not missed; one predicted
        well outside has left the field (it is parked: an atom coming back into view -- the drift
        reverses -- gets its identity back)."""
        T = len(st)
        if not T:
            return
        matched_t = np.zeros(T, bool)
        matched_t[mt] = True
        unmatched = np.flatnonzero(~matched_t)
        pred_A = self.to_frame(st.pos[unmatched])
        unobs = self._near_edge(pred_A, self.cfg.edge_unobservable_A)
        st.misses[unmatched[~unobs]] += 1
        st.miss_edge_A[unmatched] = np.minimum(st.miss_edge_A[unmatched], edge_distance(pred_A, self._shape_A, self._left_out))
        self.left_field[unmatched] = self._near_edge(pred_A, -self.cfg.border_margin_A)

    def _births(self, st, mt, md, world, xy_A, atoms, conf, feats, seq, shift) -> np.ndarray:
        """New tracks for unmatched detections; returns the track row of every detection."""
        cfg = self.cfg
        N = len(xy_A)
        det_track = np.full(N, -1, np.int64)           # row of the track per detection
        det_track[md] = mt
        newd = np.flatnonzero(det_track < 0)
        if len(newd):
            first = self._frames == 1
            edge = self._near_edge(xy_A[newd], cfg.border_margin_A + float(np.hypot(*shift)))
            ids = np.arange(self._next_id, self._next_id + len(newd), dtype=np.int64)
            self._next_id += len(newd)
            sl = st.append(len(newd), id=ids, pos=world[newd], P=np.full(len(newd), self.motion.measurement_var),
                           anchor=world[newd], last_px=atoms.xy_px[newd], conf=conf[newd], last_sp=feats["sp"][newd],
                           heavy_nb=np.minimum(feats["n_heavy"][newd], 127),
                           born_seq=seq, last_seq=seq, hits=1, misses=0,
                           confirmed=cfg.confirm_frames <= 1, initial=first, edge_born=edge & ~first)
            det_track[newd] = np.arange(sl.start, sl.stop)
        T = len(st)
        self.left_field = np.concatenate([self.left_field, np.zeros(T - len(self.left_field), bool)])
        return det_track

    def _snapshot(self, chem: Chemistry, seq: int, t_acquired: float, world: np.ndarray,
                  unsure_below: float = 0.0) -> TrackSnapshot:
        """What the event machines see of this frame (plain data; engine.track.snapshot)."""
        st, ps = self.store, self._ps or 1.0
        k, n = (int(v) for v in self.ecfg.k_of_n)
        pred = self.to_frame(st.pos)
        centres = np.asarray([d.centre_px for d in chem.defects or []], float).reshape(-1, 2)
        at_border = self._near_edge(pred, self.cfg.border_margin_A)
        return TrackSnapshot(
            store=st, seq=seq, t_acquired=t_acquired, k=k, n=n, min_confidence=float(self.ecfg.min_confidence),
            col=self._col, window_cols=self._window_cols(n), ring_seq=self.ring_seq, ring_t=self.ring_t,
            pixel_size_A=ps, formula_names={v: kk for kk, v in self._formula_codes.items()},
            pred_frame_A=pred, anchor_frame_A=self.to_frame(st.anchor),
            at_border=at_border,
            # unseen near the edge in any frame since last seen (the drift may have carried it inward)
            in_exclusion=at_border | (st.miss_edge_A < self.cfg.border_margin_A),
            left_field=self.left_field, revived_rows=self.revived_rows,
            defect_world_A=self.to_world(centres * ps), world_A=world,
            rotor_min_deg=float(self.ecfg.rotor_min_deg), motif_classes_raised=self.motif_classes_raised,
            unsure_below=float(unsure_below))

    # ------------------------------------------------------------------------------ coordinates
    def to_frame(self, world_A: np.ndarray) -> np.ndarray:
        """World (drift-corrected) angstrom -> this frame's angstrom (the motion model's drift)."""
        return self.motion.to_frame(world_A)

    def to_world(self, frame_A: np.ndarray) -> np.ndarray:
        """This frame's angstrom -> world angstrom (inverse of :meth:`to_frame`)."""
        return self.motion.to_world(frame_A)

    # ------------------------------------------------------------------------------ pieces
    def _near_edge(self, xy_A: np.ndarray, margin_A: float) -> np.ndarray:
        return near_edge(xy_A, self._shape_A, margin_A, self._left_out)

    def _track_species(self, st: TrackStore) -> np.ndarray:
        """Debounced species, or the last observed species while not yet decided."""
        s = st.sp_state.copy()
        unk = s == UNKNOWN
        s[unk] = st.last_sp[unk]
        return s

    def _assign(self, st: TrackStore, tree: cKDTree, xy_A: np.ndarray, sp: np.ndarray):
        cfg = self.cfg
        G = self.motion.gate_cost
        T = len(st)
        pred = self.to_frame(st.pos)                       # predictions in this frame's angstrom
        S = self.motion.innovation_var(st.P)
        tsp = self._track_species(st)
        gate = cfg.max_speed_A_per_frame
        # parked tracks (predicted outside the field) cannot match: leave them out of the query
        vis = np.flatnonzero(~self._near_edge(pred, -gate))
        d, j = tree.query(pred[vis], k=2, distance_upper_bound=gate)
        ok = np.isfinite(d)
        ti = vis[np.nonzero(ok)[0]]
        dj = j[ok]
        dd = d[ok]
        cost = dd * dd / S[ti]
        is_hop = np.zeros(len(ti), bool)
        heavy = np.flatnonzero((tsp != C) & (tsp != UNKNOWN))
        if len(heavy) and cfg.hop_radius_A > gate:
            hd, hj = tree.query(pred[heavy], k=32, distance_upper_bound=cfg.hop_radius_A)
            hok = np.isfinite(hd) & (hd > gate)
            hti = np.broadcast_to(heavy[:, None], hd.shape)[hok]
            hdj = hj[hok]
            same = sp[hdj] != C                            # heavy tracks hop only onto heavy atoms
            ti = np.concatenate([ti, hti[same]])
            dj = np.concatenate([dj, hdj[same]])
            # the nearer of two candidate sites wins (a rotating cluster keeps its identities)
            hop_d = hd[hok][same]
            hop_cost = cfg.hop_cost * G * (0.8 + 0.2 * hop_d / cfg.hop_radius_A)
            # the pivot of a cluster (bonded to 2+ heavy atoms) stays while its ring turns
            hop_cost += np.where(st.heavy_nb[hti[same]] >= 2, cfg.pivot_hop_cost * G, 0.0)
            cost = np.concatenate([cost, hop_cost])
            is_hop = np.concatenate([is_hop, np.ones(int(same.sum()), bool)])
        known = tsp[ti] != UNKNOWN
        # C <-> heavy is a real change (or a dim Si); Si <-> other is the finder's intensity call
        cls_change = (sp[dj] != C) != (tsp[ti] != C)
        cost = cost + np.where(known & cls_change, cfg.species_mismatch_cost * G,
                               np.where(known & (sp[dj] != tsp[ti]), cfg.heavy_mismatch_cost * G, 0.0))
        # a tentative track (maybe a spurious detection) loses ties against an established one
        cost = cost + np.where(st.confirmed[ti], 0.0, cfg.tentative_cost * G)
        mt, md = assign.match(T, len(xy_A), ti, dj, cost, G / 2, G / 2)
        # was the chosen edge a hop?  (edges are unique per (track, det) pair)
        key = ti * len(xy_A) + dj
        order = np.argsort(key)
        pos = np.searchsorted(key[order], mt * len(xy_A) + md)
        hop = is_hop[order[pos]] if len(mt) else np.zeros(0, bool)

        if hop.any():
            self._ring_rotations(pred, xy_A, tsp, mt, md, hop)
        if cfg.light_hops:
            mt, md, hop = self._light_hop_pass(st, tree, xy_A, sp, tsp, pred, mt, md, hop, G)
        return mt, md, hop

    def _ring_rotations(self, pred, xy_A, tsp, mt, md, hop) -> None:
        """Prefer a rigid rotation to a jump across a ring (in place on ``md``/``hop``).

        When a heavy track A jumps from p_A across to q_A and a same-species heavy track B sat still
        at p_B with p_A, p_B, q_A an equilateral triangle (three sites around a cluster centre), the
        images are explained equally by "A jumped across" and by "the ring turned: A -> p_B,
        B -> q_A" (a rotor step). Identical atoms cannot be told apart; the rotation is the
        physical move (and the simulator's truth), so A and B exchange detections. Rare: a loop over
        the few long hops of this frame.
        """
        tol = 0.45
        long_hops = np.flatnonzero(hop)
        if not len(long_hops):
            return
        still = np.flatnonzero(~hop & (tsp[mt] != C) & (tsp[mt] != UNKNOWN))
        if not len(still):
            return
        for i in long_hops:
            a = mt[i]
            pa, qa = pred[a], xy_A[md[i]]
            L = float(np.hypot(*(qa - pa)))
            if L < 2.0:
                continue                                   # an exchange with a neighbour, not across a ring
            b_rows = still
            if not len(b_rows):
                continue
            pb = pred[mt[b_rows]]
            ok = (np.abs(np.hypot(*(pb - pa).T) - L) < tol) & (np.abs(np.hypot(*(pb - qa).T) - L) < tol)
            ok &= np.hypot(*(xy_A[md[b_rows]] - pb).T) < tol          # B really sat still
            if ok.sum() != 1:
                continue
            j = b_rows[np.flatnonzero(ok)[0]]
            md[i], md[j] = md[j], md[i]
            hop[j] = True
            still = still[still != j]

    def _light_hop_pass(self, st, tree, xy_A, sp, tsp, pred, mt, md, hop, G):
        """Second pass for site exchanges: when a heavy track hopped, the left-over track of the atom
        it displaced may take the left-over detection sitting on the heavy atom's old site."""
        cfg = self.cfg
        if not hop.any():
            return mt, md, hop
        T, D = len(st), len(xy_A)
        free_t = np.ones(T, bool)
        free_t[mt] = False
        free_d = np.ones(D, bool)
        free_d[md] = False
        old_sites = pred[mt[hop]]                            # where the hopping heavy atoms were
        # left-over detections on those old sites
        dd, dj = tree.query(old_sites, k=2, distance_upper_bound=cfg.max_speed_A_per_frame)
        ok = np.isfinite(dd)
        cand_d = np.unique(dj[ok])
        cand_d = cand_d[free_d[cand_d]]
        if not len(cand_d):
            return mt, md, hop
        # left-over tracks (seen last frame) one bond away from such a detection
        interior = ~self._near_edge(pred, cfg.border_margin_A)
        tmask = free_t & (st.misses == 0) & (tsp != UNKNOWN) & interior
        cand_t = np.flatnonzero(tmask)
        if not len(cand_t):
            return mt, md, hop
        pairs = cKDTree(pred[cand_t]).query_ball_point(xy_A[cand_d], cfg.hop_radius_A)
        lens = np.fromiter((len(p) for p in pairs), np.int64, len(pairs))
        if not lens.sum():
            return mt, md, hop
        hdj = np.repeat(cand_d, lens)
        hti = cand_t[np.concatenate([np.asarray(p, np.int64) for p in pairs if p])]
        dist = np.linalg.norm(xy_A[hdj] - pred[hti], axis=1)
        keep = (sp[hdj] == tsp[hti]) & (dist > cfg.max_speed_A_per_frame)
        hti, hdj, dist = hti[keep], hdj[keep], dist[keep]
        if not len(hti):
            return mt, md, hop
        cost = cfg.hop_cost * G * (1.0 + dist / cfg.hop_radius_A)
        ut, ti_local = np.unique(hti, return_inverse=True)
        ud, dj_local = np.unique(hdj, return_inverse=True)
        a, b = assign.match(len(ut), len(ud), ti_local, dj_local, cost, G / 2, G / 2)
        if not len(a):
            return mt, md, hop
        return (np.concatenate([mt, ut[a]]), np.concatenate([md, ud[b]]),
                np.concatenate([hop, np.ones(len(a), bool)]))

    def _write_rings(self, st: TrackStore, det_track: np.ndarray, matched: np.ndarray, feats: dict,
                     world: np.ndarray) -> None:
        col = self._col
        rows = det_track
        sp = feats["sp"]
        heavy_raw = sp != C
        # defaults for tracks not seen this frame
        for name in ("sp", "cls", "coord", "away", "dimer", "formula", "ncoord"):
            st.ring(name)[:, col] = UNKNOWN
        st.ring("present")[:, col] = matched.astype(np.int16)
        if not len(rows):
            return
        st.ring("sp")[rows, col] = sp
        st.ring("cls")[rows, col] = (sp != C).astype(np.int8)
        # near the field edge an atom's neighbours are cut off: its environment says nothing
        env = heavy_raw & ~self._near_edge(self.to_frame(world), self.cfg.edge_exclusion_A)
        # a neighbour missed in this frame only may be a missed detection or a real loss: the heavy
        # atom's environment is WILD for this frame (it counts for a change confirmed later, but
        # cannot start one)
        coasting = np.flatnonzero(st.confirmed & (st.misses == 1))
        hv = np.flatnonzero(env)
        wild = np.zeros(len(rows), bool)
        if len(coasting) and len(hv):
            near = cKDTree(st.pos[coasting]).query(world[hv], k=1, distance_upper_bound=self.cfg.env_radius_A)[0]
            wild[hv[np.isfinite(near)]] = True
        env_val = np.where(wild, WILD, UNKNOWN)
        st.ring("ncoord")[rows, col] = np.minimum(feats["coord"], 127)
        st.ring("coord")[rows, col] = np.where(env & ~wild, np.minimum(feats["n_c"], 127), env_val)
        st.ring("formula")[rows, col] = np.where(env & ~wild, feats["formula"], env_val)
        st.ring("dimer")[rows, col] = np.where(env & ~wild, (feats["n_heavy"] > 0).astype(np.int16), env_val)
        away = np.linalg.norm(world - st.anchor[rows], axis=1) > self.cfg.hop_min_A
        st.ring("away")[rows, col] = np.where(heavy_raw, away.astype(np.int16), UNKNOWN)
        # the site follows small moves (a Si sliding into a divacancy centre and out to the other
        # site is two 0.7 A steps, not a hop); only a jump beyond hop_min_A leaves it behind
        near = rows[~away]
        st.anchor[near] = st.pos[near]

    def _remove_dead(self) -> None:
        st = self.store
        if not len(st):
            return
        gone = (self.events_logic.ended & ~self.left_field) | (st.misses > self.cfg.memory_frames)
        park = self.left_field & ~gone & (st.confirmed | st.initial)
        if park.any():
            self.parked.put(st.take(np.flatnonzero(park)))
        dead = gone | self.left_field
        if dead.any():
            st.keep(~dead)
        self._prune_parked()

    def _prune_parked(self) -> None:
        """Forget parked tracks far outside the field or parked for too long (bounded memory)."""
        pk = self.parked
        if not len(pk):
            return
        far = self._near_edge(self.to_frame(pk.pos), -self.cfg.park_forget_A)
        old = (self._last_seq or 0) - pk.last_seq > self.cfg.park_forget_frames
        if (far | old).any():
            pk.keep(~(far | old))

    def _revive_parked(self) -> None:
        """Parked tracks predicted back inside the field rejoin the live ones (same id and states,
        empty observation rings)."""
        pk = self.parked
        if not len(pk):
            return
        back = np.flatnonzero(~self._near_edge(self.to_frame(pk.pos), -self.cfg.max_speed_A_per_frame))
        if not len(back):
            return
        rows = pk.take(back)
        rows["misses"][:] = 0
        rows["weak_used"][:] = False
        rows["present_state"][:] = 1
        sl = self.store.put(rows, reset_rings=True)
        self.revived_rows = np.arange(sl.start, sl.stop)
        self.left_field = np.concatenate([self.left_field, np.zeros(sl.stop - sl.start, bool)])
        keep = np.ones(len(pk), bool)
        keep[back] = False
        pk.keep(keep)
        self.revived += sl.stop - sl.start

    # ------------------------------------------------------------------------------ queries
    def history(self, track_id: int) -> dict:
        """Raw per-frame history of a live track over the ring (oldest first): seq, species code,
        coordination (total bonds), C-neighbour count (heavy atoms), present (0/1); -1 = unknown."""
        st = self.store
        rows = np.flatnonzero(st.id == int(track_id))
        if not len(rows):
            raise KeyError(f"no live track {track_id}")
        r = rows[0]
        order = (self._col + 1 + np.arange(self.ring_len)) % self.ring_len
        valid = self.ring_seq[order] >= 0
        order = order[valid]
        return {
            "seq": self.ring_seq[order].tolist(),
            "species": st.ring("sp")[r, order].tolist(),
            "coordination": st.ring("ncoord")[r, order].tolist(),
            "n_c": st.ring("coord")[r, order].tolist(),
            "present": st.ring("present")[r, order].tolist(),
        }

    def tracks(self) -> dict:
        """A snapshot of the live tracks (plain arrays): id, x/y (px in the latest frame),
        species / coordination states, confirmed, hits, misses."""
        st = self.store
        ps = self._ps or 1.0
        frame_px = self.to_frame(st.pos) / ps
        return {"id": st.id.copy(), "x": frame_px[:, 0].copy(), "y": frame_px[:, 1].copy(),
                "species": st.sp_state.copy(), "n_c": st.coord_state.copy(),
                "confirmed": st.confirmed.copy(), "hits": st.hits.copy(), "misses": st.misses.copy()}
