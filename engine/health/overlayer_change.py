"""A reported Si where the field around it changes between frames (issue 21, criterion 2).

What is left of the false Si near contamination after the single-frame rules
(:mod:`engine.health.material_overlayer`) are lattice columns with two or more contamination atoms stacked
on them: in one frame such a column carries a Si's projected contrast and width within the noise
(docs/material.md). Hydrocarbon contamination is mobile under the beam, while a substitutional Si stays on
its site and the graphene around it stays as it was: between two frames the contamination's atoms move,
the lattice does not. So a reported Si is judged contamination where, over a ring around it
(:data:`CHANGE_INNER_A` to :data:`CHANGE_RADIUS_A`), the frame differs from the one before (moved with the
field's drift) by more than the frame's own noise at that brightness, on average by more than
:data:`CHANGE_MAX`, each pixel counted up to :data:`CHANGE_CAP`.

The noise is measured from the pair of frames itself, not from a detector model: the absolute difference
of the two smoothed frames has, at each brightness, a median set by the noise alone wherever the sample did
not change (most of a graphene field), so the median over :data:`NOISE_BINS` brightness quantiles is the
noise scale there (Poisson counts, a Gaussian read-out or a dark offset alike; above the brightest quantile
it grows as shot noise).

A Si event must not read as contamination. It changes the columns within ~2 A of the Si (a hop of 1.8 A, a
neighbour C ejected 1.4 A away): the ring leaves them out, and the cap keeps a changed column counting by its
area, not its brightness, so the reading does not grow with the dose (measured with simulated hops and
rotors up to 1e7 e/A^2: :data:`CHANGE_MAX`'s comment, tests/test_health_overlayer_change.py).

Plain functions on arrays, and :class:`FieldChange`, the state of a series (one per
:class:`engine.pipeline.Pipeline`): it keeps a copy of the last frame and measures the change only while
contamination has been found on the series (:data:`GATE_FRAMES`): clean graphene is never judged so. Cost
while it measures on consecutive frames (this 2-core machine, median of 40; this frame's drift spectrum and
reference, one frame smoothed, the noise scale, the ring at 30 Si; observe and changing_si on walking-contamination
frames, 2026-12-06): 2.3 ms at 256^2, 4.1 ms at 512^2, 11.4 ms at 1024^2 (docs/material.md); otherwise the frame
copy, 0.03 ms at 512^2.
"""

from __future__ import annotations

import numpy as np

#: the frames are binned to about this pixel (A) before the difference (the noise is averaged, the cost falls)
CHANGE_BIN_A = 0.4
#: and smoothed with a Gaussian of this sigma (A): an atom column's scale, not the noise's
CHANGE_SMOOTH_A = 0.5
#: the change is averaged over a ring around each reported Si from CHANGE_INNER_A to CHANGE_RADIUS_A (A): several
#: of the contamination's atoms lie in it; a Si event (a hop of 1.8 A, a neighbour C ejected 1.4 A away) changes
#: the columns inside CHANGE_INNER_A
CHANGE_RADIUS_A = 6.0
CHANGE_INNER_A = 2.5
#: each pixel's change is capped at this many times the noise before the mean: a column that changed (a
#: bright Si moved) counts by its area, not by its brightness, so that the reading of a Si event does not
#: grow with the dose as the noise shrinks (without the cap a Si hop read 4.6 at 1e5 e/A^2 and 27.6 at 1e7)
CHANGE_CAP = 4.0
#: a reported Si is judged contamination when the ring's mean capped change exceeds this (0: off); the noise
#: alone reads ~1.1. Development (docs/material.md): walking movies 159-170, static and drifting (contamination
#: walking 0.3 A a frame): true Si more than 3 A from contamination read at most 2.01 (3,241), heavy adatoms
#: 1.41, the false Si near contamination 1.34-3.42 (47 of 71 above 2.3); the Si at or near the true events of
#: clean movies 30-35 (1e5 and 1e6 e/A^2) at most 1.43; a simulated Si hop at most 1.73 (1e4-1e7 e/A^2), a 3-4
#: Si rotor turned 60 degrees at most 2.14 up to 1e6 e/A^2 (2.49 at 1e7: above it)
CHANGE_MAX = 2.3
#: brightness quantiles the noise scale is measured in
NOISE_BINS = 8
#: pixels the noise scale is measured on (a regular sample of the binned frame)
NOISE_SAMPLE = 16384


