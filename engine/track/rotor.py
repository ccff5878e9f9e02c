"""Rotor events from the orientation of each heavy-atom defect, debounced k of n per place.

A rotor step turns a small heavy-atom group (a Si cluster, a dimer) in place. Track identities
cannot show it reliably: identical heavy atoms 1.8 A apart swap tracks under localisation noise,
so "two members hopped" happens on a defect that never turned. Instead, each frame, every defect
with two or more heavy atoms gets an orientation from the *set* of its heavy atoms' positions
(:mod:`engine.track.orientation`), filed under its place (the heavy atoms' centroid in drift-corrected
world coordinates, matched within ``PLACE_RADIUS_A``). The place's orientation is a k-of-n state:
a new orientation must be seen (within ``AGREE_DEG``) in k of the last n frames with the same number
of heavy atoms; a rotor event is raised when the confirmed orientation differs from the previous one
by more than ``EventConfig.rotor_min_deg``. A defect with the same formula and the same orientation
raises nothing, however its atoms jitter or its tracks swap.

Plain data in, plain tuples out; a handful of defects per frame (a loop over defects, not atoms).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.track.orientation import orientation

#: a defect seen again within this distance (A, drift-corrected) is the same place
PLACE_RADIUS_A = 2.0
#: observations within this angle of the candidate count for it
AGREE_DEG = 25.0
#: places unseen for this many frames are forgotten
FORGET_FRAMES = 50


def _diff(a: float, b: float, period: int) -> float:
    return abs((a - b + period / 2) % period - period / 2)


@dataclass
class _Place:
    centre_w: np.ndarray
    n_heavy: int
    period: int
    state: float | None = None                   # confirmed orientation (degrees)
    obs: list = field(default_factory=list)      # (seq, angle or None) newest last
    last_seq: int = -1


@dataclass
class RotorStep:
    """A confirmed turn of the defect ``defect`` (index into this frame's defects)."""

    defect: int
    pivot: int                 # atom index (this frame) of the heavy member nearest the centroid
    before_deg: float
    after_deg: float
    count: int                 # frames of the window agreeing
    first_seq: int             # first frame showing the new orientation


class RotorMachine:
    """Per-series orientation states of the heavy-atom defects (see the module docstring)."""

    def __init__(self):
        self.places: list[_Place] = []

    def step(self, defects, species: np.ndarray, xy_world_A: np.ndarray, seq: int, k: int, n: int,
             min_turn_deg: float, usable: bool = True) -> list[RotorStep]:
        """One frame. ``xy_world_A`` (N, 2) atoms in world coordinates; ``species`` (N,) codes (0 = C).

        ``usable`` False (a glitch frame, by the frame-health verdict): the frame is not observed at
        all, so it can neither start nor confirm a turn.
        """
        out: list[RotorStep] = []
        if not usable:
            return out
        species = np.asarray(species)
        seen: set[int] = set()
        groups = []
        for di, d in enumerate(defects or []):
            mem = np.asarray(d.members, np.int64)
            mem = mem[(mem >= 0) & (mem < len(species))]
            heavy = mem[species[mem] != 0]
            if len(heavy) >= 2:
                groups.append((di, heavy, len(mem)))
        # overlapping descriptions of one group (the graph may also name part of a cluster): the
        # largest is the group, a set of heavy atoms inside one already taken is not another defect.
        # Of descriptions with the same heavy atoms, the tightest names it (the Si3C4 cluster, not a
        # vacancy beside it whose ring holds the same Si: its centre is the vacancy's, 2-3 A away)
        groups.sort(key=lambda g: (-len(g[1]), g[2]))
        done_sets: list[set] = []
        for di, heavy, _ in groups:
            hs = set(heavy.tolist())
            if any(hs <= other for other in done_sets):
                continue
            done_sets.append(hs)
            pts = xy_world_A[heavy]
            c = pts.mean(0)
            angle, period = orientation(pts)
            pl = None
            if self.places:
                dist = [np.hypot(*(p.centre_w - c)) if id(p) not in seen else np.inf for p in self.places]
                j = int(np.argmin(dist))
                if dist[j] < PLACE_RADIUS_A:
                    pl = self.places[j]
            if pl is None:
                pl = _Place(c, len(heavy), period)
                self.places.append(pl)
            seen.add(id(pl))
            pl.centre_w = c
            pl.last_seq = seq
            same = len(heavy) == pl.n_heavy and period == pl.period and angle is not None
            pl.obs.append((seq, angle if same else None))
            if not same and pl.state is None:           # not yet adopted: follow what it looks like now
                pl.n_heavy, pl.period, pl.obs = len(heavy), period, [(seq, angle)]
            pl.obs = [(s, a) for s, a in pl.obs if s > seq - n]
            if pl.state is not None and len(pl.obs) >= n and all(a is None for _, a in pl.obs):
                # it has looked different (another number of heavy atoms) for n frames: a new defect
                # here (its own events report the change); start its orientation afresh
                pl.state, pl.n_heavy, pl.period, pl.obs = None, len(heavy), period, [(seq, angle)]
                same = angle is not None
            if angle is None or not same:
                continue
            agree = [(s, a) for s, a in pl.obs if a is not None and _diff(a, angle, period) <= AGREE_DEG]
            if len(agree) < k:
                continue
            new = float(np.degrees(np.angle(np.mean([np.exp(1j * np.radians(a) * 360 / period)
                                                     for _, a in agree]))) * period / 360) % period
            if pl.state is None:
                pl.state = new                             # adopted: no event
                continue
            if _diff(new, pl.state, period) > min_turn_deg:
                pivot = int(heavy[np.argmin(np.hypot(*(pts - c).T))])
                out.append(RotorStep(di, pivot, float(pl.state), new, len(agree), int(min(s for s, _ in agree))))
                pl.state = new
        self._merge(seen)
        self.places = [p for p in self.places if p.last_seq > seq - FORGET_FRAMES]
        return out

    def _merge(self, seen: set) -> None:
        """One place per defect: a place not seen this frame within ``PLACE_RADIUS_A`` of one seen is
        an older record of the same defect (its centroid moved when it turned, or another
        description of it made a second place). It is dropped; its confirmed orientation carries
        over to a seen place that has none yet (so a turn is still measured from it). Stale records
        left near a defect otherwise take its next observation: a turn adopted silently (missed) or
        a turn reported again from an old orientation (a duplicate)."""
        live = [p for p in self.places if id(p) in seen]
        if not live or len(live) == len(self.places):
            return
        keep = []
        for p in self.places:
            if id(p) in seen:
                keep.append(p)
                continue
            dist = [np.hypot(*(q.centre_w - p.centre_w)) for q in live]
            j = int(np.argmin(dist))
            if dist[j] >= PLACE_RADIUS_A:
                keep.append(p)
                continue
            q = live[j]
            if q.state is None and p.state is not None and (q.n_heavy, q.period) == (p.n_heavy, p.period):
                q.state = p.state
        self.places = keep
