"""Calibrated event confidence (issue 13 criterion 6): the probability that a reported event is right.

The tracker's raw event confidence is the track's support over the debounce window times the last
detection confidence (~0.75 for a 3-of-4 confirmation on every event): it says little. The pipeline
(``EventConfig.calibrate_confidence``, default on) replaces it by :func:`calibrated`, a monotone map of
five things known when the event is raised:

* the raw confidence (window support x detection confidence);
* the per-atom confidence of the atom involved in the event's frame (``Atoms.confidence``: peak
  P(atom) x species probability, itself calibrated; docs/tracking.md), and whether that atom is
  there at all (an ejected atom is not);
* the frame's estimated C-atom SNR (``FrameHealth.snr``);
* the fraction of the series' last n frames (the debounce window) whose health verdict was not ``ok``;
* the number of transformation events the series raised in the last n frames, this one's included
  (wrong events come in bursts: a frame the network misreads changes many atoms at once).

A linear score of these (:data:`COEF`, signs fixed so that no input can lower the confidence when it
gets better) is mapped to a probability by a monotone piecewise-linear curve (:data:`MAP_Z` ->
:data:`MAP_P`, an isotonic regression of "right" on the score). Both are fitted by
``python -m lab.event_calibration --fit --write`` on simulated movies of its calibration seeds only
(scored by the one event scorer, ``lab/eventscore.py``) and checked on held-out seeds never used in the
fit (reliability table and expected calibration error in docs/tracking.md). With calibration on,
``EventConfig.min_confidence`` applies to the calibrated confidence (engine/pipeline.py).
"""

from __future__ import annotations

import numpy as np

#: Names of the linear score's inputs (the columns of :func:`features`), for the docs and the lab fit.
FEATURES = ("intercept", "logit_raw", "atom_confidence", "atom_missing", "log_snr", "bad_window",
            "log_window_events")

#: With calibration on, the tracker raises the events whose raw confidence reaches this or
#: ``EventConfig.min_confidence``, whichever is lower (this is the default
#: ``EventConfig.min_confidence``, under which the calibration events were collected) and the pipeline
#: applies ``EventConfig.min_confidence`` to the calibrated confidence.
RAW_MIN_CONFIDENCE = 0.5

# --- fitted by `python -m lab.event_calibration --fit --write` (do not edit by hand) ---
#: Coefficients of the linear score, one per :data:`FEATURES`.
COEF = (-3.4691, 1.8325, 1.8763, -1.195, 2.1912, -11.3287, -1.9017)
#: The score -> probability curve (knots for ``np.interp``; flat beyond the ends).
MAP_Z = (-3.4745, -1.4996, -0.5083, 0.4023, 0.7897, 1.25, 1.4751, 1.54, 2.2931, 4.058, 5.4795, 6.5578)
MAP_P = (0.0094, 0.0536, 0.4125, 0.5952, 0.6026, 0.7759, 0.7857, 0.8125, 0.9212, 0.9869, 0.9869, 0.9961)
#: What the values were fitted on.
FIT_NOTE = (
    '1190 events (1028 right) of 231 calibration movies with events (seeds 710000-710280); grouped '
    '10-fold cross-validated ECE 0.015'
)
# --- end of fitted values ---


def features(raw, atom_conf, snr, bad_fraction, window_events=1) -> np.ndarray:
    """(n, len(FEATURES)) design matrix. raw : the tracker's confidence; atom_conf : the event atom's
    confidence in the event's frame (nan when the atom is not there); snr : the frame's C-atom SNR (nan
    when not measured); bad_fraction : fraction of the last n frames that were not ``ok``;
    window_events : transformation events the series raised in the last n frames (this frame's
    included, so >= 1 for an event)."""
    raw, ac, s, bad, we = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.float64))
                                                for v in (raw, atom_conf, snr, bad_fraction, window_events)))
    raw = np.clip(raw, 1e-3, 1 - 1e-3)
    missing = ~np.isfinite(ac)
    ac = np.where(missing, 0.0, np.clip(ac, 0.0, 1.0))
    ls = np.log(np.clip(np.where(np.isfinite(s), s, 2.0), 0.5, 100.0))
    bad = np.clip(np.nan_to_num(bad, nan=0.0), 0.0, 1.0)
    lw = np.log(np.clip(np.nan_to_num(we, nan=1.0), 1.0, 1e4))
    return np.stack([np.ones_like(raw), np.log(raw / (1 - raw)), ac, missing.astype(np.float64), ls, bad, lw], -1)


def calibrated(raw, atom_conf, snr, bad_fraction=0.0, window_events=1, coef=None, curve="fitted") -> np.ndarray:
    """Probability that the event is right, (n,) array. ``coef`` : the linear score's coefficients
    (default :data:`COEF`); ``curve`` : ``(z, p)`` knots of the monotone map from score to probability,
    ``"fitted"`` for :data:`MAP_Z`/:data:`MAP_P`, or None for the logistic function."""
    z = features(raw, atom_conf, snr, bad_fraction, window_events) @ np.asarray(COEF if coef is None else coef,
                                                                              np.float64)
    if curve is None:
        return 1.0 / (1.0 + np.exp(-z))
    kz, kp = (MAP_Z, MAP_P) if isinstance(curve, str) else curve
    return np.interp(z, np.asarray(kz, np.float64), np.asarray(kp, np.float64))


def event_atom_confidence(events: list, atoms, track_ids) -> np.ndarray:
    """Per event, the confidence of its atom (``Event.atom_id``, a track id) in this frame; nan when the
    atom is not in the frame (vectorised over the frame's atoms)."""
    ids = np.asarray(track_ids, np.int64).reshape(-1)
    conf = np.asarray(atoms.confidence, np.float64).reshape(-1)
    want = np.array([int(e.atom_id) for e in events], np.int64)
    out = np.full(len(want), np.nan)
    if len(ids) and len(want):
        order = np.argsort(ids, kind="stable")
        pos = np.clip(np.searchsorted(ids[order], want), 0, len(ids) - 1)
        hit = (ids[order][pos] == want) & (want >= 0)
        out[hit] = conf[order][pos][hit]
    return out


def transformation_count(events: list) -> int:
    """How many of ``events`` are transformations (not bookkeeping): the per-frame count behind the
    ``window_events`` input."""
    return sum(getattr(e, "category", "") != "bookkeeping" for e in events)


def calibrate_events(events: list, atoms, track_ids, snr: float, bad_fraction: float,
                     window_events: int | None = None) -> None:
    """Replace each event's ``confidence`` by the calibrated one (in place). Bookkeeping events (field
    of view, tracker) keep theirs: they are not claims about the sample. ``window_events``: the
    transformation events the series raised in the last n frames, these included (default: these)."""
    ev = [e for e in events if getattr(e, "category", "") != "bookkeeping"]
    if not ev:
        return
    we = len(ev) if window_events is None else max(int(window_events), len(ev))
    c = calibrated([e.confidence for e in ev], event_atom_confidence(ev, atoms, track_ids), snr, bad_fraction, we)
    for e, v in zip(ev, c):
        e.confidence = float(v)