def binning(pixel_size_A: float) -> int:
    """The binning factor that brings ``pixel_size_A`` near :data:`CHANGE_BIN_A` (1: none)."""
    if not (np.isfinite(pixel_size_A) and pixel_size_A > 0):
        raise ValueError(f"pixel_size_A must be a positive number, got {pixel_size_A!r}")
    return max(1, int(round(CHANGE_BIN_A / float(pixel_size_A))))


def smoothed(image: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """``image`` binned by :func:`binning` (the edge rows and columns that do not fill a bin dropped) and
    smoothed by :data:`CHANGE_SMOOTH_A`: float32, what :func:`change_map` compares."""
    from scipy import ndimage as ndi

    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {a.shape}")
    b = binning(pixel_size_A)
    if b > 1:
        from engine.chem.filters import block_mean

        h, w = (a.shape[0] // b) * b, (a.shape[1] // b) * b
        if h == 0 or w == 0:
            raise ValueError(f"image of shape {a.shape} is smaller than one {b} x {b} bin")
        a = block_mean(a[:h, :w], b)       # (float32; 8/16-bit counts summed exactly from the integers)
    else:
        a = a.astype(np.float32)
    return ndi.gaussian_filter(a, CHANGE_SMOOTH_A / (b * float(pixel_size_A)))


def moved(a: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``a`` (2-D float32) moved by (dy, dx) px with linear interpolation, what came into view taking the
    edge's value: ``scipy.ndimage.shift(a, (dy, dx), order=1, mode="nearest")``, in a fifth of its time."""
    a = np.asarray(a, np.float32)
    h, w = a.shape
    pad = int(np.ceil(max(abs(dy), abs(dx)))) + 1
    p = np.pad(a, pad, mode="edge")
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = np.float32(dy - iy), np.float32(dx - ix)
    # out[y] = a[y - dy]: between rows y - iy (weight 1 - fy) and y - iy - 1 (weight fy); columns alike
    r0, r1 = p[pad - iy:pad - iy + h], p[pad - iy - 1:pad - iy - 1 + h]
    rows = r0 * (np.float32(1) - fy) + r1 * fy if fy else r0
    c0, c1 = rows[:, pad - ix:pad - ix + w], rows[:, pad - ix - 1:pad - ix - 1 + w]
    return np.ascontiguousarray(c0 * (np.float32(1) - fx) + c1 * fx if fx else c0)


def change_map(now: np.ndarray, before: np.ndarray, shift_yx: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The change from ``before`` to ``now`` (two :func:`smoothed` frames of one shape) in units of the noise
    at each pixel's brightness (module docstring): ``before`` is first moved by ``shift_yx`` (its px, the
    field's drift from it to ``now``). float32 of ``now``'s shape; ~1 where only the noise differs."""
    now = np.asarray(now, np.float32)
    before = np.asarray(before, np.float32)
    if now.shape != before.shape or now.ndim != 2:
        raise ValueError(f"the frames must be 2-D of one shape, got {now.shape} and {before.shape}")
    if shift_yx[0] or shift_yx[1]:
        before = moved(before, float(shift_yx[0]), float(shift_yx[1]))
    d = np.abs(now - before)
    level = 0.5 * (now + before)
    st = max(1, int(np.sqrt(level.size / NOISE_SAMPLE)))      # (every st-th px: ~NOISE_SAMPLE of them)
    sub_l, sub_d = level[::st, ::st].ravel(), d[::st, ::st].ravel()
    edges = np.quantile(sub_l, np.linspace(0.0, 1.0, NOISE_BINS + 1))
    k = np.clip(np.searchsorted(edges, sub_l, side="right") - 1, 0, NOISE_BINS - 1)
    centre, noise = np.empty(NOISE_BINS), np.empty(NOISE_BINS)
    for i in range(NOISE_BINS):
        sel = k == i
        centre[i] = np.median(sub_l[sel]) if sel.any() else np.nan
        noise[i] = np.median(sub_d[sel]) if sel.any() else np.nan
    ok = np.isfinite(centre) & np.isfinite(noise) & (noise > 0)
    if not ok.any():
        return np.zeros_like(now)
    centre, noise = centre[ok], noise[ok]
    scale = np.interp(level, centre, noise).astype(np.float32)
    # above the brightest quantile's median (the cores of the brightest columns) the noise grows as shot
    # noise does, not held at that quantile's level
    top = level > centre[-1]
    if top.any() and centre[-1] > 0:
        scale[top] = noise[-1] * np.sqrt(level[top] / np.float32(centre[-1]))
    return d / np.maximum(scale, np.float32(noise.min()))


def disc_change(change: np.ndarray, xy_px: np.ndarray, pixel_size_A: float, radius_A: float = CHANGE_RADIUS_A,
                inner_A: float = 0.0, cap: float | None = None) -> np.ndarray:
    """The mean of ``change`` (a :func:`change_map` of frames binned for ``pixel_size_A``), each pixel capped
    at ``cap`` (None: not capped), over the ring from ``inner_A`` to ``radius_A`` around each frame position
    ``xy_px`` (N x 2, x y, frame px; ``inner_A`` 0: the disc); the part of a ring outside the map is left out
    of its mean (NaN where none is inside)."""
    change = np.asarray(change, np.float32)
    xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
    out = np.full(len(xy), np.nan)
    if not len(xy):
        return out
    b = binning(pixel_size_A)
    r, r0 = radius_A / (b * float(pixel_size_A)), inner_A / (b * float(pixel_size_A))
    R = int(np.ceil(r))
    dy, dx = np.mgrid[-R:R + 1, -R:R + 1]
    rr = dy * dy + dx * dx
    inside = (rr <= r * r) & (rr >= r0 * r0)
    dy, dx = dy[inside], dx[inside]
    c = np.rint((xy + 0.5) / b - 0.5).astype(np.int64)           # (frame px centres -> binned px)
    yy, xx = c[:, 1, None] + dy[None], c[:, 0, None] + dx[None]
    h, w = change.shape
    ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    vals = change[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    if cap is not None:                       # (on the pixels read, not the whole map)
        vals = np.minimum(vals, np.float32(cap))
    vals = np.where(ok, vals, 0.0)
    n = ok.sum(axis=1)
    out[n > 0] = vals.sum(axis=1)[n > 0] / n[n > 0]
    return out


def si_change(change: np.ndarray, xy_px: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """What :class:`FieldChange` compares with :data:`CHANGE_MAX` at each Si (frame px ``xy_px``): the mean
    of ``change``, capped at :data:`CHANGE_CAP`, over the ring from :data:`CHANGE_INNER_A` to
    :data:`CHANGE_RADIUS_A`."""
    return disc_change(change, xy_px, pixel_size_A, CHANGE_RADIUS_A, CHANGE_INNER_A, CHANGE_CAP)


#: once contamination is found on a frame of a series (a part left out by the contamination rules, or a Si
#: judged), the change is measured on it and on this many frames after it (contamination does not go away
#: between two frames; the rules that found it may miss it on the next)
GATE_FRAMES = 5
#: frames whose pixel sizes differ by less than this (relative) are compared; a larger step starts the series
#: afresh (the field was rescaled)
PIXEL_SIZE_RTOL = 0.02


class FieldChange:
    """The last frame of a series and, while contamination has been found on it recently, the change from
    it to this frame (module docstring). One per :class:`engine.pipeline.Pipeline`, called in frame order
    from one thread on the frames whose contamination is judged (graphene, SNR >= 2): :meth:`observe`, then
    :meth:`changing_si`. Nothing but a copy of the frame is kept on a series with no contamination found."""

    def __init__(self, gate_frames: int = GATE_FRAMES):
        self.gate_frames = int(gate_frames)
        self.reset()

    def reset(self) -> None:
        """Forget the series (a new one, a ``fov_jump``, a frame that is not graphene)."""
        self.key: tuple | None = None       # (series, run, shape) of ``last``
        self.pixel_size_A = float("nan")    # the pixel size the series is analysed at (A/px)
        self.last = None                    # (frame data copy, lattice_px) of the last frame observed
        self.now = None                     # (frame data, lattice_px) of this frame
        self.smooth_last: np.ndarray | None = None   # smoothed(last) and smoothed(now), once computed
        self.smooth_now: np.ndarray | None = None
        self.ref_last = None                # measure_drift's references (material_cadence.drift_reference) of both,
        self.ref_now = None                 # once computed
        self.open_left = 0                  # frames the measurement stays on
        self.velocity = (0.0, 0.0)          # the drift measured last (frame px per frame)
        self.change: np.ndarray | None = None        # this frame's change map, once measured
        self.note = ""                      # why no change was measured on a frame the gate was open

    def observe(self, frame, pixel_size_A: float, lattice_px: float = float("nan")) -> None:
        """This frame of the series (``frame.data`` 2-D; ``pixel_size_A`` the size it is analysed at;
        ``lattice_px`` graphene's lattice constant in frame px, NaN when not known)."""
        a = np.asarray(frame.data)
        key = (frame.series, int(getattr(frame, "run", 0)), a.shape)
        ps = float(pixel_size_A)
        # (a pixel size estimated from the lattice moves a little from frame to frame: within PIXEL_SIZE_RTOL the
        # frames are compared; beyond it the field was rescaled)
        if key != self.key or not abs(ps / self.pixel_size_A - 1.0) <= PIXEL_SIZE_RTOL:
            self.reset()
            self.key = key
        self.pixel_size_A = ps
        self.last, self.smooth_last, self.ref_last = self.now, self.smooth_now, self.ref_now   # (None after a reset)
        self.now, self.smooth_now, self.ref_now = (np.array(a, copy=True), float(lattice_px)), None, None   # (a copy: the source may reuse its buffers)
        self.change, self.note = None, ""
        self.open_left = max(self.open_left - 1, 0)

    def changing_si(self, atoms, found: bool) -> np.ndarray:
        """Indices of the reported Si (species SI) of ``atoms`` (this frame's) around which the field changed
        from the last frame beyond its noise, :func:`si_change` above :data:`CHANGE_MAX`: moving
        contamination. ``found``: contamination was found on this frame (opens the measurement for it and
        the next :attr:`gate_frames` - 1 frames). Empty when the measurement is closed, there is no last
        frame of the series, or the field could not be followed from it (:attr:`note`)."""
        from engine.types import SI

        if found:
            self.open_left = self.gate_frames
        si = np.flatnonzero(np.asarray(atoms.species) == SI)
        if CHANGE_MAX <= 0 or self.open_left <= 0 or self.last is None or self.now is None or not len(si):
            return np.zeros(0, np.int64)
        if self.change is None:
            self.change = self._measure()
            if self.change is None:
                return np.zeros(0, np.int64)
        xy = np.asarray(atoms.xy_px, np.float64).reshape(-1, 2)[si]
        c = si_change(self.change, xy, self.pixel_size_A)
        return si[np.nan_to_num(c, nan=0.0) > CHANGE_MAX].astype(np.int64)

    def _measure(self) -> np.ndarray | None:
        """The change map from the last frame to this one, moved with the drift measured between them
        (:func:`engine.health.material_cadence.measure_drift`); None when it cannot be followed."""
        from engine.health.material_cadence import DRIFT_MIN_PEAK, binning_for, drift_reference, measure_drift, spectrum

        (before, lattice_px), (now, _) = self.last, self.now
        ps = self.pixel_size_A
        b_fft = binning_for(now.shape, lattice_px)
        R0 = self.ref_last
        if R0 is None or R0.b != b_fft:
            S0 = spectrum(before, b_fft)
            R0 = None if S0 is None else drift_reference(S0, before.shape)
        S1 = spectrum(now, b_fft)
        self.ref_now = None if S1 is None else drift_reference(S1, now.shape)   # (the next frame's R0)
        if R0 is None or S1 is None:
            self.note = "no change measured: a frame without usable pixels"
            return None
        dy, dx, peak = measure_drift(S1, R0, self.velocity)
        if peak < DRIFT_MIN_PEAK:
            self.note = f"no change measured: the field could not be followed (peak {peak:.1f})"
            return None
        self.velocity = (dy, dx)
        b = binning(ps)
        self.smooth_now = smoothed(now, ps)
        if self.smooth_last is None or self.smooth_last.shape != self.smooth_now.shape:
            self.smooth_last = smoothed(before, ps)        # (binned alike: the pixel size may have moved a little)
        return change_map(self.smooth_now, self.smooth_last, (dy / b, dx / b))
