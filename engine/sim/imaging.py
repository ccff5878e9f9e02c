"""Incoherent HAADF/MAADF image formation for a :class:`~engine.sim.structures.Sample`.

Model (every parameter in :class:`ImagingParams`, documented with its range in docs/simulator.md):

1. Each atom scatters a fraction of the probe electrons into the annular detector proportional to
   ``Z**gamma`` (incoherent Z-contrast; gamma in [1.4, 2.0]): its detector cross-section is
   ``sigma_C_A2 * (Z / 6) ** gamma``.
2. The atoms' cross-sections are splatted onto the pixel grid (bilinear, sub-pixel) and convolved
   with the probe intensity (FFT): a Gaussian core (FWHM ~0.7-1.3 A, astigmatic) plus a broad tail
   (a second, wider and slightly displaced Gaussian: coma-like asymmetry).
3. Expected electrons per pixel = dose (e/A^2) x pixel area x (background fraction + scattered
   fraction); a smooth background gradient is added.
4. Shot noise (Poisson), detector gain and offset, Gaussian read noise.
5. Scan distortions: slow drift within the frame (positions shift with scan time, i.e. with the
   row), per-row jitter (each row shifted in x) and occasional flyback line shifts.

Ground-truth positions returned by :func:`render` include the slow drift (where the atom *appears*
in the image) but not the random per-row jitter (noise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class ImagingParams:
    """Physical parameters of one simulated acquisition (units in the names)."""

    gamma: float = 1.7                    # Z-contrast exponent, [1.4, 2.0]
    sigma_C_A2: float = 0.02              # carbon detector cross-section (A^2), [0.015, 0.04]
    probe_fwhm_A: float = 1.0             # probe core FWHM (A), [0.7, 1.3]
    astig_ratio: float = 1.0              # core FWHM ratio of the two axes, [1.0, 1.3]
    astig_angle_deg: float = 0.0          # orientation of the astigmatism
    tail_fraction: float = 0.15           # fraction of probe current in the tail, [0.0, 0.35]
    tail_fwhm_A: float = 3.0              # tail FWHM (A), [2, 6]
    tail_shift_A: float = 0.1             # displacement of the tail (coma-like asymmetry), [0, 0.3]
    dose_e_per_A2: float = 1e5            # electron dose per frame, [1e3, 1e6]
    background_fraction: float = 0.002    # uniform scattered fraction (amorphous support), [1e-4, 5e-3]
    gradient_fraction: float = 0.0        # amplitude of a linear background ramp relative to the C peak
    gradient_angle_deg: float = 0.0
    gain_counts_per_e: float = 1.0        # detector gain (counts per electron), [0.2, 50]
    offset_counts: float = 0.0            # detector offset (counts), [0, 1000]
    read_noise_counts: float = 0.0        # Gaussian read noise (counts), [0, 2 x gain]
    row_jitter_px: float = 0.0            # std of per-row x shift (px), [0, 0.6]
    flyback_prob: float = 0.0             # probability per row of a flyback line shift, [0, 0.01]
    flyback_shift_px: float = 1.5         # size of a flyback shift (px)
    drift_in_frame_A: tuple = (0.0, 0.0)  # (dx, dy) slow drift from first to last row (A)

    @classmethod
    def random(cls, rng: np.random.Generator, dose_range=(1e3, 1e6)) -> "ImagingParams":
        """Parameters drawn over the full documented ranges (dose log-uniform)."""
        gain = float(np.exp(rng.uniform(np.log(0.2), np.log(50))))
        return cls(
            gamma=float(rng.uniform(1.4, 2.0)),
            sigma_C_A2=float(np.exp(rng.uniform(np.log(0.015), np.log(0.04)))),
            probe_fwhm_A=float(rng.uniform(0.7, 1.3)),
            astig_ratio=float(rng.uniform(1.0, 1.3)),
            astig_angle_deg=float(rng.uniform(0, 180)),
            tail_fraction=float(rng.uniform(0.0, 0.35)),
            tail_fwhm_A=float(rng.uniform(2.0, 6.0)),
            tail_shift_A=float(rng.uniform(0.0, 0.3)),
            dose_e_per_A2=float(10 ** rng.uniform(np.log10(dose_range[0]), np.log10(dose_range[1]))),
            background_fraction=float(np.exp(rng.uniform(np.log(1e-4), np.log(5e-3)))),
            gradient_fraction=float(rng.uniform(0.0, 0.5)),
            gradient_angle_deg=float(rng.uniform(0, 360)),
            gain_counts_per_e=gain,
            offset_counts=float(rng.uniform(0, 1000) if rng.uniform() < 0.5 else 0.0),
            read_noise_counts=float(rng.uniform(0, 2.0) * gain),
            row_jitter_px=float(rng.uniform(0, 0.6) if rng.uniform() < 0.7 else 0.0),
            flyback_prob=float(rng.uniform(0, 0.01)),
            flyback_shift_px=float(rng.uniform(0.5, 3.0)),
            drift_in_frame_A=tuple(float(v) for v in rng.normal(0, 0.3, 2)),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["drift_in_frame_A"] = list(self.drift_in_frame_A)
        return d


def _gauss2d(xx, yy, fwhm_x, fwhm_y, angle_rad, cx=0.0, cy=0.0):
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    sx, sy = fwhm_x / 2.3548, fwhm_y / 2.3548
    g = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return g / (2 * np.pi * sx * sy)


def probe_kernel(params: ImagingParams, shape_px: tuple[int, int], pixel_size_A: float) -> np.ndarray:
    """Probe intensity per A^2 on a periodic grid centred at pixel (0, 0), shape ``shape_px``.

    Integrates to 1 electron (sum x pixel area = 1).
    """
    h, w = shape_px
    y = np.fft.fftfreq(h, 1.0 / h)[:, None] * pixel_size_A
    x = np.fft.fftfreq(w, 1.0 / w)[None, :] * pixel_size_A
    ang = np.deg2rad(params.astig_angle_deg)
    fx = params.probe_fwhm_A * np.sqrt(params.astig_ratio)
    fy = params.probe_fwhm_A / np.sqrt(params.astig_ratio)
    core = _gauss2d(x, y, fx, fy, ang)
    tail = _gauss2d(x, y, params.tail_fwhm_A, params.tail_fwhm_A, 0.0,
                    params.tail_shift_A * np.cos(ang), params.tail_shift_A * np.sin(ang))
    k = (1 - params.tail_fraction) * core + params.tail_fraction * tail
    return k / (k.sum() * pixel_size_A ** 2)


def _splat(xy_px: np.ndarray, weights: np.ndarray, shape_px: tuple[int, int]) -> np.ndarray:
    """Bilinear splatting of point weights onto a (H, W) grid (points outside are dropped)."""
    h, w = shape_px
    x0 = np.floor(xy_px[:, 0]).astype(np.int64)
    y0 = np.floor(xy_px[:, 1]).astype(np.int64)
    fx = xy_px[:, 0] - x0
    fy = xy_px[:, 1] - y0
    out = np.zeros(h * w, np.float64)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out += np.bincount(yi[ok] * w + xi[ok], weights=(weights * wt)[ok], minlength=h * w)
    return out.reshape(h, w)


def _shift_rows(img: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """Shift each row by ``shift_px[row]`` pixels along x (linear interpolation, edge clamped)."""
    h, w = img.shape
    x = np.arange(w)[None, :] - shift_px[:, None]
    x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 1)
    x1 = np.clip(x0 + 1, 0, w - 1)
    f = np.clip(x - np.floor(x), 0, 1)
    rows = np.arange(h)[:, None]
    return img[rows, x0] * (1 - f) + img[rows, x1] * f


def render(sample, params: ImagingParams, shape_px: tuple[int, int], pixel_size_A: float,
           rng: np.random.Generator, origin_A: tuple[float, float] = (0.0, 0.0),
           noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Render a HAADF image of ``sample``.

    Parameters
    ----------
    sample : Sample (positions in A); shape_px : (H, W); pixel_size_A : A per pixel;
    origin_A : sample coordinate (A) that maps to the centre of pixel (0, 0);
    noise : False gives the noise-free expected counts (for tests).

    Returns
    -------
    image : (H, W) float32 detector counts.
    xy_px : (N, 2) float64 (x=col, y=row) where each atom of ``sample`` appears (incl. slow drift).
    """
    h, w = shape_px
    xy = (sample.xy_A - np.asarray(origin_A)) / pixel_size_A
    drift = np.asarray(params.drift_in_frame_A, float) / pixel_size_A
    t = np.clip(xy[:, 1] / max(h - 1, 1), 0, 1)           # scan time ~ row
    xy_seen = xy + t[:, None] * drift[None, :]
    cross = params.sigma_C_A2 * (sample.z / 6.0) ** params.gamma   # A^2 per atom
    # pad by the probe tail so atoms just outside the field contribute
    pad = int(np.ceil(2.5 * params.tail_fwhm_A / pixel_size_A)) + 2
    H, W = h + 2 * pad, w + 2 * pad
    H2, W2 = int(2 ** np.ceil(np.log2(H))), int(2 ** np.ceil(np.log2(W)))
    grid = _splat(xy_seen + pad, cross / pixel_size_A ** 2, (H2, W2))  # cross-section density per A^2
    kern = probe_kernel(params, (H2, W2), pixel_size_A)
    scat = np.fft.irfft2(np.fft.rfft2(grid) * np.fft.rfft2(kern), s=(H2, W2))[pad:pad + h, pad:pad + w]
    scat *= pixel_size_A ** 2                                 # fraction of electrons scattered per pixel
    np.maximum(scat, 0, out=scat)
    frac = params.background_fraction + scat
    if params.gradient_fraction:
        a = np.deg2rad(params.gradient_angle_deg)
        yy, xx = np.mgrid[0:h, 0:w]
        ramp = ((xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a)) / max(h, w)
        c_peak = params.sigma_C_A2 / (1.1331 * params.probe_fwhm_A ** 2)  # ~ peak fraction of one C
        frac = frac + np.maximum(params.gradient_fraction * c_peak * (0.5 + ramp), 0)
    lam = frac * params.dose_e_per_A2 * pixel_size_A ** 2
    if params.row_jitter_px or params.flyback_prob:
        shifts = rng.normal(0, params.row_jitter_px, h) if params.row_jitter_px else np.zeros(h)
        if params.flyback_prob:
            jumps = rng.uniform(size=h) < params.flyback_prob
            shifts += jumps * params.flyback_shift_px * rng.choice([-1, 1], h)
        lam = _shift_rows(lam, shifts)
    if noise:
        counts = rng.poisson(lam).astype(np.float64)
        img = counts * params.gain_counts_per_e + params.offset_counts
        if params.read_noise_counts:
            img += rng.normal(0, params.read_noise_counts, img.shape)
    else:
        img = lam * params.gain_counts_per_e + params.offset_counts
    return img.astype(np.float32), xy_seen
