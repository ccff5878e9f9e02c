"""The one event scorer: reported events against the simulator's truth events.

Used by ``stemwatch evaluate`` (:func:`lab.evaluate.evaluate`, one ``analyze`` output), by the soak
(:func:`lab.soak.score_series`, each series of a live run, with frames dropped for analysis) and so
by every table built on them (docs/tracking.md's held-out movies, ``stemwatch bench soak``).

The rule, in *analysed* frames (``analysed``: the sorted frame seqs the analyzer produced a result
for; with nothing dropped this is every frame and "analysed frames" are frames):

* a truth event at frame f first shows in the first analysed frame with seq >= f (index i_f); a
  report of the same kind at analysed index i_r with 0 <= i_r - i_f <= ``max_latency`` and within
  ``radius_A`` of where the truth atom is in the report's frame finds it (the earliest, then the
  nearest, unused report; each report used once; countable truth events are served first);
* truth events with i_f in the first ``warmup`` or the last ``end_margin`` analysed frames cannot be
  confirmed by an online k-of-n detector inside the movie: matched (a report of one is not
  false) but counted apart, not in recall;
* reports about atoms entering or leaving the field (``before`` = "outside field" / ``after`` =
  "left field") are field bookkeeping, counted apart; the simulator has no motifs, so a
  ``new_motif`` report on a truth defect atom is "plausible", elsewhere false;
* a truth flicker (one dim frame, no change; :data:`engine.types.GT_ONLY_KINDS`) whose frame was
  analysed raises an alarm when any report lies within the latency window and radius.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.types import GT_ONLY_KINDS
from lab.radii import END_MARGIN_FRAMES, EVENT_RADIUS_A, MAX_LATENCY_FRAMES, WARMUP_FRAMES

FIELD_BEFORE = ("outside field",)
FIELD_AFTER = ("left field",)


@dataclass
class TruthEvents:
    """What the scorer needs of a movie's truth, indexed once (plain data).

    events : truth transformation events (dicts with ``frame``, ``atom_id``, ``kind``, optionally
    ``x``/``y`` px); flickers : the GT-only events; pos : seq -> {atom id: (x, y) px};
    origins : seq -> (2,) sample coordinate (A) of pixel (0, 0) (the field's drift) or None;
    defect_xy : seq -> (M, 2) px of atoms labelled other than pristine lattice.
    """

    pixel_size_A: float
    events: list
    flickers: list
    pos: dict
    origins: dict | None = None
    defect_xy: dict = field(default_factory=dict)

    @classmethod
    def from_truth(cls, truth) -> "TruthEvents":
        """From a :class:`lab.evaluate.Truth`."""
        pos = {int(tf.seq): {int(i): (float(x), float(y)) for i, (x, y) in zip(tf.ids, tf.xy_px)}
               for tf in truth.frames}
        defects = {int(tf.seq): tf.xy_px[tf.label != 0] for tf in truth.frames if tf.label is not None}
        return cls(pixel_size_A=float(truth.pixel_size_A),
                   events=[e for e in truth.events if e["kind"] not in GT_ONLY_KINDS],
                   flickers=[e for e in truth.events if e["kind"] in GT_ONLY_KINDS],
                   pos=pos, origins=truth.origins, defect_xy=defects)

    def event_position(self, ev: dict):
        """Where the event happened (px): as the simulator recorded it, else the event atom in the
        nearest frame (earlier first: an ejected atom exists only before its event)."""
        if ev.get("x") is not None and ev.get("y") is not None:
            return np.array([float(ev["x"]), float(ev["y"])])
        g, f = int(ev["atom_id"]), int(ev["frame"])
        for df in [0] + [s * k for k in range(1, 31) for s in (-1, 1)]:
            xy = self.pos.get(f + df, {}).get(g)
            if xy is not None:
                return np.asarray(xy)
        return None

    def position_at(self, ev: dict, xy, frame: int):
        """Where the event's atom is in ``frame`` (a report comes a few frames later and the field
        drifts): the truth atom's position then, else the event position moved as its truth
        neighbours moved (a frame scanned while the drift reversed is sheared by up to 4 A from its
        top rows to its bottom ones: one origin per frame misplaces a vacated site by that much),
        else moved with the field's origin."""
        here = self.pos.get(int(frame), {}).get(int(ev["atom_id"]))
        if here is not None:
            return np.asarray(here)
        if xy is None:
            return None
        o, f0 = self.origins, int(ev["frame"])
        moved = self._moved_with_neighbours(xy, f0, int(frame))
        if moved is not None:
            return moved
        if o is not None and f0 in o and frame in o:
            return np.asarray(xy, float) - (o[frame] - o[f0]) / self.pixel_size_A
        return xy

    def _moved_with_neighbours(self, xy, f0: int, frame: int, radius_A: float = 3.0, n: int = 6):
        """``xy`` (px in frame ``f0``) moved by the mean displacement of the nearest (up to ``n``,
        within ``radius_A``) truth atoms present in both frames; None when there are fewer than 2."""
        a, b = self.pos.get(f0), self.pos.get(frame)
        if not a or not b:
            return None
        ids = [g for g in a if g in b]
        if len(ids) < 2:
            return None
        pa = np.array([a[g] for g in ids])
        d = np.hypot(*(pa - np.asarray(xy, float)).T)
        near = np.argsort(d)[:n]
        near = near[d[near] <= radius_A / self.pixel_size_A]
        if len(near) < 2:
            return None
        pb = np.array([b[ids[i]] for i in near])
        return np.asarray(xy, float) + (pb - pa[near]).mean(0)


