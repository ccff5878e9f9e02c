"""Calibrated event confidence (issue 13 criterion 6): the probability that a reported event is right.

The tracker's raw event confidence is the track's support over the debounce window times the last
detection confidence (~0.75 for a 3-of-4 confirmation on every event): it says little. The pipeline
(``EventConfig.calibrate_confidence``, default on) replaces it by :func:`calibrated`, a logistic model
of four things known when the event is raised:

* the raw confidence (window support x detection confidence);
* the per-atom confidence of the atom involved in the event's frame (``Atoms.confidence``: peak
  P(atom) x species probability, itself calibrated; docs/tracking.md), and whether that atom is
  there at all (an ejected atom is not);
* the frame's estimated C-atom SNR (``FrameHealth.snr``);
* the fraction of the series' last n frames (the debounce window) whose health verdict was not ``ok``.

The coefficients :data:`COEF` are fitted by ``python -m lab.event_calibration`` on simulated movies of
its calibration seeds only (scored by the one event scorer, ``lab/eventscore.py``) and checked on
held-out seeds (reliability table and expected calibration error in docs/tracking.md). With calibration
on, ``EventConfig.min_confidence`` applies to the calibrated confidence (engine/pipeline.py).
"""

from __future__ import annotations

import numpy as np

#: Names of the model's inputs (the columns of :func:`features`), for the docs and the lab fit.
FEATURES = ("intercept", "logit_raw", "atom_confidence", "atom_missing", "log_snr", "bad_window")

#: With calibration on, the tracker raises the events whose raw confidence reaches this or
#: ``EventConfig.min_confidence``, whichever is lower (this is the default
#: ``EventConfig.min_confidence``, under which the calibration events were collected) and the pipeline
#: applies ``EventConfig.min_confidence`` to the calibrated confidence.
RAW_MIN_CONFIDENCE = 0.5

#: Logistic coefficients for :data:`FEATURES`; fitted by ``python -m lab.event_calibration --fit`` on 437
#: events of 103 calibration movies (364 right). Held out (404 events of 102 other movies, 364 right) the
#: expected calibration error is 0.073 (raw confidence 0.162): pessimistic by ~0.05-0.15 below 0.9, not
#: yet <= 0.05 (docs/tracking.md has the command and the reliability table).
COEF = (-2.5737, 0.955, 0.5373, -0.2708, 1.5791, -2.4759)


def features(raw, atom_conf, snr, bad_fraction) -> np.ndarray:
    """(n, len(FEATURES)) design matrix. raw : the tracker's confidence; atom_conf : the event atom's
    confidence in the event's frame (nan when the atom is not there); snr : the frame's C-atom SNR (nan
    when not measured); bad_fraction : fraction of the last n frames that were not ``ok``."""
    raw, ac, s, bad = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.float64))
                                            for v in (raw, atom_conf, snr, bad_fraction)))
    raw = np.clip(raw, 1e-3, 1 - 1e-3)
    missing = ~np.isfinite(ac)
    ac = np.where(missing, 0.0, np.clip(ac, 0.0, 1.0))
    ls = np.log(np.clip(np.where(np.isfinite(s), s, 2.0), 0.5, 100.0))
    bad = np.clip(np.nan_to_num(bad, nan=0.0), 0.0, 1.0)
    return np.stack([np.ones_like(raw), np.log(raw / (1 - raw)), ac, missing.astype(np.float64), ls, bad], -1)


def calibrated(raw, atom_conf, snr, bad_fraction=0.0, coef=COEF) -> np.ndarray:
    """Probability that the event is right, (n,) array."""
    z = features(raw, atom_conf, snr, bad_fraction) @ np.asarray(coef, np.float64)
    return 1.0 / (1.0 + np.exp(-z))


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


def calibrate_events(events: list, atoms, track_ids, snr: float, bad_fraction: float) -> None:
    """Replace each event's ``confidence`` by the calibrated one (in place). Bookkeeping events (field
    of view, tracker) keep theirs: they are not claims about the sample."""
    ev = [e for e in events if getattr(e, "category", "") != "bookkeeping"]
    if not ev:
        return
    c = calibrated([e.confidence for e in ev], event_atom_confidence(ev, atoms, track_ids), snr, bad_fraction)
    for e, v in zip(ev, c):
        e.confidence = float(v)
