"""Transformation statistics of the dopants: per-dopant state histories, dwell times, transition
counts and rates per frame, per second and per electron dose with exact Poisson intervals, the Markov
matrix, cross-sections. A runtime stage after events; plain data in and out.

Flow::

    FrameResult --dopant_observations--> DopantObservations (one row per Si per frame)
    observations + FrameInfo (per frame: seq, time, dose, usable) --build_histories--> Histories
    Histories (+ events) --compute_stats--> Stats --to_dict / transitions_rows--> stats.json, transitions.csv

State of a Si (a dopant): ``dimer`` when bonded to exactly one other heavy atom, ``cluster`` when to two
or more, else ``N-fold`` with N its bonded C neighbours (``3-fold``, ``4-fold``; ``2-fold`` and others
are kept as they are). A frame whose ``usable`` flag is False (today: the pipeline failed on it;
later: the frame-health verdict is not ``ok``), or in which the dopant was not observed (out of view,
missed), is *unknown* for it, never a state. Runs of one state shorter than ``min_run_frames``
observed frames (default :data:`MIN_RUN_FRAMES` = 1: none) can be set unknown too, against
one-frame misreadings.

Rates (docs/statistics.md): transitions are counted between consecutive known observations of a
track no more than ``max_gap_frames`` apart; the exposure of a step (frames, seconds, e/A^2 delivered
between the two observations) is charged to the state at its start. So a dopant that enters late,
leaves, or is unknown for a while contributes only what it was observed to receive (the exposure
is censored at the end of each track). With n transitions a -> b over exposure E in state a, the rate
is n / E with the exact (Garwood) 95 % interval [chi2(0.025; 2n) / 2, chi2(0.975; 2n + 2) / 2] / E;
the cross-section is the rate per e/A^2 in barn (1 barn = 1e-8 A^2).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from engine.types import SI, FrameResult

#: fixed state vocabulary (codes index this tuple; histories use -1 for unknown)
STATES: tuple[str, ...] = ("3-fold", "4-fold", "dimer", "cluster", "2-fold", "other")
UNKNOWN = -1
BARN_A2 = 1e-8                      # 1 barn = 1e-28 m^2 = 1e-8 A^2
ELEMENTARY_CHARGE_C = 1.602176634e-19
CI_LEVEL = 0.95
STATS_VERSION = 1
#: Runs of one state shorter than this many observed frames are unknown. 1 = every reading counts.
#: Measured (docs/statistics.md): with the simulator's rates, real one-frame dwells (a switch and
#: its reverse in consecutive frames) are common, while one-frame misreadings on usable frames were
#: not seen at 3e4-1e5 e/A^2. A filter of 2 removed the real ones and made the pooled rates ~20 % low.
MIN_RUN_FRAMES = 1
TRANSITION_COLUMNS = ("kind", "from", "to", "count", "exposure_frames", "exposure_s", "exposure_e_per_A2",
                      "rate_per_frame", "rate_per_frame_lo", "rate_per_frame_hi",
                      "rate_per_s", "rate_per_s_lo", "rate_per_s_hi",
                      "rate_per_e_per_A2", "rate_per_e_per_A2_lo", "rate_per_e_per_A2_hi",
                      "cross_section_barn", "cross_section_barn_lo", "cross_section_barn_hi")


# ------------------------------------------------------------------------------ inputs
@dataclass
class DopantObservations:
    """One row per dopant (Si atom with a track) per frame. frame : (N,) int64 seq; track : (N,) int64;
    state : (N,) int16 codes into :data:`STATES`; x_px, y_px : (N,) float64 (column, row);
    formula : (N,) object, the defect-group formula ("" when none); cluster : (N,) int64, the
    frame-local key of the heavy-atom group (dimer or cluster: Si bonded to Si) the dopant belongs
    to, namely the smallest track id among the group's dopants, -1 when it has no heavy neighbour
    (None: all -1)."""

    frame: np.ndarray
    track: np.ndarray
    state: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    formula: np.ndarray
    cluster: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.cluster is None:
            self.cluster = np.full(len(self.frame), -1, np.int64)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @classmethod
    def empty(cls) -> "DopantObservations":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0), np.zeros(0),
                   np.zeros(0, object), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: list) -> "DopantObservations":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("frame", "track", "state", "x_px", "y_px", "formula", "cluster")))


@dataclass
class FrameInfo:
    """Per analysed frame: seq (F,) int64 increasing; t_s (F,) float64 (acquisition time, any origin);
    dose_e_per_A2 (F,) float64 (NaN: unknown); usable (F,) bool (False: every dopant unknown)."""

    seq: np.ndarray
    t_s: np.ndarray
    dose_e_per_A2: np.ndarray
    usable: np.ndarray

    def __len__(self) -> int:
        return int(self.seq.shape[0])


def state_codes(n_carbon: np.ndarray, n_heavy: np.ndarray) -> np.ndarray:
    """Dopant state codes from the numbers of bonded C and heavy neighbours (vectorised)."""
    n_carbon = np.asarray(n_carbon, np.int64)
    n_heavy = np.asarray(n_heavy, np.int64)
    code = np.full(n_carbon.shape, STATES.index("other"), np.int16)
    code[n_carbon == 3] = STATES.index("3-fold")
    code[n_carbon == 4] = STATES.index("4-fold")
    code[n_carbon == 2] = STATES.index("2-fold")
    code[n_heavy == 1] = STATES.index("dimer")
    code[n_heavy >= 2] = STATES.index("cluster")
    return code


#: dopants closer than this to the frame edge are unknown: their neighbours are cut off (the
#: tracker's ``TrackingConfig.edge_exclusion_A`` for environment events)
EDGE_EXCLUSION_A = 3.0


def dopant_observations(r: FrameResult, edge_exclusion_A: float = EDGE_EXCLUSION_A) -> DopantObservations:
    """The dopants (tracked Si atoms) of one frame and their states; empty for a failed frame. Si
    within ``edge_exclusion_A`` of the frame edge are left out (unknown)."""
    ch = r.chemistry
    atoms = ch.atoms
    n = len(atoms)
    if r.error or n == 0:
        return DopantObservations.empty()
    sp = np.asarray(atoms.species, np.int64)
    ids = np.asarray(r.track_ids, np.int64)
    sel = np.flatnonzero((sp == SI) & (ids >= 0))
    if r.confirmed is not None:
        sel = sel[np.asarray(r.confirmed, bool)[sel]]
    if edge_exclusion_A > 0 and r.frame_shape is not None and r.pixel_size_A > 0:
        m = edge_exclusion_A / r.pixel_size_A
        H, W = r.frame_shape
        xy0 = np.asarray(atoms.xy_px, np.float64)[sel]
        sel = sel[(xy0[:, 0] >= m - 0.5) & (xy0[:, 0] <= W - 0.5 - m) & (xy0[:, 1] >= m - 0.5)
                  & (xy0[:, 1] <= H - 0.5 - m)]
    if not len(sel):
        return DopantObservations.empty()
    bonds = np.asarray(ch.bonds, np.int64).reshape(-1, 2)
    heavy = sp != 0
    n_c = np.zeros(n, np.int64)
    n_h = np.zeros(n, np.int64)
    if len(bonds):
        i, j = bonds[:, 0], bonds[:, 1]
        n_c += np.bincount(i, weights=~heavy[j], minlength=n).astype(np.int64)
        n_c += np.bincount(j, weights=~heavy[i], minlength=n).astype(np.int64)
        n_h += np.bincount(i, weights=heavy[j], minlength=n).astype(np.int64)
        n_h += np.bincount(j, weights=heavy[i], minlength=n).astype(np.int64)
    formula = np.full(len(sel), "", object)
    if ch.atom_defect is not None and len(ch.defects):
        k = np.asarray(ch.atom_defect, np.int64)[sel]
        names = np.asarray([d.formula for d in ch.defects] + [""], object)
        formula = names[np.where(k >= 0, k, len(ch.defects))]
    xy = np.asarray(atoms.xy_px, np.float64)[sel]
    return DopantObservations(np.full(len(sel), int(r.seq), np.int64), ids[sel], state_codes(n_c[sel], n_h[sel]),
                              xy[:, 0].copy(), xy[:, 1].copy(), formula,
                              _group_keys(bonds, heavy, ids, n_h, sel))


def _group_keys(bonds: np.ndarray, heavy: np.ndarray, ids: np.ndarray, n_h: np.ndarray,
                sel: np.ndarray) -> np.ndarray:
    """For the selected atoms: the smallest track id among the tracked Si of their heavy-atom group
    (connected through heavy-heavy bonds), or -1 for a dopant without a heavy neighbour."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    key = np.full(len(sel), -1, np.int64)
    n = len(heavy)
    hh = bonds[heavy[bonds[:, 0]] & heavy[bonds[:, 1]]] if len(bonds) else bonds
    if not len(hh) or not (n_h[sel] > 0).any():
        return key
    g = coo_matrix((np.ones(len(hh)), (hh[:, 0], hh[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    tid = np.where((np.asarray(ids) >= 0) & heavy, ids, np.iinfo(np.int64).max)
    low = np.full(comp.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(low, comp, tid)
    grouped = n_h[sel] > 0
    key[grouped] = low[comp[sel[grouped]]]
    key[key == np.iinfo(np.int64).max] = -1
    return key


def dose_per_frame(meta: dict | None, pixel_size_A: float | None, override: float | None = None
                   ) -> tuple[float | None, str]:
    """Electron dose per frame (e/A^2) and where it came from.

    ``override`` (``--dose``) wins; then the series' ``start`` metadata: ``dose_e_per_A2`` (per frame),
    or a beam current (``beam_current_A``, ``beam_current_pA``, ``probe_current_pA``) x ``dwell_s``
    (s per pixel) / (e x pixel area). None when nothing says it.
    """
    if override is not None:
        return float(override), "--dose option"
    meta = meta or {}

    def num(key):
        v = meta.get(key)
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) and v > 0 else None

    d = num("dose_e_per_A2")
    if d is not None:
        return d, "start metadata dose_e_per_A2"
    dwell = num("dwell_s")
    for key, scale in (("beam_current_A", 1.0), ("beam_current_pA", 1e-12), ("probe_current_pA", 1e-12)):
        cur = num(key)
        if cur is not None and dwell is not None and pixel_size_A:
            return (cur * scale * dwell / (ELEMENTARY_CHARGE_C * float(pixel_size_A) ** 2),
                    f"{key} x dwell_s / pixel area (start metadata)")
    return None, "unknown (no dose_e_per_A2 or beam current in the metadata; give --dose)"


# ------------------------------------------------------------------------------ histories
@dataclass
class Histories:
    """The dopants' state histories, sparse (memory grows with the observations, not tracks x frames).

    tracks : (T,) track ids; frames : the :class:`FrameInfo`; row, col : (N,) the track (index into
    ``tracks``) and frame (index into ``frames.seq``) of each observation, sorted by track then frame;
    raw : (N,) state codes as read; state : (N,) after removing runs shorter than ``min_run_frames``
    (-1: unknown). Observations in frames that are not usable are dropped (unknown). :meth:`dense`
    gives the (T, F) matrix with -1 wherever the state is unknown.
    """

    tracks: np.ndarray
    frames: FrameInfo
    row: np.ndarray
    col: np.ndarray
    raw: np.ndarray
    state: np.ndarray
    min_run_frames: int = MIN_RUN_FRAMES

    def dense(self, which: str = "state") -> np.ndarray:
        out = np.full((len(self.tracks), len(self.frames)), UNKNOWN, np.int16)
        out[self.row, self.col] = getattr(self, which)
        return out

    def known(self):
        """(row, col, state) of the known observations."""
        k = self.state != UNKNOWN
        return self.row[k], self.col[k], self.state[k]


def runs(values: np.ndarray, breaks: np.ndarray):
    """Run starts and lengths of equal consecutive values of a 1-D array; ``breaks[i]`` forces a run
    to start at i."""
    n = len(values)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.ones(n, bool)
    start[1:] = (values[1:] != values[:-1]) | breaks[1:]
    s = np.flatnonzero(start)
    return s, np.diff(np.append(s, n))


def build_histories(obs: DopantObservations, frames: FrameInfo, min_run_frames: int = MIN_RUN_FRAMES) -> Histories:
    """State histories of every dopant track over the frames (vectorised)."""
    seq = np.asarray(frames.seq, np.int64)
    F = len(seq)
    tracks, trow = np.unique(np.asarray(obs.track, np.int64), return_inverse=True)
    trow = trow.reshape(-1)
    col = np.searchsorted(seq, obs.frame) if F else np.zeros(len(obs), np.int64)
    ok = (col < F) & (seq[np.minimum(col, max(F - 1, 0))] == obs.frame) if F else np.zeros(len(obs), bool)
    ok &= np.asarray(frames.usable, bool)[np.minimum(col, max(F - 1, 0))] if F else ok
    row, col, raw = trow[ok], col[ok], np.asarray(obs.state, np.int16)[ok]
    order = np.lexsort((col, row))
    row, col, raw = row[order], col[order], raw[order]
    if len(row) > 1:                                       # one observation per track and frame
        keep = np.ones(len(row), bool)
        keep[1:] = (row[1:] != row[:-1]) | (col[1:] != col[:-1])
        row, col, raw = row[keep], col[keep], raw[keep]
    state = raw.copy()
    if min_run_frames > 1 and len(row):
        # runs over each track's observations (unknown frames skipped); short ones -> unknown
        brk = np.zeros(len(row), bool)
        brk[1:] = row[1:] != row[:-1]
        s, ln = runs(raw, brk)
        state[np.repeat(ln < min_run_frames, ln)] = UNKNOWN
    return Histories(tracks, frames, row.astype(np.int64), col.astype(np.int64), raw, state, int(min_run_frames))


# ------------------------------------------------------------------------------ statistics
def poisson_rate_ci(n, exposure, level: float = CI_LEVEL):
    """Exact (Garwood) two-sided interval of a Poisson rate: n events over ``exposure``; arrays ok.
    Returns (rate, lo, hi); NaN where the exposure is not positive."""
    from scipy.stats import chi2

    n = np.asarray(n, np.float64)
    e = np.asarray(exposure, np.float64)
    a = (1.0 - level) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(n > 0, chi2.ppf(a, 2 * n) / 2.0, 0.0)
        hi = chi2.ppf(1.0 - a, 2 * n + 2) / 2.0
        good = e > 0
        return (np.where(good, n / e, np.nan), np.where(good, lo / e, np.nan), np.where(good, hi / e, np.nan))


@dataclass
class Stats:
    """The statistics of one session (see :func:`compute_stats`); :meth:`to_dict` is stats.json."""

    states: tuple
    frames_total: int
    frames_usable: int
    dose_e_per_A2_per_frame: float | None
    dose_source: str
    frame_time_s: float | None
    counts: np.ndarray              # (S, S) transitions between consecutive known observations (a -> b)
    exposure: dict                  # unit -> (S,) exposure per starting state ("frames", "s", "e_per_A2")
    dopants: list                   # per-track dicts
    events: list = field(default_factory=list)   # per event-kind dicts (rates over all dopant exposure)
    min_run_frames: int = MIN_RUN_FRAMES
    max_gap_frames: int = 4
    complete: bool = True
    note: str = ""
    clusters: list = field(default_factory=list)   # :func:`engine.stats_clusters.cluster_histories`

    # ---- derived
    def transitions(self) -> list:
        """One dict per observed transition kind a -> b (a != b), with rates and 95 % intervals."""
        S = len(self.states)
        out = []
        a_idx, b_idx = np.nonzero(self.counts * (1 - np.eye(S, dtype=np.int64)))
        for a, b in zip(a_idx.tolist(), b_idx.tolist()):
            n = int(self.counts[a, b])
            out.append(self.rate_row(f"{self.states[a]}->{self.states[b]}", self.states[a], self.states[b], n,
                                      {u: float(v[a]) for u, v in self.exposure.items()}))
        return out

    def rate_row(self, kind: str, a: str, b: str, n: int, exp: dict) -> dict:
        row = {"kind": kind, "from": a, "to": b, "count": n, "exposure_frames": exp["frames"],
               "exposure_s": exp["s"], "exposure_e_per_A2": exp["e_per_A2"]}
        for unit in ("frame", "s", "e_per_A2"):
            e = exp["frames" if unit == "frame" else unit]
            r, lo, hi = poisson_rate_ci(n, e if e is not None else np.nan)
            row[f"rate_per_{unit}"] = _num(r)
            row[f"rate_per_{unit}_lo"] = _num(lo)
            row[f"rate_per_{unit}_hi"] = _num(hi)
        for k in ("", "_lo", "_hi"):
            v = row[f"rate_per_e_per_A2{k}"]
            row[f"cross_section_barn{k}"] = None if v is None else v / BARN_A2
        return row

    def dwell(self) -> dict:
        """Per state: exposure (frames, s, e/A^2), exits, and the mean dwell (exposure / exits, the
        censored exponential MLE) with the 95 % interval from the exit rate's."""
        S = len(self.states)
        exits = (self.counts * (1 - np.eye(S, dtype=np.int64))).sum(1)
        out = {}
        for a, name in enumerate(self.states):
            e_f = float(self.exposure["frames"][a])
            if e_f <= 0:
                continue
            d = {"exposure_frames": e_f, "exposure_s": _num(self.exposure["s"][a]),
                 "exposure_e_per_A2": _num(self.exposure["e_per_A2"][a]), "exits": int(exits[a])}
            for unit, key in (("frames", "frames"), ("s", "s"), ("e_per_A2", "e_per_A2")):
                r, lo, hi = poisson_rate_ci(exits[a], self.exposure[key][a])
                inv = lambda x: None if not np.isfinite(x) or x <= 0 else float(1.0 / x)  # noqa: E731
                d[f"mean_{unit}"] = inv(r)
                d[f"mean_{unit}_ci95"] = [inv(hi), inv(lo)]
            out[name] = d
        return out

    def markov(self) -> dict:
        used = np.flatnonzero((self.counts.sum(0) + self.counts.sum(1)) > 0)
        c = self.counts[np.ix_(used, used)]
        rows = c.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(rows > 0, c / np.maximum(rows, 1), 0.0)
        return {"states": [self.states[i] for i in used], "counts": c.astype(int).tolist(),
                "probability_per_step": np.round(p, 6).tolist(),
                "note": "steps between consecutive known observations of a dopant (rows: from, columns: to); "
                        "per-step probabilities depend on the dose per frame: compare sessions by rates per dose"}

    def to_dict(self) -> dict:
        total_dose = None
        if self.dose_e_per_A2_per_frame is not None:
            total_dose = self.dose_e_per_A2_per_frame * self.frames_total
        return {
            "version": STATS_VERSION, "complete": bool(self.complete), "note": self.note,
            "confidence_level": CI_LEVEL,
            "frames": {"total": self.frames_total, "usable": self.frames_usable,
                       "unknown": self.frames_total - self.frames_usable},
            "dose": {"e_per_A2_per_frame": self.dose_e_per_A2_per_frame, "source": self.dose_source,
                     "session_e_per_A2": total_dose},
            "frame_time_s": self.frame_time_s,
            "method": {"min_run_frames": self.min_run_frames, "max_gap_frames": self.max_gap_frames,
                       "interval": "exact Poisson (Garwood), exposure censored at each track's end",
                       "barn_A2": BARN_A2},
            "states": list(self.states),
            "dwell": self.dwell(),
            "transitions": self.transitions(),
            "markov": self.markov(),
            "events": self.events,
            "dopants": self.dopants,
            "clusters": self.clusters,
        }


def _num(x):
    x = float(np.asarray(x))
    return x if math.isfinite(x) else None


def compute_stats(h: Histories, events: list | None = None, max_gap_frames: int = 4,
                  dose_source: str = "", complete: bool = True, note: str = "") -> Stats:
    """Statistics from the histories (and the event list, dicts with ``kind`` and ``frame``)."""
    fr = h.frames
    seq = np.asarray(fr.seq, np.int64)
    F = len(seq)
    S = len(STATES)
    dose = np.asarray(fr.dose_e_per_A2, np.float64)
    t = np.asarray(fr.t_s, np.float64)
    dose_known = bool(F) and bool(np.all(np.isfinite(dose)))
    known_mask = h.state != UNKNOWN
    removed_before = np.cumsum(~known_mask)[known_mask]     # short-run readings removed up to here
    r, c, v = h.known()
    v = v.astype(np.int64)
    same = np.zeros(0, bool)
    if len(r) > 1:
        # a step across a removed short run is dropped with its exposure: a one-frame dwell that was
        # real (a flip and back) would otherwise leave its exposure counted and its transitions lost
        same = ((r[1:] == r[:-1]) & (seq[c[1:]] - seq[c[:-1]] <= max_gap_frames)
                & (removed_before[1:] == removed_before[:-1]))
    i0, i1 = c[:-1][same], c[1:][same]
    a, b = v[:-1][same], v[1:][same]
    counts = np.zeros((S, S), np.int64)
    np.add.at(counts, (a, b), 1)
    step_frames = (seq[i1] - seq[i0]).astype(np.float64)
    step_s = t[i1] - t[i0]
    # every frame scanned between the two observations delivered its dose, analysed or not (live
    # analysis skips frames; their seq numbers still count): dose per frame x seq difference
    step_dose = dose[i1] * step_frames if dose_known else np.zeros(len(i1))
    exposure = {"frames": np.bincount(a, weights=step_frames, minlength=S),
                "s": np.bincount(a, weights=step_s, minlength=S),
                "e_per_A2": (np.bincount(a, weights=step_dose, minlength=S) if dose_known
                             else np.full(S, np.nan))}
    # per-dopant summaries (vectorised over the sparse observations)
    dopants = []
    T = len(h.tracks)
    trans_per_track = (np.bincount(r[:-1][same][a != b], minlength=T) if len(r) > 1 else np.zeros(T, np.int64))
    n_known = np.bincount(r, minlength=T)
    first = np.full(T, F, np.int64)
    last = np.full(T, -1, np.int64)
    np.minimum.at(first, h.row, h.col)
    np.maximum.at(last, h.row, h.col)
    per_state = np.zeros((T, S), np.int64)
    np.add.at(per_state, (r, v), 1)
    for k in np.flatnonzero(last >= 0).tolist():
        dopants.append({"track": int(h.tracks[k]), "first_frame": int(seq[first[k]]), "last_frame": int(seq[last[k]]),
                        "frames_known": int(n_known[k]), "frames_unknown": int(last[k] - first[k] + 1 - n_known[k]),
                        "states": {STATES[i]: int(n) for i, n in enumerate(per_state[k]) if n},
                        "transitions": int(trans_per_track[k])})
    # event kinds (hops, rotors, ...): rates over all dopant exposure
    ev_rows = []
    if events:
        kinds: dict = {}
        for e in events:
            kinds[e.get("kind", "?")] = kinds.get(e.get("kind", "?"), 0) + 1
        tot = {u: float(np.nansum(x)) if u != "e_per_A2" or dose_known else None for u, x in exposure.items()}
        st = Stats(STATES, F, 0, None, "", None, counts, exposure, [])
        for kind, n in sorted(kinds.items()):
            row = st.rate_row(kind, "", "", n, tot)
            row["exposure"] = "all dopants' known exposure"
            ev_rows.append(row)
    usable = int(np.asarray(fr.usable, bool).sum())
    d0 = float(np.nanmedian(dose)) if dose_known else None
    ft = float(np.median(np.diff(t))) if F > 1 else None
    return Stats(STATES, F, usable, d0, dose_source, ft, counts, exposure, dopants, ev_rows, h.min_run_frames,
                 int(max_gap_frames), complete, note)


def transitions_csv(stats: Stats) -> str:
    """transitions.csv: one row per transition kind (:data:`TRANSITION_COLUMNS`), blank = unknown."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRANSITION_COLUMNS)
    for row in stats.transitions():
        w.writerow(["" if row[k] is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                    for k in TRANSITION_COLUMNS])
    return buf.getvalue()


# ------------------------------------------------------------------------------ accumulation (analyze, serve)
def usable_frame(r: FrameResult) -> bool:
    """Whether a frame's dopant states count (else they are unknown, never a state): no stage failed,
    the frame health verdict is ``ok`` (engine.health) and the frame shows graphene."""
    health = getattr(r, "health", None)
    material = getattr(r, "material", None)
    return (r.error is None and (health is None or bool(health.ok))
            and (material is None or bool(material.is_graphene)))


class StatsAccumulator:
    """Collects dopant observations and frame info result by result (analyze and the live service);
    :meth:`stats` computes the statistics so far. Bounded by ``max_frames`` (oldest dropped)."""

    def __init__(self, dose_e_per_A2: float | None = None, dose_source: str = "",
                 min_run_frames: int = MIN_RUN_FRAMES, max_gap_frames: int = 4, max_frames: int = 200_000):
        self.dose = dose_e_per_A2
        self.dose_source = dose_source or ("given" if dose_e_per_A2 is not None else "unknown")
        self.min_run_frames = int(min_run_frames)
        self.max_gap_frames = int(max_gap_frames)
        self.max_frames = int(max_frames)
        self.series: str | None = None
        self.reset()

    def reset(self) -> None:
        self._obs: list = []
        self._seq: list = []
        self._t: list = []
        self._dose: list = []
        self._usable: list = []
        self._events: list = []

    def set_dose(self, dose_e_per_A2: float | None, source: str) -> None:
        self.dose, self.dose_source = dose_e_per_A2, source

    def add(self, r: FrameResult, usable: bool | None = None) -> None:
        """One analysed frame; ``usable`` defaults to :func:`usable_frame` (no stage failed on it, its
        health verdict is ``ok`` and it shows graphene)."""
        if self.series is not None and r.series != self.series:
            self.reset()
        self.series = r.series
        ok = usable_frame(r) if usable is None else bool(usable)
        self._seq.append(int(r.seq))
        self._t.append(float(r.t_acquired))
        self._dose.append(np.nan if self.dose is None else float(self.dose))
        self._usable.append(ok)
        self._obs.append(dopant_observations(r) if ok else DopantObservations.empty())
        self._events += [{"kind": e.kind, "frame": int(e.frame)} for e in r.events]
        if len(self._seq) > self.max_frames:
            drop = len(self._seq) - self.max_frames
            first = self._seq[drop]
            del self._seq[:drop], self._t[:drop], self._dose[:drop], self._usable[:drop], self._obs[:drop]
            self._events = [e for e in self._events if e["frame"] >= first]

    @property
    def n_frames(self) -> int:
        return len(self._seq)

    def last_observations(self) -> DopantObservations:
        """The observations of the frame added last (for dopants.csv)."""
        return self._obs[-1] if self._obs else DopantObservations.empty()

    def frame_info(self) -> FrameInfo:
        seq = np.asarray(self._seq, np.int64)
        order = np.argsort(seq, kind="stable")
        return FrameInfo(seq[order], np.asarray(self._t, np.float64)[order],
                         np.asarray(self._dose, np.float64)[order], np.asarray(self._usable, bool)[order])

    def observations(self) -> DopantObservations:
        return DopantObservations.concat(self._obs)

    def histories(self) -> Histories:
        return build_histories(self.observations(), self.frame_info(), self.min_run_frames)

    def stats(self, complete: bool = True, note: str = "") -> Stats:
        from engine.stats_clusters import cluster_histories

        obs, fi = self.observations(), self.frame_info()
        st = compute_stats(build_histories(obs, fi, self.min_run_frames), self._events, self.max_gap_frames,
                           self.dose_source, complete, note)
        st.clusters = cluster_histories(obs, fi, self.max_gap_frames)
        return st


# ------------------------------------------------------------------------------ files
DOPANTS_COLUMNS = ("frame", "track", "state", "x", "y", "formula", "cluster")
#: columns a dopants.csv must have (``cluster`` came later: older folders read with -1 there)
DOPANTS_REQUIRED = DOPANTS_COLUMNS[:6]


def dopants_csv_rows(obs: DopantObservations) -> str:
    """Rows of dopants.csv (no header) for the observations."""
    if not len(obs):
        return ""
    names = np.asarray(STATES, object)[obs.state]
    return "".join(f"{f},{t},{s},{x:.2f},{y:.2f},{fm},{c}\n" for f, t, s, x, y, fm, c in
                   zip(obs.frame.tolist(), obs.track.tolist(), names.tolist(), obs.x_px.tolist(),
                       obs.y_px.tolist(), obs.formula.tolist(), obs.cluster.tolist()))


def _read_csv(path) -> list:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_dopants_csv(path) -> DopantObservations:
    """dopants.csv -> observations (ValueError on a malformed file)."""
    rows = _read_csv(path)
    if rows and set(DOPANTS_REQUIRED) - set(rows[0]):
        raise ValueError(f"{path}: missing columns {sorted(set(DOPANTS_REQUIRED) - set(rows[0]))}")
    if not rows:
        return DopantObservations.empty()
    code = {s: i for i, s in enumerate(STATES)}
    try:
        return DopantObservations(np.array([int(r["frame"]) for r in rows], np.int64),
                                  np.array([int(r["track"]) for r in rows], np.int64),
                                  np.array([code[r["state"]] for r in rows], np.int16),
                                  np.array([float(r["x"]) for r in rows]), np.array([float(r["y"]) for r in rows]),
                                  np.array([r["formula"] or "" for r in rows], object),
                                  np.array([int(r.get("cluster") or -1) for r in rows], np.int64))
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: malformed row ({exc})") from None


def stats_from_dir(out_dir, dose_e_per_A2: float | None = None, dose_source: str | None = None,
                   min_run_frames: int = MIN_RUN_FRAMES, max_gap_frames: int = 4) -> tuple[Stats, Histories]:
    """Recompute the statistics from an analyze folder (dopants.csv, frames.csv, events.jsonl); the
    dose from ``dose_e_per_A2`` or else the folder's stats.json. ``usable`` = no error on the frame
    (or the ``usable`` column of frames.csv when present)."""
    import json
    from pathlib import Path

    d = Path(out_dir)
    frames = _read_csv(d / "frames.csv")
    try:
        seq = np.array([int(r["frame"]) for r in frames], np.int64)
        t = np.array([float(r["t_acquired"]) for r in frames], np.float64)
        if frames and "usable" in frames[0]:
            usable = np.array([str(r["usable"]).lower() in ("1", "true", "ok") for r in frames], bool)
        else:
            usable = np.array([not (r.get("error") or "") for r in frames], bool)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{d / 'frames.csv'}: malformed ({exc})") from None
    old = {}
    if (d / "stats.json").exists():
        old = json.loads((d / "stats.json").read_text())
    if dose_e_per_A2 is None:
        dose_e_per_A2 = (old.get("dose") or {}).get("e_per_A2_per_frame")
        dose_source = dose_source or (old.get("dose") or {}).get("source", "unknown")
    order = np.argsort(seq, kind="stable")
    fi = FrameInfo(seq[order], t[order], np.full(len(seq), np.nan if dose_e_per_A2 is None else float(dose_e_per_A2)),
                   usable[order])
    obs = read_dopants_csv(d / "dopants.csv") if (d / "dopants.csv").exists() else DopantObservations.empty()
    events = []
    if (d / "events.jsonl").exists():
        for line in (d / "events.jsonl").read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                events.append({"kind": e.get("kind"), "frame": e.get("frame")})
    h = build_histories(obs, fi, min_run_frames)
    st = compute_stats(h, events, max_gap_frames, dose_source or "unknown",
                       complete=bool(old.get("complete", True)), note=old.get("note", ""))
    from engine.stats_clusters import cluster_histories

    st.clusters = cluster_histories(obs, fi, max_gap_frames)
    return st, h


def write_stats(stats: Stats, out_dir) -> None:
    """stats.json and transitions.csv into ``out_dir`` (atomically each)."""
    import json
    import os
    from pathlib import Path

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, text in (("stats.json", json.dumps(stats.to_dict(), indent=2)),
                       ("transitions.csv", transitions_csv(stats))):
        tmp = d / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, d / name)


__all__ = ["STATES", "UNKNOWN", "BARN_A2", "DopantObservations", "FrameInfo", "Histories", "Stats",
           "StatsAccumulator", "build_histories", "compute_stats", "dopant_observations", "dose_per_frame",
           "poisson_rate_ci", "runs", "state_codes", "stats_from_dir", "transitions_csv", "write_stats"]