@dataclass
class EventMatch:
    """The scorer's result for one run (plain data; :meth:`report` is ``stemwatch evaluate``'s form)."""

    truth: int = 0                    # countable truth events
    found: int = 0                    # of those, found
    matched: int = 0                  # reports that match a truth event (countable or not)
    reported: int = 0                 # transformation reports (field events and plausible motifs apart)
    unconfirmable_truth: int = 0
    unconfirmable_found: int = 0
    latencies: list = field(default_factory=list)        # analysed frames, per found countable event
    missed: list = field(default_factory=list)           # countable truth events not found
    false: list = field(default_factory=list)            # reports that match nothing
    per_kind: dict = field(default_factory=dict)
    flickers: int = 0
    flicker_alarms: int = 0
    field_events: int = 0
    new_motif_reports: int = 0
    new_motif_on_truth_defect: int = 0
    scored: list = field(default_factory=list)           # the reports scored (right unless in ``false``)

    def report(self, n_frames: int, max_latency: int, radius_A: float, warmup: int, end_margin: int) -> dict:
        lat = self.latencies
        return {
            "truth_events": self.truth, "reported": self.reported, "found": self.found,
            "recall": self.found / self.truth if self.truth else None,
            "unconfirmable_truth_events": self.unconfirmable_truth, "unconfirmable_found": self.unconfirmable_found,
            "warmup_frames": warmup, "end_margin_frames": end_margin,
            "precision": self.matched / self.reported if self.reported else None,
            "latency_frames_mean": float(np.mean(lat)) if lat else None,
            "latency_frames_max": int(np.max(lat)) if lat else None,
            "false_events": len(self.false), "false_per_1000_frames": 1e3 * len(self.false) / max(1, n_frames),
            "flickers": self.flickers, "flicker_alarms": self.flicker_alarms,
            "field_events": self.field_events, "new_motif_reports": self.new_motif_reports,
            "new_motif_on_truth_defect": self.new_motif_on_truth_defect,
            "per_kind": self.per_kind,
            "missed": self.missed[:50],
            "false": [{k: h.get(k) for k in ("frame", "kind", "atom_id", "x", "y", "before", "after")}
                      for h in self.false[:50]],
            "max_latency_frames": max_latency, "event_radius_A": radius_A,
        }


def _split_reports(te: TruthEvents, reports: list, r_px: float, m: EventMatch) -> list:
    """The reports that are scored: field events and plausible new motifs are counted apart."""
    field_ev = [e for e in reports if e.get("before") in FIELD_BEFORE or e.get("after") in FIELD_AFTER
                or e.get("category") == "bookkeeping"]        # bookkeeping is never a transformation
    hyp = [e for e in reports if e not in field_ev and e.get("kind") != "fov_jump"]   # bookkeeping, not physics
    motifs = [e for e in hyp if e["kind"] == "new_motif"]
    hyp = [e for e in hyp if e["kind"] != "new_motif"]
    for e in motifs:
        dx = te.defect_xy.get(int(e["frame"]))
        if dx is not None and len(dx) and np.min(np.hypot(dx[:, 0] - e["x"], dx[:, 1] - e["y"])) <= r_px:
            m.new_motif_on_truth_defect += 1
        else:
            hyp.append(e)
    m.field_events, m.new_motif_reports = len(field_ev), len(motifs)
    return hyp


