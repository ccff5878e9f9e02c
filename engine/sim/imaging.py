"""Incoherent HAADF/MAADF image formation for a :class:`~engine.sim.structures.Sample`.

Model (every parameter in :class:`ImagingParams`, documented with its range and source in
docs/simulator.md):

1. Each atom scatters into the annular detector a fraction of the probe electrons that hit it,
   with a detector cross-section ``sigma_C_A2 * (Z / 6) ** gamma`` (incoherent Z-contrast;
   gamma in [1.4, 2.0]), times ``heavy_boost`` (1-1.8) for atoms heavier than C: real frames show
   Si/C peak ratios of 5.5-8.8, i.e. an effective gamma of 2.0-2.6 (docs/simulator.md).
2. Probe intensity (integrates to 1): an astigmatic Gaussian core (FWHM 0.7-1.3 A) plus a broad,
   slightly displaced Gaussian tail (coma-like asymmetry) carrying ``tail_fraction`` of the current.
   The cross-sections are splatted onto the pixel grid (bilinear, sub-pixel) and convolved with the
   core by FFT using the core's analytic transfer function; the tail is convolved on a coarser grid
   (it is smooth) and interpolated back, so a wide tail costs nothing extra.
3. Diffuse signal: a uniform background (amorphous adsorbates, thermal diffuse scattering, detector
   flare), a linear ramp and a broad blob (thickness variation); all relative to the mean signal of
   the graphene lattice.
4. Expected electrons per pixel = dose (e/A^2) x pixel area x scattered fraction, modulated by
   per-row beam-current fluctuations; Poisson shot noise; a detector lag along the fast scan
   direction (x); detector gain and offset; Gaussian read noise.
5. Scan distortions. Deterministic ones move where atoms *appear* and are part of the ground truth:
   slow drift within the frame (position shift growing with scan time, i.e. with the row), a
   mains-frequency sinusoidal x-shift per row, and flyback settling near the left edge (the beam lags
   behind the ramp just after each line flyback). Random ones are noise and are not in the truth:
   per-row jitter and occasional line glitches (a whole row shifted).
6. Spikes: a few isolated hot pixels (X-ray / cosmic-ray hits on the detector), 1-4x the 99.9th
   percentile of the frame.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import fft as sfft

#: Atoms per A^2 of graphene (2 atoms per cell of area a^2 sqrt(3)/2, a = 2.46 A).
GRAPHENE_ATOMS_PER_A2 = 2.0 / (2.46 ** 2 * np.sqrt(3) / 2)
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass
class ImagingParams:
    """Physical parameters of one simulated acquisition (units in the names; ranges drawn by
    :meth:`random` in brackets; docs/simulator.md gives meaning and sources)."""

    gamma: float = 1.7                    # Z-contrast exponent [1.4, 2.0]
    heavy_boost: float = 1.0              # extra factor on atoms with Z > 6 [1.0, 1.8] (70 % of frames; else 1)
    sigma_C_A2: float = 0.02              # C detector cross-section (A^2) [0.01, 0.04]
    probe_fwhm_A: float = 1.0             # probe core FWHM, geometric mean of the axes (A) [0.7, 1.3]
    astig_ratio: float = 1.0              # ratio of the core's two FWHMs [1.0, 1.35]
    astig_angle_deg: float = 0.0          # orientation of the long axis [0, 180)
    tail_fraction: float = 0.15           # probe current in the tail [0, 0.75]
    tail_fwhm_A: float = 3.0              # tail FWHM (A) [2, 8]
    tail_shift_A: float = 0.1             # tail displacement along astig_angle (A) [0, 0.3]
    dose_e_per_A2: float = 1e5            # incident electrons per A^2 per frame [1e3, 1e6] log-uniform
    background_fraction: float = 0.002    # uniform scattered fraction (0.03-8 x the lattice mean signal)
    gradient_fraction: float = 0.0        # linear ramp across the field, x lattice mean signal [0, 0.6]
    gradient_angle_deg: float = 0.0       # direction of the ramp [0, 360)
    blob_fraction: float = 0.0            # broad Gaussian blob, x lattice mean signal [-0.3, 0.8]
    blob_sigma_frac: float = 0.3          # blob width as a fraction of the field [0.1, 0.6]
    blob_xy_frac: tuple = (0.5, 0.5)      # blob centre as fractions of (width, height) [0, 1]
    line_gain_std: float = 0.0            # per-row relative beam-current fluctuation [0, 0.03]
    gain_counts_per_e: float = 1.0        # detector gain (counts per electron) [0.2, 50] log-uniform
    offset_counts: float = 0.0            # detector offset (counts) [0, 1000] (half the frames 0)
    read_noise_counts: float = 0.0        # Gaussian read noise (counts) [0, 2 x gain]
    scan_lag: float = 0.0                 # detector lag along x: y[c] = (1-a) x[c] + a y[c-1] [0, 0.35]
    row_jitter_A: float = 0.0             # std of the random per-row x shift (A) [0, 0.2], 0.2 x U^2
    line_glitch_prob: float = 0.0         # probability per row of a glitch (row shifted) [0, 0.01]
    line_glitch_A: float = 0.15           # size of a glitch shift (A) [0.05, 0.5]
    mains_amp_A: float = 0.0              # amplitude of the sinusoidal per-row x shift (A) [0, 0.15]
    mains_period_rows: float = 64.0       # its period in rows [10, 200]
    mains_phase_deg: float = 0.0          # its phase at row 0 [0, 360)
    flyback_amp_A: float = 0.0            # x lag of the beam at the left edge (A) [0, 0.6]
    flyback_decay_px: float = 20.0        # e-folding length of the flyback lag (px) [3, 60]
    drift_in_frame_A: tuple = (0.0, 0.0)  # (dx, dy) specimen drift from the first to the last row (A)
    atom_intensity_jitter: float = 0.0    # relative per-atom brightness scatter [0, 0.08]
    hot_pixel_prob: float = 0.0           # fraction of pixels hit by a spike (X-ray / cosmic) [0, 5e-4]

    @classmethod
    def random(cls, rng: np.random.Generator, dose_range=(1e3, 1e6), **overrides) -> "ImagingParams":
        """Parameters drawn over the full documented ranges (dose log-uniform in ``dose_range``).

        ``overrides`` fix any field (e.g. ``gamma=1.7``); the random draws happen regardless, so a
        given ``rng`` state gives the same values for the other fields.
        """
        def lu(lo, hi):
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

        def maybe(p, lo, hi):           # zero with probability 1 - p
            v = float(rng.uniform(lo, hi))
            return v if rng.uniform() < p else 0.0

        sigma_c = lu(0.01, 0.04)
        lattice = GRAPHENE_ATOMS_PER_A2 * sigma_c
        gain = lu(0.2, 50.0)
        d = dict(
            gamma=float(rng.uniform(1.4, 2.0)),
            heavy_boost=maybe(0.7, 1.0, 1.8) or 1.0,
            sigma_C_A2=sigma_c,
            probe_fwhm_A=float(rng.uniform(0.7, 1.3)),
            astig_ratio=float(1.0 + abs(rng.normal(0.0, 0.12))) if rng.uniform() < 0.8 else 1.0,
            astig_angle_deg=float(rng.uniform(0, 180)),
            tail_fraction=float(rng.uniform(0.0, 0.75)),
            tail_fwhm_A=float(rng.uniform(2.0, 8.0)),
            tail_shift_A=float(rng.uniform(0.0, 0.3)),
            dose_e_per_A2=lu(*dose_range) if dose_range[1] > dose_range[0] else float(dose_range[0]),
            background_fraction=(float(rng.uniform(1.0, 5.0)) if rng.uniform() < 0.5 else lu(0.03, 8.0)) * lattice,
            gradient_fraction=maybe(0.6, 0.0, 0.6),
            gradient_angle_deg=float(rng.uniform(0, 360)),
            blob_fraction=maybe(0.4, -0.3, 0.8),
            blob_sigma_frac=float(rng.uniform(0.1, 0.6)),
            blob_xy_frac=(float(rng.uniform()), float(rng.uniform())),
            line_gain_std=maybe(0.5, 0.0, 0.03),
            gain_counts_per_e=gain,
            offset_counts=maybe(0.5, 0.0, 1000.0),
            read_noise_counts=float(rng.uniform(0, 2.0) * gain),
            scan_lag=maybe(0.6, 0.0, 0.35),
            row_jitter_A=0.2 * float(rng.uniform()) ** 2 if rng.uniform() < 0.6 else 0.0,
            line_glitch_prob=maybe(0.3, 0.0, 0.01),
            line_glitch_A=float(rng.uniform(0.05, 0.5)),
            mains_amp_A=maybe(0.4, 0.0, 0.15),
            mains_period_rows=float(rng.uniform(10, 200)),
            mains_phase_deg=float(rng.uniform(0, 360)),
            flyback_amp_A=maybe(0.5, 0.0, 0.6),
            flyback_decay_px=float(rng.uniform(3, 60)),
            drift_in_frame_A=tuple(float(v) for v in rng.normal(0, 0.3, 2)),
            atom_intensity_jitter=float(rng.uniform(0, 0.08)),
            hot_pixel_prob=maybe(0.25, 0.0, 5e-4),
        )
        d.update(overrides)
        return cls(**d)

    def lattice_signal_fraction(self) -> float:
        """Mean scattered fraction of a pristine graphene sheet (the unit of the diffuse terms)."""
        return GRAPHENE_ATOMS_PER_A2 * self.sigma_C_A2

    def atom_snr(self, pixel_size_A: float, z: int = 6) -> float:
        """Signal-to-noise ratio of one atom of atomic number ``z`` for an ideal detector that knows
        where to look (a diagnostic of how much a frame can tell, not a property of any finder).

        Signal: the atom's electrons in the probe core within a disc of radius ``probe_fwhm_A``
        (94 % of a Gaussian core): ``0.94 dose sigma_Z (1 - tail_fraction)``. Noise over the same
        disc (area ``a``): Poisson of the diffuse background and the mean lattice signal,
        ``dose a (background_fraction + lattice_signal_fraction)``, plus the read noise of the
        ``a / pixel_size_A**2`` pixels in electrons, ``(read_noise_counts / gain_counts_per_e)**2``
        each. Ratios below ~3 leave single atoms undecidable from their own pixels; only the
        lattice around them can help.
        """
        sigma_z = self.sigma_C_A2 * (z / 6.0) ** self.gamma * (self.heavy_boost if z > 6 else 1.0)
        area = np.pi * self.probe_fwhm_A ** 2
        signal = 0.94 * self.dose_e_per_A2 * sigma_z * (1.0 - self.tail_fraction)
        var = self.dose_e_per_A2 * area * (self.background_fraction + self.lattice_signal_fraction())
        var += area / pixel_size_A ** 2 * (self.read_noise_counts / max(self.gain_counts_per_e, 1e-12)) ** 2
        return float(signal / np.sqrt(max(var, 1e-300)))

    def to_dict(self) -> dict:
        """JSON-able dict (tuples as lists)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImagingParams":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown imaging parameters: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ----------------------------------------------------------------------------------- geometry

