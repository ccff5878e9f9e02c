"""Frames for the tests of engine.health.overlayer_hold (the region and the per-atom reading held)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy import ndimage


def field(seed: int = 0, size: int = 512 + 64) -> np.ndarray:
    """A non-periodic texture (blobs of a few px), larger than the frames cut from it."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=(size, size)), 3.0) * 50 + 1000


def frame(img, seq: int, series: str = "s", run: int = 0, noise_seed: int | None = None):
    """A frame-like object of ``img`` (with read noise of 2 counts drawn from ``noise_seed`` when given)."""
    if noise_seed is not None:
        img = img + np.random.default_rng(noise_seed).normal(0, 2.0, img.shape)
    return SimpleNamespace(data=img.astype(np.float32), series=series, run=run, seq=seq)