def _best_report(te, e, hyp, used, i_f, idx_of, max_latency, r_px):
    """Index of the unused report of ``e``'s kind that finds it (earliest, then nearest), and its key."""
    xy = te.event_position(e)
    best, best_key = -1, None
    for j, h in enumerate(hyp):
        if used[j] or h["kind"] != e["kind"]:
            continue
        i_r = idx_of.get(int(h["frame"]))
        if i_r is None or not 0 <= i_r - i_f <= max_latency:
            continue
        at = te.position_at(e, xy, int(h["frame"]))
        dist = float(np.hypot(h["x"] - at[0], h["y"] - at[1])) if at is not None else 0.0
        if dist > r_px:
            continue
        key = (i_r - i_f, dist)
        if best_key is None or key < best_key:
            best, best_key = j, key
    return best, best_key


def _flicker_alarms(te, hyp, analysed, idx_of, max_latency, r_px, m: EventMatch) -> None:
    for e in te.flickers:
        i_f = int(np.searchsorted(analysed, int(e["frame"])))
        if i_f >= len(analysed) or analysed[i_f] != int(e["frame"]):
            continue                       # the dim frame itself was not analysed
        m.flickers += 1
        xy = te.event_position(e)

        def near(h):
            at = te.position_at(e, xy, int(h["frame"]))
            return at is None or np.hypot(h["x"] - at[0], h["y"] - at[1]) <= r_px

        if any(0 <= idx_of.get(int(h["frame"]), -10**9) - i_f <= max_latency and near(h) for h in hyp):
            m.flicker_alarms += 1


def score_events(te: TruthEvents, reports: list, analysed, max_latency: int = MAX_LATENCY_FRAMES,
                 radius_A: float = EVENT_RADIUS_A, warmup: int = WARMUP_FRAMES,
                 end_margin: int = END_MARGIN_FRAMES) -> EventMatch:
    """Score ``reports`` (dicts: ``frame`` (seq), ``kind``, ``x``, ``y`` px, ``before``, ``after``,
    optionally ``atom_id``) against ``te`` given the ``analysed`` frame seqs (module docstring)."""
    m = EventMatch()
    analysed = np.asarray(sorted({int(s) for s in analysed}), np.int64)
    n = len(analysed)
    r_px = radius_A / te.pixel_size_A
    hyp = _split_reports(te, reports, r_px, m)
    idx_of = {int(s): i for i, s in enumerate(analysed)}
    used = np.zeros(len(hyp), bool)
    timed = []
    for e in te.events:
        f = int(e["frame"])
        i_f = int(np.searchsorted(analysed, f))
        if n == 0 or f < analysed[0] or i_f >= n:
            continue                       # before the first or after the last analysed frame
        timed.append((i_f, e))
    countable = [warmup <= i_f <= n - 1 - end_margin for i_f, _ in timed]
    for (i_f, e), ok in sorted(zip(timed, countable), key=lambda t: (not t[1], int(t[0][1]["frame"]))):
        pk = m.per_kind.setdefault(e["kind"], {"truth": 0, "found": 0, "reported": 0})
        best, best_key = _best_report(te, e, hyp, used, i_f, idx_of, max_latency, r_px)
        if best >= 0:
            used[best] = True
        if ok:
            pk["truth"] += 1
            m.truth += 1
            if best >= 0:
                pk["found"] += 1
                m.found += 1
                m.latencies.append(best_key[0])
            else:
                m.missed.append({"frame": int(e["frame"]), "kind": e["kind"], "atom_id": int(e["atom_id"])})
        else:
            m.unconfirmable_truth += 1
            m.unconfirmable_found += int(best >= 0)
    for h in hyp:
        m.per_kind.setdefault(h["kind"], {"truth": 0, "found": 0, "reported": 0})["reported"] += 1
    m.reported, m.matched = len(hyp), int(used.sum())
    m.scored = list(hyp)
    m.false = [h for h, u in zip(hyp, used) if not u]
    _flicker_alarms(te, hyp, analysed, idx_of, max_latency, r_px, m)
    return m
