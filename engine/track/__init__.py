"""Tracking: drift correction, vectorised Kalman filter, sparse gated assignment with births and
deaths, track memory and confirmation, per-track histories and debounced transformation events.

``Tracker(tracking_cfg, event_cfg).update(chemistry, seq, t_acquired) -> TrackUpdate``.
"""

from engine.track.tracker import Tracker, TrackUpdate

__all__ = ["Tracker", "TrackUpdate"]
