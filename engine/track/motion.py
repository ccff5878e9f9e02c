"""The tracker's motion model behind a small protocol (in the spirit of trackpy's predictors).

A motion model owns two things: where the *field* went (the drift of the frame over the sample,
a world <-> frame transform) and where each *track* is expected and how sure that is (a filter
over the tracks' world positions). :class:`engine.track.tracker.Tracker` only calls the methods
of :class:`MotionModel`; a different model (e.g. constant velocity per atom, or drift from the
microscope's stage readout) is one new class passed as ``Tracker(..., motion=...)``.

:class:`DriftKalman` is the default (the module docstring of :mod:`engine.track.tracker` has the
maths): the drift ``frame_A = world_A + offset_A + shear * world_y`` estimated per frame by
:func:`engine.track.drift.estimate_shift`, and a vectorised constant-position Kalman filter per
track (isotropic covariance ``P`` in A^2, stored in the track table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.track.drift import estimate_shift
from stemwatch.config import TrackingConfig

#: the drift search radius grows with the frames skipped since the last analysed one, but at most
#: this many frames' worth: under overload the live analyzer skips tens to hundreds of frames
#: (100 frames/s sources), and the search cost grows with the radius squared (seconds per frame
#: at 100 skipped frames). The predicted drift (last drift x gap) still covers the whole gap.
MAX_SEARCH_GAP_FRAMES = 4


@dataclass(frozen=True)
class FieldShift:
    """What the model says about one frame's field: ``shift_A`` of the field's middle row since the
    last analysed frame (A, x/y) and whether the predicted drift was rejected and searched."""

    shift_A: np.ndarray
    searched: bool = False


class MotionModel(Protocol):
    """What the tracker needs of a motion model (positions in angstrom; tracks in world coordinates).

    ``gate_cost`` is the birth + death cost ``G`` in units of normalised innovation (an edge within
    the speed gate at steady state costs less); ``measurement_var`` is ``r^2`` (A^2).
    """

    gate_cost: float
    measurement_var: float

    def reset(self) -> None:
        """Forget the field's drift (a new series)."""

    def observe_field(self, xy_A: np.ndarray, sp: np.ndarray, gap: int, tree, field_mid_y_A: float,
                      first_frame: bool) -> FieldShift:
        """Estimate this frame's drift from its atoms (``xy_A`` frame A, species ``sp``, KD-tree
        ``tree`` or None when empty), ``gap`` frames after the last analysed one."""

    def to_frame(self, world_A: np.ndarray) -> np.ndarray:
        """World angstrom -> this frame's angstrom."""

    def to_world(self, frame_A: np.ndarray) -> np.ndarray:
        """This frame's angstrom -> world angstrom."""

    def predict(self, P: np.ndarray, gap: int) -> None:
        """Advance the tracks' position variances ``P`` (in place) by ``gap`` frames."""

    def innovation_var(self, P: np.ndarray) -> np.ndarray:
        """Variance of the predicted measurement of each track (A^2)."""

    def correct(self, pos: np.ndarray, P: np.ndarray, z: np.ndarray, jump: np.ndarray):
        """New (pos, P) of tracks at ``pos`` (world A) with variance ``P`` measured at ``z``;
        ``jump`` marks tracks that hopped (reset to the measurement)."""


class DriftKalman:
    """Default :class:`MotionModel`: sheared field drift + constant-position Kalman per track."""

    def __init__(self, cfg: TrackingConfig | None = None):
        self.cfg = cfg or TrackingConfig()
        q2 = self.cfg.process_noise_A ** 2
        r2 = self.cfg.measurement_noise_A ** 2
        p_pred = 0.5 * (q2 + math.sqrt(q2 * q2 + 4.0 * q2 * r2))     # steady-state predicted variance
        self.process_var = q2
        self.measurement_var = r2
        self.gate_cost = self.cfg.max_speed_A_per_frame ** 2 / (p_pred + r2)
        self.reset()

    def reset(self) -> None:
        self.offset_A = np.zeros(2)
        self.shear = np.zeros(2)
        self.drift_per_frame_A = np.zeros(2)
        self.prev_world: np.ndarray | None = None
        self.prev_sp: np.ndarray | None = None

    # ------------------------------------------------------------------------------ field
    def observe_field(self, xy_A, sp, gap, tree, field_mid_y_A, first_frame) -> FieldShift:
        o_prev, s_prev = self.offset_A.copy(), self.shear.copy()
        o_pred = o_prev + self.drift_per_frame_A * gap
        searched = False
        N = len(xy_A)
        if self.prev_world is not None and N:
            searched = self._search(xy_A, sp, gap, tree, o_prev, s_prev, o_pred, 2.0 * field_mid_y_A)
        elif self.prev_world is None:
            self.offset_A = np.zeros(2)
            self.shear = np.zeros(2)
        else:
            self.offset_A = o_pred
        # the reported drift: the shift of the field's middle row since the last analysed frame
        yc = field_mid_y_A
        shift = (self.offset_A + self.shear * yc) - (o_prev + s_prev * yc) if not first_frame else np.zeros(2)
        if N:
            self.prev_world, self.prev_sp = self.to_world(xy_A), sp
        return FieldShift(shift_A=shift, searched=searched)

    def _search(self, xy_A, sp, gap, tree, o_prev, s_prev, o_pred, height_A) -> bool:
        cfg = self.cfg
        # the previous frame's atoms where they were (the search is about the absolute shift,
        # so that a wrong prediction cannot keep it away from the truth); predicted: o_pred
        P = self.prev_world + o_prev + s_prev[None, :] * self.prev_world[:, 1:2]
        est = estimate_shift(P, self.prev_sp, xy_A, sp, o_pred - o_prev,
                             max_shift_A=cfg.max_drift_A_per_frame * min(gap, MAX_SEARCH_GAP_FRAMES),
                             tol_A=cfg.drift_tolerance_A, cur_tree=tree)
        if est.n_matched >= 3:
            # cur = P + d + b * P_y, P = W + o_prev + s W_y  =>  o = o_prev + d + b o_prev_y,
            # s = s_prev + b (1 + s_prev_y)
            d, b = est.shift_A, est.slope
            self.offset_A = o_prev + d + b * o_prev[1]
            self.shear = s_prev + b * (1.0 + s_prev[1])
            # the next frame starts where this one ended: the drift of its last rows (the top rows
            # moved by d since the last frame, the bottom rows by d + b * height; the difference is
            # the change of the drift while the frame was scanned). Predicting the mean drift
            # instead overshoots a reversal by twice its speed (4 A at 2 A/frame).
            self.drift_per_frame_A = d / gap + b * height_A
        else:
            self.offset_A = o_pred
        return est.searched

    def to_frame(self, world_A):
        w = np.asarray(world_A, float)
        return w + self.offset_A + self.shear * w[..., 1:2]

    def to_world(self, frame_A):
        q = np.asarray(frame_A, float)
        wy = (q[..., 1] - self.offset_A[1]) / (1.0 + self.shear[1])
        wx = q[..., 0] - self.offset_A[0] - self.shear[0] * wy
        return np.stack([wx, wy], axis=-1)

    # ------------------------------------------------------------------------------ tracks
    def predict(self, P, gap) -> None:
        if len(P):
            P[:] += self.process_var * gap

    def innovation_var(self, P):
        return P + self.measurement_var

    def correct(self, pos, P, z, jump):
        r2 = self.measurement_var
        K = P / (P + r2)
        newpos = pos + K[:, None] * (z - pos)
        newP = (1.0 - K) * P
        newpos[jump] = z[jump]
        newP[jump] = r2
        return newpos, newP