def apparent_positions(xy_px: np.ndarray, params: ImagingParams, shape_px: tuple[int, int],
                       pixel_size_A: float, include_lag: bool = True) -> np.ndarray:
    """Where specimen points at ``xy_px`` (x=col, y=row, undistorted) appear in the image.

    Applies the deterministic scan distortions: drift within the frame (shift proportional to the
    scan time of the point's row), the mains sinusoid (x shift per row), the detector lag's mean
    delay ``a / (1 - a)`` px along x, and flyback settling (the
    beam lags by ``flyback_amp_A * exp(-col / flyback_decay_px)`` just after each line flyback, so
    points near the left edge appear shifted right). Returns a new (N, 2) float64 array.
    """
    h, w = shape_px
    xy = np.array(xy_px, dtype=np.float64, copy=True).reshape(-1, 2)
    drift = np.asarray(params.drift_in_frame_A, float) / pixel_size_A
    t = np.clip(xy[:, 1] / max(h - 1, 1), 0.0, 1.0)
    xy += t[:, None] * drift[None, :]
    if params.mains_amp_A:
        ph = np.deg2rad(params.mains_phase_deg)
        xy[:, 0] += params.mains_amp_A / pixel_size_A * np.sin(2 * np.pi * xy[:, 1] / params.mains_period_rows + ph)
    if params.flyback_amp_A:
        # the beam at column c is at specimen x = c - a exp(-c / tau): solve c for each point (Newton)
        a = params.flyback_amp_A / pixel_size_A
        tau = params.flyback_decay_px
        x0 = xy[:, 0].copy()
        c = x0.copy()
        for _ in range(6):
            e = a * np.exp(-np.maximum(c, -5 * tau) / tau)
            f = c - e - x0
            c -= f / (1.0 + e / tau)
        xy[:, 0] = c
    if include_lag and params.scan_lag:
        xy[:, 0] += params.scan_lag / (1.0 - params.scan_lag)     # mean delay of the detector lag (px)
    return xy


