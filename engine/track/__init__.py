"""Tracking: drift correction, vectorised Kalman filter, sparse gated assignment with births and
deaths, track memory and confirmation, per-track histories and debounced transformation events.

``Tracker(tracking_cfg, event_cfg).update(chemistry, seq, t_acquired) -> TrackUpdate``. The motion model
(drift + Kalman) is pluggable (:mod:`engine.track.motion`); the event machines see each frame as a
plain-data :class:`engine.track.snapshot.TrackSnapshot`.
"""

from engine.track.tracker import Tracker, TrackUpdate

__all__ = ["Tracker", "TrackUpdate"]
