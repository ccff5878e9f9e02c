"""The contamination region of a series, held for a few frames and moved with the field (issue 21,
criterion 2).

:func:`engine.health.material_overlayer.overlayer_region` decides the region on each frame alone. On a
static field its edge moves with the noise from frame to frame, and a Si there is left out on one frame
and analysed on the next: false ``si_appeared`` / ``si_lost`` events (the static ``graphene_hole`` movie
of seed 31 kept 4 of its 10, all at the region's edge: docs/material.md). Contamination does not come
and go between two frames, so :class:`OverlayerHold` (one per :class:`engine.pipeline.Pipeline`, beside
its material cadence) leaves out the union of the region found on this frame and those found on the
last :data:`HOLD_FRAMES` frames of the series, each moved with the field's drift since.

The drift from one frame to the next is measured as the material cadence measures a masked field's
(:func:`engine.health.material_cadence.measure_drift`: phase correlation of the binned frames, the
lattice's own spectral peaks left out, so that the contamination, holes and edges show the shift and
the lattice's period cannot alias it). Nothing is held where it cannot be placed: the held region is
dropped when no clear correlation peak lies near the drift predicted, on a new series (``series`` or
``run``), a frame-shape change, a ``fov_jump`` (the frame's health verdict, or one found from the
previous frame's atoms: :meth:`OverlayerHold.reset` from :meth:`engine.pipeline.Pipeline.track`) and a
frame that is not graphene. A series on which no region was ever found costs nothing (no spectrum is
computed): clean graphene is never touched.

Cost while a region is held: one 128^2 binned real FFT and its inverse a frame (~1 ms), and a few
frame-sized boolean operations.

The per-atom reading can be held the same way (:meth:`OverlayerHold.read_as_c`; used by the pipeline
only when ``engine.pipeline.OVERLAYER_SI_HOLD``, off by default: on fresh movies it raised as many events
as it removed, docs/material.md): the positions of the Si
that :func:`engine.health.material_overlayer.overlayer_si` read as C on a frame are kept for the same
frames, moved with the same drift (sub-pixel, as measured) and dropped on the same resets; a reported Si
within :data:`SI_HOLD_A` of one is read as C too (a column at the rule's thresholds is then not read as
C on one frame and as Si on the next: false ``si_appeared`` / ``si_lost`` / ``si_hop`` events). A Si
read as C by a held position renews it (:data:`SI_HOLD_RENEW`): the reading lasts while a Si is reported
there and ends :data:`HOLD_FRAMES` - 1 frames after none is (the contamination atom over a lattice C does
not turn into a Si between frames; the price: a Si that replaces that C while the reading is held is read
as C too). A series on which no Si was read as C holds nothing and computes nothing more. Cost while Si
are held (indicative, this shared 2-core machine): ~40 us a frame for the cKDTree and its queries (10 held,
4,000 atoms), and the drift measurement (~0.5 ms) on frames where no region is held.
"""

from __future__ import annotations

import numpy as np

from engine.health.material_cadence import (DRIFT_MIN_PEAK, Fingerprint, binning_for, drift_reference,
                                            measure_drift, shifted, spectrum)
from engine.types import SI

#: a region found on a frame is still left out on this many frames after it (0: per frame, as before)
HOLD_FRAMES = 5
#: a reported Si within this distance (A) of a held position of a Si read as C is read as C too
SI_HOLD_A = 0.5
#: a position is held once the rule has read a Si there as C on this many frames, each within
#: :data:`HOLD_FRAMES` frames of the last (1: a reading on a single frame is held; 2 was measured worse:
#: docs/material.md)
SI_HOLD_READINGS = 1
#: a Si read as C by a held position renews the hold there (the reading lasts while the column is
#: reported, and ends HOLD_FRAMES - 1 frames after it is not; False: only the rule's own readings renew it)
SI_HOLD_RENEW = True