# ----------------------------------------------------------------------------------- probe

@functools.lru_cache(maxsize=16)
def _gauss_otf(n_rows: int, n_cols: int, pixel_size_A: float, fwhm_x_A: float, fwhm_y_A: float,
               angle_deg: float, shift_x_A: float = 0.0, shift_y_A: float = 0.0) -> np.ndarray:
    """rfft2-layout transfer function of a unit-integral (rotated) Gaussian, times 1/px^2.

    Multiplying the rfft2 of a per-pixel weight grid by this and inverting gives the convolution
    with the probe intensity *per A^2* sampled at the pixels. Cached (read-only result).
    """
    fy = np.fft.fftfreq(n_rows, d=pixel_size_A).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(n_cols, d=pixel_size_A).astype(np.float32)[None, :]
    th = np.deg2rad(angle_deg)
    c, s = np.float32(np.cos(th)), np.float32(np.sin(th))
    u = fx * c + fy * s
    v = -fx * s + fy * c
    su = np.float32(fwhm_x_A * _FWHM_TO_SIGMA)
    sv = np.float32(fwhm_y_A * _FWHM_TO_SIGMA)
    otf = np.exp(np.float32(-2 * np.pi ** 2) * ((su * u) ** 2 + (sv * v) ** 2))
    if shift_x_A or shift_y_A:
        otf = otf * np.exp(np.complex64(-2j * np.pi) * (fx * np.float32(shift_x_A) + fy * np.float32(shift_y_A)))
    otf = (otf / np.float32(pixel_size_A ** 2)).astype(np.complex64 if np.iscomplexobj(otf) else np.float32)
    otf.setflags(write=False)
    return otf


