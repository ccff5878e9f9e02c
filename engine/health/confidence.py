"""A calibration model for event confidence (issue 13 criterion 6) -- fitted, evaluated, NOT applied.

Held out it did not calibrate (events right 87.5 % of the time, calibrated confidence ~0.98, ECE ~0.10;
docs/tracking.md), so the pipeline still reports the tracker's raw confidence; this module and
``lab/health/event_eval.py`` are what the next fit starts from.

The tracker's raw event confidence is the track's support over the debounce window times the
detection confidence (~0.75 for a 3-of-4 confirmation): it says little. :func:`calibrated` maps it,
with the class probability of the atom involved and the frame's estimated C-atom SNR, through a
logistic model fitted on simulated movies (``lab/health/event_eval.py``: seeds from ``CAL_SEED``,
never the held-out ones) so that events with confidence c are right about a fraction c of the time.
"""

from __future__ import annotations

import numpy as np

#: Logistic coefficients for (1, logit(raw confidence), atom class probability, log(SNR)), fitted (ridge 3)
#: by ``python -m lab.health.event_eval --fit`` on 51 events of 12 calibration movies (seeds from 7100,
#: 5e3-1e5 e/A^2, random imaging), 50 of them right: with so few wrong events the fit is essentially a
#: constant ~0.98 (the raw confidence is ~0.75 on every event and carries no information); see
#: docs/tracking.md for the held-out reliability.
COEF = (3.4576, -0.0003, 0.1238, 0.156)


def features(raw: np.ndarray, atom_prob: np.ndarray, snr: np.ndarray) -> np.ndarray:
    raw = np.clip(np.asarray(raw, np.float64), 1e-3, 1 - 1e-3)
    ap = np.nan_to_num(np.asarray(atom_prob, np.float64), nan=0.5)
    ls = np.log(np.clip(np.nan_to_num(np.asarray(snr, np.float64), nan=2.0), 0.5, 100.0))
    return np.stack([np.ones_like(raw), np.log(raw / (1 - raw)), ap, ls], -1)


def calibrated(raw, atom_prob, snr, coef=COEF) -> np.ndarray:
    """Probability that the event is right."""
    z = features(raw, atom_prob, snr) @ np.asarray(coef, np.float64)
    return 1.0 / (1.0 + np.exp(-z))


def calibrate_events(events: list, chem, track_ids: np.ndarray, snr: float) -> None:
    """Replace each event's ``confidence`` by the calibrated one (in place)."""
    if not events:
        return
    ids = np.asarray(track_ids)
    cp = np.asarray(chem.atoms.class_prob)
    probs = []
    for e in events:
        k = np.flatnonzero(ids == e.atom_id) if len(ids) else []
        probs.append(float(np.max(cp[k[0]][1:])) if len(k) else float("nan"))
    c = calibrated([e.confidence for e in events], probs, [snr] * len(events))
    for e, v in zip(events, c):
        e.confidence = float(v)