class OverlayerHold:
    """The overlayer region of a series held over :data:`HOLD_FRAMES` frames (module docstring). Called
    in frame order from one thread, on the frames whose region is decided (graphene, SNR >= 2)."""

    def __init__(self, hold_frames: int = HOLD_FRAMES, min_readings: int = SI_HOLD_READINGS,
                 renew: bool = SI_HOLD_RENEW):
        self.hold_frames = int(hold_frames)
        self.min_readings = int(min_readings)
        self.renew = bool(renew)
        self.key: tuple | None = None        # (series, run) the state belongs to
        self.note = ""                        # why the held region was dropped on the last frame
        self.reset()

    def reset(self) -> None:
        """Hold nothing (a new series, a ``fov_jump``, a field that cannot be followed)."""
        self.held: np.ndarray | None = None  # frames each px stays left out (uint8, frame-shaped)
        self.ref: Fingerprint | None = None   # the last frame's whitened spectrum (measure_drift's reference)
        self.velocity = (0.0, 0.0)            # the drift measured last (frame px per frame)
        self.residual = np.zeros(2)           # sub-pixel drift not yet applied to ``held``
        self.frames_held = 0                  # frames on which the held region added to the frame's own
        self.added = False                    # whether the held region added to the last frame's own
        self.si_xy: np.ndarray | None = None  # positions (frame px, x y) of the Si read as C on recent frames
        self.si_left: np.ndarray | None = None  # frames each stays held (as ``held``)
        self.si_hits: np.ndarray | None = None  # frames on which the rule read a Si there as C
        self.si_added = 0                     # Si read as C on the last frame by the held positions alone
        self._pending = None                  # (frame data, lattice_px) of this frame when no spectrum was taken

    def forget(self, frame, health=None) -> None:
        """Called on a frame whose region is not decided: drop the held region when the field may have
        changed (not graphene, a new series, ...)."""
        self.reset()
        self.key = (frame.series, int(getattr(frame, "run", 0)))

    def update(self, frame, health, region: np.ndarray | None, lattice_px: float = float("nan")) -> np.ndarray | None:
        """The region to leave out on ``frame``: ``region`` (this frame's, frame-shaped bool, or None)
        together with those of the last :attr:`hold_frames` frames moved with the drift; None when
        there is none. ``lattice_px``: the graphene lattice constant in frame px (keeps the binned
        spectrum's lattice peaks off its Nyquist frequency), NaN when not known."""
        key = (frame.series, int(getattr(frame, "run", 0)))
        a = np.asarray(frame.data)
        if key != self.key or (self.held is not None and self.held.shape != a.shape) or \
                (health is not None and "fov_jump" in getattr(health, "verdicts", ())):
            self.reset()
            self.key = key
        self.note, self.added, self.si_added, self._pending = "", False, 0, None
        if self.hold_frames <= 0 or a.ndim != 2:
            return region
        if self.held is None and self.si_xy is None and region is None:
            self._pending = (a, lattice_px)         # (read_as_c takes the spectrum if it has a Si to hold)
            return region
        S = spectrum(a, binning_for(a.shape, lattice_px) if self.ref is None else self.ref.b)
        if S is None:
            self.reset()
            return region
        if self.held is not None or self.si_xy is not None:
            dy, dx, peak = measure_drift(S, self.ref, self.velocity) if self.ref is not None else (0.0, 0.0, 0.0)
            if peak < DRIFT_MIN_PEAK:
                self.reset()
                self.note = f"held region dropped: the field could not be followed (peak {peak:.1f})"
            else:
                self.velocity = (dy, dx)
                self.residual += (dy, dx)
                step = np.rint(self.residual)
                self.residual -= step
                if self.held is not None:
                    if step.any():
                        # (no extrapolation: 0 came into view)
                        self.held = shifted(self.held, int(step[0]), int(step[1]))
                    np.subtract(self.held, 1, out=self.held, where=self.held > 0)
                if self.si_xy is not None:
                    self.si_xy += (dx, dy)                 # (x, y: the drift as measured, not rounded)
                    self.si_left -= 1
                    keep = self.si_left > 0
                    if keep.any():
                        self.si_xy, self.si_left, self.si_hits = self.si_xy[keep], self.si_left[keep], self.si_hits[keep]
                    else:
                        self.si_xy = self.si_left = self.si_hits = None
        out = region
        if self.held is not None:
            old = self.held > 0
            if old.any():
                out = old if region is None else (old | region)
                if region is None or (old & ~region).any():
                    self.frames_held += 1
                    self.added = True
        if region is not None:
            if self.held is None:
                self.held = np.zeros(a.shape, np.uint8)
            self.held[region] = self.hold_frames
        if self.held is not None and not self.held.any():
            self.held = None
        if self.held is None and self.si_xy is None:
            self.reset()
            self._pending = (a, lattice_px)
            return out
        self.ref = drift_reference(S, a.shape)
        return out

    def read_as_c(self, atoms, own: np.ndarray, radius_px: float) -> np.ndarray:
        """The atoms to read as C on the frame last passed to :meth:`update`: ``own`` (indices the frame's
        rule read as C) together with the reported Si (species SI) within ``radius_px`` of a position held
        from the last :attr:`hold_frames` frames (their count: :attr:`si_added`; held once read as C on
        :attr:`min_readings` frames, renewed by a Si read as C there when :attr:`renew`); ``own``'s
        positions are held from now on. ``atoms``: :class:`engine.types.Atoms` of the frame. Nothing is
        computed while nothing is held and ``own`` is empty."""
        own = np.asarray(own, np.int64).reshape(-1)
        self.si_added = 0
        if self.hold_frames <= 0 or (self.si_xy is None and not len(own)):
            return own
        xy = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2)
        out, tree = own, None
        if self.si_xy is not None and radius_px > 0:
            from scipy.spatial import cKDTree

            tree = cKDTree(self.si_xy)
            sure = self.si_hits >= self.min_readings
            cand = np.flatnonzero(np.asarray(atoms.species) == SI)
            cand = cand[~np.isin(cand, own)]
            if len(cand) and sure.any():
                d, j = tree.query(xy[cand], distance_upper_bound=radius_px)
                hit = np.isfinite(d)
                extra = cand[hit][sure[j[hit]]]
                if self.renew and len(extra):
                    self.si_left[j[hit][sure[j[hit]]]] = self.hold_frames
                if len(extra):
                    self.si_added = int(len(extra))
                    out = np.union1d(own, extra)
        if len(own):
            if self.ref is None:                      # (nothing was held: this frame's spectrum, the reference)
                if self._pending is None:
                    return out                        # (no spectrum on this frame: the field cannot be followed)
                a, lattice_px = self._pending
                S = spectrum(a, binning_for(a.shape, lattice_px))
                if S is None:
                    return out
                self.ref = drift_reference(S, a.shape)
            new = xy[own]
            if tree is not None:                      # a reading again where one is held: it counts there
                d, j = tree.query(new, distance_upper_bound=radius_px)
                again = np.isfinite(d)
                jj = np.unique(j[again])
                self.si_hits[jj] += 1
                self.si_left[jj] = self.hold_frames
                self.si_xy[j[again]] = new[again]     # (the newest position)
                new = new[~again]
            if len(new):
                left = np.full(len(new), self.hold_frames, np.int64)
                hits = np.ones(len(new), np.int64)
                self.si_xy = new if self.si_xy is None else np.concatenate([self.si_xy, new])
                self.si_left = left if self.si_left is None else np.concatenate([self.si_left, left])
                self.si_hits = hits if self.si_hits is None else np.concatenate([self.si_hits, hits])
        self._pending = None
        return out
