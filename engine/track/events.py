"""Debounced transformation events from the tracks' raw observation rings.

Each rule is a k-of-n state machine over one ring (see :mod:`engine.track.debounce`), evaluated for
all tracks at once; only the (few) confirmed transitions become :class:`engine.types.Event` objects.

========================  ==========================================================================
kind                      rule (all states debounced k of n)
========================  ==========================================================================
``si_3_to_4``/``4_to_3``  a Si track's number of bonded C goes 3 -> 4 / 4 -> 3
``si_appeared``           a track that was not there in the first frame becomes Si (``before``:
                          ``absent``, or ``outside field`` when born at the edge), or C -> Si
                          (the machine decides C vs heavy; Si vs "other" is the majority of the
                          track's heavy observations, an intensity call that may waver)
``si_lost``               a Si track ends (missed max(k, ``memory_frames``) frames in a row;
                          ``after``: ``ejected``, or ``left field`` near the edge), or Si -> C
``si_hop``                a Si track sits more than ``max_speed_A_per_frame`` from its site for k of
                          n frames (the new site becomes its site)
``rotor``                 a defect with 2+ heavy atoms turns: the orientation of the set of its heavy
                          atoms (engine/track/rotor.py) changes by more than ``rotor_min_deg``, k of
                          n frames at the same place (heavy members hopping together raise no hop)
``dimer_formed/broken``   a Si track becomes / stops being bonded to another heavy atom (one event
                          per pair)
``formula_changed``       the heavy-atom part of a Si's defect-group formula changes (``Si1`` ->
                          ``Si2`` of Si1C3 -> Si2C6) with no other event of that track in the last n
                          frames explaining it (dimer, hop, coordination)
``vacancy_created``       a confirmed C track ends away from the field edge, no atom took its site,
                          and it was not bonded to a heavy atom (then the Si's event reports it)
``tracks_reset``          (bookkeeping) more than max(8, 1 %) of the confirmed tracks end in one frame
                          away from the edge: the tracker lost the field; raised instead of a
                          ``vacancy_created`` / ``si_lost`` per track
``new_motif``             a defect of a new class (engine/track/motif_class.py: not a named motif, not
                          a known kind) is present at the same place k of n frames; once per class
                          per session (``after`` names the class, ``atom_ids`` its atoms)
========================  ==========================================================================

Events are not raised for tracks born in the series' first frame adopting their first state, and
not below ``EventConfig.min_confidence`` (confidence = fraction of the window agreeing x the track's
last detection confidence).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.spatial import cKDTree

from engine.track import debounce
from engine.track.motif_class import motif_class
from engine.track.rotor import RotorMachine
from engine.track.debounce import UNKNOWN
from engine.track.snapshot import TrackSnapshot
from engine.types import C, OTHER, SI, SPECIES, Chemistry, Event
from stemwatch.config import TrackingConfig

#: the two Si of a dimer (or of a pair about to bond) are closer than this (A)
DIMER_PARTNER_A = 3.5
#: a new motif must be seen again within this distance (A, drift-corrected) to count
MOTIF_RADIUS_A = 1.5
#: more interior tracks than this (and than this fraction of the confirmed tracks) ending in one frame
#: is the tracker losing the field, not atoms leaving: a bookkeeping "tracks_reset" event instead
MASS_END_MIN = 8
#: a vacancy's former neighbours (within this distance, A) must still be tracked and found
VACANCY_NB_A = 1.8
MASS_END_FRACTION = 0.01

_SP_NAMES = {UNKNOWN: "unknown", **{i: s for i, s in enumerate(SPECIES)}}


class _Frame:
    """One frame's work: the snapshot, the events so far, and how an event is made."""

    def __init__(self, snap: TrackSnapshot):
        self.snap, self.st = snap, snap.store
        self.k, self.n, self.cols, self.col = snap.k, snap.n, snap.window_cols, snap.col
        self.seq, self.t, self.ps = snap.seq, snap.t_acquired, snap.pixel_size_A
        self.out: list[Event] = []
        self.is_si = np.zeros(0, bool)
        self.heavy_rows = np.zeros(0, np.int64)

    def conf_of(self, rows, count):
        return (np.asarray(count, float) / self.n) * self.st.conf[rows].astype(float)

    def first(self, ring: np.ndarray, row: int, value: int) -> int:
        return debounce.first_seen(ring[row, self.cols], self.snap.ring_seq[self.cols], value)

    def emit(self, kind, row, first, before, after, confidence, xy_px=None) -> None:
        self.st.last_event_seq[row] = self.seq
        if confidence >= self.snap.min_confidence:
            self.out.append(self._event(kind, row, first, before, after, confidence, xy_px))

    def _event(self, kind: str, row: int, first_seq: int, before: str, after: str, confidence: float,
               xy_px=None) -> Event:
        snap, st, t, ps = self.snap, self.st, self.t, self.ps
        x, y = (st.last_px[row] if xy_px is None else xy_px)
        t_first = t
        if first_seq >= 0:
            hit = np.flatnonzero(snap.ring_seq == first_seq)
            if len(hit):
                t_first = float(snap.ring_t[hit[0]])
        return Event(frame=int(self.seq), t_acquired=float(t), latency_s=float(t - t_first), kind=kind,
                     atom_id=int(st.id[row]), x=float(x), y=float(y), x_A=float(x * ps), y_A=float(y * ps),
                     before=before, after=after, confidence=float(confidence), first_frame=int(first_seq))


