"""Out-of-family test images: other simulators' styles, for judging generalisation (never train on these).

The network is judged on real frames and on images made by *other* simulators. This module renders
the same kind of structures (:func:`engine.sim.sample.random_sample`) in three styles that differ
from :mod:`engine.sim.imaging` in probe shape, intensity scaling and noise pipeline, written from
the published descriptions of those simulators (notes §3.3, §5.6; no code taken from them):

* ``"gaussian_blobs"`` - an augmentation-style "dummy" simulator (like atomai's training pipeline):
  every atom a Gaussian blob of fixed width, species by a fixed intensity ratio, the image min-max
  normalised, then Gaussian noise, scaled Poisson noise, salt-and-pepper, blur, a gamma/contrast
  change, per-row rolls by a Poisson number of pixels and an asymmetric Gaussian background;
* ``"zgamma_jitter"`` - a Z^gamma simulator with a Gaussian probe of sigma ~0.47 A, a Poisson rate
  multiplier 1 + Exp(15), additive Gaussian and uniform noise on the normalised image and per-row
  jitter by Poisson(U(0, 5)) px (like the Putting Dune simulator's description);
* ``"airy"`` - a diffraction-limited probe (Airy pattern of a round aperture: intensity
  (2 J1(v) / v)^2 with its rings, convergence semi-angle 25-35 mrad at 60 kV) instead of Gaussians,
  intensity ~ Z^1.7, Poisson counts, no distortions.

:func:`foreign_example` returns the same :class:`~engine.sim.sample.TrainingExample` as
:func:`engine.sim.make_training_example` (image, xy_px, species, lattice, ...), so the held-out
scorers accept it unchanged. Positions are exact (row rolls are noise and not in the truth).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy import special

from engine.sim.imaging import splat
from engine.sim.sample import TrainingExample, random_sample

STYLES = ("gaussian_blobs", "zgamma_jitter", "airy")


def _electron_wavelength_A(kv: float) -> float:
    v = kv * 1e3
    return 12.2643 / np.sqrt(v * (1 + 0.97845e-6 * v))


def _conv(points: np.ndarray, weights: np.ndarray, shape, kernel_fn, pad: int) -> np.ndarray:
    """Splat weighted points and convolve with a kernel given on a centred (2 pad + 1)^2 grid."""
    h, w = shape
    grid = splat(points + pad, weights, (h + 2 * pad, w + 2 * pad)).astype(np.float64)
    yy, xx = np.mgrid[-pad:pad + 1, -pad:pad + 1]
    k = kernel_fn(np.hypot(xx, yy))
    from scipy.signal import fftconvolve

    return fftconvolve(grid, k, mode="same")[pad:pad + h, pad:pad + w]


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else a * 0


def foreign_example(rng: np.random.Generator, style: str, shape_px=(256, 256), pixel_size_A: float = 0.1,
                    **sample_kwargs) -> TrainingExample:
    """One out-of-family frame with exact truth (see the module docstring for the styles)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    h, w = shape_px
    px = float(pixel_size_A)
    kw = {"contamination": False, "margin_A": 4.0, **sample_kwargs}
    s = random_sample(rng, (w * px, h * px), **kw)
    xy = s.xy_A / px
    z = s.z.astype(np.float64)
    if style == "gaussian_blobs":
        sig = float(rng.uniform(0.3, 0.5)) / px
        ratio = float(rng.uniform(2.5, 5.0))
        wts = np.where(s.species == 0, 1.0, ratio) * (2 * np.pi * sig * sig)
        img = _norm(_conv(xy, wts, (h, w), lambda r: np.exp(-0.5 * (r / sig) ** 2) / (2 * np.pi * sig * sig),
                          int(4 * sig) + 2))
        img = img + rng.normal(0, np.sqrt(1e-4 * rng.uniform(0, 50)), img.shape)
        lam = float(rng.uniform(30, 40))
        img = rng.poisson(np.clip(img, 0, None) * lam) / lam
        sp = rng.uniform(size=img.shape) < 1e-3 * rng.uniform(0, 20)
        img[sp] = rng.choice([0.0, img.max()], int(sp.sum()))
        img = ndi.gaussian_filter(img, 0.05 * rng.uniform(1, 30))
        img = _norm(img) ** float(rng.uniform(0.6, 1.6))
        rolls = rng.poisson(rng.uniform(0, 2.0), h) * rng.choice([-1, 1], h)
        img = np.stack([np.roll(row, int(r)) for row, r in zip(img, rolls)])
        yy, xx = np.mgrid[0:h, 0:w]
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sx, sy = rng.uniform(0.3, 1.0) * w, rng.uniform(0.3, 1.0) * h
        img = img + rng.uniform(-0.3, 0.3) * np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
    elif style == "zgamma_jitter":
        gamma = float(rng.uniform(1.4, 2.0))
        sig = 0.47 / px * float(rng.uniform(0.9, 1.1))
        img = _conv(xy, (z / 6.0) ** gamma, (h, w), lambda r: np.exp(-0.5 * (r / sig) ** 2), int(4 * sig) + 2)
        img = _norm(img)
        rate = 1.0 + rng.exponential(15.0)
        img = rng.poisson(img * rate * 10) / (rate * 10)
        img = img + rng.normal(0, np.sqrt(rng.uniform(0, 5e-3)), img.shape) + rng.uniform(0, rng.uniform(0, 0.2), img.shape)
        shifts = rng.poisson(rng.uniform(0, 5), h)
        shifts = shifts - int(np.median(shifts))
        img = np.stack([np.roll(row, int(r)) for row, r in zip(img, shifts)])
        img = _norm(img)
    else:
        alpha = float(rng.uniform(0.025, 0.035))
        k = 2 * np.pi * alpha / _electron_wavelength_A(60.0) * px      # v per pixel of radius

        def airy(r):
            v = np.maximum(k * r, 1e-9)
            return (2 * special.j1(v) / v) ** 2

        pad = int(min(6 * 3.83 / k, 12 / px)) + 2
        img = _conv(xy, (z / 6.0) ** 1.7, (h, w), airy, pad)
        img = img / airy(np.hypot(*np.mgrid[-pad:pad + 1, -pad:pad + 1])).sum()
        dose = float(10 ** rng.uniform(4.5, 6)) * 0.02 * px * px     # counts per unit of (z/6)^1.7
        img = rng.poisson(np.clip(img, 0, None) * dose).astype(np.float64)
    m = 3.0 / px
    keep = (xy[:, 0] > -m) & (xy[:, 0] < w - 1 + m) & (xy[:, 1] > -m) & (xy[:, 1] < h - 1 + m)
    return TrainingExample(img.astype(np.float32), xy[keep], s.species[keep].copy(), s.lattice[keep].copy(),
                           s.z[keep].copy(), px, {"style": style, "defects": [d["kind"] for d in s.defects]})