def probe_profile(params: ImagingParams, r_A: np.ndarray) -> np.ndarray:
    """Azimuthally averaged probe intensity (per A^2, astigmatism ignored) at radii ``r_A``."""
    def g(r, fwhm):
        s = fwhm * _FWHM_TO_SIGMA
        return np.exp(-0.5 * (r / s) ** 2) / (2 * np.pi * s * s)
    return (1 - params.tail_fraction) * g(r_A, params.probe_fwhm_A) + params.tail_fraction * g(r_A, params.tail_fwhm_A)


def splat(xy_px: np.ndarray, weights: np.ndarray, shape_px: tuple[int, int]) -> np.ndarray:
    """Bilinear splatting of point weights onto a (H, W) float32 grid (points outside dropped)."""
    h, w = shape_px
    x0 = np.floor(xy_px[:, 0]).astype(np.int64)
    y0 = np.floor(xy_px[:, 1]).astype(np.int64)
    fx = xy_px[:, 0] - x0
    fy = xy_px[:, 1] - y0
    xs = np.concatenate([x0, x0 + 1, x0, x0 + 1])
    ys = np.concatenate([y0, y0, y0 + 1, y0 + 1])
    wt = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(weights, 4)
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    out = np.bincount(ys[ok] * w + xs[ok], weights=wt[ok], minlength=h * w)
    return out.reshape(h, w).astype(np.float32)