class EventLogic:
    """Per-series event state (reset with the tracker); one :meth:`step` per frame.

    tracking : the :class:`stemwatch.config.TrackingConfig` (``memory_frames``,
    ``max_speed_A_per_frame``); everything about the frame comes in the :class:`TrackSnapshot`.
    """

    def __init__(self, tracking: TrackingConfig | None = None):
        self.cfg = tracking or TrackingConfig()
        self.ended = np.zeros(0, bool)
        self._recent_pairs: deque = deque(maxlen=256)     # (seq, kind, x_A, y_A) of dimer events
        self._motif_seen: dict[str, deque] = {}
        self._motif_raised: set[str] = set()
        self.rotor = RotorMachine()                        # per-place orientation states (rotor events)

    # -------------------------------------------------------------------------------------- main
    def step(self, snap: TrackSnapshot, chem: Chemistry, det_track: np.ndarray, tree) -> list:
        """Run every machine for this frame; return the events and set ``self.ended`` (T,) bool
        (tracks that end now). ``det_track``: the track row of each atom; ``tree``: KD-tree of the
        frame's atoms (A) or None."""
        T = len(snap.store)
        self.ended = np.zeros(T, bool)
        if T == 0:
            return []
        f = _Frame(snap)
        self._species(f)
        self._coordination(f)
        self._hops(f, chem, det_track)
        self._rotor(f, chem, det_track)
        self._dimers(f)
        self._formula(f)
        self._new_motifs(f, chem, det_track)
        self.ended = self._presence(f, tree, det_track)
        return f.out

    # -------------------------------------------------------------------------------------- rules
    def _species(self, f: _Frame) -> None:
        """The machine decides C vs heavy; a heavy track is Si or "other" by the majority of its heavy
        observations (the finder's Si/other call rests on intensity and may waver)."""
        st, cols, col, k, n, emit = f.st, f.cols, f.col, f.k, f.n, f.emit
        ring = st.ring("cls")
        prev_sp = st.sp_state.copy()
        res = debounce.step(ring, st.cls_state, ring[:, col], cols, k)
        heavy = np.flatnonzero(st.cls_state == 1)
        sp_state = np.where(st.cls_state == 0, C, np.where(st.cls_state == 1, SI, UNKNOWN)).astype(np.int16)
        if len(heavy):
            raw = st.ring("sp")[heavy]
            sp_state[heavy] = np.where((raw == OTHER).sum(1) > (raw == SI).sum(1), OTHER, SI)
        st.sp_state[:] = sp_state
        for r, b, a, c in zip(res.rows, res.before, res.after, f.conf_of(res.rows, res.count)):
            first = f.first(ring, r, a)
            if a == 1 and st.sp_state[r] == SI:
                emit("si_appeared", r, first, "C", "Si", c)
            elif b == 1 and prev_sp[r] == SI:
                emit("si_lost", r, first, "Si", "C", c)
        for r in res.adopted:
            if st.sp_state[r] == SI and not st.initial[r]:
                first = f.first(ring, r, 1)
                count = int((ring[r, cols] == 1).sum())
                emit("si_appeared", r, first, "outside field" if st.edge_born[r] else "absent", "Si",
                     count / n * float(st.conf[r]))
        f.is_si = st.sp_state == SI
        # environment and hop machines only matter for heavy tracks (or tracks just seen heavy)
        f.heavy_rows = np.flatnonzero((st.cls_state == 1) | ((st.last_sp != C) & (st.last_sp != UNKNOWN)))
        for r in f.snap.revived_rows:                  # a parked Si drifted back into view
            if f.is_si[r]:
                emit("si_appeared", int(r), f.seq, "outside field", "Si", float(st.conf[r]))

    def _coordination(self, f: _Frame) -> None:
        """C neighbours of a Si: 3 -> 4 and 4 -> 3."""
        st = f.st
        ring = st.ring("coord")
        res = debounce.step(ring, st.coord_state, ring[:, f.col], f.cols, f.k, rows=f.heavy_rows)
        for r, b, a, c in zip(res.rows, res.before, res.after, f.conf_of(res.rows, res.count)):
            if not f.is_si[r]:
                continue
            if (b, a) in ((3, 4), (4, 3)):
                f.emit(f"si_{b}_to_{a}", r, f.first(ring, r, a), f"{b}-fold", f"{a}-fold", c)

    def _hops(self, f: _Frame, chem: Chemistry, det_track: np.ndarray) -> None:
        """Hops, and rotors: several heavy members of one defect group hop together."""
        st, seq = f.st, f.seq
        T = len(st)
        ring = st.ring("away")
        zero = np.zeros(T, np.int16)
        res = debounce.step(ring, zero, ring[:, f.col], f.cols, f.k, rows=f.heavy_rows)
        if not len(res.rows):
            return
        rows = res.rows
        group = self._hop_groups(rows, T, chem, det_track)
        confs = f.conf_of(rows, res.count)
        done = np.zeros(len(rows), bool)
        for g in np.unique(group[group >= 0]):
            m = np.flatnonzero(group == g)
            if len(m) >= 2:
                # several heavy members of one defect "hopped" together: their tracks swapped or the
                # defect turned; whether it turned is the rotor machine's call (_rotor), not an si_hop
                # of each member
                done[m] = True
                for r in rows[m]:
                    st.last_event_seq[r] = seq
        for i in np.flatnonzero(~done):
            r = rows[i]
            if f.is_si[r]:
                a_px = f.snap.anchor_frame_A[r] / f.ps
                f.emit("si_hop", r, f.first(ring, r, 1), f"site ({a_px[0]:.1f}, {a_px[1]:.1f}) px",
                       f"site ({st.last_px[r][0]:.1f}, {st.last_px[r][1]:.1f}) px", confs[i])
        st.anchor[rows] = st.pos[rows]
        st.last_hop_seq[rows] = seq
        ring[rows] = UNKNOWN

    def _rotor(self, f: _Frame, chem: Chemistry, det_track: np.ndarray) -> None:
        """A heavy-atom defect's orientation (from the set of its heavy atoms, not from track
        identities) changed by more than ``rotor_min_deg``, debounced k of n per place."""
        if not chem.defects or not len(det_track):
            return
        st, snap = f.st, f.snap
        steps = self.rotor.step(chem.defects, chem.atoms.species, snap.world_A, f.seq, f.k, f.n,
                                float(snap.rotor_min_deg))
        for stp in steps:
            dfc = chem.defects[stp.defect]
            r0 = int(det_track[stp.pivot])
            if r0 < 0:
                continue
            n_out = len(f.out)
            f.emit("rotor", r0, stp.first_seq, f"{dfc.formula} at {stp.before_deg:.0f} deg",
                   f"{dfc.formula} at {stp.after_deg:.0f} deg", stp.count / f.n * float(st.conf[r0]),
                   xy_px=dfc.centre_px)
            if len(f.out) > n_out:
                f.out[-1].angle_before_deg = round(stp.before_deg, 1)
                f.out[-1].angle_after_deg = round(stp.after_deg, 1)
            mem = det_track[np.asarray(dfc.members, np.int64)]
            st.last_event_seq[mem[mem >= 0]] = f.seq

    @staticmethod
    def _hop_groups(rows: np.ndarray, T: int, chem: Chemistry, det_track: np.ndarray) -> np.ndarray:
        """The defect group of each hopping track's atom in this frame (-1: none)."""
        group = np.full(len(rows), -1, np.int64)
        if chem.atom_defect is not None and len(chem.atom_defect) == len(det_track) and len(det_track):
            row_to_det = np.full(T, -1, np.int64)
            row_to_det[det_track] = np.arange(len(det_track))
            d = row_to_det[rows]
            ad = np.asarray(chem.atom_defect, np.int64)
            group = np.where(d >= 0, ad[np.maximum(d, 0)], -1)
        return group

    def _dimers(self, f: _Frame) -> None:
        """One event per pair, on the Si that moved when one did."""
        st, seq, n = f.st, f.seq, f.n
        ring = st.ring("dimer")
        res = debounce.step(ring, st.dimer_state, ring[:, f.col], f.cols, f.k, rows=f.heavy_rows)
        hopped = np.flatnonzero(f.is_si & (st.last_hop_seq >= seq - n))
        for r, b, a, c in zip(res.rows, res.before, res.after, f.conf_of(res.rows, res.count)):
            if not f.is_si[r]:
                continue
            st.last_event_seq[r] = seq
            kind = "dimer_formed" if a == 1 else "dimer_broken"
            re_ = r
            if len(hopped):
                dh = np.hypot(*(st.pos[hopped] - st.pos[r]).T)
                if dh.min() < DIMER_PARTNER_A:
                    re_ = int(hopped[np.argmin(dh)])
            xy = st.pos[re_]
            dup = any(s_ >= seq - n and kk == kind and np.hypot(xy[0] - x0, xy[1] - y0) < DIMER_PARTNER_A
                      for s_, kk, x0, y0 in self._recent_pairs)
            if dup:
                continue
            self._recent_pairs.append((seq, kind, xy[0], xy[1]))
            f.emit(kind, re_, f.first(ring, r, a), "separate" if a == 1 else "dimer",
                   "dimer" if a == 1 else "separate", c)

    def _formula(self, f: _Frame) -> None:
        """The heavy-atom formula of a Si's defect group, when no other event of the track explains it."""
        st = f.st
        ring = st.ring("formula")
        res = debounce.step(ring, st.formula_state, ring[:, f.col], f.cols, f.k, rows=f.heavy_rows)
        if len(res.rows):
            names = f.snap.formula_names
            for r, b, a, c in zip(res.rows, res.before, res.after, f.conf_of(res.rows, res.count)):
                if not f.is_si[r] or st.last_event_seq[r] >= f.seq - f.n:
                    continue
                f.emit("formula_changed", r, f.first(ring, r, a), names.get(int(b), "?"),
                       names.get(int(a), "?"), c)

    def _new_motifs(self, f: _Frame, chem: Chemistry, det_track: np.ndarray) -> None:
        """A defect of a new *class* (engine/track/motif_class.py: not a named motif, not a kind the
        lattice graph knows), present at the same place (drift-corrected, within MOTIF_RADIUS_A) in k
        of the last n frames -- a motif made by noise moves around. Once per class per session (the
        tracker keeps the set across series: ``snapshot.motif_classes_raised``)."""
        st, seq, k, n = f.st, f.seq, f.k, f.n
        raised = f.snap.motif_classes_raised
        for i, dfc in enumerate(chem.defects or []):
            cls = motif_class(dfc)
            if cls is None or cls in raised:
                continue
            centre_w = f.snap.defect_world_A[i]
            seen = self._motif_seen.setdefault(cls, deque(maxlen=8 * n))
            seen.append((seq, centre_w))
            recent = {s for s, c in seen if s > seq - n and np.hypot(*(c - centre_w)) < MOTIF_RADIUS_A}
            if len(recent) >= k:
                members = np.asarray(dfc.members, np.int64)
                if not len(members):
                    continue
                rows = det_track[members]
                rows = rows[rows >= 0]
                if not len(rows):
                    continue
                raised.add(cls)
                r = int(rows[np.argmax(st.sp_state[rows] != C)])
                n_out = len(f.out)
                f.emit("new_motif", r, int(min(recent)), "unseen",
                       f"{dfc.motif} ({cls[0]} {cls[1]})".strip(), len(recent) / n, xy_px=dfc.centre_px)
                if len(f.out) > n_out:
                    f.out[-1].atom_ids = [int(v) for v in st.id[rows]]

    def _presence(self, f: _Frame, tree, det_track=None) -> np.ndarray:
        """A track ends after max(k, memory_frames) missed frames in a row (random missed detections
        at rate p end a track with probability p^m per frame, not ~C(n,k) p^k). Returns ``ended``."""
        st, snap = f.st, f.snap
        ring = st.ring("present")
        ended = st.misses >= max(f.k, self.cfg.memory_frames)
        left = snap.left_field
        ended |= left
        st.present_state[ended] = 0
        ended &= st.confirmed
        rows = np.flatnonzero(ended)
        # only the Si and the interior, Si-free C among the ending tracks can make an event
        sp_end = st.sp_state[rows]
        rows = rows[(sp_end == SI) | ((sp_end == C) & ~left[rows] & (st.heavy_nb[rows] == 0))]
        if len(rows):
            pred_all = snap.pred_frame_A[rows]
            # an atom vanishing near the edge is more often cut by it than ejected (in_exclusion: it
            # went unseen while near the edge, wherever the drift has carried it since)
            c_edge = snap.in_exclusion[rows]
            edge_all = left[rows] | snap.at_border[rows] | c_edge
            # Many tracks ending in the same frame is the tracker losing the field (a registration
            # failure: the drift jumped, a glitch frame), not many atoms leaving: one bookkeeping
            # "tracks_reset" event instead of a vacancy / ejection per track.
            n_end = len(rows)
            if n_end > max(MASS_END_MIN, MASS_END_FRACTION * int(st.confirmed.sum())):
                r0 = int(rows[0])
                f.emit("tracks_reset", r0, f.first(ring, r0, 0), f"{n_end} tracks", "lost at once", 1.0,
                       xy_px=tuple(np.mean(pred_all, 0) / f.ps))
                rows = rows[:0]
            site_tree = None
            for r, pred_A, edge, ce in zip(rows, pred_all, edge_all, c_edge):
                xy_px = pred_A / f.ps
                first = f.first(ring, r, 0)
                count = int((ring[r, f.cols] == 0).sum())
                if st.sp_state[r] == SI:
                    f.emit("si_lost", r, first, "Si", "left field" if edge else "ejected", count / f.n, xy_px=xy_px)
                elif not (edge or ce) and not st.conf[r] < snap.unsure_below:
                    # C (a Si neighbour's own event reports it): a vacancy is a site emptied of an atom the
                    # network was sure of; one last seen unsure (the tracker's rejoin rule) was a column it
                    # barely made out -- under contamination, 0.36-0.95 where the frame's 1st percentile
                    # was 0.97-0.99; the true vacancies of the development alarm set were last seen at >= 0.9999
                    on_site = tree.query_ball_point(pred_A, self.cfg.max_speed_A_per_frame) if tree is not None else []
                    if det_track is not None:              # (its own unsure detection, counted as a miss)
                        on_site = [j for j in on_site if det_track[j] != r]
                    if len(on_site):
                        continue                           # another atom sits on the site
                    # a vacancy is one empty site in an intact, registered lattice: its neighbours
                    # (confirmed tracks within VACANCY_NB_A) are still there and were found this
                    # frame; when they are missed too, the field was misregistered or badly imaged
                    if site_tree is None:
                        alive = np.flatnonzero(st.confirmed & ~ended)
                        site_tree = (alive, cKDTree(st.pos[alive])) if len(alive) else (alive, None)
                    alive, kd = site_tree
                    nb = alive[kd.query_ball_point(st.pos[r], VACANCY_NB_A)] if kd is not None else alive[:0]
                    if len(nb) < 2 or np.any(st.misses[nb] > 0):
                        continue
                    f.emit("vacancy_created", r, first, "C", "vacancy", count / f.n, xy_px=xy_px)
        return ended