def _interp_matrix(n_out: int, coords: np.ndarray, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix sampling a length-n_in signal at ``coords``."""
    c = np.clip(coords, 0, n_in - 1)
    i0 = np.minimum(np.floor(c).astype(np.int64), n_in - 2) if n_in > 1 else np.zeros(n_out, np.int64)
    f = (c - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    m[rows, i0] += 1 - f
    if n_in > 1:
        m[rows, i0 + 1] += f
    return m


def scattered_fraction(xy_px: np.ndarray, cross_A2: np.ndarray, params: ImagingParams,
                       shape_px: tuple[int, int], pixel_size_A: float) -> np.ndarray:
    """Fraction of probe electrons scattered into the detector at each pixel, (H, W) float32.

    xy_px : (N, 2) apparent atom positions (x=col, y=row); cross_A2 : (N,) detector cross-sections.
    Atoms outside the field contribute through the probe's core and tail.
    """
    h, w = shape_px
    px = pixel_size_A
    r = np.sqrt(params.astig_ratio)
    fwhm_x, fwhm_y = params.probe_fwhm_A * r, params.probe_fwhm_A / r
    out = np.zeros((h, w), np.float32)
    core_w = 1.0 - params.tail_fraction
    if core_w > 0:
        pad = int(np.ceil(4.0 * max(fwhm_x, fwhm_y) * _FWHM_TO_SIGMA / px)) + 2
        H, W = sfft.next_fast_len(h + 2 * pad, real=True), sfft.next_fast_len(w + 2 * pad, real=True)
        grid = splat(xy_px + pad, cross_A2 * core_w, (H, W))
        otf = _gauss_otf(H, W, float(px), float(fwhm_x), float(fwhm_y), float(params.astig_angle_deg))
        conv = sfft.irfft2(sfft.rfft2(grid, workers=1) * otf, s=(H, W), workers=1)
        out += conv[pad:pad + h, pad:pad + w]
    if params.tail_fraction > 0:
        sig = params.tail_fwhm_A * _FWHM_TO_SIGMA
        k = max(1, int(sig / (1.5 * px)))              # coarse pixels per side: tail sigma >= 1.5 coarse px
        cpx = k * px
        pad = int(np.ceil(4.0 * sig / cpx)) + 2
        hc, wc = -(-h // k), -(-w // k)
        H, W = sfft.next_fast_len(hc + 2 * pad, real=True), sfft.next_fast_len(wc + 2 * pad, real=True)
        uv = (xy_px - (k - 1) / 2.0) / k + pad      # coarse pixel coordinates
        grid = splat(uv, cross_A2 * params.tail_fraction, (H, W))
        th = np.deg2rad(params.astig_angle_deg)
        otf = _gauss_otf(H, W, float(cpx), float(params.tail_fwhm_A), float(params.tail_fwhm_A), 0.0,
                         float(params.tail_shift_A * np.cos(th)), float(params.tail_shift_A * np.sin(th)))
        tail = sfft.irfft2(sfft.rfft2(grid, workers=1) * otf, s=(H, W), workers=1)
        my = _interp_matrix(h, (np.arange(h) - (k - 1) / 2.0) / k + pad, H)
        mx = _interp_matrix(w, (np.arange(w) - (k - 1) / 2.0) / k + pad, W)
        out += (my @ tail.astype(np.float32)) @ mx.T
    np.maximum(out, 0, out=out)
    return out


def background_fraction_map(params: ImagingParams, shape_px: tuple[int, int]) -> np.ndarray | float:
    """The diffuse scattered fraction (uniform + ramp + blob): a float or an (H, W) float32 map."""
    h, w = shape_px
    bg = params.background_fraction
    if not params.gradient_fraction and not params.blob_fraction:
        return bg
    unit = params.lattice_signal_fraction()
    yy = ((np.arange(h, dtype=np.float32) - h / 2) / max(h, w))[:, None]
    xx = ((np.arange(w, dtype=np.float32) - w / 2) / max(h, w))[None, :]
    m = np.full((h, w), bg, np.float32)
    if params.gradient_fraction:
        a = np.deg2rad(params.gradient_angle_deg)
        m += np.float32(params.gradient_fraction * unit) * (0.5 + xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a)))
    if params.blob_fraction:
        cx = params.blob_xy_frac[0] * w / max(h, w) - w / 2 / max(h, w)
        cy = params.blob_xy_frac[1] * h / max(h, w) - h / 2 / max(h, w)
        s2 = np.float32(2 * params.blob_sigma_frac ** 2)
        m += np.float32(params.blob_fraction * unit) * np.exp(-(xx - np.float32(cx)) ** 2 / s2) * np.exp(-(yy - np.float32(cy)) ** 2 / s2)
    np.maximum(m, 0, out=m)
    return m


def _shift_rows(img: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """Shift each row by ``shift_px[row]`` pixels along x (linear interpolation, edge clamped)."""
    h, w = img.shape
    s = shift_px.astype(np.float32)
    i = np.floor(s).astype(np.int64)
    f = (s - i)[:, None]
    x = np.arange(w)[None, :] - i[:, None]
    x0 = np.clip(x, 0, w - 1)
    x1 = np.clip(x - 1, 0, w - 1)
    rows = np.arange(h)[:, None]
    return img[rows, x0] * (1 - f) + img[rows, x1] * f


def render(sample, params: ImagingParams, shape_px: tuple[int, int], pixel_size_A: float,
           rng: np.random.Generator, origin_A: tuple[float, float] = (0.0, 0.0),
           noise: bool = True, intensity_scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render a HAADF image of ``sample``.

    Parameters
    ----------
    sample : Sample (positions in A); shape_px : (H, W); pixel_size_A : A per pixel;
    rng : random generator for noise and random scan distortions (the only randomness);
    origin_A : sample coordinate (A) that maps to the centre of pixel (0, 0);
    noise : False gives the noise-free expected counts (no shot/read noise, no random row shifts,
        no line-gain fluctuation, no per-atom brightness scatter);
    intensity_scale : optional (N,) per-atom factor on the cross-section (e.g. a dim "flicker").

    Returns
    -------
    image : (H, W) float32 detector counts.
    xy_px : (N, 2) float64 (x=col, y=row) where each atom of ``sample`` appears (drift within the
        frame, mains and flyback distortions included; random row jitter not).
    """
    h, w = int(shape_px[0]), int(shape_px[1])
    px = float(pixel_size_A)
    xy = (np.asarray(sample.xy_A, np.float64) - np.asarray(origin_A, np.float64)) / px
    xy_scan = apparent_positions(xy, params, (h, w), px, include_lag=False)   # where the beam sees them
    z = np.asarray(sample.z, np.float64)
    cross = params.sigma_C_A2 * (z / 6.0) ** params.gamma
    if params.heavy_boost != 1.0:
        cross = np.where(z > 6, cross * params.heavy_boost, cross)
    if intensity_scale is not None:
        cross = cross * np.asarray(intensity_scale, np.float64)
    if noise and params.atom_intensity_jitter:
        cross = cross * np.maximum(1.0 + params.atom_intensity_jitter * rng.standard_normal(len(cross)), 0.1)
    frac = scattered_fraction(xy_scan, cross, params, (h, w), px)
    frac += background_fraction_map(params, (h, w))
    lam = frac * np.float32(params.dose_e_per_A2 * px * px)          # expected electrons per pixel
    if noise:
        if params.line_gain_std:
            lam *= np.maximum(1.0 + params.line_gain_std * rng.standard_normal(h, dtype=np.float32), 0.0)[:, None]
        shifts = None
        if params.row_jitter_A:
            shifts = rng.standard_normal(h, dtype=np.float32) * np.float32(params.row_jitter_A / px)
        if params.line_glitch_prob:
            glitch = (rng.uniform(size=h) < params.line_glitch_prob) * rng.choice([-1.0, 1.0], h)
            shifts = (shifts if shifts is not None else 0.0) + (glitch * params.line_glitch_A / px).astype(np.float32)
        if shifts is not None:
            lam = _shift_rows(lam, shifts)
        img = rng.poisson(lam).astype(np.float32)
    else:
        img = lam.astype(np.float32)
    if params.scan_lag:
        from scipy.signal import lfilter

        a = float(params.scan_lag)
        img, _ = lfilter([1.0 - a], [1.0, -a], img, axis=1, zi=a * img[:, :1])
        img = img.astype(np.float32)
    img *= np.float32(params.gain_counts_per_e)
    if params.offset_counts:
        img += np.float32(params.offset_counts)
    if noise and params.read_noise_counts:
        img += rng.standard_normal((h, w), dtype=np.float32) * np.float32(params.read_noise_counts)
    if noise and params.hot_pixel_prob:
        n_hot = int(rng.binomial(h * w, params.hot_pixel_prob))
        if n_hot:
            at = rng.integers(0, h * w, n_hot)
            peak = float(np.percentile(img, 99.9)) if h * w > 1000 else float(img.max())
            img.reshape(-1)[at] += np.float32(peak - params.offset_counts) * rng.uniform(1.0, 4.0, n_hot).astype(np.float32)
    return img, apparent_positions(xy, params, (h, w), px)
